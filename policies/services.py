"""Writes: decisions, rewards and resets. Each is atomic and keyword-only."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Count
from django.utils import timezone

from oo_ml.db import fetch_all, fetch_one, for_update, names_lock
from oo_ml.errors import Conflict, InvalidInput, NotFound
from oo_ml.idempotency import fingerprint as request_fingerprint
from oo_ml.idempotency import previous_or_conflict
from oo_ml.models import uuid7
from policies import bandits, rollups, stats
from policies.models import (
    BanditState,
    ChangeAction,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    Role,
    SharedModel,
    array_from_bytes,
    array_to_bytes,
    state_from_bytes,
)
from policies.selectors import (
    POLICY_COLUMNS,
    POLICY_WIDTH,
    LoadedState,
    policy_from_row,
    promotion_to_undo,
    reward_vectors,
    scoring_states,
)

logger = logging.getLogger(__name__)


def _decision_build(
    *,
    loaded: LoadedState,
    x_full: np.ndarray,
    request_id: uuid.UUID,
    user_id: str,
    candidates: Sequence[Mapping[str, Any]],
    context: Mapping[str, int],
    profile: Mapping[str, Any],
    rng: np.random.Generator,
    now: datetime,
) -> Decision:
    policy = loaded.policy
    x = x_full[:, : policy.dimension]
    choice = bandits.choose(
        policy.algorithm,
        policy.params,
        loaded.a,
        loaded.b,
        x,
        rng=rng,
        shared=loaded.shared,
    )
    return Decision(
        id=uuid7(now),
        created_at=now,
        request_id=request_id,
        policy=policy,
        role=policy.role,
        user_id=user_id,
        candidates=candidates,
        context=context,
        profile=profile,
        features=x.tolist(),
        estimates=choice.estimates.tolist(),
        bonuses=None if choice.bonuses is None else choice.bonuses.tolist(),
        pick_index=choice.index,
        tip_id=candidates[choice.index]["id"],
        score=choice.score,
        propensity=choice.propensity,
        exploring=choice.exploring,
        model_version=loaded.model_version,
        shared_estimates=None if choice.shared is None else choice.shared.tolist(),
    )


def _stored_or_nothing(
    stored_profile: Callable[[str], Mapping[str, Any]], user_id: str
) -> Mapping[str, Any]:
    """The stored profile, or nothing if reading it fails: the features then
    take their neutral values, and the answer still comes back (SPEC §7)."""
    try:
        return stored_profile(user_id)
    except Exception:
        logger.exception("stored profile of %s unavailable; scoring without", user_id)
        return {}


def decision_make(
    *,
    user_id: str,
    candidates: Sequence[Mapping[str, Any]],
    context: Mapping[str, int],
    profile: Mapping[str, Any],
    rng: np.random.Generator,
    policy_name: str | None = None,
    stored_profile: Callable[[str], Mapping[str, Any]] | None = None,
) -> Decision:
    """Pick a candidate and log the decision; answers the first policy's decision.

    Without ``policy_name`` the active policy decides and every enabled shadow
    decides too, on the same input, logged under the same request id. A shadow
    that fails is logged and skipped: it never fails the active answer.

    ``profile`` is what the caller sent. When a policy that reads profile
    features scores, or learns from live rewards, and the caller left some out,
    ``stored_profile(user_id)`` fills them in: the caller's values win name by
    name (a null they sent stays null). It is not called otherwise, so a
    request no such policy needs costs no profile read. The values used are
    logged with the decision: a policy that learns from its reward later
    encodes the rewarded candidate in them.
    """
    # One cursor for the read and the insert (a cursor's set-up is not free).
    with connection.cursor() as cursor:
        scoring = scoring_states(
            user_id=user_id, policy_name=policy_name, cursor=cursor
        )
        states, dimension = scoring.states, scoring.dimension
        if (
            stored_profile is not None
            and dimension == bandits.PROFILE_DIMENSION
            and not profile.keys() >= set(bandits.PROFILE_NAMES)
        ):
            profile = {**_stored_or_nothing(stored_profile, user_id), **profile}
        profile = {name: profile.get(name) for name in bandits.PROFILE_NAMES}
        hour = context["hour_of_day"]
        x_full = bandits.encode(
            [c["features"] for c in candidates],
            hours=[hour] * len(candidates),
            day_of_week=context["day_of_week"],
            profile=profile,
            dimension=dimension,
        )
        # One time for the request's rows: one partition, one roll-up hour.
        now = timezone.now()
        request_id = uuid7(now)
        common = dict(
            now=now,
            x_full=x_full,
            request_id=request_id,
            user_id=user_id,
            candidates=candidates,
            context=context,
            profile=profile,
            rng=rng,
        )
        decisions = [_decision_build(loaded=states[0], **common)]
        for shadow in states[1:]:
            try:
                decisions.append(_decision_build(loaded=shadow, **common))
            except Exception:
                logger.exception(
                    "shadow %s failed to score; skipped", shadow.policy.name
                )
        rollups.decisions_insert(decisions, cursor)
    return decisions[0]


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


def decision_candidate(
    *, decision_id: uuid.UUID, user_id: str, tip_id: str, policy_name: str | None
) -> tuple[Decision, int]:
    """The decision and the index of ``tip_id`` among its candidates, checked:
    it exists, is this user's (and the named policy's), and offered the tip."""
    decision = Decision.objects.select_related("policy").filter(id=decision_id).first()
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
# the policies a reward trains and locks the user's states under them, in one
# order (by policy id), and counts the policies, so a missing state shows.
_STATES_LOCK_SQL = f"""
    SELECT {POLICY_COLUMNS}, s.id, s.a_bytes, s.b_bytes, s.reward_count,
        s.cumulative_reward,
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
class _LockedState:
    policy: Policy
    id: int
    a: np.ndarray
    b: np.ndarray
    reward_count: int
    cumulative_reward: float


