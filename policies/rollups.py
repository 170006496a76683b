"""The control room's hourly roll-ups (``ActivityHour``), written with the rows
they count.

Why they never miss or double-count a row: each log row is counted by the
statement that writes it (``/score``: one statement inserts the decisions and
adds them to the roll-up; ``/reward``: the reward rows and the roll-up in one
transaction), so a row is counted exactly when it is committed, and a rollback
takes its count back with it. The only other ways rows leave the log: a user
reset, which subtracts what it deletes in its transaction, and retention, which
leaves the roll-ups alone (they are the all-time figures). ``activity_counts``
counts the same figures over the rows, and the tests hold the two equal.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import TruncHour

from oo_ml.db import aware, on_postgresql, rows_insert_sql
from oo_ml.partitions import DAY, day_partitions, is_partitioned
from policies.models import ActivityHour, Decision, Reward, Role

ACTIVITY_SHARDS = 4
MEASURES = ("decisions", "compared", "agreed", "rewards", "reward_sum", "learned")
_TABLE = ActivityHour._meta.db_table
_COLUMNS = ("policy_id", "hour", "shard", *MEASURES)
_ADD = ", ".join(f"{m} = {_TABLE}.{m} + excluded.{m}" for m in MEASURES)

Counts = dict[tuple[int, dt.datetime], list]


def hour_of(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _shard() -> str:
    if on_postgresql():
        return f"(pg_backend_pid() %% {ACTIVITY_SHARDS})"
    return "0"


def upsert_sql(counts: Counts) -> tuple[str, list]:
    """One statement adding ``counts`` to the roll-up, rows in policy order (two
    writers lock the rows they share in one order: no deadlock)."""
    keys = sorted(counts, key=lambda k: (k[0], k[1]))
    row = "(%s, %s, " + _shard() + ", " + ", ".join(["%s"] * len(MEASURES)) + ")"
    sql = (
        f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES "
        + ", ".join([row] * len(keys))
        + f" ON CONFLICT (policy_id, hour, shard) DO UPDATE SET {_ADD}"
    )
    params = []
    adapt = connection.ops.adapt_datetimefield_value  # raw SQL: as the ORM stores
    for key in keys:
        params.extend([key[0], adapt(key[1]), *counts[key]])
    return sql, params


def _empty() -> list:
    return [0, 0, 0, 0, 0.0, 0]


def decision_counts(decisions: Sequence) -> Counts:
    """What one request's decisions add: the first is the active policy's when
    a shadow beside it compares with it (decision_make's order)."""
    counts: Counts = defaultdict(_empty)
    first = decisions[0]
    for d in decisions:
        c = counts[(d.policy_id, hour_of(d.created_at))]
        c[0] += 1
        if d.role == Role.SHADOW and first.role == Role.ACTIVE and d is not first:
            c[1] += 1
            c[2] += d.tip_id == first.tip_id
    return counts


def decisions_insert(decisions: Sequence, cursor: CursorWrapper) -> None:
    """Insert one request's decisions (``Decision`` instances, or rows carrying
    its fields by attribute name: ``oo_ml.db.rows_insert_sql``) and count them,
    atomically: on PostgreSQL in one statement (a data-modifying WITH),
    elsewhere two in a transaction the caller holds or, autocommitting,
    SQLite's one writer."""
    _insert_counted(
        rows_insert_sql(decisions, Decision), decision_counts(decisions), cursor
    )


def _insert_counted(
    insert: tuple[str, list],
    counts: Counts,
    cursor: CursorWrapper,
    then: tuple[str, list] | None = None,
) -> None:
    """Insert log rows (``insert``: the statement and its parameters) and add
    ``counts`` to the roll-up; ``then``, the end of the statement and its
    parameters, runs with them. On PostgreSQL it follows the WITH items
    ``logged`` and ``counted`` (more items and a main statement, or a main
    statement: data-modifying items run whether or not they are read);
    elsewhere it is a statement of its own in the same transaction."""
    rows_sql, params = insert
    upsert, more = upsert_sql(counts)
    if on_postgresql():
        if then is None:
            cursor.execute(f"WITH logged AS ({rows_sql}) {upsert}", [*params, *more])
        else:
            tail, tail_params = then
            cursor.execute(
                f"WITH logged AS ({rows_sql}), counted AS ({upsert}){tail}",
                [*params, *more, *tail_params],
            )
    else:
        with transaction.atomic():
            cursor.execute(rows_sql, params)
            cursor.execute(upsert, more)
            if then:
                cursor.execute(*then)


def reward_counts(rewards: Iterable) -> Counts:
    counts: Counts = defaultdict(_empty)
    for r in rewards:
        c = counts[(r.policy_id, hour_of(r.created_at))]
        if r.learned:
            c[5] += 1
        else:
            c[3] += 1
            c[4] += r.reward
    return counts


def rewards_insert(
    rewards: Sequence,
    cursor: CursorWrapper,
    then: tuple[str, list] | None = None,
) -> None:
    """Insert reward rows (``Reward`` instances, or rows carrying its fields by
    attribute name: ``oo_ml.db.rows_insert_sql``) and count them, in one
    statement on PostgreSQL, with ``then`` (the learners' state updates) in it."""
    _insert_counted(
        rows_insert_sql(rewards, Reward), reward_counts(rewards), cursor, then
    )


def decisions_uncount(rows: Iterable[tuple], cursor: CursorWrapper) -> None:
    """Take deleted decisions back out of the roll-up (a user reset).

    ``rows``: (policy_id, created_at, role, tip_id, request_id) of every decision
    deleted; a request's decisions are all one user's, so they go together.
    """
    rows = [(p, aware(at), role, tip, req) for p, at, role, tip, req in rows]
    active = {r[4]: r[3] for r in rows if r[2] == Role.ACTIVE}
    counts: Counts = defaultdict(_empty)
    for policy_id, created_at, role, tip_id, request_id in rows:
        c = counts[(policy_id, hour_of(created_at))]
        c[0] -= 1
        if role == Role.SHADOW and request_id in active:
            c[1] -= 1
            c[2] -= tip_id == active[request_id]
    if counts:
        cursor.execute(*upsert_sql(counts))


def activity_counts(*, since: dt.datetime | None = None) -> Counts:
    """The roll-up's figures counted over the rows, per (policy, hour) from
    ``since``'s hour: what ``activity_stored`` must equal."""
    decisions = Decision.objects.all()
    rewards = Reward.objects.all()
    if since is not None:
        decisions = decisions.filter(created_at__gte=hour_of(since))
        rewards = rewards.filter(created_at__gte=hour_of(since))
    counts: Counts = defaultdict(_empty)
    if is_partitioned(_DECISION):
        _decision_counts_by_partition(counts, since)
    else:
        _decision_counts(counts, decisions)
    for row in (
        rewards.annotate(hour=TruncHour("created_at"))
        .values("policy_id", "hour")
        .annotate(
            n=Count("id", filter=Q(learned=False)),
            total=Sum("reward", filter=Q(learned=False)),
            learned_n=Count("id", filter=Q(learned=True)),
        )
        .order_by()
    ):
        c = counts[(row["policy_id"], row["hour"])]
        c[3], c[4], c[5] = row["n"], row["total"] or 0.0, row["learned_n"]
    return dict(counts)


def _decision_counts(counts: Counts, decisions) -> None:
    active = Decision.objects.filter(request_id=OuterRef("request_id"), role="active")
    shadow = Q(role=Role.SHADOW)
    for row in (
        decisions.annotate(hour=TruncHour("created_at"))
        .values("policy_id", "hour")
        .annotate(
            n=Count("id"),
            compared=Count("id", filter=shadow & Q(Exists(active))),
            agreed=Count(
                "id",
                filter=shadow & Q(Exists(active.filter(tip_id=OuterRef("tip_id")))),
            ),
        )
        .order_by()
    ):
        c = counts[(row["policy_id"], row["hour"])]
        c[0], c[1], c[2] = row["n"], row["compared"], row["agreed"]


_DECISION = Decision._meta.db_table
# One partition at a time: a request's decisions share one millisecond, so one
# partition, and each join stays the size of a day.
_PARTITION_COUNTS_SQL = """
    SELECT d.policy_id, date_trunc('hour', d.created_at), count(*),
           count(a.id), count(*) FILTER (WHERE a.tip_id = d.tip_id)
    FROM "{table}" d
    LEFT JOIN "{table}" a ON a.request_id = d.request_id AND a.role = %s
        AND d.role = %s
    WHERE d.created_at >= %s
    GROUP BY 1, 2
"""


def _decision_counts_by_partition(counts: Counts, since: dt.datetime | None) -> None:
    since = hour_of(since) if since else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    tables = [f"{_DECISION}_default"] + [
        name for day, name in day_partitions(_DECISION).items() if day + DAY > since
    ]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                _PARTITION_COUNTS_SQL.format(table=table),
                [Role.ACTIVE, Role.SHADOW, since],  # PostgreSQL only
            )
            for policy_id, hour, n, compared, agreed in cursor.fetchall():
                c = counts[(policy_id, hour)]
                c[0] += n
                c[1] += compared
                c[2] += agreed


def activity_stored(*, since: dt.datetime | None = None) -> Counts:
    """The roll-up per (policy, hour), shards summed, zero rows left out."""
    rows = ActivityHour.objects.all()
    if since is not None:
        rows = rows.filter(hour__gte=hour_of(since))
    stored = {}
    for row in (
        rows.values("policy_id", "hour")
        .annotate(**{f"{m}_all": Sum(m) for m in MEASURES})
        .order_by()
    ):
        values = [row[f"{m}_all"] for m in MEASURES]
        if any(values):
            stored[(row["policy_id"], row["hour"])] = values
    return stored


def activity_rebuild() -> int:
    """Recount the whole roll-up from the rows (the migration's backfill, a
    bench's loader); answers how many rows it wrote. Hours retention dropped
    are lost: run it only on a log that is complete."""
    counts = activity_counts()
    ActivityHour.objects.all().delete()
    ActivityHour.objects.bulk_create(
        [
            ActivityHour(
                policy_id=policy_id,
                hour=hour,
                **dict(zip(MEASURES, values, strict=True)),
            )
            for (policy_id, hour), values in counts.items()
        ],
        batch_size=1000,
    )
    return len(counts)
