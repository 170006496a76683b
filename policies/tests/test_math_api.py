"""The encoding and the algorithms (docs/features.md, docs/algorithms.md) checked
end to end, through the named-policy routes.

Every expected vector below is written out by hand from docs/features.md's table;
A and b are built from those vectors, so a wrong encoding, a wrong update or a
vector taken from the wrong place all show up as a wrong theta or score.
"""

from __future__ import annotations

import copy
import itertools
import math
import os

import numpy as np
import pytest
from django.urls import reverse

from policies import apis

pytestmark = pytest.mark.django_db

TOL = 1e-9
SQRT3_2 = math.sqrt(3.0) / 2.0
TAU = 2.0 * math.pi

POLICIES = [("linucb-v1", 5), ("egreedy-v1", 7), ("egreedy-v2", 12)]
EGREEDY = [("egreedy-v1", 7), ("egreedy-v2", 12)]


def score(api, name, body):
    response = api.post(
        reverse("policy-score", kwargs={"name": name}), body, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def reward(api, name, body):
    response = api.post(
        reverse("policy-reward", kwargs={"name": name}), body, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def stats(api, name, user_id):
    response = api.get(
        reverse("policy-stats", kwargs={"name": name, "user_id": user_id})
    )
    assert response.status_code == 200, response.json()
    return response.json()


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float),
        np.asarray(expected, dtype=float),
        rtol=0,
        atol=tol,
    )


# --- rewards rebuilt from the body -------------------------------------------------
#
# Four rewards, each with its full 12-feature vector worked out by hand; a policy of
# dimension D sees the first D entries.
REWARDS = [
    (
        {
            "features": {
                "hour_of_day": 6,
                "is_overdue": True,
                "task_age_days": 45,
                "priority": 4,
            },
            "day_of_week": 0,
            "profile_features": {
                "completion_rate_30d": 0.5,
                "dismiss_rate_30d": 0.25,
                "mean_dwell_ms_30d": 1_200_000,
                "preferred_hour": 18,
                "tip_volume_30d": 100,
            },
            "reward": 1.0,
        },
        # hour 6 = quarter turn; age and dwell clip to 1; preferred 18 is 12 h
        # from hour 6, so alignment (cos π + 1) / 2 = 0; volume 100 -> 1.
        [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 1.0],
    ),
    (
        {
            "features": {
                "hour_of_day": 0,
                "is_overdue": False,
                "task_age_days": 15,
                "priority": 2,
            },
            "day_of_week": 3,
            "reward": -1.0,
        },
        # no profile: 0, 0, 0, 0.5, 0
        [
            0.0,
            1.0,
            0.0,
            0.5,
            1 / 3,
            math.sin(6 * math.pi / 7),
            math.cos(6 * math.pi / 7),
            0.0,
            0.0,
            0.0,
            0.5,
            0.0,
        ],
    ),
    (
        {
            "features": {"hour_of_day": 8, "task_age_days": 3, "priority": 3},
            "day_of_week": 6,
            "profile_features": {
                "completion_rate_30d": None,
                "dismiss_rate_30d": 0.1,
                "mean_dwell_ms_30d": 300_000,
                "preferred_hour": 4,
                "tip_volume_30d": 9,
            },
            "reward": 0.6,
        },
        # hour 8: (√3/2, -1/2); overdue missing -> 0; preferred 4 h earlier:
        # (cos(-π/3) + 1) / 2 = 0.75; volume log1p(9) / log1p(100) = ln 10 / ln 101.
        [
            SQRT3_2,
            -0.5,
            0.0,
            0.1,
            2 / 3,
            math.sin(12 * math.pi / 7),
            math.cos(12 * math.pi / 7),
            0.0,
            0.1,
            0.5,
            0.75,
            math.log(10) / math.log(101),
        ],
    ),
    (
        # Nothing but the reward: hour 12, Monday, no profile.
        {"reward": 0.3},
        [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0],
    ),
]


