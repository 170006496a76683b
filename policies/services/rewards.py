"""Rewards: a policy (and each policy that learns from live rewards) learns
from one, under row locks on the user's states; each update is logged."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from oo_ml.db import (
    aware,
    direct_cursor,
    fetch_all,
    fetch_one,
    for_update,
    names_lock,
    on_postgresql,
    recoverable,
)
from oo_ml.errors import Conflict, InvalidInput, NotFound
from oo_ml.idempotency import fingerprint as request_fingerprint
from oo_ml.idempotency import previous_or_conflict
from policies import bandits, rollups
from policies.models import (
    BanditState,
    Decision,
    Policy,
    Reward,
    Role,
    array_to_bytes,
    state_from_bytes,
)
from policies.selectors import POLICY_COLUMNS, POLICY_WIDTH, policy_from_row


@dataclass(frozen=True, slots=True)
class RewardResult:
    applied: bool
    replayed: bool
    policy: str
    user_id: str
    tip_id: str
    reward: float
    decision_id: uuid.UUID | None
    event_id: str | None
    reward_count: int
    cumulative_reward: float
    # The other policies the reward trained: those learning from live rewards.
    learned_by: tuple[str, ...] = ()


# The decision a reward names, what a reward reads of it, and its policy: plain
# SQL (oo_ml/db.py), where the ORM's query cost more than the rest of the reward.
_DECISION_SQL = f"""
    SELECT d.created_at, d.user_id, d.candidates, d.context, d.profile, d.features,
        {POLICY_COLUMNS}
    FROM {Decision._meta.db_table} d
    JOIN {Policy._meta.db_table} p ON p.id = d.policy_id
    WHERE d.id = %s
"""
_DECISION_JSON = tuple(
    Decision._meta.get_field(name)
    for name in ("candidates", "context", "profile", "features")
)


def _decision_read(decision_id: uuid.UUID) -> Decision | None:
    """The decision ``decision_id`` with the fields a reward reads, or None."""
    with direct_cursor() as cursor:
        row = fetch_one(_DECISION_SQL, [_db_uuid(decision_id)], cursor)
    if row is None:
        return None
    created_at, user_id, *documents = row[:6]
    return Decision(
        id=decision_id,
        created_at=aware(created_at),
        user_id=user_id,
        policy=policy_from_row(row[6:]),
        **{
            field.name: field.from_db_value(text, None, connection)
            for field, text in zip(_DECISION_JSON, documents, strict=True)
        },
    )


def decision_candidate(
    *, decision_id: uuid.UUID, user_id: str, tip_id: str, policy_name: str | None
) -> tuple[Decision, int]:
    """The decision and the index of ``tip_id`` among its candidates, checked:
    it exists, is this user's (and the named policy's), and offered the tip."""
    decision = _decision_read(decision_id)
    if decision is None:
        raise NotFound(f"No decision {decision_id}.", field="decision_id")
    if decision.user_id != user_id:
        raise InvalidInput(
            f"Decision {decision_id} was made for another user.", field="user_id"
        )
    if policy_name is not None and decision.policy.name != policy_name:
        raise InvalidInput(
            f"Decision {decision_id} was made by {decision.policy.name}, "
            f"not {policy_name}.",
            field="decision_id",
        )
    index = decision.candidate_index(tip_id)
    if index is None:
        raise InvalidInput(
            f"{tip_id!r} is not a candidate of decision {decision_id}.", field="tip_id"
        )
    return decision, index


def decision_gone(decision_id: uuid.UUID | None) -> None:
    """After an IntegrityError: NotFound if the decision a write named is gone.

    A reset can delete the user's decisions while a reward for one of them is in
    flight; the deferred foreign key then fails at commit. That is a decision
    that no longer exists (404), not a server error.
    """
    if decision_id is not None and not Decision.objects.filter(pk=decision_id).exists():
        raise NotFound(
            f"Decision {decision_id} was cleared (its user was reset).",
            field="decision_id",
        ) from None


_STATE = BanditState._meta.db_table
_POLICY = Policy._meta.db_table
_REWARD = Reward._meta.db_table
# The reward hot path is plain SQL: see oo_ml/db.py for why. One statement finds
# the policies a reward trains and reads the user's states under them, in one
# order (by policy id), with each row's version (PostgreSQL's xmin: any update
# makes a new one), and counts the policies, so a missing state shows.
_STATES_SQL = f"""
    SELECT {POLICY_COLUMNS}, s.id, s.a_bytes, s.b_bytes, s.reward_count,
        s.cumulative_reward, {{version}},
        (SELECT COUNT(*) FROM {_POLICY} p WHERE {{which}})
    FROM {_STATE} s JOIN {_POLICY} p ON p.id = s.policy_id
    WHERE s.user_id = %(user)s AND ({{which}})
    ORDER BY p.id