def _states_lock(
    *, user_id: str, which: str, value: Any, cursor: CursorWrapper
) -> list[_LockedState]:
    """The user's states under the policies ``which`` selects, created if new,
    row-locked until commit, in policy-id order: two rewards for one user lock
    the same rows in the same order, so they queue rather than deadlock."""
    params = {"user": user_id, "value": value}
    sql = _STATES_LOCK_SQL.format(which=which) + for_update(of="s")
    rows = fetch_all(sql, params, cursor)
    if not rows or len(rows) < rows[0][-1]:
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
        state_id, a_bytes, b_bytes, reward_count, cumulative, _ = row[POLICY_WIDTH:]
        a, b = state_from_bytes(a_bytes, b_bytes, policy.dimension)
        states.append(_LockedState(policy, state_id, a, b, reward_count, cumulative))
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


def _replay_locked(
    *, event_id: str, fingerprint: str, cursor: CursorWrapper
) -> RewardResult | None:
    """The replay check again, under a lock on the event id, where the log is
    partitioned: its event ids cannot have a unique index (docs/logs.md), so
    two posts of one id queue here and the second finds the first."""
    if connection.vendor != "postgresql":
        return None  # plain tables: the unique index stops a second one
    names_lock([f"reward-event-id:{event_id}"], cursor)
    return _replay_or_conflict(event_id=event_id, fingerprint=fingerprint)


def _already_rewarded(decision: Decision, cursor: CursorWrapper) -> None:
    """Conflict if the decision has had its reward (SPEC §5: one per decision).

    Asked under the user's state locks: a concurrent reward for the same
    decision has committed by then, or is still waiting behind us.
    """
    decision_id = decision.id
    earlier = fetch_one(
        _EARLIER_REWARD_SQL,
        [
            _db_uuid(decision_id),
            connection.ops.adapt_datetimefield_value(
                decision.created_at - timedelta(days=1)
            ),
        ],
        cursor,
    )
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


