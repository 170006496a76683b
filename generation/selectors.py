"""Reads: the prompt registry with what each version's tips earned."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Avg, Count, OuterRef, Subquery

from generation.models import Generation
from generation.prompts import PINNED, PROMPTS, Prompt
from policies.models import Decision, Reward


def decision_owner(*, decision_id: uuid.UUID) -> tuple[str, str] | None:
    """(user id, picked tip id) of a decision, or None if there is none."""
    return (
        Decision.objects.filter(pk=decision_id).values_list("user_id", "tip_id").first()
    )


@dataclass(frozen=True, slots=True)
class VersionRewards:
    prompt: Prompt
    pinned: bool
    tips: int  # texts written with it
    with_decision: int  # of which for a named decision
    rewards: int  # rewards of those decisions
    mean_reward: float | None


def prompt_version_rewards() -> list[VersionRewards]:
    """Every prompt version with its tips and the mean reward of the decisions
    they were written for.

    A reward counts once, for the version of the decision's latest tip (the
    text the user saw); only the reward of the policy that made the decision
    (not the copies other policies learned from). Two grouped queries.
    """
    tips = {
        row["prompt_version"]: row
        for row in Generation.objects.values("prompt_version").annotate(
            tips=Count("id"), with_decision=Count("decision_id")
        )
    }
    latest = (
        Generation.objects.filter(decision_id=OuterRef("decision_id"))
        .order_by("-created_at", "-id")
        .values("prompt_version")[:1]
    )
    rewards = {
        row["version"]: row
        for row in Reward.objects.filter(
            learned=False,
            decision_id__in=Generation.objects.filter(decision_id__isnull=False).values(
                "decision_id"
            ),
        )
        .annotate(version=Subquery(latest))
        .values("version")
        .annotate(n=Count("id"), mean=Avg("reward"))
    }
    return [
        VersionRewards(
            prompt=prompt,
            pinned=version in PINNED,
            tips=tips.get(version, {}).get("tips", 0),
            with_decision=tips.get(version, {}).get("with_decision", 0),
            rewards=rewards.get(version, {}).get("n", 0),
            mean_reward=rewards.get(version, {}).get("mean"),
        )
        for version, prompt in PROMPTS.items()
    ]
