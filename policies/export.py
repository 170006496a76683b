"""The decision log as JSON lines, for off-policy tools (docs/logs.md).

One line per decision, in id (time) order, with its own rewards joined: what
Vowpal Wabbit's contextual-bandit formats and Open Bandit Pipeline's logged
feedback (action, reward, pscore, context) are built from. Streamed: a
server-side cursor reads CHUNK decisions at a time, and each chunk's rewards
come in one more query, so memory stays flat whatever the range. The JSON
columns are passed through as PostgreSQL prints them, never parsed here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

from django.db import connection

from oo_ml.partitions import uuid7_floor
from policies.models import Decision, Policy, Reward

CHUNK = 2_000
# The export's version: bump it when a field changes meaning or goes.
SCHEMA = 1

_DECISION = Decision._meta.db_table
_REWARD = Reward._meta.db_table
_JSON = ("context", "profile", "candidates", "features", "estimates", "bonuses")


def _decisions_sql(with_policy: bool) -> str:
    text = "::text" if connection.vendor == "postgresql" else ""
    columns = ", ".join(f"{name}{text}" for name in _JSON)
    policy = " AND policy_id = %s" if with_policy else ""
    return f"""
        SELECT id, request_id, created_at, user_id, policy_id, role, {columns},
               pick_index, tip_id, score, propensity, exploring
        FROM {_DECISION}
        WHERE id >= %s AND id < %s{policy}
        ORDER BY id
    """


def _rewards_sql(n: int) -> str:
    # Bounded below by the range's start less a day (as reward_apply's check):
    # the reward log is partitioned by day, and a reward follows its decision.
    return f"""
        SELECT decision_id, reward, created_at FROM {_REWARD}
        WHERE decision_id IN ({", ".join(["%s"] * n)}) AND NOT learned
          AND created_at >= %s
        ORDER BY created_at
    """


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _iso(value) -> str:
    if isinstance(value, str):  # SQLite
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def log_export(
    *, since: dt.datetime, until: dt.datetime, policy: str | None = None
) -> Iterator[str]:
    """The decisions made in [since, until) (of ``policy`` alone if named), one
    JSON line each (no newline), oldest first, with their rewards."""
    names = dict(Policy.objects.values_list("id", "name"))
    pk = Decision._meta.pk
    params: list = [
        pk.get_db_prep_value(uuid7_floor(at), connection) for at in (since, until)
    ]
    if policy is not None:
        policy_id = next((i for i, n in names.items() if n == policy), None)
        if policy_id is None:
            return
        params.append(policy_id)
    dumps = json.dumps
    after = connection.ops.adapt_datetimefield_value(since - dt.timedelta(days=1))
    with connection.chunked_cursor() as cursor:
        cursor.execute(_decisions_sql(policy is not None), params)
        while rows := cursor.fetchmany(CHUNK):
            rewards: dict[uuid.UUID, list] = {}
            with connection.cursor() as other:
                ids = [row[0] for row in rows]
                after = connection.ops.adapt_datetimefield_value(
                    since - dt.timedelta(1)
                )
                other.execute(_rewards_sql(len(ids)), [*ids, after])
                for decision_id, reward, at in other.fetchall():
                    rewards.setdefault(_uuid(decision_id), []).append((reward, at))
            for (
                decision_id,
                request_id,
                created_at,
                user_id,
                policy_id,
                role,
                context,
                profile,
                candidates,
                features,
                estimates,
                bonuses,
                pick_index,
                tip_id,
                score,
                propensity,
                exploring,
            ) in rows:
                decision_id = _uuid(decision_id)
                got = rewards.get(decision_id)
                if got:
                    reward = repr(float(sum(r for r, _ in got)))
                    rewarded_at = f'"{_iso(got[0][1])}"'
                else:
                    reward = rewarded_at = "null"
                yield (
                    f'{{"schema":{SCHEMA},"decision_id":"{decision_id}",'
                    f'"request_id":"{_uuid(request_id)}",'
                    f'"created_at":"{_iso(created_at)}",'
                    f'"user_id":{dumps(user_id)},"policy":{dumps(names[policy_id])},'
                    f'"role":"{role}","context":{context},"profile":{profile},'
                    f'"candidates":{candidates},"features":{features},'
                    f'"estimates":{estimates},"bonuses":{bonuses or "null"},'
                    f'"pick_index":{pick_index},"tip_id":{dumps(tip_id)},'
                    f'"score":{float(score)!r},"propensity":{float(propensity)!r},'
                    f'"exploring":{"true" if exploring else "false"},'
                    f'"reward":{reward},"rewarded_at":{rewarded_at},'
                    f'"rewards":{len(got) if got else 0}}}'
                )