def _vector(
    *,
    policy: Policy,
    decision: Decision | None,
    index: int | None,
    features: Mapping[str, Any],
    day_of_week: int,
    profile: Mapping[str, Any],
) -> np.ndarray:
    """``policy``'s encoding of the rewarded candidate (SPEC §3).

    The deciding policy's is the vector it logged. Any other policy encodes the
    candidate in the context and profile the decision logged; without a
    decision, every policy encodes the body in its own dimension.
    """
    if decision is not None and index is not None:
        if policy.id == decision.policy_id:
            return np.asarray(decision.features[index], dtype=float)
        features = decision.candidates[index]["features"]
        hour = decision.context["hour_of_day"]
        day_of_week = decision.context["day_of_week"]
        profile = decision.profile
    else:
        hour = features["hour_of_day"]
    return bandits.encode(
        [features],
        hours=[hour],
        day_of_week=day_of_week,
        profile=profile,
        dimension=policy.dimension,
    )[0]


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
    learns from live rewards learns too, each on its own encoding (SPEC §7), and
    each update is a row of the reward log. With the "first" aggregation (the
    default) a decision takes one reward: a later one is a Conflict. A repeated
    ``event_id`` changes nothing.
    """
    fingerprint = request_fingerprint(
        user_id=user_id,
        tip_id=tip_id,
        reward=reward,
        features=features,
        day_of_week=day_of_week,
        profile=profile,
        decision_id=decision_id,
        policy=policy_name,
    )
    if event_id is not None and (
        replay := _replay_or_conflict(event_id=event_id, fingerprint=fingerprint)
    ):
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
    now = timezone.now()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if event_id is not None and (
                replay := _replay_locked(
                    event_id=event_id, fingerprint=fingerprint, cursor=cursor
                )
            ):
                return replay
            states = _states_lock(
                user_id=user_id, which=which, value=value, cursor=cursor
            )
            target = next((s for s in states if is_target(s.policy)), None)
            if target is None:
                raise NotFound(
                    "No policy is active."
                    if policy_name is None
                    else f"No policy named {policy_name!r}.",
                    field="policy",
                )
            if decision is not None:
                _decision_hold(decision, cursor)
            if decision is not None and settings.REWARD_AGGREGATION == "first":
                _already_rewarded(decision, cursor)
            rows, updates = [], []
            for state in states:
                x = _vector(
                    policy=state.policy,
                    decision=decision,
                    index=index,
                    features=features,
                    day_of_week=day_of_week,
                    profile=profile,
                )
                a, b = bandits.update(state.a, state.b, x, reward)
                own = state is target
                rows.append(
                    Reward(
                        policy=state.policy,
                        user_id=user_id,
                        tip_id=tip_id,
                        reward=reward,
                        decision=decision,
                        event_id=event_id if own else None,
                        fingerprint=fingerprint,
                        features=x.tolist(),
                        vector=array_to_bytes(x)
                        if state.policy.algorithm == bandits.HYBRID
                        else None,
                        learned=not own,
                        created_at=now,
                    )
                )
                updates.append(
                    [array_to_bytes(a), array_to_bytes(b), reward, now, state.id]
                )
            rollups.rewards_insert(rows, cursor)
            cursor.executemany(_STATE_UPDATE_SQL, updates)
    except IntegrityError:
        decision_gone(decision_id)
        # The same event_id arrived concurrently for another user or policy.
        if event_id is None or not (
            replay := _replay_or_conflict(event_id=event_id, fingerprint=fingerprint)
        ):
            raise
        return replay
    return RewardResult(
        applied=True,
        replayed=False,
        policy=target.policy.name,
        user_id=user_id,
        tip_id=tip_id,
        reward=reward,
        decision_id=decision_id,
        event_id=event_id,
        reward_count=target.reward_count + 1,
        cumulative_reward=target.cumulative_reward + reward,
        learned_by=tuple(s.policy.name for s in states if s is not target),
    )


def _change_record(
    *,
    action: ChangeAction,
    policy: Policy,
    actor: AbstractBaseUser | None,
    before: dict,
    after: dict,
    user_id: str = "",
    evidence: dict | None = None,
) -> PolicyChange:
    return PolicyChange.objects.create(
        action=action,
        policy=policy,
        user_id=user_id,
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "system",
        before=before,
        after=after,
        evidence=evidence or {},
    )


@transaction.atomic
def policy_toggle(
    *, name: str, actor: AbstractBaseUser | None, enabled: bool | None = None
) -> Policy:
    """Turn a shadow's scoring on or off (flip it when ``enabled`` is None).

    Asking for the state it already has changes nothing and records nothing, so
    a double-clicked switch does not flip twice.
    """
    policy = _policy_for_switch(name)
    if policy.role != Role.SHADOW:
        raise Conflict(
            f"{name} is {policy.role}: only a shadow has an on/off switch.",
            field="name",
        )
    return _switch_flip(
        policy, "enabled", enabled, action=ChangeAction.TOGGLE, actor=actor
    )


def _policy_for_switch(name: str) -> Policy:
    policy = Policy.objects.select_for_update().filter(name=name).first()
    if policy is None:
        raise NotFound(f"No policy named {name!r}.", field="name")
    return policy


def _switch_flip(
    policy: Policy,
    field: str,
    wanted: bool | None,
    *,
    action: ChangeAction,
    actor: AbstractBaseUser | None,
) -> Policy:
    """Set a policy's on/off ``field`` (flip it when ``wanted`` is None),
    recorded; asking for the state it has changes and records nothing, so a
    double-clicked switch does not flip twice."""
    was = getattr(policy, field)
    new = not was if wanted is None else wanted
    if new != was:
        _change_record(
            action=action,
            policy=policy,
            actor=actor,
            before={field: was},
            after={field: new},
        )
        setattr(policy, field, new)
        policy.save(update_fields=[field, "updated_at"])
    return policy


@transaction.atomic
def policy_learning_set(
    *, name: str, actor: AbstractBaseUser | None, learns_live: bool | None = None
) -> Policy:
    """Turn a policy's learning from live rewards on or off (flip it when None).

    Any role may learn: a shadow to arrive warm if promoted, a retired policy
    to stay current. As with the toggle, asking for the state it has changes
    and records nothing.
    """
    return _switch_flip(
        _policy_for_switch(name),
        "learns_live",
        learns_live,
        action=ChangeAction.LEARNING,
        actor=actor,
    )


@dataclass(frozen=True, slots=True)
class Evidence:
    """A finished simulation that ran a shadow beside the active policy (SPEC §7):
    the paired per-user difference of mean reward, shadow - active, over
    ``users`` users, with its 95% interval [low, high] (None without one)."""

    run_id: str
    shadow: str
    active: str
    shadow_mean_reward: float
    active_mean_reward: float
    seed: int
    finished_at: str
    users: int
    difference: float
    low: float | None
    high: float | None
    difference_sd: float | None

    @property
    def interval(self) -> stats.Interval:
        return stats.Interval(
            self.difference, self.low, self.high, self.difference_sd, self.users
        )


def gate_margin() -> float:
    """How far below the active policy a shadow's interval may start (a setting)."""
    return float(settings.GATE_MARGIN)


