"""The batched forms of the numeric core against the single-user functions.

The simulator runs thousands of users at once through ``*_batch``; /score runs one
through the single-user functions. Both must give the same numbers (the encoding
bit for bit, the rest to 1e-12) and the same picks, ties included. No database.
"""

from __future__ import annotations

import numpy as np
import pytest

from policies import bandits

TOL = 1e-12
USERS = 40
N = 5


class GivenDraws:
    """A generator stand-in that answers the draws egreedy_choose asks for with
    the uniforms the batched form was given."""

    def __init__(self, explore: float, pick: float):
        self.explore = explore
        self.pick = pick

    def random(self) -> float:
        return self.explore

    def integers(self, n: int) -> int:
        return int(self.pick * n)


def random_world(rng: np.random.Generator, users: int = USERS, n: int = N):
    nulls = rng.random((5, users)) < 0.3
    profile = {
        "completion_rate_30d": rng.random(users),
        "dismiss_rate_30d": rng.random(users),
        "mean_dwell_ms_30d": rng.uniform(0, 900_000, users),
        "preferred_hour": rng.integers(0, 24, users).astype(float),
        "tip_volume_30d": rng.integers(0, 300, users).astype(float),
    }
    for row, name in enumerate(bandits.PROFILE_NAMES):
        profile[name][nulls[row]] = np.nan
    return dict(
        hours=rng.integers(0, 24, users),
        day_of_week=rng.integers(0, 7, users),
        is_overdue=rng.random((users, n)) < 0.4,
        task_age_days=rng.uniform(0, 60, (users, n)),
        priority=rng.integers(1, 5, (users, n)),
        profile=profile,
    )


def one_user(world: dict, u: int, dimension: int) -> np.ndarray:
    features = [
        {
            "is_overdue": bool(world["is_overdue"][u, i]),
            "task_age_days": float(world["task_age_days"][u, i]),
            "priority": int(world["priority"][u, i]),
        }
        for i in range(world["priority"].shape[1])
    ]
    profile = {
        name: None if np.isnan(v := world["profile"][name][u]) else float(v)
        for name in bandits.PROFILE_NAMES
    }
    return bandits.encode(
        features,
        hours=[int(world["hours"][u])] * len(features),
        day_of_week=int(world["day_of_week"][u]),
        profile=profile,
        dimension=dimension,
    )


def learned_states(rng, users: int, dimension: int, steps: int = 30):
    """States after random updates, each user's its own, via the single update."""
    a_all, b_all = bandits.initial_state_batch(users, dimension)
    for u in range(users):
        a, b = bandits.initial_state(dimension)
        for _ in range(rng.integers(0, steps)):
            a, b = bandits.update(a, b, rng.random(dimension), rng.choice([-1, 1.0]))
        a_all[u], b_all[u] = a, b
    return a_all, b_all


@pytest.mark.parametrize("dimension", bandits.DIMENSIONS)
def test_encode_batch_equals_encode_for_each_user(dimension):
    world = random_world(np.random.default_rng(dimension))
    x = bandits.encode_batch(**world, dimension=dimension)
    assert x.shape == (USERS, N, dimension)
    for u in range(USERS):
        np.testing.assert_array_equal(x[u], one_user(world, u, dimension))


@pytest.mark.parametrize("preferred", [None, *range(24)])
def test_encode_in_floats_is_encode_in_arrays_bit_for_bit(preferred, monkeypatch):
    """``encode`` computes a few candidates at whole hours in Python floats, and
    more, or other hours, in numpy arrays: the same numbers either way, sign
    bits included, at every hour, day and preferred hour."""
    rng = np.random.default_rng(24 if preferred is None else preferred)
    candidates = [
        {
            "is_overdue": bool(rng.random() < 0.5),
            "task_age_days": float(rng.uniform(0, 90)),
            "priority": int(rng.integers(1, 5)),
        }
        for _ in range(2)
    ]
    candidates.append({"task_age_days": -0.0})  # valid: not below 0
    candidates.append({})  # the defaults
    profile = {
        "completion_rate_30d": float(rng.random()),
        "dismiss_rate_30d": None,
        "mean_dwell_ms_30d": float(rng.uniform(0, 2_000_000)),
        "preferred_hour": preferred,
    }
    for hour in range(24):
        for day in range(7):
            profile["tip_volume_30d"] = int(rng.integers(0, 150))  # 100 and up: 1
            common = dict(hours=[hour] * 4, day_of_week=day, profile=profile)
            floats = bandits.encode(candidates, **common, dimension=12)
            with monkeypatch.context() as arrays_only:
                arrays_only.setattr(bandits, "_FLOATS_UP_TO", -1)
                arrays = bandits.encode(candidates, **common, dimension=12)
            assert floats.tobytes() == arrays.tobytes()


