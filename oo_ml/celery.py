"""The Celery app, wired as Celery's Django guide does."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")

app = Celery("oo_ml")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