"""
_POLICIES_SQL = f"SELECT {POLICY_COLUMNS} FROM {_POLICY} p WHERE {{which}}"
# Which policies a reward trains: the one it is for, and (unless a route named
# one) every policy that learns from live rewards.
_NAMED = "p.name = %(value)s"
_DECIDED = "p.id = %(value)s OR p.learns_live"
_ACTIVE = "p.role = %(value)s OR p.learns_live"
_STATE_UPDATE_SQL = f"""
    UPDATE {_STATE}
    SET a_bytes = %s, b_bytes = %s, reward_count = reward_count + 1,
        cumulative_reward = cumulative_reward + %s, updated_at = %s
    WHERE id = %s
"""
# PostgreSQL: every learner's state in one statement, which ends the reward
# rows' insert. Under the rows' locks, the order of the updates is free.
_STATES_UPDATE_SQL = f"""
    UPDATE {_STATE} AS s
    SET a_bytes = v.a, b_bytes = v.b, reward_count = s.reward_count + 1,
        cumulative_reward = s.cumulative_reward + v.r, updated_at = v.t
    FROM (VALUES {{rows}}) AS v(a, b, r, t, id, version){{held}}
    WHERE s.id = v.id{{unmoved}}
"""
_STATES_UPDATE_ROW = (
    "(%s::bytea, %s::bytea, %s::float8, %s::timestamptz, %s::bigint, %s::xid)"
)
# Without the locks: each state only if it is still the version read, and the
# whole statement (reward rows, roll-up, states) fails unless every one was, or
# if the decision rewarded is gone or, taking one reward, has had one: the
# locked path then answers why (policies_state_moved, migration 0010). The rows
# are locked first in the locked path's order (by policy), so the two paths
# never wait for each other in a circle.
_UNMOVED_UPDATE_SQL = _STATES_UPDATE_SQL.format(
    rows="{rows}",
    held=", held h",
    unmoved=" AND h.id = s.id AND s.xmin = v.version RETURNING 1",
)
_UNLOCKED_UPDATE_SQL = f"""
    , held AS (
        SELECT s.id FROM {_STATE} s WHERE s.user_id = %s
        ORDER BY s.policy_id FOR UPDATE)
    , moved AS ({_UNMOVED_UPDATE_SQL})
    SELECT CASE WHEN (SELECT COUNT(*) FROM moved) = %s{{decision}} THEN 0
        ELSE policies_state_moved() END
