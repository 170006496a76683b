"""Reads: policies, per-user state, stats and decision history."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Count, OuterRef, Q, Subquery, Sum

from oo_ml.db import fetch_all, fetch_one
from oo_ml.errors import NotFound
from oo_ml.partitions import uuid7_floor
from policies import bandits, stats
from policies.models import (
    ActivityHour,
    BanditState,
    ChangeAction,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    Role,
    SharedModel,
    array_from_bytes,
    state_from_bytes,
)
from policies.rollups import MEASURES, hour_of


def policy_get(*, name: str) -> Policy:
    try:
        return Policy.objects.get(name=name)
    except Policy.DoesNotExist:
        raise NotFound(f"No policy named {name!r}.", field="policy") from None


def policy_list() -> list[Policy]:
    """Every policy: the active one first, then shadows, then retired ones."""
    order = {Role.ACTIVE: 0, Role.SHADOW: 1, Role.RETIRED: 2}
    return sorted(Policy.objects.all(), key=lambda p: (order[p.role], p.name))


_POLICY = Policy._meta.db_table
_STATE = BanditState._meta.db_table
POLICY_COLUMNS = (
    "p.id, p.name, p.algorithm, p.dimension, p.params, p.role, p.enabled, p.learns_live"
)
POLICY_WIDTH = 8  # how many columns POLICY_COLUMNS is
# The hot-path reads below are plain SQL: see oo_ml/db.py for why.
_ACTIVE_SQL = f"SELECT {POLICY_COLUMNS} FROM {_POLICY} p WHERE p.role = %s"
# The policies that score (``scores``), and those that only learn from live
# rewards: their dimension says whether the decision must log the profile.
_SHARED = SharedModel._meta.db_table
# A hybrid policy's current shared model, read with the states: no round trip.
_LATEST_SHARED = f"""(
    SELECT m.{{column}} FROM {_SHARED} m WHERE m.policy_id = p.id
    ORDER BY m.version DESC LIMIT 1)"""
_SCORING_SQL = f"""
    SELECT {POLICY_COLUMNS}, s.a_bytes, s.b_bytes, ({{which}}) AS scores,
        {_LATEST_SHARED.format(column="version")},
        {_LATEST_SHARED.format(column="weights_bytes")}
    FROM {_POLICY} p
    LEFT JOIN {_STATE} s ON s.policy_id = p.id AND s.user_id = %(user)s
    WHERE ({{which}}) OR p.learns_live
    ORDER BY ({{which}}) DESC, p.role = %(active)s DESC, p.name
"""
_SCORING_ACTIVE_AND_SHADOWS_SQL = _SCORING_SQL.format(
    which="p.role = %(active)s OR (p.role = %(shadow)s AND p.enabled)"
)
_SCORING_NAMED_SQL = _SCORING_SQL.format(which="p.name = %(name)s")


@functools.lru_cache(maxsize=256)
def policy_from_row(row: tuple) -> Policy:
    """A read-only Policy from the POLICY_COLUMNS of a plain-SQL row.

    Cached on the whole row: policies change rarely, any change makes a new row,
    and building a model instance costs more than the rest of reading it.
    """
    policy_id, name, algorithm, dimension, params, role, enabled, learns = row
    if isinstance(params, str):
        params = json.loads(params)
    return Policy(
        id=policy_id,
        name=name,
        algorithm=algorithm,
        dimension=dimension,
        params=params,
        role=role,
        enabled=bool(enabled),
        learns_live=bool(learns),
    )


def policy_get_active() -> Policy:
    row = fetch_one(_ACTIVE_SQL, [Role.ACTIVE])
    if row is None:
        raise NotFound("No policy is active.", field="policy")
    return policy_from_row(row)


@dataclass(frozen=True, slots=True)
class LoadedState:
    policy: Policy
    a: np.ndarray
    b: np.ndarray
    # A hybrid policy's current shared model: its version and weights.
    model_version: int | None = None
    shared: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ScoringStates:
    """The policies that score a request, with the user's states, and the widest
    dimension of any policy that scores it or may learn from its reward."""

    states: list[LoadedState]
    dimension: int


def scoring_states(
    *,
    user_id: str,
    policy_name: str | None = None,
    cursor: CursorWrapper | None = None,
) -> ScoringStates:
    """The policies that score a request, each with this user's A and b.

    Without a name: the active policy first, then every shadow whose toggle is
    on. One query loads the policies, the user's states, and the policies that
    learn from live rewards without scoring.
    """
    params = {"user": user_id, "active": Role.ACTIVE}
    if policy_name is None:
        sql = _SCORING_ACTIVE_AND_SHADOWS_SQL
        params["shadow"] = Role.SHADOW
    else:
        sql = _SCORING_NAMED_SQL
        params["name"] = policy_name
    rows = fetch_all(sql, params, cursor)
    loaded = []
    dimension = 0
    for row in rows:
        policy = policy_from_row(row[:POLICY_WIDTH])
        a_bytes, b_bytes, scores, version, weights = row[POLICY_WIDTH:]
        dimension = max(dimension, policy.dimension)
        if scores:
            a, b = state_from_bytes(a_bytes, b_bytes, policy.dimension)
            if version is not None:
                weights = array_from_bytes(weights, (bandits.SHARED_DIMENSION,))
            loaded.append(LoadedState(policy, a, b, version, weights))
    if not loaded:
        if policy_name is None:
            raise NotFound("No policy is active.", field="policy")
        raise NotFound(f"No policy named {policy_name!r}.", field="policy")
    return ScoringStates(loaded, dimension)


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    policy: str
    pulls: int
    reward_count: int
    # Of those, the rewards of other policies' decisions it learned from live.
    learned_count: int
    cumulative_reward: float
    estimated_mean_reward: float
    exploration_rate: float
    theta: list[float]
    feature_labels: tuple[str, ...]
    last_updated: datetime | None


def user_pulls(*, policy: Policy, user_id: str) -> dict[str, int]:
    """``{"pulls", "explorations"}``: the user's decisions under the policy,
    counted from the decision log."""
    return Decision.objects.filter(policy=policy, user_id=user_id).aggregate(
        pulls=Count("id"), explorations=Count("id", filter=Q(exploring=True))
    )


def user_learned_count(*, policy: Policy, user_id: str) -> int:
    """How many of the user's rewards under ``policy`` it learned from other
    policies' decisions (or, with no decision, a reward sent to another)."""
    return Reward.objects.filter(policy=policy, user_id=user_id, learned=True).count()