# What a promotion changes, and a rollback puts back.
_SWITCHES = ("role", "enabled", "learns_live")


def _switches(policy: Policy) -> dict:
    return {field: getattr(policy, field) for field in _SWITCHES}


def _switches_set(policies: Sequence[tuple[Policy, Mapping]]) -> None:
    """Give each policy its switches, in the order given.

    The policy stepping down must come first: the database allows one active
    policy at any moment, even inside a transaction.
    """
    for policy, switches in policies:
        for field in _SWITCHES:
            setattr(policy, field, switches[field])
        policy.save(update_fields=[*_SWITCHES, "updated_at"])


def _policies_lock() -> dict[str, Policy]:
    """Every policy, locked in one order (by id), so two admins cannot interleave."""
    return {p.name: p for p in Policy.objects.select_for_update().order_by("id")}


@transaction.atomic
def policy_promote(
    *,
    name: str,
    actor: AbstractBaseUser | None,
    evidence_for: Callable[..., Evidence | None],
) -> Policy:
    """Make shadow ``name`` the active policy, if the evidence allows (SPEC §7).

    ``evidence_for(shadow=, active=)`` finds the evidence (the simulations app's
    ``promotion_evidence``): a finished simulation of this shadow beside the
    active policy in which the 95% interval of the paired per-user difference
    (shadow - active) starts at -margin or above (``promotion_refusal``).
    It is asked under the policies' locks, so it judges the policy that is
    active at that moment. Both keep their per-user state. Recorded with the
    evidence.
    """
    policies = _policies_lock()
    shadow = policies.get(name)
    if shadow is None:
        raise NotFound(f"No policy named {name!r}.", field="name")
    active = next((p for p in policies.values() if p.role == Role.ACTIVE), None)
    if shadow.role != Role.SHADOW:
        raise Conflict(f"{name} is {shadow.role}: only a shadow can be promoted.")
    if active is None:
        raise Conflict("No policy is active: there is nothing to compare with.")
    evidence = evidence_for(shadow=shadow, active=active)
    margin = gate_margin()
    refusal = promotion_refusal(
        shadow=name, active=active.name, evidence=evidence, margin=margin
    )
    if refusal:
        raise Conflict(refusal, field="name")
    before = {p.name: _switches(p) for p in (shadow, active)}
    # The old active becomes a shadow that does not score but keeps learning,
    # so a rollback hands it back warm.
    _switches_set(
        [
            (active, {"role": Role.SHADOW, "enabled": False, "learns_live": True}),
            (shadow, {**before[shadow.name], "role": Role.ACTIVE, "enabled": False}),
        ]
    )
    _change_record(
        action=ChangeAction.PROMOTE,
        policy=shadow,
        actor=actor,
        before={"role": Role.SHADOW, "active": active.name, "policies": before},
        after={
            "role": Role.ACTIVE,
            "shadow": active.name,
            "policies": {p.name: _switches(p) for p in (shadow, active)},
        },
        evidence={
            **dataclasses.asdict(evidence),
            "margin": margin,
            "verdict": stats.PASS,
        },
    )
    return shadow


