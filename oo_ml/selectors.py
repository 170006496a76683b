"""Reads about the platform itself: are its dependencies reachable."""

import logging

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
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return True
    except Exception:  # any transport error means "not reachable"
        logger.warning("health: broker unreachable", exc_info=True)
        return False
