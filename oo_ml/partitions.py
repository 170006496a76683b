"""Daily range partitions of the append-only logs on PostgreSQL (docs/logs.md).

Each log is one partitioned table, with one partition per UTC day and a DEFAULT
partition that catches any row no day partition covers (a row dated before the
first partition, or after the last one if the beat task that makes them ahead
has been down for days), so a write never fails for want of a partition.

Two kinds of key:

- ``uuid7``: the table's one-column uuid7 primary key, whose first 48 bits are
  the creation time in milliseconds. The primary key stays one column, and a
  lookup by id touches one partition (decisions, events).
- ``created_at``: the creation time itself, for a table whose id carries no
  time (rewards: a bigint). Its primary key becomes (id, created_at).

Unique constraints on a partitioned table must include the partition key, so a
caller's event id cannot be unique across partitions: those tables keep a plain
index on it, and the writer takes an advisory lock on the id before checking it
(``oo_ml.db.names_lock``). Retention drops whole day partitions: instant, no
vacuum. Elsewhere (SQLite) the tables stay plain and retention deletes in
batches.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass

from django.db import connection, transaction

logger = logging.getLogger(__name__)

UUID7 = "uuid7"
CREATED_AT = "created_at"
DAY = dt.timedelta(days=1)
_SUFFIX = re.compile(r"_p(\d{8})$")


@dataclass(frozen=True, slots=True)
class LogTable:
    table: str
    key: str  # UUID7 or CREATED_AT


def uuid7_floor(at: dt.datetime) -> uuid.UUID:
    """The smallest uuid7 of the millisecond ``at`` falls in: a range bound."""
    millis = int(at.timestamp() * 1000)
    return uuid.UUID(int=millis << 80)


def day_start(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.UTC)
    return dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC)


def partition_name(table: str, day: dt.datetime) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _bound(key: str, at: dt.datetime) -> str:
    value = str(uuid7_floor(at)) if key == UUID7 else at.isoformat()
    return f"'{value}'"


def is_partitioned(table: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)",
            [table],
        )
        return cursor.fetchone() is not None


def day_partitions(table: str) -> dict[dt.datetime, str]:
    """The table's day partitions: {day: partition name}."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = %s::regclass""",
            [table],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = {}
    for name in names:
        match = _SUFFIX.search(name)
        if match:
            day = dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
            days[day] = name
    return days


def partitions_ensure(log: LogTable, *, start: dt.datetime, end: dt.datetime) -> int:
    """Make the day partitions of ``log`` from ``start``'s day to ``end``'s day,
    those missing; answers how many it made. Idempotent.

    A day whose rows already sit in the DEFAULT partition is skipped with a
    warning (PostgreSQL refuses to make it): those rows stay readable there and
    retention deletes them in time.
    """
    have = day_partitions(log.table)
    made = 0
    day = day_start(start)
    while day <= end:
        if day not in have:
            name = partition_name(log.table, day)
            sql = (
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{log.table}" '
                f"FOR VALUES FROM ({_bound(log.key, day)}) "
                f"TO ({_bound(log.key, day + DAY)})"
            )
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(sql)
                made += 1
            except Exception:
                logger.warning(
                    "partition %s not made: rows of that day are in the default "
                    "partition",
                    name,
                    exc_info=True,
                )
        day += DAY
    return made


def partitions_drop_before(log: LogTable, *, cutoff: dt.datetime) -> list[str]:
    """Drop the day partitions wholly before ``cutoff``'s day; answers their
    names. Rows of those days in the DEFAULT partition are deleted too."""
    dropped = []
    cutoff_day = day_start(cutoff)
    for day, name in sorted(day_partitions(log.table).items()):
        if day + DAY <= cutoff_day:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
    with connection.cursor() as cursor:
        column = "id" if log.key == UUID7 else "created_at"
        cursor.execute(
            f'DELETE FROM "{log.table}_default" WHERE {column} < %s',
            [uuid7_floor(cutoff_day) if log.key == UUID7 else cutoff_day],
        )
    return dropped


def table_partition(schema_editor, log: LogTable, *, days_ahead: int = 7) -> None:
    """Turn the plain table ``log.table`` into a partitioned one, rows, indexes
    and all (a migration step; PostgreSQL only, a no-op elsewhere).

    The indexes and constraints are made again on the new parent, under the
    same names, so later migrations find them: a unique index the partition
    key does not cover becomes a plain index.
    """
    if schema_editor.connection.vendor != "postgresql" or is_partitioned(log.table):
        return
    table, old = log.table, f"{log.table}_unpartitioned"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid),
                      indisprimary
               FROM pg_index WHERE indrelid = %s::regclass""",
            [table],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
               WHERE conrelid = %s::regclass AND contype IN ('c', 'f')""",
            [table],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            """SELECT attidentity != '' FROM pg_attribute
               WHERE attrelid = %s::regclass AND attname = 'id'""",
            [table],
        )
        (identity,) = cursor.fetchone()
        column = "id" if log.key == UUID7 else "created_at"
        # No min() of uuids in PostgreSQL 15: the first in order.
        cursor.execute(f'SELECT {column} FROM "{table}" ORDER BY 1 LIMIT 1')
        first = (cursor.fetchone() or (None,))[0]
        if isinstance(first, uuid.UUID):  # the time a uuid7 carries
            first = dt.datetime.fromtimestamp((first.int >> 80) / 1000, dt.UTC)
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        for name, _, _ in indexes:
            cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_old"')
        for name, _ in constraints:
            cursor.execute(
                f'ALTER TABLE "{old}" RENAME CONSTRAINT "{name}" TO "{name}_old"'
            )
        key = "id" if log.key == UUID7 else "created_at"
        cursor.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS) '
            f"PARTITION BY RANGE ({key})"
        )
        if identity:
            # A partitioned table takes no identity column before PostgreSQL 17:
            # a sequence of its own, started past the rows it already has.
            sequence = f"{table}_id_seq"
            cursor.execute(f'ALTER TABLE "{old}" ALTER COLUMN id DROP IDENTITY')
            cursor.execute(f'CREATE SEQUENCE "{sequence}" OWNED BY "{table}".id')
            cursor.execute(
                f"""SELECT setval('"{sequence}"',
                    COALESCE((SELECT max(id) FROM "{old}"), 0) + 1, false)"""
            )
            cursor.execute(
                f"""ALTER TABLE "{table}" ALTER COLUMN id
                    SET DEFAULT nextval('"{sequence}"')"""
            )
        primary = "id" if log.key == UUID7 else "id, created_at"
        cursor.execute(
            f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" '
            f"PRIMARY KEY ({primary})"
        )
        for name, definition in constraints:
            cursor.execute(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'
            )
        cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
    now = dt.datetime.now(dt.UTC)
    partitions_ensure(log, start=first or now, end=now + days_ahead * DAY)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
        # Check the copied rows' deferred foreign keys now: PostgreSQL makes no
        # index on a table with checks pending. Deferred again after.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f'DROP TABLE "{old}" CASCADE')
        for _name, definition, primary_index in indexes:
            if primary_index:
                continue
            # Read before the renames: it names the new table and the old name.
            definition = definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX")
            cursor.execute(definition)
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


# The logs, by table name: this layer names no app's models.
LOGS = (
    LogTable("policies_decision", UUID7),
    LogTable("policies_reward", CREATED_AT),
    LogTable("profiles_event", UUID7),
)
