"""Writes: decisions, rewards and resets. Each is atomic and keyword-only."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Count
from django.utils import timezone

from oo_ml.db import fetch_one, for_update, rows_insert
from oo_ml.errors import Conflict, InvalidInput, NotFound
from oo_ml.idempotency import fingerprint as request_fingerprint
from oo_ml.idempotency import previous_or_conflict
from oo_ml.models import uuid7
from policies import bandits, stats
from policies.models import (
    BanditState,
    ChangeAction,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    Role,
    array_to_bytes,
    state_from_bytes,
)
from policies.selectors import (
    POLICY_COLUMNS,
    LoadedState,
    policy_from_row,
    policy_get,
    policy_get_active,
    promotion_to_undo,
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
) -> Decision:
    policy = loaded.policy
    x = x_full[:, : policy.dimension]
    choice = bandits.choose(
        policy.algorithm, policy.params, loaded.a, loaded.b, x, rng=rng
    )
    return Decision(
        id=uuid7(),
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
    features scores and the caller left some out, ``stored_profile(user_id)``
    fills them in: the caller's values win name by name (a null they sent stays
    null). It is not called otherwise, so a request no such policy scores costs
    no profile read. The values used are logged with the decision.
    """
    # One cursor for the read and the insert (a cursor's set-up is not free).
    with connection.cursor() as cursor:
        states = scoring_states(user_id=user_id, policy_name=policy_name, cursor=cursor)
        dimension = max(loaded.policy.dimension for loaded in states)
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
        request_id = uuid7()
        common = dict(
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
        rows_insert(decisions, cursor)
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


def decision_vector(
    *, decision_id: uuid.UUID, user_id: str, tip_id: str, policy_name: str | None
) -> tuple[Decision, list[float]]:
    """The vector logged for ``tip_id`` when ``decision_id`` was made."""
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
    return decision, decision.features[index]


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
# The reward hot path is plain SQL: see oo_ml/db.py for why. One statement finds
# the policy and locks the user's state under it.
_STATE_LOCK_SQL = f"""
    SELECT {POLICY_COLUMNS}, s.id, s.a_bytes, s.b_bytes, s.reward_count,
        s.cumulative_reward
    FROM {_STATE} s JOIN {_POLICY} p ON p.id = s.policy_id
    WHERE s.user_id = %s AND p.{{column}} = %s
"""
_STATE_UPDATE_SQL = f"""
    UPDATE {_STATE}
    SET a_bytes = %s, b_bytes = %s, reward_count = reward_count + 1,
        cumulative_reward = cumulative_reward + %s, updated_at = %s
    WHERE id = %s
"""


@dataclass(slots=True)
class _LockedState:
    policy: Policy
    id: int
    a: np.ndarray
    b: np.ndarray
    reward_count: int
    cumulative_reward: float


def _state_lock(
    *, user_id: str, column: str, value: Any, cursor: CursorWrapper
) -> _LockedState:
    """The user's state under the policy whose ``column`` is ``value`` (its id,
    its name, or role "active"), created if new, row-locked until commit."""
    sql = _STATE_LOCK_SQL.format(column=column) + for_update(of="s")
    row = fetch_one(sql, [user_id, value], cursor)
    if row is None:
        if column == "role":
            policy = policy_get_active()
        elif column == "name":
            policy = policy_get(name=value)
        else:
            policy = Policy.objects.get(id=value)
        a, b = bandits.initial_state(policy.dimension)
        new = BanditState(
            policy=policy,
            user_id=user_id,
            a_bytes=array_to_bytes(a),
            b_bytes=array_to_bytes(b),
        )
        # A concurrent first reward may create it first: then we wait for its lock.
        BanditState.objects.bulk_create([new], ignore_conflicts=True)
        row = fetch_one(sql, [user_id, value], cursor)
    policy = policy_from_row(row[:7])
    state_id, a_bytes, b_bytes, reward_count, cumulative = row[7:]
    a, b = state_from_bytes(a_bytes, b_bytes, policy.dimension)
    return _LockedState(policy, state_id, a, b, reward_count, cumulative)


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
    )


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
    """Apply one reward: A += x x^T, b += r x, under a row lock on the user's state.

    With ``decision_id`` the vector logged at decision time is used and the
    decision's policy learns; otherwise the vector is rebuilt from ``features``
    and the policy named (default: the active one) learns. A repeated ``event_id``
    changes nothing.
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
    decision, x = None, None
    if decision_id is not None:
        decision, vector = decision_vector(
            decision_id=decision_id,
            user_id=user_id,
            tip_id=tip_id,
            policy_name=policy_name,
        )
        x = np.asarray(vector, dtype=float)
        which = {"column": "id", "value": decision.policy_id}
    elif policy_name is not None:
        which = {"column": "name", "value": policy_name}
    else:
        which = {"column": "role", "value": Role.ACTIVE}
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            state = _state_lock(user_id=user_id, cursor=cursor, **which)
            policy = state.policy
            if x is None:
                x = bandits.encode(
                    [features],
                    hours=[features["hour_of_day"]],
                    day_of_week=day_of_week,
                    profile=profile,
                    dimension=policy.dimension,
                )[0]
            a, b = bandits.update(state.a, state.b, x, reward)
            rows_insert(
                [
                    Reward(
                        policy=policy,
                        user_id=user_id,
                        tip_id=tip_id,
                        reward=reward,
                        decision=decision,
                        event_id=event_id,
                        fingerprint=fingerprint,
                        features=x.tolist(),
                    )
                ],
                cursor,
            )
            cursor.execute(
                _STATE_UPDATE_SQL,
                [
                    array_to_bytes(a),
                    array_to_bytes(b),
                    reward,
                    timezone.now(),
                    state.id,
                ],
            )
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
        policy=policy.name,
        user_id=user_id,
        tip_id=tip_id,
        reward=reward,
        decision_id=decision_id,
        event_id=event_id,
        reward_count=state.reward_count + 1,
        cumulative_reward=state.cumulative_reward + reward,
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
    policy = Policy.objects.select_for_update().filter(name=name).first()
    if policy is None:
        raise NotFound(f"No policy named {name!r}.", field="name")
    if policy.role != Role.SHADOW:
        raise Conflict(
            f"{name} is {policy.role}: only a shadow has an on/off switch.",
            field="name",
        )
    new = not policy.enabled if enabled is None else enabled
    if new != policy.enabled:
        _change_record(
            action=ChangeAction.TOGGLE,
            policy=policy,
            actor=actor,
            before={"enabled": policy.enabled},
            after={"enabled": new},
        )
        policy.enabled = new
        policy.save(update_fields=["enabled", "updated_at"])
    return policy


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


def _roles_swap(*, up: Policy, down: Policy) -> None:
    """``up`` becomes active, ``down`` a shadow with its switch off, at once.

    The old active steps down first: the database allows one active policy at
    any moment, even inside a transaction.
    """
    down.role, down.enabled = Role.SHADOW, False
    down.save(update_fields=["role", "enabled", "updated_at"])
    up.role, up.enabled = Role.ACTIVE, False
    up.save(update_fields=["role", "enabled", "updated_at"])


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
    _roles_swap(up=shadow, down=active)
    _change_record(
        action=ChangeAction.PROMOTE,
        policy=shadow,
        actor=actor,
        before={"role": Role.SHADOW, "active": active.name},
        after={"role": Role.ACTIVE, "shadow": active.name},
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
    """Undo the latest promotion: its previous active policy is active again.

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
    _roles_swap(up=previous, down=promoted)
    _change_record(
        action=ChangeAction.ROLLBACK,
        policy=previous,
        actor=actor,
        before={"role": was, "active": promoted.name},
        after={"role": Role.ACTIVE, "shadow": promoted.name},
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
    """Delete a user's decisions without loading them. The rows that point at
    them (the reward log, events: all SET_NULL) keep their place and lose the
    link; ``QuerySet.delete()`` would fetch every decision, JSON and all, first.
    """
    decisions = Decision.objects.filter(user_id=user_id)
    for relation in Decision._meta.related_objects:
        relation.related_model._base_manager.filter(
            **{f"{relation.field.name}__in": decisions.values("pk")}
        ).update(**{relation.field.name: None})
    with connection.cursor() as cursor:
        cursor.execute(_DECISIONS_DELETE_SQL, [user_id])
        return cursor.rowcount


_DECISIONS_DELETE_SQL = f"DELETE FROM {Decision._meta.db_table} WHERE user_id = %s"