def promotion_refusal(
    *,
    shadow: str,
    active: str,
    evidence: Evidence | None,
    margin: float | None = None,
) -> str | None:
    """Why ``shadow`` may not replace ``active`` on this evidence; None if it may.

    It may iff the lower end of the 95% interval of the paired difference
    (shadow - active) is at least -``margin`` (default: the setting).
    """
    if evidence is None or {evidence.shadow, evidence.active} != {shadow, active}:
        return (
            f"No finished simulation ran {shadow} beside the active policy "
            f"{active}: run one first."
        )
    margin = gate_margin() if margin is None else margin
    verdict = stats.gate_verdict(evidence.interval, margin=margin)
    if verdict.passed:
        return None
    where = f"In simulation {evidence.run_id} ({evidence.users:,} users)"
    diff = f"{shadow} - {active} = {evidence.difference:+.4f} per decision"
    floor = f"-{margin:g}" if margin else "0"
    if evidence.low is None:
        return (
            f"Inconclusive: {where}, {diff} has no interval (it needs at least 2 "
            "users, and a run summarised with per-user results): run a larger "
            "simulation."
        )
    ci = f"95% interval [{evidence.low:+.4f}, {evidence.high:+.4f}]"
    if verdict.outcome == stats.WORSE:
        return f"{where}, {diff}, {ci}: all of it below {floor}."
    if verdict.users_needed is None:
        needed = "the estimate sits on the margin: no number of users would decide it"
    else:
        needed = f"about {verdict.users_needed:,} users would decide it"
    return f"Inconclusive: {where}, {diff}, {ci} straddles {floor}; {needed}."


