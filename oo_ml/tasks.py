"""Celery tasks for the logs: thin, idempotent, time-limited; each calls one
service."""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="logs.partitions_ensure",
    acks_late=True,  # idempotent: a partition that exists is left alone
    time_limit=300,
    soft_time_limit=270,
    ignore_result=True,
)
def partitions_ensure() -> int:
    """Make the logs' day partitions a week ahead; answers how many it made."""
    from oo_ml.logs import log_partitions_ensure

    return log_partitions_ensure()


@shared_task(
    name="logs.retain",
    acks_late=True,  # idempotent: what is gone stays gone
    time_limit=1800,
    soft_time_limit=1700,
    ignore_result=True,
)
def retain() -> int:
    """Drop the logs' days past OO_ML_LOG_RETENTION_DAYS; answers how many
    partitions (PostgreSQL) or rows (SQLite) went."""
    from oo_ml.logs import logs_retain

    result = logs_retain()
    return len(result.dropped) + result.deleted