def test_encode_batch_d12_nulls_take_neutral_values():
    world = random_world(np.random.default_rng(0))
    for name in bandits.PROFILE_NAMES:
        world["profile"][name][:] = np.nan
    x = bandits.encode_batch(**world, dimension=12)
    np.testing.assert_array_equal(
        x[:, :, 7:], np.tile([0, 0, 0, 0.5, 0], (USERS, N, 1))
    )


def test_encode_batch_rejects_unknown_dimension():
    with pytest.raises(ValueError):
        bandits.encode_batch(**random_world(np.random.default_rng(0)), dimension=6)


def test_initial_state_batch_is_identities_and_zeros():
    a, b = bandits.initial_state_batch(3, 7)
    for u in range(3):
        np.testing.assert_array_equal(a[u], np.eye(7))
        np.testing.assert_array_equal(b[u], np.zeros(7))


@pytest.mark.parametrize("dimension", bandits.DIMENSIONS)
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5])
def test_linucb_batch_equals_single_calls(dimension, alpha):
    rng = np.random.default_rng(100 + dimension)
    world = random_world(rng)
    x = bandits.encode_batch(**world, dimension=dimension)
    a, b = learned_states(rng, USERS, dimension)
    batch = bandits.linucb_choose_batch(a, b, x, alpha=alpha)
    for u in range(USERS):
        one = bandits.linucb_choose(a[u], b[u], x[u], alpha=alpha)
        assert batch.index[u] == one.index
        assert abs(batch.score[u] - one.score) <= TOL
        np.testing.assert_allclose(batch.estimates[u], one.estimates, atol=TOL)
        np.testing.assert_allclose(batch.bonuses[u], one.bonuses, atol=TOL)
        assert batch.propensity[u] == one.propensity
        assert batch.exploring[u] == one.exploring


@pytest.mark.parametrize("dimension", bandits.DIMENSIONS)
@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_egreedy_batch_equals_single_calls_given_the_same_draws(dimension, epsilon):
    rng = np.random.default_rng(200 + dimension)
    world = random_world(rng)
    x = bandits.encode_batch(**world, dimension=dimension)
    a, b = learned_states(rng, USERS, dimension)
    explore, pick = rng.random(USERS), rng.random(USERS)
    batch = bandits.egreedy_choose_batch(
        a, b, x, epsilon=epsilon, explore_uniforms=explore, pick_uniforms=pick
    )
    for u in range(USERS):
        one = bandits.egreedy_choose(
            a[u], b[u], x[u], epsilon=epsilon, rng=GivenDraws(explore[u], pick[u])
        )
        assert batch.index[u] == one.index
        assert batch.exploring[u] == one.exploring
        assert batch.propensity[u] == one.propensity
        assert abs(batch.score[u] - one.score) <= TOL
        np.testing.assert_allclose(batch.estimates[u], one.estimates, atol=TOL)
    assert batch.bonuses is None
    if epsilon == 0.3:  # the uniforms really decide: some explore, some do not
        assert 0 < batch.exploring.sum() < USERS


@pytest.mark.parametrize("dimension", bandits.DIMENSIONS)
def test_ties_go_to_the_first_candidate_in_both_forms(dimension):
    rng = np.random.default_rng(300 + dimension)
    world = random_world(rng)
    x = bandits.encode_batch(**world, dimension=dimension)
    # Candidates 1 and 3 are copies of candidate 4; 0 and 2 are shorter or
    # opposite, so with theta = x_4 the three copies tie at the top.
    x[:, 1] = x[:, 4]
    x[:, 3] = x[:, 4]
    x[:, 0] = 0.5 * x[:, 4]
    x[:, 2] = -x[:, 4]
    a, b = learned_states(rng, USERS, dimension)
    b[:] = 0.0  # theta = 0: every estimate ties
    b[::2] = np.einsum("uij,uj->ui", a[::2], x[::2, 4])  # even users: theta = x_4
    zeros = np.ones(USERS)  # never explore
    greedy = bandits.egreedy_choose_batch(
        a, b, x, epsilon=0.1, explore_uniforms=zeros, pick_uniforms=zeros * 0
    )
    ucb = bandits.linucb_choose_batch(a, b, x, alpha=0.0)
    for u in range(USERS):
        single_greedy = bandits.egreedy_choose(
            a[u], b[u], x[u], epsilon=0.1, rng=GivenDraws(1.0, 0.0)
        )
        single_ucb = bandits.linucb_choose(a[u], b[u], x[u], alpha=0.0)
        expected = 0 if u % 2 else 1  # all tie at theta = 0; else x_4's copies win
        assert greedy.index[u] == single_greedy.index == expected
        assert ucb.index[u] == single_ucb.index == expected


