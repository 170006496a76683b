"""The hybrid (population-informed) policy: its maths by hand, its batched form,
its shared model's refit, and what decisions log of it."""

from __future__ import annotations

import numpy as np
import pytest

from policies import bandits
from policies.models import Decision, Policy, SharedModel
from policies.services import shared_model_refit

D = bandits.PROFILE_DIMENSION


def _x(*, overdue: float, hour_sin: float = 0.0, completion: float = 0.0):
    x = np.zeros(D)
    x[0], x[2], x[7] = hour_sin, overdue, completion
    return x


def test_the_shared_features_are_the_interactions_of_x_with_the_user_side():
    x = np.arange(1.0, D + 1)
    z = bandits.shared_features(x)
    u = np.concatenate(([1.0], x[[0, 1, 7, 8, 9, 10, 11]]))
    assert z.shape == (bandits.SHARED_DIMENSION,)
    np.testing.assert_array_equal(z.reshape(D, 8), np.outer(x, u))


def test_by_hand_the_estimate_is_the_ridge_pulled_towards_the_shared_model():
    # w says: an overdue task is worth 0.5 to anyone (x2 * u0).
    weights = np.zeros(bandits.SHARED_DIMENSION)
    weights[2 * 8 + 0] = 0.5
    x = np.stack([_x(overdue=0.0), _x(overdue=1.0)])
    a, b = bandits.initial_state(D)

    # No data of the user's own: theta = theta_0 = 0.5 e2 whatever lambda is.
    estimates, shared = bandits._hybrid_terms(a, b, x, weights, 3.0)
    np.testing.assert_allclose(estimates, [0.0, 0.5])
    np.testing.assert_allclose(shared, [0.0, 0.5])

    # One reward of 1 on e2: theta_2 = (1 + 1 + (3 - 1)) ^ -1 (1 + 3 * 0.5) = 0.625.
    a, b = bandits.update(a, b, np.eye(D)[2], 1.0)
    estimates, shared = bandits._hybrid_terms(a, b, x, weights, 3.0)
    np.testing.assert_allclose(estimates, [0.0, 0.625])
    np.testing.assert_allclose(shared, [0.0, 0.5])  # the personal part is 0.125


def test_the_shared_model_depends_on_the_users_profile_and_hour():
    # w: overdue is worth +1 with completion rate (x2 * u3, u3 = x7) and -1 at
    # hour_sin (x2 * u1, u1 = x0).
    weights = np.zeros(bandits.SHARED_DIMENSION)
    weights[2 * 8 + 3], weights[2 * 8 + 1] = 1.0, -1.0
    a, b = bandits.initial_state(D)
    keen = np.stack([_x(overdue=0, completion=0.8), _x(overdue=1, completion=0.8)])
    night = np.stack([_x(overdue=0, hour_sin=1.0), _x(overdue=1, hour_sin=1.0)])
    pick = {
        name: bandits.hybrid_choose(
            a,
            b,
            x,
            weights=weights,
            epsilon=0.0,
            prior_weight=10.0,
            rng=np.random.default_rng(0),
        )
        for name, x in (("keen", keen), ("night", night))
    }
    assert pick["keen"].index == 1 and pick["keen"].score == pytest.approx(0.8)
    assert pick["night"].index == 0
    assert pick["keen"].propensity == 1.0  # epsilon 0: greedy for sure


def test_without_a_shared_model_yet_it_is_a_plain_ridge_estimate():
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(4, D))
    a, b = bandits.initial_state(D)
    a, b = bandits.update(a, b, x[1], 1.0)
    estimates, shared = bandits._hybrid_terms(a, b, x, None, 1.0)
    np.testing.assert_allclose(estimates, x @ np.linalg.solve(a, b))
    np.testing.assert_array_equal(shared, np.zeros(4))


def test_the_fit_recovers_noiseless_rewards():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=bandits.SHARED_DIMENSION)
    xs = rng.uniform(size=(3000, D))
    rewards = bandits.shared_features(xs) @ truth
    gram, moment = bandits.shared_moments(xs, rewards)
    fit = bandits.shared_fit(gram, moment, ridge=1e-9)
    # Some interactions appear twice (x0 * x7 and x7 * x0): the weights are not
    # unique, their predictions are.
    fresh = rng.uniform(size=(50, D))
    np.testing.assert_allclose(
        bandits.shared_features(fresh) @ fit,
        bandits.shared_features(fresh) @ truth,
        atol=1e-5,
    )
    # Sums split in two add up to the sums of the whole.
    g1, m1 = bandits.shared_moments(xs[:1000], rewards[:1000])
    g2, m2 = bandits.shared_moments(xs[1000:], rewards[1000:])
    np.testing.assert_allclose(g1 + g2, gram)
    np.testing.assert_allclose(m1 + m2, moment)


