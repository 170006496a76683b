"""Decisions: a policy picks a candidate for a user, and every enabled shadow
decides beside it; each is logged."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from django.db import DatabaseError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from oo_ml.db import direct_cursor, recoverable
from oo_ml.models import uuid7
from policies import bandits, rollups
from policies.selectors import LoadedState, ScoringStates, scoring_states

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
) -> SimpleNamespace:
    """One policy's decision, as a row of the log: every ``Decision`` field by
    its name (``oo_ml.db.rows_insert_sql``), and the policy. A plain row costs
    a microsecond, where a model instance costs over ten."""
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
    return SimpleNamespace(
        id=uuid7(now),
        created_at=now,
        request_id=request_id,
        policy=policy,
        policy_id=policy.id,
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


class StoredProfile(Protocol):
    """Where /score finds a user's stored profile features (the profiles app,
    above this one): a SELECT of at most one row for ``%(user)s``, read with
    the user's states, and the features of the row it read."""

    sql: str

    def features(self, user_id: str, row: Sequence | None) -> Mapping[str, Any]: ...


_PROFILE_NAMES = frozenset(bandits.PROFILE_NAMES)


def _states_and_profile(
    *,
    user_id: str,
    policy_name: str | None,
    cursor: CursorWrapper,
    stored_profile: StoredProfile | None,
) -> tuple[ScoringStates, Mapping[str, Any]]:
    """The scoring states, and the stored profile features if a policy of the
    request reads or logs them (else nothing): one statement reads both.

    If the profile cannot be read or refreshed, the request scores without it:
    the features take their neutral values, and the answer still comes back
    (docs/promotion.md).
    """
    read = dict(user_id=user_id, policy_name=policy_name, cursor=cursor)
    if stored_profile is None:
        return scoring_states(**read), {}
    try:
        with recoverable():
            scoring = scoring_states(**read, with_row=stored_profile.sql)
    except DatabaseError:
        _profile_unavailable(user_id)
        return scoring_states(**read), {}
    if scoring.dimension != bandits.PROFILE_DIMENSION:
        return scoring, {}
    try:
        return scoring, stored_profile.features(user_id, scoring.with_row)
    except Exception:
        _profile_unavailable(user_id)
        return scoring, {}


def _profile_unavailable(user_id: str) -> None:
    logger.exception("stored profile of %s unavailable; scoring without", user_id)


def decision_make(
    *,
    user_id: str,
    candidates: Sequence[Mapping[str, Any]],
    context: Mapping[str, int],
    profile: Mapping[str, Any],
    rng: np.random.Generator,
    policy_name: str | None = None,
    stored_profile: StoredProfile | None = None,
) -> SimpleNamespace:
    """Pick a candidate and log the decision; answers the first policy's decision
    (the row logged: ``Decision``'s fields by name, and the policy).

    Without ``policy_name`` the active policy decides and every enabled shadow
    decides too, on the same input, logged under the same request id. A shadow
    that fails is logged and skipped: it never fails the active answer.

    ``profile`` is what the caller sent. When a policy that reads profile
    features scores, or learns from live rewards, and the caller left some out,
    the stored profile fills them in: the caller's values win name by name (a
    null they sent stays null). It is read with the states, in their statement,
    unless the caller sent all five. The values used are
    logged with the decision: a policy that learns from its reward later
    encodes the rewarded candidate in them.
    """
    # One cursor for the read and the insert, each sent straight to libpq.
    with direct_cursor() as cursor:
        sent_all = profile.keys() >= _PROFILE_NAMES
        scoring, stored = _states_and_profile(
            user_id=user_id,
            policy_name=policy_name,
            cursor=cursor,
            stored_profile=None if sent_all else stored_profile,
        )
        states, dimension = scoring.states, scoring.dimension
        profile = {**stored, **profile}
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
