"""A hybrid policy's shared-model refit over the reward log, on PostgreSQL: the
binary vectors its rows carry, the COPY that reads them, sums equal to a
computation by hand whether full or incremental, and the versions it keeps."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from policies import bandits, selectors
from policies.models import Decision, Policy, Reward, SharedModel, array_from_bytes
from policies.models import array_to_bytes as to_bytes
from policies.services import shared_model_refit, shared_models_prune
from policies.tests.test_hybrid import CANDIDATES, _reward, _score

pytestmark = pytest.mark.django_db
D = bandits.PROFILE_DIMENSION


def _log(policy: Policy, xs: np.ndarray, rewards: np.ndarray, *, binary=True):
    """Reward rows of ``policy``: with their binary vector, as the platform
    writes them, or without (a row logged before the binary column)."""
    Reward.objects.bulk_create(
        Reward(
            policy=policy,
            user_id=f"u{i % 7}",
            tip_id="t",
            reward=r,
            fingerprint="f",
            features=x.tolist(),
            vector=to_bytes(x) if binary else None,
        )
        for i, (x, r) in enumerate(zip(xs, rewards, strict=True))
    )


def _random_log(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)), rng.choice([-1.0, -0.3, 0.1, 0.6, 1.0], size=n)


def _by_hand(xs, rewards, ridge):
    """Z^T Z, Z^T r and w row by row, with z = vec(x u^T) written out."""
    gram, moment = np.zeros((96, 96)), np.zeros(96)
    for x, r in zip(xs, rewards, strict=True):
        u = np.concatenate(([1.0], x[[0, 1, 7, 8, 9, 10, 11]]))
        z = np.outer(x, u).ravel()
        gram += np.outer(z, z)
        moment += r * z
    return gram, moment, np.linalg.solve(gram + ridge * np.eye(96), moment)


def test_a_hybrid_policys_reward_rows_carry_their_vector_in_binary(api):
    _reward(api, _score(api))  # hybrid-v1's own decision
    active = api.post(
        "/score", {"user_id": "u2", "candidates": CANDIDATES}, format="json"
    ).json()
    _reward(api, active, "u2")  # the active policy's, which hybrid-v1 learns too
    rows = list(Reward.objects.select_related("policy"))
    hybrid = [r for r in rows if r.policy.algorithm == bandits.HYBRID]
    assert len(hybrid) == 2 and len(rows) > 2
    for row in rows:
        if row.policy.algorithm == bandits.HYBRID:
            np.testing.assert_array_equal(
                array_from_bytes(row.vector, (D,)), row.features
            )
        else:
            assert row.vector is None


def test_full_and_incremental_refits_equal_the_sums_by_hand():
    hybrid = Policy.objects.get(name="hybrid-v1")
    xs, rewards = _random_log(250, seed=7)
    _log(hybrid, xs[:90], rewards[:90], binary=False)  # read from their JSON
    other = Policy.objects.get(name="egreedy-v1")
    _log(other, *_random_log(40, seed=8))  # another policy's: never read
    first = shared_model_refit(policy_name="hybrid-v1")
    _log(hybrid, xs[90:], rewards[90:])
    second = shared_model_refit(policy_name="hybrid-v1")
    assert shared_model_refit(policy_name="hybrid-v1") is None  # nothing new
    full = shared_model_refit(policy_name="hybrid-v1", full=True)

    gram, moment, weights = _by_hand(xs, rewards, hybrid.params["ridge"])
    last = Reward.objects.filter(policy=hybrid).order_by("-id").first().id
    assert (first.rewards, second.rewards, full.rewards) == (90, 250, 250)
    assert second.through_reward_id == full.through_reward_id == last
    for model in (second, full):
        np.testing.assert_allclose(
            array_from_bytes(model.gram_bytes, (96, 96)), gram, rtol=1e-12
        )
        np.testing.assert_allclose(
            array_from_bytes(model.moment_bytes, (96,)), moment, rtol=1e-12
        )
        np.testing.assert_allclose(model.weights, weights, rtol=1e-9)


def test_the_copy_reads_every_row_once_across_batches_as_the_orm_does():
    hybrid = Policy.objects.get(name="hybrid-v1")
    xs, rewards = _random_log(23, seed=9)
    _log(hybrid, xs[:11], rewards[:11], binary=False)
    _log(hybrid, xs[11:], rewards[11:])
    after = Reward.objects.filter(policy=hybrid).order_by("id")[1].id

    batches = list(selectors.reward_vectors(policy=hybrid, after_id=after, batch=4))
    assert max(len(b.rewards) for b in batches) == 4
    read = np.concatenate([np.column_stack((b.xs, b.rewards)) for b in batches])
    orm = list(selectors._reward_vectors_orm(policy=hybrid, after_id=after, batch=50))
    assert len(orm) == 1
    expected = np.column_stack((xs[2:], rewards[2:]))
    # In no particular order, but every row after ``after`` once, exactly.
    np.testing.assert_array_equal(np.unique(read, axis=0), np.unique(expected, axis=0))
    np.testing.assert_array_equal(
        np.column_stack((orm[0].xs, orm[0].rewards)), expected
    )
    last = Reward.objects.filter(policy=hybrid).order_by("-id").first().id
    assert max(b.last_id for b in batches) == orm[0].last_id == last
    assert list(selectors.reward_vectors(policy=hybrid, after_id=last)) == []


@pytest.mark.parametrize("binary", [True, False])
def test_a_row_whose_vector_is_not_the_policys_dimension_fails_the_refit(binary):
    hybrid = Policy.objects.get(name="hybrid-v1")
    xs, rewards = _random_log(5, seed=10)
    _log(hybrid, xs, rewards, binary=binary)
    _log(hybrid, xs[:1, :11], rewards[:1], binary=binary)
    with pytest.raises(ValueError, match="not"):
        shared_model_refit(policy_name="hybrid-v1")
    assert not SharedModel.objects.exists()


# --- the versions kept ------------------------------------------------------------


def _versions(policy: Policy, ages_days: list[float]) -> None:
    """Versions 1, 2, ... of ``policy``'s shared model, made ``ages_days`` ago."""
    now = timezone.now()
    for version, age in enumerate(ages_days, start=1):
        SharedModel.objects.create(
            policy=policy,
            version=version,
            weights_bytes=to_bytes(np.zeros(96)),
            gram_bytes=to_bytes(np.zeros((96, 96))),
            moment_bytes=to_bytes(np.zeros(96)),
            rewards=version,
            through_reward_id=version,
            seconds=0.1,
            created_at=now - timedelta(days=age),
        )


