"""The logs' upkeep: day partitions made ahead, and retention (docs/logs.md).

Decisions, rewards and events are the logs. Per-user bandit state, policies,
their history, roll-ups and simulation runs are other tables: retention never
touches them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from oo_ml import partitions
from oo_ml.partitions import CREATED_AT, DAY, LOGS

logger = logging.getLogger(__name__)

# Days of partitions kept ready ahead of today: beat makes them hourly, so a
# week of beat being down still loses no write to the DEFAULT partition.
DAYS_AHEAD = 7
DELETE_BATCH = 10_000


def log_partitions_ensure(*, now: dt.datetime | None = None) -> int:
    """Make the day partitions of every log from yesterday to a week ahead,
    those missing (PostgreSQL; nothing elsewhere). Idempotent; answers how
    many it made."""
    if connection.vendor != "postgresql":
        return 0
    now = now or dt.datetime.now(dt.UTC)
    made = 0
    for log in LOGS:
        if partitions.is_partitioned(log.table):
            made += partitions.partitions_ensure(
                log, start=now - DAY, end=now + DAYS_AHEAD * DAY
            )
    return made


@dataclass(frozen=True, slots=True)
class RetentionResult:
    cutoff: dt.datetime
    dropped: tuple[str, ...]  # partitions (PostgreSQL)
    deleted: int  # rows deleted in batches (SQLite)
    seconds: float


def logs_retain(
    *, now: dt.datetime | None = None, days: int | None = None
) -> RetentionResult:
    """Drop the logs' rows older than ``days`` (OO_ML_LOG_RETENTION_DAYS).

    On PostgreSQL whole day partitions go: those ending at or before the
    cutoff's day (so up to a day more than ``days`` is kept), in moments and
    with nothing to vacuum. Elsewhere rows older than the cutoff are deleted
    in batches of DELETE_BATCH, each its own transaction. Idempotent.
    """
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    days = settings.LOG_RETENTION_DAYS if days is None else days
    cutoff = now - dt.timedelta(days=days)
    dropped: list[str] = []
    deleted = 0
    for log in LOGS:
        if partitions.is_partitioned(log.table):
            dropped += partitions.partitions_drop_before(log, cutoff=cutoff)
        else:
            deleted += _delete_before(log.table, cutoff)
    result = RetentionResult(
        cutoff, tuple(dropped), deleted, time.perf_counter() - started
    )
    logger.info(
        "retention at %d days: %d partitions dropped, %d rows deleted, %.2f s",
        days,
        len(dropped),
        deleted,
        result.seconds,
    )
    return result


def _delete_before(table: str, cutoff: dt.datetime) -> int:
    quote = connection.ops.quote_name
    sql = (
        f"DELETE FROM {quote(table)} WHERE id IN (SELECT id FROM {quote(table)} "
        f"WHERE {CREATED_AT} < %s LIMIT {DELETE_BATCH})"
    )
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [connection.ops.adapt_datetimefield_value(cutoff)])
            count = cursor.rowcount
        total += count
        if count < DELETE_BATCH:
            return total
