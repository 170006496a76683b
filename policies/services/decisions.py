"""Decisions: a policy picks a candidate for a user, and every enabled shadow
decides beside it; each is logged."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from django.db import connection
from django.utils import timezone

from oo_ml.models import uuid7
from policies import bandits, rollups
from policies.models import Decision
from policies.selectors import LoadedState, scoring_states

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
    take their neutral values, and the answer still comes back (docs/promotion.md)."""
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
