"""Reads about the platform itself: are its dependencies reachable."""

import logging
import os

from django.db import DatabaseError

from oo_ml.celery import app as celery_app

logger = logging.getLogger(__name__)


def database_reachable(connection) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        logger.warning("health: database unreachable", exc_info=True)
        return False


def broker_reachable() -> bool:
    """Whether the broker can take a message now. The embedded filesystem
    broker always "connects": it can take one if its folder is there and
    writable."""
    conf = celery_app.conf
    if str(conf.broker_url).startswith("filesystem"):
        folder = (conf.broker_transport_options or {}).get("data_folder_out", ".")
        if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return True
        logger.warning("health: the broker folder %s is missing or read-only", folder)
        return False
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return True
    except Exception:  # any transport error means "not reachable"
        logger.warning("health: broker unreachable", exc_info=True)
        return False