def test_first_max_batch_is_first_max_row_by_row():
    rows = np.array(
        [[0.5, 0.5 + 1e-9, 0.1], [2.0, 2.0 + 1e-15, 2.0], [-3.0, -1.0, -1.0]]
    )
    got = bandits.first_max_batch(rows)
    assert got.tolist() == [bandits.first_max(row) for row in rows] == [1, 0, 1]


def test_first_max_in_floats_is_first_max_batch_at_the_tolerance_edges():
    """``first_max`` picks in Python floats, ``first_max_batch`` in numpy: the
    same index for values at, just inside and just outside the tie tolerance,
    at every scale, and for a NaN or an infinity anywhere."""
    rng = np.random.default_rng(7)
    rows = []
    for scale in (1e-6, 0.5, 1.0, 3.0, 1e6):
        for _ in range(200):
            top = scale * rng.choice([-1.0, 1.0])
            gap = bandits.TIE_TOLERANCE * max(1.0, abs(top))
            nudge = rng.choice([0.0, 0.5, 0.999, 1.0, 1.001, 2.0, -1.0])
            row = rng.uniform(-2 * scale, top, 6)
            row[rng.integers(6)] = top
            row[rng.integers(6)] = top - nudge * gap
            rows.append(row)
    for odd in (np.nan, np.inf, -np.inf):
        for at in range(3):
            row = np.array([1.0, 2.0, 0.5])
            row[at] = odd
            rows.append(np.concatenate([row, [2.0, 0.1, 1.0]]))
    rows = np.array(rows)
    with np.errstate(invalid="ignore"):  # inf - inf, as numpy warns
        assert bandits.first_max_batch(rows).tolist() == [
            bandits.first_max(row) for row in rows
        ]


@pytest.mark.parametrize("dimension", bandits.DIMENSIONS)
@pytest.mark.parametrize("in_place", [False, True])
def test_update_batch_equals_single_updates(dimension, in_place):
    rng = np.random.default_rng(400 + dimension)
    a, b = learned_states(rng, USERS, dimension)
    x = rng.normal(size=(USERS, dimension))
    rewards = rng.choice([-1.0, -0.3, 0.1, 0.3, 0.6, 1.0], USERS)
    expected = [bandits.update(a[u], b[u], x[u], rewards[u]) for u in range(USERS)]
    a_new, b_new = bandits.update_batch(a, b, x, rewards, in_place=in_place)
    assert (a_new is a) == in_place
    for u in range(USERS):
        np.testing.assert_allclose(a_new[u], expected[u][0], rtol=0, atol=TOL)
        np.testing.assert_allclose(b_new[u], expected[u][1], rtol=0, atol=TOL)


def test_choose_batch_dispatches_and_rejects_unknown_algorithms():
    rng = np.random.default_rng(7)
    x = bandits.encode_batch(**random_world(rng), dimension=7)
    a, b = learned_states(rng, USERS, 7)
    draws = dict(explore_uniforms=np.ones(USERS), pick_uniforms=np.zeros(USERS))
    ucb = bandits.choose_batch("linucb", {"alpha": 2.0}, a, b, x, **draws)
    np.testing.assert_array_equal(
        ucb.index, bandits.linucb_choose_batch(a, b, x, alpha=2.0).index
    )
    greedy = bandits.choose_batch("egreedy", {}, a, b, x, **draws)
    assert greedy.bonuses is None and not greedy.exploring.any()
    with pytest.raises(ValueError):
        bandits.choose_batch("thompson", {}, a, b, x, **draws)