def user_stats(*, policy: Policy, user_id: str) -> UserStats:
    state = BanditState.objects.filter(policy=policy, user_id=user_id).first()
    counts = user_pulls(policy=policy, user_id=user_id)
    if state is None and not counts["pulls"]:
        raise NotFound(
            f"User {user_id!r} has no state under {policy.name}.", field="user_id"
        )
    if state is None:
        a, b = bandits.initial_state(policy.dimension)
        reward_count, cumulative, last_updated = 0, 0.0, None
    else:
        state.policy = policy
        a, b = state.a, state.b
        reward_count, cumulative = state.reward_count, state.cumulative_reward
        last_updated = state.updated_at
    pulls = counts["pulls"]
    return UserStats(
        user_id=user_id,
        policy=policy.name,
        pulls=pulls,
        reward_count=reward_count,
        learned_count=user_learned_count(policy=policy, user_id=user_id)
        if reward_count
        else 0,
        cumulative_reward=cumulative,
        estimated_mean_reward=cumulative / reward_count if reward_count else 0.0,
        exploration_rate=counts["explorations"] / pulls if pulls else 0.0,
        theta=bandits.theta(a, b).tolist(),
        feature_labels=policy.feature_labels,
        last_updated=last_updated,
    )


def user_history(*, user_id: str) -> list[dict]:
    """The user's last decisions, newest first, shadows' included."""
    decisions = list(
        Decision.objects.filter(user_id=user_id)
        .select_related("policy")
        .order_by("-created_at", "-id")[: settings.HISTORY_LIMIT]
    )
    if not decisions:
        raise NotFound(f"User {user_id!r} has no decisions.", field="user_id")
    return [
        {
            "decision_id": d.id,
            "request_id": d.request_id,
            "created_at": d.created_at,
            "policy": d.policy.name,
            "role": d.role,
            "tip_id": d.tip_id,
            "score": d.score,
            "propensity": d.propensity,
            "exploring": d.exploring,
            "candidates": [c["id"] for c in d.candidates],
            "context": d.context,
            "profile": d.profile,
            "features": dict(
                zip(d.policy.feature_labels, d.features[d.pick_index], strict=True)
            ),
        }
        for d in decisions
    ]


@dataclass(frozen=True, slots=True)
class Activity:
    """What one policy did over one window of time."""

    decisions: int
    # Shadows: how often their pick equalled the active pick on the same request.
    compared: int
    agreed: int
    rewards: int  # the rewards of its own decisions (or sent to it)
    reward_sum: float
    learned: int = 0  # the rewards of other policies it learned from

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.rewards if self.rewards else None


@dataclass(frozen=True, slots=True)
class PolicyActivity:
    policy: Policy
    last_day: Activity
    all_time: Activity
    # Shadows: their value estimated from the active policy's rewarded decisions.
    off_policy: stats.OffPolicyEvidence | None = None


def _activity(since: datetime) -> dict[int, dict]:
    """Per policy, each roll-up measure over all time and (``<name>_day``) over
    the hours from ``since``'s."""
    recent = Q(hour__gte=hour_of(since))
    annotations = {}
    for name in MEASURES:  # named apart from the fields they sum
        annotations[f"{name}_all"] = Sum(name)
        annotations[f"{name}_day"] = Sum(name, filter=recent)
    rows = ActivityHour.objects.values("policy_id").annotate(**annotations)
    return {row.pop("policy_id"): row for row in rows.order_by()}