@pytest.mark.parametrize(("name", "dim"), POLICIES)
def test_theta_after_body_rewards_is_a_inverse_b(api, name, dim):
    user = f"theta-{name}"
    a, b = np.eye(dim), np.zeros(dim)
    cumulative = 0.0
    for count, (body, vector) in enumerate(REWARDS, start=1):
        answer = reward(api, name, {"user_id": user, "tip_id": f"t{count}", **body})
        assert answer["applied"] is True and answer["replayed"] is False
        assert answer["policy"] == name
        assert answer["reward_count"] == count
        x = np.array(vector[:dim])
        a += np.outer(x, x)
        b += body["reward"] * x
        cumulative += body["reward"]
        assert answer["cumulative_reward"] == pytest.approx(cumulative, abs=TOL)

    got = stats(api, name, user)
    assert got["policy"] == name
    assert got["reward_count"] == 4
    assert got["pulls"] == 0  # rewards alone are not decisions
    assert got["cumulative_reward"] == pytest.approx(0.9, abs=TOL)
    assert got["estimated_mean_reward"] == pytest.approx(0.9 / 4, abs=TOL)
    assert len(got["feature_labels"]) == dim
    assert len(got["theta"]) == dim
    assert_close(got["theta"], np.linalg.solve(a, b))


def test_rewards_of_one_policy_do_not_touch_another(api):
    body, vector = REWARDS[0]
    reward(api, "egreedy-v2", {"user_id": "only-v2", "tip_id": "t", **body})
    # The other policies have no state for this user at all.
    for other in ("linucb-v1", "egreedy-v1"):
        url = reverse("policy-stats", kwargs={"name": other, "user_id": "only-v2"})
        assert api.get(url).status_code == 404
    # One update on a fresh state: theta = x / (1 + ||x||^2) (Sherman-Morrison).
    x = np.array(vector)
    assert_close(stats(api, "egreedy-v2", "only-v2")["theta"], x / (1 + x @ x))


# --- LinUCB /score -----------------------------------------------------------------


def test_linucb_fresh_user_scores_the_norm_at_the_default_context(api):
    # No context: hour 12, so hour_sin, hour_cos = (0, -1) for every candidate, and
    # the candidates' own hour_of_day is not used. theta = 0, score = ||x||.
    got = score(
        api,
        "linucb-v1",
        {
            "user_id": "fresh-linucb",
            "candidates": [
                {"id": "a", "features": {"hour_of_day": 3, "is_overdue": True}},
                {"id": "b", "features": {"task_age_days": 45, "priority": 4}},
                {"id": "c"},
            ],
        },
    )
    # ||x||^2: a = 1 + 1 = 2, b = 1 + 1 + 1 = 3, c = 1.
    assert got["tip_id"] == "b"
    assert got["score"] == pytest.approx(math.sqrt(3.0), abs=TOL)
    assert got["propensity"] == 1.0
    assert got["exploring"] is False
    assert got["policy"] == "linucb-v1"


def test_linucb_score_includes_the_bonus_on_a_trained_state(api):
    user = "trained-linucb"
    # One reward of 1 on x1 = [0, 1, 1, 1, 1] (hour 0, overdue, 30 days, priority 4).
    reward(
        api,
        "linucb-v1",
        {
            "user_id": user,
            "tip_id": "seed",
            "reward": 1.0,
            "features": {
                "hour_of_day": 0,
                "is_overdue": True,
                "task_age_days": 30,
                "priority": 4,
            },
        },
    )
    # A = I + x1 x1^T, ||x1||^2 = 4: A^-1 = I - x1 x1^T / 5, theta = x1 / 5.
    # At hour 0, for x: estimate = (x1.x) / 5, bonus^2 = ||x||^2 - (x1.x)^2 / 5.
    #   plain   [0,1,0,0,0]: x1.x = 1, ||x||^2 = 1 -> 0.2 + √0.8
    #   urgent  [0,1,1,1,1]: x1.x = 4, ||x||^2 = 4 -> 0.8 + √0.8  (greedy's pick)
    #   old     [0,1,0,1,1]: x1.x = 3, ||x||^2 = 3 -> 0.6 + √1.2  (wins by 0.001)
    #   overdue [0,1,1,0,0]: x1.x = 2, ||x||^2 = 2 -> 0.4 + √1.2
    assert 0.6 + math.sqrt(1.2) > 0.8 + math.sqrt(0.8)  # the hand-worked order
    got = score(
        api,
        "linucb-v1",
        {
            "user_id": user,
            "context": {"hour_of_day": 0, "day_of_week": 4},
            "candidates": [
                {"id": "plain"},
                {
                    "id": "urgent",
                    "features": {
                        "is_overdue": True,
                        "task_age_days": 30,
                        "priority": 4,
                    },
                },
                {"id": "old", "features": {"task_age_days": 30, "priority": 4}},
                {"id": "overdue", "features": {"is_overdue": True}},
            ],
        },
    )
    assert got["tip_id"] == "old"
    assert got["score"] == pytest.approx(0.6 + math.sqrt(1.2), abs=TOL)
    assert got["propensity"] == 1.0
    assert got["exploring"] is False

    # The decision log shows the vector the pick was scored on.
    history = api.get(reverse("features", kwargs={"user_id": user})).json()
    seen = history["history"][0]
    assert seen["decision_id"] == got["decision_id"]
    assert_close(list(seen["features"].values()), [0.0, 1.0, 0.0, 1.0, 1.0])
    assert stats(api, "linucb-v1", user)["pulls"] == 1