"""
# When the unlocked write changed nothing and the locked path takes over: a
# state moved or a decision's check failed (serialization_failure), a deadlock
# with another writer of the same rows, or a database that has not run
# migration 0010 yet (undefined_function: PostgreSQL looks the function up
# whether or not it is called).
_TRY_LOCKED = {"40001", "40P01", "42883"}


def _states_update_sql(
    updates: list[list],
    *,
    user_id: str,
    locked: bool,
    decision: Decision | None = None,
) -> tuple[str, list]:
    """The end of the reward statement, updating the learners' states on
    PostgreSQL, and its parameters: ``updates`` holds [A, b, reward, time,
    state id, version] for each learner. Unlocked, it also checks the versions
    and what ``_decision_hold`` and ``_already_rewarded`` check under the
    locks."""
    rows = ", ".join([_STATES_UPDATE_ROW] * len(updates))
    params = [v for u in updates for v in u]
    if locked:
        return " " + _STATES_UPDATE_SQL.format(rows=rows, held="", unmoved=""), params
    params = [user_id, *params, len(updates)]
    checks = ""
    if decision is not None:
        checks = f" AND EXISTS ({_DECISION_HOLD_SQL.format(lock='')})"
        params.append(_db_uuid(decision.id))
        if settings.REWARD_AGGREGATION == "first":
            checks += f" AND NOT EXISTS ({_EARLIER_REWARD_SQL})"
            params.extend(_earlier_reward_params(decision))
    return _UNLOCKED_UPDATE_SQL.format(rows=rows, decision=checks), params


# Bounded below by the decision's time (less a day for clocks apart): the
# reward log is partitioned by day, and a reward follows its decision.
_EARLIER_REWARD_SQL = f"""
    SELECT event_id, reward, created_at FROM {_REWARD}
    WHERE decision_id = %s AND NOT learned AND created_at >= %s
    ORDER BY created_at LIMIT 1
