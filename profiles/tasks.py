"""Celery tasks: thin, idempotent, time-limited; each calls one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    name="profiles.refresh_stale",
    acks_late=True,  # idempotent: recomputing a profile twice changes nothing
    time_limit=600,
    soft_time_limit=540,
    ignore_result=True,
)
def refresh_stale() -> int:
    """Refresh in bulk every profile over half a TTL old; answers how many.

    Half: beat runs this every half TTL (settings.CELERY_BEAT_SCHEDULE), so each
    profile is recomputed before it goes stale on a read.
    """
    from profiles import services

    return services.profiles_refresh_stale(
        older_than_seconds=settings.PROFILE_TTL_SECONDS / 2
    )