def _kept(policy: Policy) -> list[int]:
    return sorted(policy.shared_models.values_list("version", flat=True))


def test_the_versions_kept_are_the_current_one_and_those_the_log_may_name(api):
    hybrid = Policy.objects.get(name="hybrid-v1")
    _versions(hybrid, [13, 12, 11, 9, 0.5])
    # The oldest decision in the log, 10 days old, named version 3.
    oldest = Decision.objects.get(id=_score(api)["decision_id"])
    Decision.objects.filter(id=oldest.id).update(
        created_at=timezone.now() - timedelta(days=10)
    )
    _score(api, "u2")
    assert shared_models_prune(policy_name="hybrid-v1") == 2
    assert _kept(hybrid) == [3, 4, 5]
    assert shared_models_prune(policy_name="hybrid-v1") == 0  # idempotent

    # Retention took every decision: only the current version is left.
    Decision.objects.all().delete()
    assert shared_models_prune(policy_name="hybrid-v1") == 2
    assert _kept(hybrid) == [5]
    assert shared_models_prune(policy_name="hybrid-v1") == 0


def test_a_version_superseded_within_the_margin_of_the_oldest_decision_stays(api):
    hybrid = Policy.objects.get(name="hybrid-v1")
    decision = _score(api)
    made = Decision.objects.get(id=decision["decision_id"]).created_at
    _versions(hybrid, [3, 2, 1])
    # Version 3 came 10 minutes before the oldest decision, which may yet
    # have read version 2: 2 stays, 1 (superseded two days before) goes.
    SharedModel.objects.filter(version=3).update(
        created_at=made - timedelta(minutes=10)
    )
    assert shared_models_prune(policy_name="hybrid-v1") == 1
    assert _kept(hybrid) == [2, 3]
    SharedModel.objects.filter(version=3).update(created_at=made - timedelta(hours=2))
    assert shared_models_prune(policy_name="hybrid-v1") == 1
    assert _kept(hybrid) == [3]


def test_the_beat_task_keeps_only_what_the_log_may_name(api):
    from policies.tasks import refit_shared_models

    hybrid = Policy.objects.get(name="hybrid-v1")
    _versions(hybrid, [5, 4])
    _log(hybrid, *_random_log(3, seed=12))
    assert refit_shared_models() == 1  # version 3, and no decision in the log
    assert _kept(hybrid) == [3]
    assert refit_shared_models() == 0
    assert _kept(hybrid) == [3]