"""
# Under the user's locks: the decision is still there (a reset or retention may
# have removed it since it was read), and stays until commit (a reset's delete
# waits for it), as a foreign key would have it. The log has no foreign keys:
# it is partitioned (docs/logs.md).
_DECISION_HOLD_SQL = f"SELECT 1 FROM {Decision._meta.db_table} WHERE id = %s{{lock}}"


@dataclass(slots=True)
class _State:
    policy: Policy
    id: int
    a: np.ndarray
    b: np.ndarray
    reward_count: int
    cumulative_reward: float
    version: str | None  # PostgreSQL's xmin of the row read


def _states_read(
    *, user_id: str, which: str, value: Any, cursor: CursorWrapper, locked: bool
) -> list[_State] | None:
    """The user's states under the policies ``which`` selects, in policy-id
    order. ``locked``: row-locked until commit, and created if new (two rewards
    for one user lock the same rows in the same order, so they queue rather
    than deadlock). Unlocked: None if one is missing."""
    params = {"user": user_id, "value": value}
    version = "s.xmin::text" if on_postgresql() else "NULL"
    sql = _STATES_SQL.format(which=which, version=version)
    if locked:
        sql += for_update(of="s")
    rows = fetch_all(sql, params, cursor)
    if not rows or len(rows) < rows[0][-1]:
        if not locked:
            return None
        policies = [
            policy_from_row(row)
            for row in fetch_all(_POLICIES_SQL.format(which=which), params, cursor)
        ]
        have = {row[0] for row in rows}
        new = [
            BanditState(
                policy=policy,
                user_id=user_id,
                a_bytes=array_to_bytes(a),
                b_bytes=array_to_bytes(b),
            )
            for policy in sorted(policies, key=lambda p: p.id)
            if policy.id not in have
            for a, b in [bandits.initial_state(policy.dimension)]
        ]
        # A concurrent first reward may create them first: then we wait for
        # its locks.
        BanditState.objects.bulk_create(new, ignore_conflicts=True)
        rows = fetch_all(sql, params, cursor)
    states = []
    for row in rows:
        policy = policy_from_row(row[:POLICY_WIDTH])
        state_id, a_bytes, b_bytes, count, cumulative, version, _ = row[POLICY_WIDTH:]
        a, b = state_from_bytes(a_bytes, b_bytes, policy.dimension)
        states.append(_State(policy, state_id, a, b, count, cumulative, version))
    return states


def learned_by(previous: Reward) -> tuple[str, ...]:
    """The policies that learned from an applied reward: written with it."""
    return tuple(
        Reward.objects.filter(
            user_id=previous.user_id,
            tip_id=previous.tip_id,
            created_at=previous.created_at,
            learned=True,
        )
        .order_by("policy_id")
        .values_list("policy__name", flat=True)
    )


def _replay_or_conflict(*, event_id: str, fingerprint: str) -> RewardResult | None:
    """None if ``event_id`` is new; the earlier answer if this is the same request
    again; Conflict if the id was used for a different one."""
    previous = previous_or_conflict(
        Reward.objects.select_related("policy"),
        event_id=event_id,
        fingerprint=fingerprint,
    )
    if previous is None:
        return None
    state = BanditState.objects.filter(
        policy=previous.policy, user_id=previous.user_id
    ).first()
    return RewardResult(
        applied=False,
        replayed=True,
        policy=previous.policy.name,
        user_id=previous.user_id,
        tip_id=previous.tip_id,
        reward=previous.reward,
        decision_id=previous.decision_id,
        event_id=event_id,
        reward_count=state.reward_count if state else 0,
        cumulative_reward=state.cumulative_reward if state else 0.0,
        learned_by=learned_by(previous),
    )


def _db_uuid(value: uuid.UUID):
    """A uuid as a raw statement takes it (SQLite: hex text, as the ORM stores)."""
    return Decision._meta.pk.get_db_prep_value(value, connection)


def _decision_hold(decision: Decision, cursor: CursorWrapper) -> None:
    """NotFound unless the decision is still stored; held until commit."""
    lock = " FOR KEY SHARE" if connection.features.has_select_for_update else ""
    params = [_db_uuid(decision.id)]
    if fetch_one(_DECISION_HOLD_SQL.format(lock=lock), params, cursor) is None:
        raise NotFound(
            f"Decision {decision.id} was cleared (its user was reset, or it "
            "passed the log's retention).",
            field="decision_id",
        )


def user_states_lock_name(user_id: str) -> str:
    """The lock a user's reset and the rewards that read their states under
    locks take first (``names_lock``), in that order before any row lock: a
    reward that creates a user's states keeps them until it commits, and a
    reset waits for it rather than deleting them between their creation and
    their use."""
    return f"user-states:{user_id}"


def _locks_take(*, user_id: str, event_id: str | None, cursor: CursorWrapper) -> None:
    """The locked path's first locks: the user's (above), and the event id's,
    where the log is partitioned: its event ids cannot have a unique index
    (docs/logs.md), so two posts of one id queue here and the second finds the
    first (plain tables: the unique index stops a second one)."""
    names = [user_states_lock_name(user_id)]
    if event_id is not None:
        names.append(f"reward-event-id:{event_id}")
    names_lock(names, cursor)


def _earlier_reward_params(decision: Decision) -> list:
    return [
        _db_uuid(decision.id),
        connection.ops.adapt_datetimefield_value(
            decision.created_at - timedelta(days=1)
        ),
    ]


def _already_rewarded(decision: Decision, cursor: CursorWrapper) -> None:
    """Conflict if the decision has had its reward (one per decision: docs/rewards.md).

    Asked under the user's state locks: a concurrent reward for the same
    decision has committed by then, or is still waiting behind us.
    """
    decision_id = decision.id
    earlier = fetch_one(_EARLIER_REWARD_SQL, _earlier_reward_params(decision), cursor)
    if earlier is None:
        return
    event_id, reward, created_at = earlier
    named = f" (event_id {event_id!r})" if event_id else ""
    raise Conflict(
        f"Decision {decision_id} was already rewarded {reward:+g}{named} at "
        f"{created_at:%Y-%m-%d %H:%M:%S} UTC; a decision is rewarded once "
        "(OO_ML_REWARD_AGGREGATION=sum applies every reward).",
        field="decision_id",
        code="already_rewarded",
    )


def _encoded(job: _Reward, dimension: int) -> np.ndarray:
    """The rewarded candidate encoded in ``dimension`` (docs/features.md): in the
    context and profile the decision logged, or without a decision, the body's."""
    decision, index = job.decision, job.index
    if decision is not None and index is not None:
        features = decision.candidates[index]["features"]
        hour = decision.context["hour_of_day"]
        day_of_week = decision.context["day_of_week"]
        profile = decision.profile
    else:
        features, day_of_week, profile = job.features, job.day_of_week, job.profile
        hour = features["hour_of_day"]
    return bandits.encode(
        [features],
        hours=[hour],
        day_of_week=day_of_week,
        profile=profile,
        dimension=dimension,
    )[0]