@transaction.atomic
def policy_rollback(*, actor: AbstractBaseUser | None) -> Policy:
    """Undo the latest promotion: both policies get back the role, scoring
    toggle and learning switch they had before it, in one step.

    Refused when there is nothing to undo, or when the active policy has changed
    since that promotion (roll back the later change first).
    """
    policies = _policies_lock()
    latest = promotion_to_undo()
    if latest is None:
        raise Conflict("There is no promotion to roll back.")
    promoted = policies[latest.policy.name]
    previous = policies.get(latest.before["active"])
    if promoted.role != Role.ACTIVE or previous is None:
        raise Conflict(
            f"{promoted.name} is no longer the active policy: the promotion of "
            f"{latest.created_at:%Y-%m-%d %H:%M} cannot be rolled back."
        )
    was = previous.role
    now = {p.name: _switches(p) for p in (promoted, previous)}
    # A promotion recorded before the switches were: roles only, as it did.
    restore = latest.before.get("policies") or {
        promoted.name: {**now[promoted.name], "role": Role.SHADOW, "enabled": False},
        previous.name: {**now[previous.name], "role": Role.ACTIVE, "enabled": False},
    }
    _switches_set(
        [
            (promoted, restore[promoted.name]),
            (previous, restore[previous.name]),
        ]
    )
    _change_record(
        action=ChangeAction.ROLLBACK,
        policy=previous,
        actor=actor,
        before={"role": was, "active": promoted.name, "policies": now},
        after={
            "role": Role.ACTIVE,
            "shadow": promoted.name,
            "policies": {p.name: _switches(p) for p in (promoted, previous)},
        },
        evidence={"undoes": str(latest.id)},
    )
    return previous


@dataclass(frozen=True, slots=True)
class ResetResult:
    user_id: str
    states_deleted: int
    decisions_deleted: int


@transaction.atomic
def user_reset(*, user_id: str, actor: AbstractBaseUser | None) -> ResetResult:
    """Clear the user's state under every policy and their decision history.

    Recorded in each touched policy's history with what was cleared. The reward
    log stays: it is the audit trail, and it keeps replayed event ids from being
    applied twice.
    """
    # Locked, so a reward landing meanwhile waits and then starts afresh.
    states = {
        s.policy_id: s
        for s in BanditState.objects.filter(user_id=user_id).select_for_update()
    }
    decisions = Decision.objects.filter(user_id=user_id)
    counts = dict(decisions.values_list("policy").annotate(n=Count("id")))
    if not states and not counts:
        raise NotFound(f"User {user_id!r} has no state or decisions.", field="user_id")
    for policy in Policy.objects.filter(id__in={*states, *counts}):
        state = states.get(policy.id)
        _change_record(
            action=ChangeAction.RESET,
            policy=policy,
            actor=actor,
            user_id=user_id,
            before={
                "reward_count": state.reward_count if state else 0,
                "cumulative_reward": state.cumulative_reward if state else 0.0,
                "decisions": counts.get(policy.id, 0),
            },
            after={"reward_count": 0, "cumulative_reward": 0.0, "decisions": 0},
        )
    BanditState.objects.filter(id__in=[s.id for s in states.values()]).delete()
    return ResetResult(user_id, len(states), _decisions_delete(user_id))


def _decisions_delete(user_id: str) -> int:
    """Delete a user's decisions without loading them, and take them out of
    the roll-ups. The rows that point at them (the reward log, events: all
    SET_NULL) keep their place and lose the link; ``QuerySet.delete()`` would
    fetch every decision, JSON and all, first.

    Deleted first: a reward in flight holds its decision (``_decision_hold``),
    so the delete waits for it to commit, and the links are cleared after.
    """
    with connection.cursor() as cursor:
        cursor.execute(_DECISIONS_DELETE_SQL, [user_id])
        deleted = cursor.fetchall()
        rollups.decisions_uncount((row[1:] for row in deleted), cursor)
    ids = [row[0] for row in deleted]
    for relation in Decision._meta.related_objects:
        for start in range(0, len(ids), 5000):
            relation.related_model._base_manager.filter(
                **{f"{relation.field.name}__in": ids[start : start + 5000]}
            ).update(**{relation.field.name: None})
    return len(deleted)


