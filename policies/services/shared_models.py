"""The shared model of a hybrid policy, refitted in batch from the reward log."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from oo_ml.errors import InvalidInput, NotFound
from policies import bandits
from policies.models import (
    Decision,
    Policy,
    SharedModel,
    array_from_bytes,
    array_to_bytes,
)
from policies.selectors import reward_vectors


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
        gram, moment = gram + g, moment + m
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