def _logged(job: _Reward, policy: Policy) -> np.ndarray | None:
    """The vector ``policy`` logged for the rewarded candidate, if it decided."""
    decision, index = job.decision, job.index
    if decision is None or index is None or policy.id != decision.policy_id:
        return None
    return np.asarray(decision.features[index], dtype=float)


def reward_apply(
    *,
    user_id: str,
    tip_id: str,
    reward: float,
    features: Mapping[str, Any],
    day_of_week: int,
    profile: Mapping[str, Any],
    decision_id: uuid.UUID | None = None,
    event_id: str | None = None,
    policy_name: str | None = None,
) -> RewardResult:
    """Apply one reward: A += x x^T, b += r x, under row locks on the user's states.

    With ``decision_id`` the decision's policy learns, on the vector it logged;
    otherwise the policy named (default: the active one) learns, on a vector
    rebuilt from ``features``. Unless a policy is named, every other policy that
    learns from live rewards learns too, each on its own encoding (docs/rewards.md), and
    each update is a row of the reward log. With the "first" aggregation (the
    default) a decision takes one reward: a later one is a Conflict. A repeated
    ``event_id`` changes nothing.
    """
    said = {
        "user_id": user_id,
        "tip_id": tip_id,
        "reward": reward,
        "features": features,
        "day_of_week": day_of_week,
        "profile": profile,
    }
    # What tells a replay of an event id from its reuse; without one, a reward
    # is never replayed, and its rows keep none.
    fingerprint = ""
    if event_id is not None:
        fingerprint = request_fingerprint(
            **said, decision_id=decision_id, policy=policy_name
        )
        if replay := _replay_or_conflict(event_id=event_id, fingerprint=fingerprint):
            return replay
    decision, index = None, None
    if decision_id is not None:
        decision, index = decision_candidate(
            decision_id=decision_id,
            user_id=user_id,
            tip_id=tip_id,
            policy_name=policy_name,
        )
    if policy_name is not None:
        which, value, is_target = _NAMED, policy_name, lambda p: p.name == policy_name
    elif decision is not None:
        target_id = decision.policy_id
        which, value, is_target = _DECIDED, target_id, lambda p: p.id == target_id
    else:
        which, value, is_target = _ACTIVE, Role.ACTIVE, lambda p: p.role == Role.ACTIVE
    job = _Reward(
        **said,
        decision=decision,
        index=index,
        event_id=event_id,
        fingerprint=fingerprint,
        policy_name=policy_name,
        now=timezone.now(),
        which=which,
        value=value,
        is_target=is_target,
    )
    try:
        # First without locks, unless the reward carries an event id (whose
        # replay check needs its lock). If anything moved meanwhile, or a state
        # is new, it is done again under the locks.
        if event_id is None and on_postgresql():
            with direct_cursor() as cursor:
                result = _learn(job, cursor=cursor, locked=False)
            if result is not None:
                return result
        with transaction.atomic(), connection.cursor() as cursor:
            return _learn(job, cursor=cursor, locked=True)
    except IntegrityError:
        decision_gone(decision_id)
        # The same event_id arrived concurrently for another user or policy.
        if event_id is None or not (
            replay := _replay_or_conflict(event_id=event_id, fingerprint=fingerprint)
        ):
            raise
        return replay


@dataclass(frozen=True, slots=True)
class _Reward:
    """A reward to apply, its request checked: what ``_learn`` works from."""

    user_id: str
    tip_id: str
    reward: float
    features: Mapping[str, Any]
    day_of_week: int
    profile: Mapping[str, Any]
    decision: Decision | None
    index: int | None  # the rewarded candidate's, in the decision
    event_id: str | None
    fingerprint: str
    policy_name: str | None
    now: datetime
    # The policies it trains (a condition and its value) and the one it is for.
    which: str
    value: Any
    is_target: Callable[[Policy], bool]