def test_linucb_tie_goes_to_the_first_candidate(api):
    # Fresh state, two different candidates with the same norm (√2).
    got = score(
        api,
        "linucb-v1",
        {
            "user_id": "tie-linucb",
            "candidates": [
                {"id": "first", "features": {"priority": 4}},
                {"id": "second", "features": {"is_overdue": True}},
            ],
        },
    )
    assert got["tip_id"] == "first"
    assert got["score"] == pytest.approx(math.sqrt(2.0), abs=TOL)


# --- epsilon-greedy /score ---------------------------------------------------------

# Trained with one reward of 1 on x1 (hour 0, overdue, 30 days, priority 4, Monday,
# profile all "high"), theta = x1 / (1 + ||x1||^2). Scoring at hour 0 on Monday with
# the same profile, estimates are (x1.x) / (1 + ||x1||^2):
#   D=7:  x1 = [0,1,1,1,1,0,1], ||x1||^2 = 5
#         plain 2/6, urgent 5/6, overdue 3/6
#   D=12: x1 adds profile block [1, 0, 1, 1, 1] (dwell 600 000 -> 1, preferred
#         hour 0 at hour 0 -> 1, volume 100 -> 1), ||x1||^2 = 9
#         plain 6/10, urgent 9/10, overdue 7/10
HIGH_PROFILE = {
    "completion_rate_30d": 1.0,
    "dismiss_rate_30d": 0.0,
    "mean_dwell_ms_30d": 600_000,
    "preferred_hour": 0,
    "tip_volume_30d": 100,
}
URGENT = {"is_overdue": True, "task_age_days": 30, "priority": 4}
CANDIDATES = [
    {"id": "plain"},
    {"id": "urgent", "features": URGENT},
    {"id": "overdue", "features": {"is_overdue": True}},
]
ESTIMATES = {
    "egreedy-v1": {"plain": 2 / 6, "urgent": 5 / 6, "overdue": 3 / 6},
    "egreedy-v2": {"plain": 6 / 10, "urgent": 9 / 10, "overdue": 7 / 10},
}


@pytest.fixture
def seeded_requests(monkeypatch):
    """Each /score draws from default_rng(0), default_rng(1), ... in turn.

    Live requests share one unseeded generator per process; seeding one per
    request keeps these tests deterministic without assuming how the core
    consumes its draws.
    """
    seeds = itertools.count()
    monkeypatch.setattr(apis, "request_rng", lambda: np.random.default_rng(next(seeds)))