def test_the_batched_form_makes_the_single_users_choices():
    rng = np.random.default_rng(9)
    users, n = 6, 5
    x = rng.uniform(size=(users, n, D))
    a, b = bandits.initial_state_batch(users, D)
    for _ in range(3):
        bandits.update_batch(
            a, b, x[:, 0], rng.choice([-1.0, 1.0], size=users), in_place=True
        )
    weights = rng.normal(size=bandits.SHARED_DIMENSION)
    explore, picks = rng.uniform(size=users), rng.uniform(size=users)
    batch = bandits.choose_batch(
        bandits.HYBRID,
        {"epsilon": 0.3, "prior_weight": 20.0},
        a,
        b,
        x,
        explore_uniforms=explore,
        pick_uniforms=picks,
        shared=weights,
    )

    class Fixed:  # a generator whose draws are the uniforms the batch was given
        def __init__(self, u, pick):
            self.u, self.pick = u, pick

        def random(self):
            return self.u

        def integers(self, n):
            return int(self.pick * n)

    for i in range(users):
        one = bandits.choose(
            bandits.HYBRID,
            {"epsilon": 0.3, "prior_weight": 20.0},
            a[i],
            b[i],
            x[i],
            rng=Fixed(explore[i], picks[i]),
            shared=weights,
        )
        assert one.index == batch.index[i]
        assert one.exploring == batch.exploring[i]
        assert one.propensity == pytest.approx(batch.propensity[i])
        np.testing.assert_allclose(one.estimates, batch.estimates[i], atol=1e-12)
        np.testing.assert_allclose(one.shared, batch.shared[i], atol=1e-12)
        probabilities = bandits.action_probabilities(
            bandits.HYBRID, {"epsilon": 0.3}, one.estimates, None
        )
        assert probabilities[one.index] == pytest.approx(one.propensity)


# --- through the platform ---------------------------------------------------------

pytestmark_db = pytest.mark.django_db

CANDIDATES = [
    {"id": "late", "features": {"is_overdue": True, "priority": 4}},
    {"id": "fresh", "features": {"task_age_days": 1}},
]