def _learn(job: _Reward, *, cursor: CursorWrapper, locked: bool) -> RewardResult | None:
    """``reward_apply``'s work on the user's states, read ``locked`` (in the
    caller's transaction) or not. Unlocked, on PostgreSQL only, None when it
    changed nothing: a state was missing, or had moved before the write (then
    the write, one statement, failed whole)."""
    if locked:
        _locks_take(user_id=job.user_id, event_id=job.event_id, cursor=cursor)
        if job.event_id is not None and (
            replay := _replay_or_conflict(
                event_id=job.event_id, fingerprint=job.fingerprint
            )
        ):
            return replay
    states = _states_read(
        user_id=job.user_id,
        which=job.which,
        value=job.value,
        cursor=cursor,
        locked=locked,
    )
    if states is None:
        return None
    target = next((s for s in states if job.is_target(s.policy)), None)
    if target is None:
        raise NotFound(
            "No policy is active."
            if job.policy_name is None
            else f"No policy named {job.policy_name!r}.",
            field="policy",
        )
    if job.decision is not None and locked:
        _decision_hold(job.decision, cursor)
        if settings.REWARD_AGGREGATION == "first":
            _already_rewarded(job.decision, cursor)
    rows, updates = [], []
    # Each policy's encoding of the candidate: the deciding policy's is the
    # vector it logged; the others', the candidate encoded once in the widest
    # of their dimensions, each taking its part (a narrower encoding is the
    # start of a wider one, as /score has it).
    logged = [_logged(job, state.policy) for state in states]
    others = [
        s.policy.dimension for s, x in zip(states, logged, strict=True) if x is None
    ]
    wide = _encoded(job, max(others)) if others else None
    for state, x in zip(states, logged, strict=True):
        if x is None:
            x = wide[: state.policy.dimension]
        a, b = bandits.update(state.a, state.b, x, job.reward)
        own = state is target
        rows.append(
            SimpleNamespace(  # every Reward field: oo_ml.db.rows_insert_sql
                id=None,
                policy_id=state.policy.id,
                user_id=job.user_id,
                tip_id=job.tip_id,
                reward=job.reward,
                decision_id=None if job.decision is None else job.decision.id,
                event_id=job.event_id if own else None,
                fingerprint=job.fingerprint,
                features=x.tolist(),
                vector=array_to_bytes(x)
                if state.policy.algorithm == bandits.HYBRID
                else None,
                learned=not own,
                created_at=job.now,
            )
        )
        updates.append(
            [
                array_to_bytes(a),
                array_to_bytes(b),
                job.reward,
                job.now,
                state.id,
                state.version,
            ]
        )
    if not on_postgresql():
        rollups.rewards_insert(rows, cursor)
        cursor.executemany(_STATE_UPDATE_SQL, [u[:5] for u in updates])
    elif locked:
        # The log rows, the roll-up and the states: one statement.
        rollups.rewards_insert(
            rows, cursor, _states_update_sql(updates, user_id=job.user_id, locked=True)
        )
    else:
        then = _states_update_sql(
            updates, user_id=job.user_id, locked=False, decision=job.decision
        )
        try:
            with recoverable():
                rollups.rewards_insert(rows, cursor, then)
        except DatabaseError as error:
            if getattr(error.__cause__, "sqlstate", None) not in _TRY_LOCKED:
                raise
            return None
    return RewardResult(
        applied=True,
        replayed=False,
        policy=target.policy.name,
        user_id=job.user_id,
        tip_id=job.tip_id,
        reward=job.reward,
        decision_id=None if job.decision is None else job.decision.id,
        event_id=job.event_id,
        reward_count=target.reward_count + 1,
        cumulative_reward=target.cumulative_reward + job.reward,
        learned_by=tuple(s.policy.name for s in states if s is not target),
    )