def policy_activity(*, since: datetime) -> list[PolicyActivity]:
    """Every policy's decisions, agreement and rewards, since ``since`` (in
    whole hours: from the start of its hour) and ever.

    Read from the hourly roll-ups (``policies.rollups``), one grouped query
    whatever the size of the logs. The agreement of a shadow counts only
    requests the active policy also answered (not the named routes, where a
    shadow scores alone). "Ever" includes rows retention has since dropped.
    """
    activity = _activity(since)
    policies = policy_list()
    off_policy = shadow_values(
        since=since, shadows=[p for p in policies if p.role == Role.SHADOW]
    )

    def window(policy_id: int, suffix: str) -> Activity:
        row = activity.get(policy_id, {})
        return Activity(**{name: row.get(f"{name}{suffix}") or 0 for name in MEASURES})

    return [
        PolicyActivity(
            policy,
            window(policy.id, "_day"),
            window(policy.id, "_all"),
            off_policy.get(policy.id),
        )
        for policy in policies
    ]


def promotion_to_undo() -> PolicyChange | None:
    """The latest promotion, unless a rollback came after it."""
    latest = (
        PolicyChange.objects.filter(
            action__in=[ChangeAction.PROMOTE, ChangeAction.ROLLBACK]
        )
        .select_related("policy")
        .first()
    )
    return latest if latest and latest.action == ChangeAction.PROMOTE else None


_DECISION = Decision._meta.db_table
_REWARD = Reward._meta.db_table
# Each reward of an active decision since a time, with what every shadow that
# scored the same request computed. Newest first, so a limit keeps the latest.
_SHADOW_SAMPLES_SQL = f"""
    SELECT s.policy_id, s.estimates, s.bonuses, a.pick_index, a.propensity, r.reward
    FROM {_REWARD} r
    JOIN {_DECISION} a ON a.id = r.decision_id AND a.role = %s AND a.id >= %s
    JOIN {_DECISION} s ON s.request_id = a.request_id AND s.role = %s
        AND s.id >= %s
    WHERE r.created_at >= %s AND NOT r.learned
    ORDER BY r.created_at DESC
    LIMIT %s
"""
OFF_POLICY_SAMPLES = 20_000


def shadow_values(
    *, since: datetime, shadows: Sequence[Policy]
) -> dict[int, stats.OffPolicyEvidence]:
    """Each shadow's value on the active policy's rewarded decisions since
    ``since`` (docs/evidence.md): self-normalised IPS and doubly robust, each with a
    bootstrap 95% interval, and the effective sample size.

    A shadow's probability of each candidate comes from the estimates (and
    bonuses) it logged on the same request, and the active policy's logged
    propensity of its pick is the denominator. Doubly robust's model is the
    shadow's own ridge estimate θ·x, as it logged it. At most the latest
    OFF_POLICY_SAMPLES rewards are read; the bootstrap is seeded, so the same
    log shows the same intervals.
    """
    # Decisions made at most a day before the window: the bound prunes the
    # decision log's partitions (a request's decisions share one).
    made = Decision._meta.pk.get_db_prep_value(
        uuid7_floor(since - timedelta(days=1)), connection
    )
    rows = fetch_all(
        _SHADOW_SAMPLES_SQL,
        [Role.ACTIVE, made, Role.SHADOW, made, since, OFF_POLICY_SAMPLES],
    )
    policies = {p.id: p for p in shadows}
    samples: dict[int, list[tuple[float, float, float, float, float]]] = {}
    for policy_id, estimates, bonuses, pick, propensity, reward in rows:
        policy = policies.get(policy_id)
        if policy is None:  # no longer a shadow
            continue
        if isinstance(estimates, str):  # SQLite hands JSON back as text
            estimates, bonuses = json.loads(estimates), json.loads(bonuses or "null")
        probabilities = bandits.action_probabilities(
            policy.algorithm, policy.params, estimates, bonuses
        )
        samples.setdefault(policy_id, []).append(
            (
                probabilities[pick],
                propensity,
                reward,
                float(probabilities @ np.asarray(estimates, dtype=float)),
                estimates[pick],
            )
        )
    values = {}
    for policy_id, rows in samples.items():
        target, logged, rewards, direct, estimated = np.array(rows).T
        values[policy_id] = stats.off_policy_evidence(
            target=target,
            logged=logged,
            rewards=rewards,
            direct=direct,
            estimated=estimated,
            rng=np.random.default_rng(stats.BOOTSTRAP_SEED),
        )
    return values


def shared_models_current() -> dict[int, SharedModel]:
    """Each hybrid policy's current shared model (its latest version), by
    policy id, in one query; the arrays are left unread."""
    latest = (
        SharedModel.objects.filter(policy=OuterRef("policy"))
        .order_by("-version")
        .values("version")[:1]
    )
    return {
        model.policy_id: model
        for model in SharedModel.objects.filter(version=Subquery(latest)).defer(
            "weights_bytes", "gram_bytes", "moment_bytes"
        )
    }


def policies_without_state(*, user_id: str) -> list[Policy]:
    """The policies under which ``user_id`` has learned nothing yet, in the
    control room's order."""
    having = set(
        BanditState.objects.filter(user_id=user_id).values_list("policy_id", flat=True)
    )
    return [p for p in policy_list() if p.id not in having]
