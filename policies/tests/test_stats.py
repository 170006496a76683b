"""The numeric core of evidence: t intervals, per-user moments, the gate's
verdict, and the off-policy estimators with bootstrap intervals. No database.

Expected numbers are closed forms, published tables or literals worked out by
hand; the estimators are also checked on synthetic logs whose true value is
known, including how often their intervals cover it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies import stats

# --- Student's t ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        (1, math.tan(0.95 * math.pi / 2)),  # Cauchy: closed form
        (2, 0.95 * math.sqrt(2 / (1 - 0.95**2))),  # closed form for df = 2
        (3, 3.182446305),  # the tables from here on
        (4, 2.776445105),
        (10, 2.228138852),
        (30, 2.042272456),
        (120, 1.979930405),
        (1_000, 1.962339081),
        (1_001, 1.962336705),  # the expansion takes over
        # First order in 1/df: z + (z^3 + z) / (4 df); the rest is below 1e-9.
        (100_000, 1.959963985 + (1.959963985**3 + 1.959963985) / 400_000),
    ],
)
def test_t_critical_matches_closed_forms_and_tables(df, expected):
    assert stats.t_critical(df) == pytest.approx(expected, abs=1e-8)


def test_t_critical_tends_to_z_and_other_levels():
    assert stats.z_critical() == pytest.approx(1.959963985, abs=1e-9)
    assert stats.z_critical(0.90) == pytest.approx(1.644853627, abs=1e-9)
    assert stats.t_critical(10, 0.99) == pytest.approx(3.169272673, abs=1e-8)
    assert stats.t_critical(10**9) == pytest.approx(stats.z_critical(), abs=1e-8)
    with pytest.raises(ValueError):
        stats.t_critical(0)


# --- intervals over users ---------------------------------------------------------


def test_mean_interval_by_hand():
    interval = stats.mean_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd sqrt(5/3), half-width t(3) sd / 2
    half = 3.182446305 * math.sqrt(5 / 3) / 2
    assert interval.mean == 2.5 and interval.n == 4
    assert interval.sd == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert (interval.low, interval.high) == pytest.approx(
        (2.5 - half, 2.5 + half), abs=1e-8
    )


def test_one_user_has_no_interval_and_identical_users_a_point():
    one = stats.mean_interval([0.3])
    assert (one.mean, one.low, one.high, one.sd) == (0.3, None, None, None)
    same = stats.mean_interval([0.25] * 10)
    assert (same.low, same.high) == (0.25, 0.25)
    with pytest.raises(ValueError):
        stats.mean_interval([])


def test_user_moments_give_each_interval_and_every_paired_difference():
    # 4 users x 3 policies, totals in units of 1/1000 over 10 rounds each.
    totals = np.array([[3000, 4000, 1000], [5000, 5000, 2000], [1000, 3000, 0],
                       [7000, 8000, 3000]])  # fmt: skip
    moments = stats.user_moments(totals, scale=1 / (1000 * 10))
    means = totals / 10_000  # per-user mean rewards
    assert moments.users == 4
    assert moments.means == pytest.approx(means.mean(axis=0).tolist(), abs=1e-15)
    # Policy 1 - policy 0 per user: 0.1, 0, 0.2, 0.1 -> mean 0.1, sd sqrt(2/3)/10
    diff = moments.difference(1, 0)
    assert diff.mean == pytest.approx(0.1, abs=1e-15)
    assert diff.sd == pytest.approx(math.sqrt(2 / 300), abs=1e-15)
    # Policy 2 - policy 1, neither first: -0.3, -0.3, -0.3, -0.5
    other = moments.difference(2, 1)
    assert other.mean == pytest.approx(-0.35, abs=1e-15)
    assert other.sd == pytest.approx(0.1, abs=1e-12)
    single = moments.interval(2)
    assert single.sd == pytest.approx(means[:, 2].std(ddof=1), abs=1e-15)


def test_user_moments_are_exact_for_totals_beyond_float_precision():
    # Totals near 2^40: products overflow int64 and lose bits as floats.
    rng = np.random.default_rng(3)
    totals = rng.integers(2**40, 2**40 + 1000, size=(50, 2))
    moments = stats.user_moments(totals, scale=1.0)
    exact = [int(a) - int(b) for a, b in totals]
    mean = sum(exact) / 50
    variance = sum((d - mean) ** 2 for d in exact) / 49
    assert moments.difference(0, 1).sd == pytest.approx(math.sqrt(variance), rel=1e-12)
    # Row order does not matter, to the last bit.
    shuffled = stats.user_moments(totals[::-1], scale=1.0)
    assert shuffled == moments


def test_one_user_has_moments_without_covariance():
    moments = stats.user_moments(np.array([[5, 7]]), scale=0.1)
    assert moments.covariance is None
    assert moments.difference(1, 0).low is None


# --- the gate ------------------------------------------------------------------------


def _diff(low, high, n=100):
    mean = (low + high) / 2
    sd = (high - low) / 2 * math.sqrt(n) / stats.t_critical(n - 1)
    return stats.Interval(mean, low, high, sd, n)


@pytest.mark.parametrize(
    ("low", "high", "margin", "outcome"),
    [
        (0.01, 0.03, 0.0, "pass"),
        (0.0, 0.03, 0.0, "pass"),  # exactly on -margin
        (-0.01, 0.03, 0.0, "inconclusive"),
        (-0.01, 0.03, 0.01, "pass"),
        (-0.05, -0.02, 0.0, "worse"),
        (-0.05, -0.02, 0.01, "worse"),
        (-0.05, -0.02, 0.03, "inconclusive"),
    ],
)
def test_gate_verdict(low, high, margin, outcome):
    assert stats.gate_verdict(_diff(low, high), margin=margin).outcome == outcome


def test_inconclusive_says_about_how_many_users_would_decide():
    # mean 0.01, half-width 0.02 over 100 users: 4 (z/t)^2 times as many.
    verdict = stats.gate_verdict(_diff(-0.01, 0.03), margin=0.0)
    ratio = (stats.z_critical() / stats.t_critical(99)) ** 2
    assert verdict.users_needed == math.floor(400 * ratio) + 1
    # An estimate right on the margin: no size decides it.
    assert stats.gate_verdict(_diff(-0.02, 0.02), margin=0.0).users_needed is None
    # No interval at all.
    none = stats.Interval(0.1, None, None, None, 1)
    assert stats.gate_verdict(none, margin=0.0).outcome == "inconclusive"


@pytest.mark.parametrize("margin", [-0.01, math.nan, math.inf])
def test_gate_margin_must_be_a_finite_non_negative_number(margin):
    with pytest.raises(ValueError):
        stats.gate_verdict(_diff(0.0, 0.1), margin=margin)


# --- off-policy estimators ------------------------------------------------------------


def test_snips_dr_and_effective_sample_size_by_hand():
    # Three samples: target probability of the logged action, its propensity,
    # the reward, the model's value of the target and its estimate of the pick.
    target = np.array([0.8, 0.1, 1.0])
    logged = np.array([0.5, 0.05, 1.0])
    rewards = np.array([1.0, -1.0, 0.5])
    direct = np.array([0.6, 0.2, 0.4])
    estimated = np.array([0.5, 0.0, 0.4])
    w = np.array([1.6, 2.0, 1.0])
    assert stats.snips(w, rewards) == pytest.approx((1.6 - 2.0 + 0.5) / 4.6)
    # DR terms: 0.6 + 1.6 * 0.5 = 1.4; 0.2 + 2 * -1 = -1.8; 0.4 + 1 * 0.1 = 0.5
    assert stats.doubly_robust(w, rewards, direct, estimated) == pytest.approx(
        0.1 / 3, abs=1e-12
    )
    assert stats.effective_sample_size(w) == pytest.approx(4.6**2 / 7.56)

    evidence = stats.off_policy_evidence(
        target=target,
        logged=logged,
        rewards=rewards,
        direct=direct,
        estimated=estimated,
        rng=np.random.default_rng(0),
        resamples=200,
    )
    assert evidence.samples == 3 and evidence.matched == 3
    assert evidence.snips.value == pytest.approx(0.1 / 4.6)
    assert evidence.dr.value == pytest.approx(0.1 / 3, abs=1e-12)
    assert evidence.logged_mean == pytest.approx(0.5 / 3)
    assert not evidence.enough  # 3 samples
    for estimate in (evidence.snips, evidence.dr):
        assert estimate.low <= estimate.value <= estimate.high


def test_no_overlap_has_no_snips_and_dr_is_the_model():
    evidence = stats.off_policy_evidence(
        target=[0.0, 0.0],
        logged=[0.5, 0.5],
        rewards=[1.0, 1.0],
        direct=[0.3, 0.5],
        estimated=[0.9, 0.9],
        rng=np.random.default_rng(0),
        resamples=50,
    )
    assert evidence.snips == stats.Estimate(None, None, None)
    assert evidence.dr.value == pytest.approx(0.4)
    assert evidence.effective_samples == 0.0 and evidence.matched == 0
    with pytest.raises(ValueError):
        stats.off_policy_evidence(
            target=[],
            logged=[],
            rewards=[],
            direct=[],
            estimated=[],
            rng=np.random.default_rng(0),
        )


def test_the_bootstrap_is_stable_for_a_seed():
    log = _synthetic_log(np.random.default_rng(1), 300)
    first = stats.off_policy_evidence(**log, rng=np.random.default_rng(9))
    again = stats.off_policy_evidence(**log, rng=np.random.default_rng(9))
    assert first == again


# A synthetic world with a known answer: 4 contexts, 3 actions, Bernoulli-ish
# rewards in {-1, 1} with these means; the logging policy explores, the target
# is another stochastic policy; the model is deliberately off by 0.2.
MEANS = np.array(
    [[0.2, -0.4, 0.6], [0.0, 0.5, -0.5], [-0.3, 0.1, 0.3], [0.7, 0.2, -0.1]]
)
LOGGING = np.array(
    [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]]
)
TARGET = np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
TRUE_VALUE = float((TARGET * MEANS).sum(axis=1).mean())  # contexts uniform
MODEL = MEANS + 0.2


def _synthetic_log(rng: np.random.Generator, n: int) -> dict:
    contexts = rng.integers(0, 4, size=n)
    u = rng.random(n)
    edges = np.cumsum(LOGGING[contexts], axis=1)[:, :-1]
    actions = (u[:, None] >= edges).sum(axis=1)
    p_win = (1 + MEANS[contexts, actions]) / 2
    rewards = np.where(rng.random(n) < p_win, 1.0, -1.0)
    return {
        "target": TARGET[contexts, actions],
        "logged": LOGGING[contexts, actions],
        "rewards": rewards,
        "direct": (TARGET[contexts] * MODEL[contexts]).sum(axis=1),
        "estimated": MODEL[contexts, actions],
    }


def test_both_estimators_find_the_true_value_of_a_large_log():
    # By hand, per context: 0.02 - 0.04 + 0.48, 0.4 - 0.05, -0.03 + 0.01 + 0.24,
    # 0.56 + 0.02 - 0.01.
    assert pytest.approx((0.46 + 0.35 + 0.22 + 0.57) / 4, abs=1e-12) == TRUE_VALUE
    log = _synthetic_log(np.random.default_rng(2), 50_000)
    evidence = stats.off_policy_evidence(
        **log, rng=np.random.default_rng(0), resamples=100
    )
    assert evidence.enough
    assert evidence.snips.value == pytest.approx(TRUE_VALUE, abs=0.02)
    assert evidence.dr.value == pytest.approx(TRUE_VALUE, abs=0.02)
    # The biased model alone would be 0.2 off: DR corrects it.
    assert float(np.mean(log["direct"])) - TRUE_VALUE == pytest.approx(0.2, abs=0.01)
    for estimate in (evidence.snips, evidence.dr):
        assert estimate.low < TRUE_VALUE < estimate.high
        assert estimate.high - estimate.low < 0.05


def test_the_intervals_cover_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(2026)
    draws, covered = 300, {"snips": 0, "dr": 0}
    for _ in range(draws):
        log = _synthetic_log(rng, 400)
        evidence = stats.off_policy_evidence(**log, rng=rng, resamples=300)
        for name in covered:
            estimate = getattr(evidence, name)
            covered[name] += estimate.low <= TRUE_VALUE <= estimate.high
    # 95% of 300 is 285; a binomial's sd there is about 3.8.
    for name, count in covered.items():
        assert 270 <= count <= 297, (name, count)