def _score(api, user="u1"):
    response = api.post(
        "/policies/hybrid-v1/score",
        {"user_id": user, "candidates": CANDIDATES},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


def _reward(api, answer, user="u1", value=1.0):
    response = api.post(
        "/reward",
        {
            "user_id": user,
            "tip_id": answer["tip_id"],
            "reward": value,
            "decision_id": answer["decision_id"],
        },
        format="json",
    )
    assert response.status_code == 200, response.json()


@pytestmark_db
def test_hybrid_v1_is_registered_as_a_shadow_that_learns():
    hybrid = Policy.objects.get(name="hybrid-v1")
    assert (hybrid.algorithm, hybrid.dimension, hybrid.role) == ("hybrid", 12, "shadow")
    assert not hybrid.enabled and hybrid.learns_live


@pytestmark_db
def test_a_refit_is_idempotent_and_decisions_log_the_version_they_used(api):
    first = _score(api)
    assert Decision.objects.get(id=first["decision_id"]).model_version is None
    for i in range(6):
        _reward(api, _score(api, f"u{i}"), f"u{i}", value=(-1.0) ** i)

    v1 = shared_model_refit(policy_name="hybrid-v1")
    assert (v1.version, v1.rewards) == (1, 6)
    assert shared_model_refit(policy_name="hybrid-v1") is None  # nothing new
    assert SharedModel.objects.count() == 1

    answer = _score(api)
    decision = Decision.objects.get(id=answer["decision_id"])
    assert decision.model_version == 1
    expected = np.array(decision.features) @ v1.weights.reshape(D, 8)
    # The shared part of each estimate is x^T W u, logged beside the estimate.
    u = np.concatenate(([1.0], np.array(decision.features[0])[[0, 1, 7, 8, 9, 10, 11]]))
    np.testing.assert_allclose(decision.shared_estimates, expected @ u, atol=1e-12)

    # Rewards the active policy's decisions get train it too (it learns live);
    # the next refit adds only those, and matches a refit of the whole log.
    for i in range(3):
        active = api.post(
            "/score", {"user_id": f"w{i}", "candidates": CANDIDATES}, format="json"
        ).json()
        _reward(api, active, f"w{i}", value=0.6)
    v2 = shared_model_refit(policy_name="hybrid-v1")
    assert (v2.version, v2.rewards) == (2, 9)
    full = shared_model_refit(policy_name="hybrid-v1", full=True)
    assert full.rewards == 9
    np.testing.assert_allclose(full.weights, v2.weights, atol=1e-12)
    assert _score(api) and Decision.objects.latest("created_at").model_version == 3


@pytestmark_db
def test_only_a_hybrid_policy_has_a_shared_model():
    from oo_ml.errors import InvalidInput, NotFound

    with pytest.raises(InvalidInput):
        shared_model_refit(policy_name="egreedy-v1")
    with pytest.raises(NotFound):
        shared_model_refit(policy_name="nope")


@pytestmark_db
def test_the_beat_task_refits_every_hybrid_policy_with_new_rewards(api):
    from policies.tasks import refit_shared_models

    assert refit_shared_models() == 1  # a first version, on no rewards yet
    assert refit_shared_models() == 0
    _reward(api, _score(api))
    assert refit_shared_models() == 1
    assert SharedModel.objects.get(version=2).rewards == 1


@pytestmark_db
def test_the_admin_shows_the_shared_model_and_each_estimates_two_parts(
    api, client, staff_user
):
    client.force_login(staff_user)
    room = client.get("/admin/policies/").content.decode()
    assert "No shared model yet" in room

    _reward(api, _score(api))
    shared_model_refit(policy_name="hybrid-v1")
    _score(api)
    room = client.get("/admin/policies/").content.decode()
    assert "Shared model v1, refit" in room and "on 1 reward" in room

    from oo_ml.formatting import significant
    from policies.models import BanditState

    state = BanditState.objects.get(policy__name="hybrid-v1", user_id="u1")
    page = client.get(f"/admin/policies/banditstate/{state.pk}/change/")
    html = page.content.decode()
    assert "Shared part" in html and "Personal part" in html
    decision = Decision.objects.filter(model_version=1).get()
    first = decision.estimates[0] - decision.shared_estimates[0]
    assert f"<td>{significant(first)}</td>" in html  # four significant digits


@pytestmark_db
def test_hybrid_v1_rolls_out_as_any_policy_shadow_simulation_gate_promotion(
    api, staff_api
):
    from policies.tests.test_promotion_api import simulate

    toggle = staff_api.post("/api/admin/policies/hybrid-v1/toggle", {}, format="json")
    assert toggle.json()["enabled"] is True
    shadowed = api.post(
        "/score", {"user_id": "u1", "candidates": CANDIDATES}, format="json"
    ).json()
    assert shadowed["policy"] == "egreedy-v1"
    assert Decision.objects.filter(
        request_id=Decision.objects.get(id=shadowed["decision_id"]).request_id,
        policy__name="hybrid-v1",
    ).exists()
    # A run big enough to decide: the shared model needs a population.
    run = simulate(
        policies=("egreedy-v1", "hybrid-v1"), n_users=300, n_rounds=20, chunk_users=300
    )
    rows = {row["policy"]: row for row in run.summary["policies"]}
    assert rows["hybrid-v1"]["mean_reward"] > rows["egreedy-v1"]["mean_reward"]

    promoted = staff_api.post("/api/admin/policies/hybrid-v1/promote")
    assert promoted.status_code == 200, promoted.json()
    shared_model_refit(policy_name="hybrid-v1")
    answer = api.post(
        "/score", {"user_id": "u2", "candidates": CANDIDATES}, format="json"
    ).json()
    assert answer["policy"] == "hybrid-v1"
    assert Decision.objects.get(id=answer["decision_id"]).model_version == 1

    rolled = staff_api.post("/api/admin/policies/rollback")
    assert rolled.status_code == 200 and rolled.json()["name"] == "egreedy-v1"
    after = Policy.objects.get(name="hybrid-v1")
    assert (after.role, after.enabled, after.learns_live) == ("shadow", True, True)