_DECISIONS_DELETE_SQL = f"""
    DELETE FROM {Decision._meta.db_table} WHERE user_id = %s
    RETURNING id, policy_id, created_at, role, tip_id, request_id
"""


# --- the shared model of a hybrid policy ----------------------------------------


def shared_model_refit(*, policy_name: str, full: bool = False) -> SharedModel | None:
    """Refit a hybrid policy's shared model from the reward log, in batch.

    Every reward row of the policy (its own decisions' and those it learned
    from live) carries its own D=12 vector of the rewarded candidate, which is
    all the shared model reads (``bandits.shared_features``). The sums of the
    latest version are extended with the rows logged since, so a refit reads
    only what is new (``full`` sums the whole log again). Idempotent: with no
    new reward there is no new version, and None is answered. Never run under
    a state lock: /score reads the latest version as it is committed.
    """
    policy = Policy.objects.filter(name=policy_name).first()
    if policy is None:
        raise NotFound(f"No policy named {policy_name!r}.", field="policy")
    if policy.algorithm != bandits.HYBRID:
        raise InvalidInput(
            f"{policy_name} is {policy.algorithm}: only a hybrid policy has a "
            "shared model.",
            field="policy",
        )
    started = time.perf_counter()
    latest = SharedModel.objects.filter(policy=policy).order_by("-version").first()
    d = bandits.SHARED_DIMENSION
    if latest is None or full:
        gram, moment, count, through = np.zeros((d, d)), np.zeros(d), 0, 0
    else:
        gram = array_from_bytes(latest.gram_bytes, (d, d))
        moment = array_from_bytes(latest.moment_bytes, (d,))
        count, through = latest.rewards, latest.through_reward_id
    new = 0
    for batch in reward_vectors(policy=policy, after_id=through):
        g, m = bandits.shared_moments(batch.xs, batch.rewards)
        gram += g
        moment += m
        new += len(batch.rewards)
        through = max(through, batch.last_id)
    if latest is not None and not full and new == 0:
        return None
    weights = bandits.shared_fit(
        gram, moment, ridge=policy.params.get("ridge", bandits.HYBRID_RIDGE)
    )
    try:
        with transaction.atomic():
            return SharedModel.objects.create(
                policy=policy,
                version=(latest.version + 1) if latest else 1,
                weights_bytes=array_to_bytes(weights),
                gram_bytes=array_to_bytes(gram),
                moment_bytes=array_to_bytes(moment),
                rewards=count + new,
                through_reward_id=through,
                seconds=time.perf_counter() - started,
            )
    except IntegrityError:  # another refit took this version number first
        return None


def shared_models_refit() -> list[SharedModel]:
    """Refit every hybrid policy's shared model that has new rewards, then
    delete the versions no decision in the log can name any more."""
    names = Policy.objects.filter(algorithm=bandits.HYBRID).values_list(
        "name", flat=True
    )
    refits = [shared_model_refit(policy_name=name) for name in names]
    for name in names:
        shared_models_prune(policy_name=name)
    return [model for model in refits if model is not None]


# A decision names the version current when /score read it, moments before the
# decision's own time: a version superseded this long before the oldest decision
# in the log is one no decision there names.
SHARED_MODEL_MARGIN = timedelta(hours=1)


def shared_models_prune(*, policy_name: str) -> int:
    """Delete the versions of a hybrid policy's shared model that no decision
    still in the log can name, and answer how many. Kept: the current version,
    and every version current at some time since the oldest decision in the log
    (less ``SHARED_MODEL_MARGIN``): as the log's retention drops old days, the
    versions of those days go too. With no decision in the log, the current
    version alone is kept.
    """
    oldest = Decision.objects.order_by("id").values_list("created_at").first()
    horizon = oldest[0] - SHARED_MODEL_MARGIN if oldest else timezone.now()
    versions = SharedModel.objects.filter(policy__name=policy_name)
    # The version current at the horizon: what the oldest decision may name.
    anchor = (
        versions.filter(created_at__lte=horizon)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    if anchor is None:
        return 0
    deleted, _ = versions.filter(version__lt=anchor).delete()
    return deleted
