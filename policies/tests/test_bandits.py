"""The numeric core against hand-worked values (docs/features.md and
docs/algorithms.md). No database.

Expected numbers are literals or closed forms worked out on paper, never a second
call into ``policies.bandits``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies import bandits

TOL = 1e-9
SQRT3_2 = math.sqrt(3.0) / 2.0
TAU = 2.0 * math.pi


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float),
        np.asarray(expected, dtype=float),
        rtol=0,
        atol=tol,
    )


# --- feature encoding (docs/features.md) -------------------------------------------

URGENT = {"is_overdue": True, "task_age_days": 45, "priority": 4}
MIDDLING = {"is_overdue": False, "task_age_days": 15, "priority": 2}
BARE: dict = {}  # every feature missing: the documented defaults apply


def test_encode_d5_task_block_at_hour_8():
    x = bandits.encode(
        [URGENT, MIDDLING, BARE],
        hours=[8, 8, 8],
        day_of_week=2,
        profile={},
        dimension=5,
    )
    # hour 8 is 2π/3 round the clock: sin = √3/2, cos = -1/2.
    # 45 days clips to 1.0, 15 days is 0.5; priority 4 -> 1, 2 -> 1/3, 1 -> 0.
    assert x.shape == (3, 5)
    assert_close(
        x,
        [
            [SQRT3_2, -0.5, 1.0, 1.0, 1.0],
            [SQRT3_2, -0.5, 0.0, 0.5, 1 / 3],
            [SQRT3_2, -0.5, 0.0, 0.0, 0.0],
        ],
    )


def test_encode_hour_quarters_and_per_candidate_hours():
    x = bandits.encode(
        [BARE, BARE, BARE, BARE],
        hours=[0, 6, 12, 18],
        day_of_week=0,
        profile={},
        dimension=5,
    )
    assert_close(x[:, :2], [[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])


def test_encode_age_is_clipped_into_zero_one():
    ages = [{"task_age_days": d} for d in (0, 7.5, 30, 30.0001, 1000)]
    x = bandits.encode(ages, hours=[12] * 5, day_of_week=0, profile={}, dimension=5)
    assert_close(x[:, 3], [0.0, 0.25, 1.0, 1.0, 1.0])


def test_encode_priority_norm_for_every_priority():
    prios = [{"priority": p} for p in (1, 2, 3, 4)]
    x = bandits.encode(prios, hours=[12] * 4, day_of_week=0, profile={}, dimension=5)
    assert_close(x[:, 4], [0.0, 1 / 3, 2 / 3, 1.0])


def test_encode_candidate_with_none_features_takes_defaults():
    x = bandits.encode([None], hours=[12], day_of_week=0, profile={}, dimension=5)
    assert_close(x, [[0.0, -1.0, 0.0, 0.0, 0.0]])


def test_encode_d7_adds_day_of_week():
    x = bandits.encode(
        [URGENT, BARE], hours=[8, 8], day_of_week=2, profile={}, dimension=7
    )
    dow_sin, dow_cos = math.sin(4 * math.pi / 7), math.cos(4 * math.pi / 7)
    assert x.shape == (2, 7)
    assert_close(
        x,
        [
            [SQRT3_2, -0.5, 1.0, 1.0, 1.0, dow_sin, dow_cos],
            [SQRT3_2, -0.5, 0.0, 0.0, 0.0, dow_sin, dow_cos],
        ],
    )


@pytest.mark.parametrize(
    ("dow", "sin_cos"),
    [
        (0, (0.0, 1.0)),  # Monday sits at angle 0
        (1, (math.sin(TAU / 7), math.cos(TAU / 7))),
        (6, (math.sin(12 * math.pi / 7), math.cos(12 * math.pi / 7))),
    ],
)
def test_encode_day_of_week_angle(dow, sin_cos):
    x = bandits.encode([BARE], hours=[12], day_of_week=dow, profile={}, dimension=7)
    assert_close(x[0, 5:7], sin_cos)


def test_encode_d12_full_profile():
    profile = {
        "completion_rate_30d": 0.25,
        "dismiss_rate_30d": 0.1,
        "mean_dwell_ms_30d": 300_000,  # half of the 600 000 ms scale
        "preferred_hour": 4,  # 4 h before hour 8: (cos(-π/3) + 1) / 2 = 0.75
        "tip_volume_30d": 9,  # log1p(9) / log1p(100) = ln 10 / ln 101
    }
    x = bandits.encode(
        [URGENT, MIDDLING], hours=[8, 8], day_of_week=2, profile=profile, dimension=12
    )
    block = [0.25, 0.1, 0.5, 0.75, math.log(10) / math.log(101)]
    dow = [math.sin(4 * math.pi / 7), math.cos(4 * math.pi / 7)]
    assert x.shape == (2, 12)
    assert_close(x[0], [SQRT3_2, -0.5, 1.0, 1.0, 1.0, *dow, *block])
    assert_close(x[1], [SQRT3_2, -0.5, 0.0, 0.5, 1 / 3, *dow, *block])


@pytest.mark.parametrize(
    "profile",
    [
        {},
        {name: None for name in bandits.PROFILE_NAMES},
    ],
    ids=["missing", "null"],
)
def test_encode_d12_null_profile_takes_neutral_values(profile):
    x = bandits.encode([BARE], hours=[12], day_of_week=0, profile=profile, dimension=12)
    # completion, dismiss, dwell, volume -> 0; alignment -> 0.5.
    assert_close(x[0, 7:], [0.0, 0.0, 0.0, 0.5, 0.0])


@pytest.mark.parametrize(
    ("dwell", "expected"),
    [(0, 0.0), (60_000, 0.1), (600_000, 1.0), (900_000, 1.0), (10**9, 1.0)],
)
def test_encode_dwell_clipped_at_600000_ms(dwell, expected):
    x = bandits.encode(
        [BARE],
        hours=[12],
        day_of_week=0,
        profile={"mean_dwell_ms_30d": dwell},
        dimension=12,
    )
    assert_close(x[0, 9], expected)


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        (0, 0.0),
        (1, math.log(2) / math.log(101)),
        (100, 1.0),
        (250, 1.0),  # clipped
    ],
)
def test_encode_tip_volume_log1p_clipped_at_100(volume, expected):
    x = bandits.encode(
        [BARE],
        hours=[12],
        day_of_week=0,
        profile={"tip_volume_30d": volume},
        dimension=12,
    )
    assert_close(x[0, 11], expected)


@pytest.mark.parametrize(
    ("preferred", "hour", "expected"),
    [
        (8, 8, 1.0),  # same hour: perfect alignment
        (20, 8, 0.0),  # twelve hours apart: none
        (14, 8, 0.5),  # six hours apart: cos = 0
        (4, 8, 0.75),  # four hours before: cos(-π/3) = 1/2
        (23, 1, (math.cos(TAU * 22 / 24) + 1) / 2),  # wraps: 2 h apart
        (0, 6, 0.5),
    ],
)
def test_encode_preferred_hour_alignment(preferred, hour, expected):
    x = bandits.encode(
        [BARE],
        hours=[hour],
        day_of_week=0,
        profile={"preferred_hour": preferred},
        dimension=12,
    )
    assert_close(x[0, 10], expected)


def test_encode_alignment_uses_each_candidates_hour():
    # The reward path encodes with the candidate's own hour, so alignment differs.
    x = bandits.encode(
        [BARE, BARE],
        hours=[8, 20],
        day_of_week=0,
        profile={"preferred_hour": 8},
        dimension=12,
    )
    assert_close(x[:, 10], [1.0, 0.0])


def test_encode_rejects_unknown_dimension():
    with pytest.raises(ValueError):
        bandits.encode([BARE], hours=[12], day_of_week=0, profile={}, dimension=6)


def test_a_narrower_encoding_is_the_start_of_a_wider_one():
    """/score and /reward encode once, in the widest dimension, and each policy
    takes its part: that part must be what its own dimension encodes."""
    candidates = [BARE, {"hour_of_day": 7, "is_overdue": True, "priority": 4}]
    profile = {"completion_rate_30d": 0.4, "preferred_hour": 9, "tip_volume_30d": 3}
    widest = bandits.encode(
        candidates, hours=[7, 21], day_of_week=3, profile=profile, dimension=12
    )
    for dimension in bandits.DIMENSIONS:
        own = bandits.encode(
            candidates,
            hours=[7, 21],
            day_of_week=3,
            profile=profile,
            dimension=dimension,
        )
        np.testing.assert_array_equal(widest[:, :dimension], own)


def test_feature_labels_prefixes():
    assert bandits.feature_labels(5) == (
        "hour_sin",
        "hour_cos",
        "is_overdue",
        "task_age_norm",
        "priority_norm",
    )
    assert bandits.feature_labels(7)[5:] == ("dow_sin", "dow_cos")
    assert bandits.feature_labels(12)[7:] == (
        "completion_rate_30d",
        "dismiss_rate_30d",
        "mean_dwell_norm",
        "preferred_hour_alignment",
        "tip_volume_norm",
    )


# --- a small hand-built state ------------------------------------------------------
#
# A = [[2, 1], [1, 2]], det 3, A^-1 = [[2, -1], [-1, 2]] / 3; b = [1, 0].
# theta = A^-1 b = [2/3, -1/3].
A2 = np.array([[2.0, 1.0], [1.0, 2.0]])
B2 = np.array([1.0, 0.0])
# Candidates: x^T A^-1 x for [1, 0] is 2/3, for [0, 2] is 8/3, for [1, -1] is 2.
X2 = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
EST2 = [2 / 3, -2 / 3, 1.0]
VAR2 = [2 / 3, 8 / 3, 2.0]


def test_initial_state_is_identity_and_zero():
    a, b = bandits.initial_state(7)
    assert np.array_equal(a, np.eye(7))
    assert np.array_equal(b, np.zeros(7))


def test_theta_solves_the_hand_built_state():
    assert_close(bandits.theta(A2, B2), [2 / 3, -1 / 3])


# --- LinUCB ------------------------------------------------------------------------


def test_linucb_estimates_bonuses_and_pick_alpha_1():
    choice = bandits.linucb_choose(A2, B2, X2, alpha=1.0)
    bonuses = [math.sqrt(v) for v in VAR2]
    ucb = [e + s for e, s in zip(EST2, bonuses, strict=True)]
    # ucb = [2/3 + √(2/3), -2/3 + √(8/3), 1 + √2] ≈ [1.483, 0.966, 2.414]
    assert_close(choice.estimates, EST2)
    assert_close(choice.bonuses, bonuses)
    assert choice.index == 2
    assert_close(choice.score, 1.0 + math.sqrt(2.0))
    assert choice.score == pytest.approx(ucb[2], abs=TOL)
    assert choice.propensity == 1.0
    assert choice.exploring is False


def test_linucb_alpha_lets_the_bonus_overturn_the_greedy_pick():
    # Only [1, 0] and [0, 2]: greedy prefers [1, 0] (2/3 > -2/3); the bonus of
    # [0, 2] is twice as big, so it wins once alpha * √(2/3) > 4/3, alpha > 1.633.
    x = X2[:2]
    low = bandits.linucb_choose(A2, B2, x, alpha=1.0)
    assert low.index == 0
    assert_close(low.score, 2 / 3 + math.sqrt(2 / 3))
    high = bandits.linucb_choose(A2, B2, x, alpha=3.0)
    assert high.index == 1
    assert_close(high.bonuses, [3 * math.sqrt(2 / 3), 3 * math.sqrt(8 / 3)])
    assert_close(high.score, -2 / 3 + 3 * math.sqrt(8 / 3))


def test_linucb_alpha_zero_is_greedy():
    choice = bandits.linucb_choose(A2, B2, X2[:2], alpha=0.0)
    assert choice.index == 0
    assert_close(choice.bonuses, [0.0, 0.0])
    assert_close(choice.score, 2 / 3)


def test_linucb_fresh_state_scores_the_norm():
    a, b = np.eye(3), np.zeros(3)
    x = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.0, 3.0, 0.0]])
    choice = bandits.linucb_choose(a, b, x, alpha=1.0)
    # theta = 0, so the score is the bonus ||x||: 1, 3, 3; the first 3 wins.
    assert_close(choice.estimates, [0.0, 0.0, 0.0])
    assert_close(choice.bonuses, [1.0, 3.0, 3.0])
    assert choice.index == 1
    assert_close(choice.score, 3.0)


@pytest.mark.parametrize(
    "x",
    [
        [[1.0, 0.0], [1.0, 0.0]],  # identical candidates
        [[1.0, 0.0], [0.0, 1.0]],  # different vectors, equal ucb under A = I
        [[0.0, 1.0], [1.0, 0.0]],  # and in the other order
    ],
)
def test_linucb_tie_goes_to_the_first_candidate(x):
    choice = bandits.linucb_choose(np.eye(2), np.zeros(2), np.array(x), alpha=1.0)
    assert choice.index == 0
    assert_close(choice.score, 1.0)


def test_choose_dispatches_linucb_with_params_and_default_alpha():
    rng = np.random.default_rng(0)
    x = X2[:2]
    picked = bandits.choose("linucb", {"alpha": 3.0}, A2, B2, x, rng=rng)
    assert picked.index == 1
    assert_close(picked.score, -2 / 3 + 3 * math.sqrt(8 / 3))
    default = bandits.choose("linucb", {}, A2, B2, x, rng=rng)
    assert default.index == 0  # alpha 1.0
    assert_close(default.score, 2 / 3 + math.sqrt(2 / 3))


def test_choose_rejects_unknown_algorithm():
    with pytest.raises(ValueError):
        bandits.choose("thompson", {}, A2, B2, X2, rng=np.random.default_rng(0))


# --- epsilon-greedy ----------------------------------------------------------------
# On A2, B2, X2 the estimates are [2/3, -2/3, 1]: the greedy candidate is index 2.

GREEDY2 = 2


def test_egreedy_epsilon_zero_is_greedy_with_propensity_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        choice = bandits.egreedy_choose(A2, B2, X2, epsilon=0.0, rng=rng)
        assert choice.index == GREEDY2
        assert choice.exploring is False
        assert choice.propensity == 1.0
        assert_close(choice.score, 1.0)
        assert_close(choice.estimates, EST2)
        assert choice.bonuses is None


def test_egreedy_greedy_pick_propensity_with_epsilon_0_1():
    seed = 1
    # Precondition: this seed's first uniform draw is not below 0.1 (no exploring).
    assert np.random.default_rng(seed).random() >= 0.1
    choice = bandits.egreedy_choose(
        A2, B2, X2, epsilon=0.1, rng=np.random.default_rng(seed)
    )
    assert choice.index == GREEDY2
    assert choice.exploring is False
    assert_close(choice.propensity, 0.9 + 0.1 / 3)
    assert_close(choice.score, 1.0)


def test_egreedy_epsilon_one_always_explores_uniformly():
    rng = np.random.default_rng(7)
    counts = [0, 0, 0]
    for _ in range(3000):
        choice = bandits.egreedy_choose(A2, B2, X2, epsilon=1.0, rng=rng)
        counts[choice.index] += 1
        assert choice.exploring is True
        # With epsilon 1 every candidate, greedy included, has propensity 1/N.
        assert_close(choice.propensity, 1 / 3)
        assert_close(choice.score, EST2[choice.index])  # theta.x of the pick
    # Uniform: 1000 expected each, sd ~26; 120 is more than 4.5 sd.
    assert all(abs(c - 1000) < 120 for c in counts), counts


def test_egreedy_exploring_non_greedy_pick_has_propensity_eps_over_n():
    rng = np.random.default_rng(3)
    seen_explore_other = seen_explore_greedy = seen_greedy = False
    for _ in range(2000):
        choice = bandits.egreedy_choose(A2, B2, X2, epsilon=0.1, rng=rng)
        assert_close(choice.score, EST2[choice.index])
        if choice.index != GREEDY2:
            # Only exploring reaches a non-greedy candidate.
            assert choice.exploring is True
            assert_close(choice.propensity, 0.1 / 3)
            seen_explore_other = True
        else:
            # The greedy candidate is reached either way: (1 - eps) + eps / N.
            assert_close(choice.propensity, 0.9 + 0.1 / 3)
            seen_explore_greedy |= choice.exploring
            seen_greedy |= not choice.exploring
    assert seen_explore_other and seen_explore_greedy and seen_greedy


def test_egreedy_propensities_match_observed_frequencies():
    # The logged propensity must be the real probability of the pick.
    rng = np.random.default_rng(11)
    n = 20_000
    picks = np.zeros(3)
    explored = 0
    for _ in range(n):
        choice = bandits.egreedy_choose(A2, B2, X2, epsilon=0.1, rng=rng)
        picks[choice.index] += 1
        explored += choice.exploring
    # sd of a frequency near 0.03 over 20 000 draws is ~0.0012; near 0.1, ~0.002.
    assert_close(picks / n, [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3], tol=0.006)
    assert abs(explored / n - 0.1) < 0.01


def test_egreedy_tie_goes_to_the_first_candidate():
    # A = I, b = [1, 1]: theta = [1, 1], so [1, 0] and [0, 1] both estimate 1.
    a, b = np.eye(2), np.array([1.0, 1.0])
    for x in ([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]):
        choice = bandits.egreedy_choose(
            a, b, np.array(x), epsilon=0.0, rng=np.random.default_rng(0)
        )
        assert choice.index == 0
        assert_close(choice.score, 1.0)


def test_egreedy_same_seed_same_picks():
    def picks(seed):
        rng = np.random.default_rng(seed)
        return [
            bandits.egreedy_choose(A2, B2, X2, epsilon=0.5, rng=rng).index
            for _ in range(1000)
        ]

    assert picks(42) == picks(42)
    assert picks(42) != picks(43)  # the seed matters: 1000 draws cannot all agree


def test_egreedy_leaves_global_numpy_random_state_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for _ in range(100):
        bandits.egreedy_choose(A2, B2, X2, epsilon=0.5, rng=np.random.default_rng(5))
    assert np.array_equal(np.random.get_state()[1], before)


def test_choose_dispatches_egreedy_with_default_epsilon():
    # Seed 1 draws 0.51 first: greedy both ways; the default epsilon is 0.1.
    choice = bandits.choose("egreedy", {}, A2, B2, X2, rng=np.random.default_rng(1))
    assert choice.index == GREEDY2
    assert_close(choice.propensity, 0.9 + 0.1 / 3)
    forced = bandits.choose(
        "egreedy", {"epsilon": 0.0}, A2, B2, X2, rng=np.random.default_rng(1)
    )
    assert forced.propensity == 1.0


# --- update ------------------------------------------------------------------------


def test_update_by_hand():
    a, b = np.eye(2), np.zeros(2)
    # x = [1, 2], r = 0.5: A = I + [[1, 2], [2, 4]], b = 0.5 x.
    a1, b1 = bandits.update(a, b, np.array([1.0, 2.0]), 0.5)
    assert_close(a1, [[2.0, 2.0], [2.0, 5.0]])
    assert_close(b1, [0.5, 1.0])
    # x = [3, -1], r = -1: A += [[9, -3], [-3, 1]], b -= x.
    a2, b2 = bandits.update(a1, b1, np.array([3.0, -1.0]), -1.0)
    assert_close(a2, [[11.0, -1.0], [-1.0, 6.0]])
    assert_close(b2, [-2.5, 2.0])
    # det 65, A^-1 = [[6, 1], [1, 11]] / 65: theta = [-13, 19.5] / 65.
    assert_close(bandits.theta(a2, b2), [-0.2, 0.3])
    # The inputs are not modified in place.
    assert np.array_equal(a, np.eye(2)) and np.array_equal(b, np.zeros(2))
    assert_close(a1, [[2.0, 2.0], [2.0, 5.0]])


def test_update_many_by_hand():
    a, b = bandits.update_many(
        np.eye(2),
        np.zeros(2),
        np.array([[1.0, 2.0], [3.0, -1.0]]),
        np.array([0.5, -1.0]),
    )
    assert_close(a, [[11.0, -1.0], [-1.0, 6.0]])
    assert_close(b, [-2.5, 2.0])


def test_update_many_with_no_rows_changes_nothing():
    a0 = np.array([[2.0, 1.0], [1.0, 2.0]])
    b0 = np.array([1.0, 0.0])
    a, b = bandits.update_many(a0, b0, np.empty((0, 2)), np.empty(0))
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_update_many_equals_repeated_update():
    rng = np.random.default_rng(2024)
    xs = rng.uniform(-1, 1, size=(200, 12))
    rewards = rng.uniform(-1, 1, size=200)
    a_seq, b_seq = np.eye(12), np.zeros(12)
    for x, r in zip(xs, rewards, strict=True):
        a_seq, b_seq = bandits.update(a_seq, b_seq, x, r)
    a_many, b_many = bandits.update_many(np.eye(12), np.zeros(12), xs, rewards)
    assert_close(a_many, a_seq)
    assert_close(b_many, b_seq)


# --- numerical stability -----------------------------------------------------------


def _encoded_stream(rng, batches=50, per_batch=100):
    """Realistic D=12 vectors: random tasks, hours, days and profiles."""
    blocks = []
    for _ in range(batches):
        feats = [
            {
                "is_overdue": bool(rng.integers(2)),
                "task_age_days": float(rng.uniform(0, 60)),
                "priority": int(rng.integers(1, 5)),
            }
            for _ in range(per_batch)
        ]
        profile = {
            "completion_rate_30d": float(rng.uniform()),
            "dismiss_rate_30d": float(rng.uniform()),
            "mean_dwell_ms_30d": float(rng.uniform(0, 900_000)),
            "preferred_hour": int(rng.integers(24)),
            "tip_volume_30d": int(rng.integers(0, 300)),
        }
        blocks.append(
            bandits.encode(
                feats,
                hours=rng.integers(0, 24, size=per_batch),
                day_of_week=int(rng.integers(7)),
                profile=profile,
                dimension=12,
            )
        )
    return np.vstack(blocks)


def test_5000_updates_stay_symmetric_positive_definite_and_solvable():
    rng = np.random.default_rng(99)
    xs = _encoded_stream(rng)
    rewards = rng.uniform(-1, 1, size=len(xs))
    assert xs.shape == (5000, 12)

    a, b = bandits.initial_state(12)
    for x, r in zip(xs, rewards, strict=True):
        a, b = bandits.update(a, b, x, r)

    # x x^T is exactly symmetric in floating point, so the sum is too.
    assert np.array_equal(a, a.T)
    np.linalg.cholesky(a)  # raises LinAlgError unless positive definite
    # A = I + sum x x^T, so no eigenvalue can fall below 1.
    assert np.linalg.eigvalsh(a).min() >= 1.0 - 1e-9

    # Independent closed forms: A = I + X^T X, b = X^T r, and theta is the ridge
    # regression (lambda = 1) solution, here by least squares on [X; I] vs [r; 0].
    np.testing.assert_allclose(a, np.eye(12) + xs.T @ xs, rtol=1e-12, atol=TOL)
    np.testing.assert_allclose(b, xs.T @ rewards, rtol=1e-12, atol=TOL)
    ridge, *_ = np.linalg.lstsq(
        np.vstack([xs, np.eye(12)]),
        np.concatenate([rewards, np.zeros(12)]),
        rcond=None,
    )
    theta = bandits.theta(a, b)
    assert np.all(np.isfinite(theta))
    assert_close(theta, ridge)

    # Decisions on the trained state stay finite; A >= I bounds the bonus by ||x||.
    cand = xs[:20]
    ucb = bandits.linucb_choose(a, b, cand, alpha=1.0)
    assert np.all(np.isfinite(ucb.estimates)) and np.all(np.isfinite(ucb.bonuses))
    assert np.all(ucb.bonuses > 0)
    assert np.all(ucb.bonuses <= np.linalg.norm(cand, axis=1) + TOL)
    greedy = bandits.egreedy_choose(a, b, cand, epsilon=0.0, rng=rng)
    assert_close(greedy.estimates, cand @ ridge)


def test_one_vector_repeated_5000_times_matches_sherman_morrison():
    # A = I + n x x^T, b = n r x. By Sherman-Morrison,
    # theta = n r x / (1 + n ||x||^2).
    x = np.array([SQRT3_2, -0.5, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 1.0])
    n, r = 5000, -0.7
    norm2 = 1.0 + 3.0 + 1.0 + 0.25 + 0.0625 + 1.0 + 1.0  # = 7.3125
    a, b = bandits.initial_state(12)
    for _ in range(n):
        a, b = bandits.update(a, b, x, r)
    np.linalg.cholesky(a)
    assert_close(bandits.theta(a, b), n * r * x / (1 + n * norm2))
    # The direction of x is well learned: theta.x -> r n ||x||^2 / (1 + n ||x||^2).
    assert_close(bandits.theta(a, b) @ x, r * n * norm2 / (1 + n * norm2))


def test_an_exact_tie_lost_to_rounding_still_goes_to_the_first_candidate():
    # theta = [1/3, 1/3] exactly, but the solve gives the two estimates
    # 0.3333333333333333 and 0.33333333333333337.
    a, b = bandits.update(np.eye(2), np.zeros(2), np.array([1.0, 1.0]), 1.0)
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    choice = bandits.egreedy_choose(a, b, x, epsilon=0.0, rng=np.random.default_rng(0))
    assert choice.index == 0
    assert choice.propensity == 1.0


def test_first_max_keeps_real_differences():
    assert bandits.first_max(np.array([0.5, 0.5 + 1e-9, 0.1])) == 1
    assert bandits.first_max(np.array([2.0, 2.0 + 1e-15, 2.0])) == 0
    assert bandits.first_max(np.array([-3.0, -1.0, -1.0])) == 1


# --- off-policy evaluation ------------------------------------------------------


def test_egreedy_probabilities_put_the_rest_on_the_first_greedy_candidate():
    probabilities = bandits.action_probabilities(
        "egreedy", {"epsilon": 0.3}, np.array([0.2, 0.5, 0.5]), None
    )
    assert probabilities == pytest.approx([0.1, 0.8, 0.1], abs=1e-12)


def test_linucb_probabilities_are_certain_on_the_upper_bound():
    probabilities = bandits.action_probabilities(
        "linucb", {"alpha": 1.0}, np.array([0.1, 0.2]), np.array([0.3, 0.1])
    )
    assert probabilities.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [("egreedy", {"epsilon": 0.2}), ("hybrid", {}), ("linucb", {"alpha": 1.0})],
)
def test_batch_probabilities_match_one_request_at_a_time(algorithm, params):
    """Requests of 1 to 6 candidates padded into one array, with exact ties and
    ties in the last bit (the first candidate wins either way), and padding
    larger than any real value (which must not win)."""
    rng = np.random.default_rng(5)
    counts = rng.integers(1, 7, size=300)
    estimates = np.full((300, 6), 99.0)
    bonuses = np.full((300, 6), 99.0)
    for i, n in enumerate(counts):
        estimates[i, :n] = rng.choice([0.1, 0.2, 0.2 + 1e-16, 0.3], size=n)
        bonuses[i, :n] = rng.choice([0.0, 0.1], size=n)

    batch = bandits.action_probabilities_batch(
        algorithm, params, estimates, bonuses, counts
    )

    for i, n in enumerate(counts):
        one = bandits.action_probabilities(
            algorithm, params, estimates[i, :n], bonuses[i, :n]
        )
        assert batch[i, :n].tolist() == one.tolist()
        assert not batch[i, n:].any()
        assert batch[i].sum() == pytest.approx(1.0, abs=1e-12)


def test_batch_probabilities_refuse_an_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown algorithm"):
        bandits.action_probabilities_batch("thompson", {}, np.zeros((1, 2)), None, [2])