def test_live_decisions_share_one_generator_per_process():
    first = apis.request_rng()
    assert apis.request_rng() is first
    # A forked worker must seed its own stream, not inherit the parent's (which
    # would make every worker explore in lockstep).
    parent_next = copy.deepcopy(first).random()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first draw, and leave at once
        os.write(write, repr(apis.request_rng().random()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_first = float(os.read(read, 64))
    os.close(read)
    os.close(write)
    assert child_first != parent_next
    assert first.random() == parent_next  # the parent's stream went on as it was


@pytest.mark.parametrize(("name", "dim"), EGREEDY)
def test_egreedy_score_and_propensity_on_a_trained_state(
    api, seeded_requests, name, dim
):
    user = f"trained-{name}"
    reward(
        api,
        name,
        {
            "user_id": user,
            "tip_id": "seed",
            "reward": 1.0,
            "features": {"hour_of_day": 0, **URGENT},
            "day_of_week": 0,
            "profile_features": HIGH_PROFILE,
        },
    )
    body = {
        "user_id": user,
        "context": {"hour_of_day": 0, "day_of_week": 0},
        "candidates": CANDIDATES,
        "profile_features": HIGH_PROFILE,
    }
    estimates = ESTIMATES[name]
    n = len(CANDIDATES)
    seen = {"greedy": 0, "explore-greedy": 0, "explore-other": 0}
    requests = 0
    # Keep asking until every branch has shown up (each has probability >= 1/30).
    while requests < 400 and not all(seen.values()):
        got = score(api, name, body)
        requests += 1
        # The score is theta.x of the pick, exploring or not.
        assert got["score"] == pytest.approx(estimates[got["tip_id"]], abs=TOL)
        if got["tip_id"] == "urgent":
            # The greedy candidate: (1 - eps) + eps / N, however it was reached.
            assert got["propensity"] == pytest.approx(0.9 + 0.1 / n, abs=TOL)
            seen["explore-greedy" if got["exploring"] else "greedy"] += 1
        else:
            # Only exploring reaches another candidate: eps / N.
            assert got["exploring"] is True
            assert got["propensity"] == pytest.approx(0.1 / n, abs=TOL)
            seen["explore-other"] += 1
    assert all(seen.values()), seen

    got = stats(api, name, user)
    explored = seen["explore-greedy"] + seen["explore-other"]
    assert got["pulls"] == requests
    assert got["exploration_rate"] == pytest.approx(explored / requests, abs=TOL)


@pytest.mark.parametrize(("name", "dim"), EGREEDY)
def test_egreedy_fresh_state_tie_goes_to_the_first_candidate(
    api, seeded_requests, name, dim
):
    # theta = 0: all estimates tie at 0, so the greedy pick is the first one.
    greedy = 0
    for _ in range(30):
        got = score(
            api,
            name,
            {"user_id": f"tie-{name}", "candidates": CANDIDATES},
        )
        assert got["score"] == pytest.approx(0.0, abs=TOL)
        if not got["exploring"]:
            assert got["tip_id"] == "plain"
            assert got["propensity"] == pytest.approx(0.9 + 0.1 / 3, abs=TOL)
            greedy += 1
        elif got["tip_id"] != "plain":
            assert got["propensity"] == pytest.approx(0.1 / 3, abs=TOL)
    assert greedy > 0


def test_egreedy_v2_score_without_profile_uses_neutral_profile(api):
    user = "v2-no-profile"
    reward(
        api,
        "egreedy-v2",
        {
            "user_id": user,
            "tip_id": "seed",
            "reward": 1.0,
            "features": {"hour_of_day": 0, **URGENT},
            "profile_features": HIGH_PROFILE,
        },
    )
    # theta = x1 / 10; at hour 0 with no profile the block is [0, 0, 0, 0.5, 0]:
    # urgent = [0,1,1,1,1,0,1, 0,0,0,0.5,0] -> (1+1+1+1+1+0.5) / 10 = 0.55,
    # plain (hour_cos, dow_cos, 0.5) 0.25, overdue (the same + is_overdue) 0.35.
    estimates = {"plain": 0.25, "urgent": 0.55, "overdue": 0.35}
    # Sixty requests, so exploration all but surely checks the other candidates too.
    for _ in range(60):
        got = score(
            api,
            "egreedy-v2",
            {
                "user_id": user,
                "context": {"hour_of_day": 0, "day_of_week": 0},
                "candidates": CANDIDATES,
            },
        )
        assert got["score"] == pytest.approx(estimates[got["tip_id"]], abs=TOL)


# --- rewards with a decision_id ----------------------------------------------------

SCORE_PROFILE = {
    "completion_rate_30d": 0.5,
    "dismiss_rate_30d": 0.2,
    "mean_dwell_ms_30d": 60_000,
    "preferred_hour": 12,
    "tip_volume_30d": 0,
}
# Candidate "t1" as scored at context hour 8 on Wednesday (dow 2) with
# SCORE_PROFILE; its own hour_of_day (20) is not used at /score.
# dwell 60 000 -> 0.1; preferred 12 is 4 h after 8: (cos(π/3) + 1) / 2 = 0.75;
# volume 0 -> log1p(0) = 0.
T1_AT_DECISION = [
    SQRT3_2,
    -0.5,
    1.0,
    0.5,
    2 / 3,
    math.sin(4 * math.pi / 7),
    math.cos(4 * math.pi / 7),
    0.5,
    0.2,
    0.1,
    0.75,
    0.0,
]
# A reward body that, if it were used, would give a very different vector.
MISLEADING = {
    "features": {
        "hour_of_day": 20,
        "is_overdue": False,
        "task_age_days": 0,
        "priority": 1,
    },
    "day_of_week": 5,
    "profile_features": {
        "completion_rate_30d": 0.0,
        "dismiss_rate_30d": 1.0,
        "mean_dwell_ms_30d": 0,
        "preferred_hour": 20,
        "tip_volume_30d": 50,
    },
}


def _score_t1(api, name, user):
    return score(
        api,
        name,
        {
            "user_id": user,
            "context": {"hour_of_day": 8, "day_of_week": 2},
            "profile_features": SCORE_PROFILE,
            "candidates": [
                {"id": "t0"},
                {
                    "id": "t1",
                    "features": {
                        "hour_of_day": 20,
                        "is_overdue": True,
                        "task_age_days": 15,
                        "priority": 3,
                    },
                },
            ],
        },
    )


@pytest.mark.parametrize(("name", "dim"), POLICIES)
def test_reward_with_decision_id_uses_the_logged_vector(api, name, dim):
    user = f"logged-{name}"
    decision = _score_t1(api, name, user)
    # Reward t1 whichever was picked: any candidate of the decision can be rewarded.
    answer = reward(
        api,
        name,
        {
            "user_id": user,
            "tip_id": "t1",
            "reward": 1.0,
            "decision_id": decision["decision_id"],
            **MISLEADING,
        },
    )
    assert answer["applied"] is True
    assert answer["policy"] == name
    assert answer["decision_id"] == decision["decision_id"]
    # Fresh state, one update with r = 1: theta = x / (1 + ||x||^2).
    x = np.array(T1_AT_DECISION[:dim])
    got = stats(api, name, user)
    assert got["pulls"] == 1 and got["reward_count"] == 1
    assert_close(got["theta"], x / (1.0 + x @ x))


def test_plain_reward_with_decision_id_trains_the_deciding_policy(api):
    # linucb-v1 is retired, egreedy-v1 active: the decision's policy still learns.
    user = "plain-route-linucb"
    decision = _score_t1(api, "linucb-v1", user)
    response = api.post(
        reverse("reward"),
        {
            "user_id": user,
            "tip_id": "t1",
            "reward": -0.5,
            "decision_id": decision["decision_id"],
            **MISLEADING,
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["policy"] == "linucb-v1"
    x = np.array(T1_AT_DECISION[:5])
    assert_close(stats(api, "linucb-v1", user)["theta"], -0.5 * x / (1.0 + x @ x))
    # The policies that learn from live rewards learn it too, each on its own
    # encoding of t1 in the context and profile the decision logged (not the
    # misleading body).
    for name, dimension in (("egreedy-v1", 7), ("egreedy-v2", 12)):
        got = stats(api, name, user)
        x = np.array(T1_AT_DECISION[:dimension])
        assert (got["reward_count"], got["learned_count"], got["pulls"]) == (1, 1, 0)
        assert_close(got["theta"], -0.5 * x / (1.0 + x @ x))


def test_decision_id_and_body_rewards_accumulate_into_one_state(api):
    # One reward from the logged vector, one rebuilt from a body: A, b sum both.
    user = "mixed-egreedy-v2"
    decision = _score_t1(api, "egreedy-v2", user)
    reward(
        api,
        "egreedy-v2",
        {
            "user_id": user,
            "tip_id": "t1",
            "reward": 1.0,
            "decision_id": decision["decision_id"],
            **MISLEADING,
        },
    )
    body, vector = REWARDS[2]
    reward(api, "egreedy-v2", {"user_id": user, "tip_id": "t3", **body})
    x1, x2 = np.array(T1_AT_DECISION), np.array(vector)
    a = np.eye(12) + np.outer(x1, x1) + np.outer(x2, x2)
    b = 1.0 * x1 + body["reward"] * x2
    assert_close(stats(api, "egreedy-v2", user)["theta"], np.linalg.solve(a, b))


def test_linucb_exact_tie_through_the_api_goes_to_first(api):
    reward(
        api,
        "linucb-v1",
        {
            "user_id": "tie",
            "tip_id": "seed",
            "reward": 1.0,
            "features": {
                "hour_of_day": 0,
                "is_overdue": True,
                "task_age_days": 30,
                "priority": 4,
            },
        },
    )
    got = score(
        api,
        "linucb-v1",
        {
            "user_id": "tie",
            "context": {"hour_of_day": 0},
            "candidates": [
                {"id": "overdue", "features": {"is_overdue": True}},
                {"id": "p4", "features": {"priority": 4}},
            ],
        },
    )
    # Both are 0.4 + sqrt(1.2) in exact arithmetic; rounding differs in the last bit.
    assert got["tip_id"] == "overdue"
