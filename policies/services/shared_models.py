"""The shared model of a hybrid policy, refitted in batch from the reward log."""

from __future__ import annotations

import itertools
import time

import numpy as np
from django.db import IntegrityError, transaction

from oo_ml.errors import InvalidInput, NotFound
from policies import bandits
from policies.models import (
    Policy,
    Reward,
    SharedModel,
    array_from_bytes,
    array_to_bytes,
)

_REFIT_BATCH = 20_000


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
    rows = (
        Reward.objects.filter(policy=policy, id__gt=through)
        .order_by("id")
        .values_list("id", "features", "reward")
        .iterator(chunk_size=_REFIT_BATCH)
    )
    new = 0
    while batch := list(itertools.islice(rows, _REFIT_BATCH)):
        ids, xs, rewards = zip(*batch, strict=True)
        g, m = bandits.shared_moments(np.array(xs, dtype=float), np.array(rewards))
        gram += g
        moment += m
        new += len(ids)
        through = ids[-1]
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
    """Refit every hybrid policy's shared model that has new rewards."""
    names = Policy.objects.filter(algorithm=bandits.HYBRID).values_list(
        "name", flat=True
    )
    refits = [shared_model_refit(policy_name=name) for name in names]
    return [model for model in refits if model is not None]
