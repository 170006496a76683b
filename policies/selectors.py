"""Reads: policies, per-user state, stats and decision history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db.models import Count, F, FilteredRelation, Q

from oo_ml.errors import NotFound
from policies import bandits
from policies.models import BanditState, Decision, Policy, Role, array_from_bytes


def policy_get(*, name: str) -> Policy:
    try:
        return Policy.objects.get(name=name)
    except Policy.DoesNotExist:
        raise NotFound(f"No policy named {name!r}.", field="policy") from None


def policy_get_active() -> Policy:
    try:
        return Policy.objects.get(role=Role.ACTIVE)
    except Policy.DoesNotExist:
        raise NotFound("No policy is active.", field="policy") from None


@dataclass(frozen=True, slots=True)
class LoadedState:
    policy: Policy
    a: np.ndarray
    b: np.ndarray


def scoring_states(
    *, user_id: str, policy_name: str | None = None
) -> list[LoadedState]:
    """The policies that score a request, each with this user's A and b.

    Without a name: the active policy first, then every shadow whose toggle is
    on. One query loads the policies and the user's states together.
    """
    if policy_name is None:
        which = Q(role=Role.ACTIVE) | Q(role=Role.SHADOW, enabled=True)
    else:
        which = Q(name=policy_name)
    policies = Policy.objects.filter(which).annotate(
        state=FilteredRelation("states", condition=Q(states__user_id=user_id)),
        a_bytes=F("state__a_bytes"),
        b_bytes=F("state__b_bytes"),
    )
    loaded = []
    for policy in policies:
        d = policy.dimension
        if policy.a_bytes is None:
            a, b = bandits.initial_state(d)
        else:
            a = array_from_bytes(policy.a_bytes, (d, d))
            b = array_from_bytes(policy.b_bytes, (d,))
        loaded.append(LoadedState(policy, a, b))
    if not loaded:
        if policy_name is None:
            raise NotFound("No policy is active.", field="policy")
        raise NotFound(f"No policy named {policy_name!r}.", field="policy")
    loaded.sort(key=lambda item: (item.policy.role != Role.ACTIVE, item.policy.name))
    return loaded


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    policy: str
    pulls: int
    reward_count: int
    cumulative_reward: float
    estimated_mean_reward: float
    exploration_rate: float
    theta: list[float]
    feature_labels: tuple[str, ...]
    last_updated: datetime | None


def user_stats(*, policy: Policy, user_id: str) -> UserStats:
    state = BanditState.objects.filter(policy=policy, user_id=user_id).first()
    counts = Decision.objects.filter(policy=policy, user_id=user_id).aggregate(
        pulls=Count("id"), explorations=Count("id", filter=Q(exploring=True))
    )
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
