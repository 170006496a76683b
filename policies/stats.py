"""The numeric core of evidence: intervals, the promotion gate's verdict, and
off-policy estimates with bootstrap intervals. Pure: numpy and the standard
library, no Django.

Intervals of a mean over users are Student t intervals (the users are the
independent units; a small run gets the wider interval it deserves). The
off-policy estimates' intervals are percentile bootstraps with an explicit
generator, so the same log gives the same interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
# Student's t: the exact series below this many degrees of freedom, the
# Cornish-Fisher expansion above (their difference there is under 1e-9).
_T_SERIES_MAX_DF = 1_000


# --- Student's t ---------------------------------------------------------------


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom, t >= 0:
    the finite series of Abramowitz & Stegun 26.7.3 and 26.7.4."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        tail = s * math.cos(theta) * total if df > 1 else 0.0
        return 2.0 / math.pi * (theta + tail)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 ...)
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def _bisect(f, low: float, high: float) -> float:
    """The root of an increasing ``f`` in [low, high], to the last bits."""
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if f(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@functools.lru_cache(maxsize=4096)
def z_critical(level: float = LEVEL) -> float:
    """The normal z with P(|Z| <= z) = level (1.959964 for 95%)."""
    return _bisect(lambda z: math.erf(z / math.sqrt(2.0)) - level, 0.0, 40.0)


@functools.lru_cache(maxsize=4096)
def t_critical(df: int, level: float = LEVEL) -> float:
    """Student's t with P(|T| <= t) = level: the half-width of a ``level``
    interval in standard errors, for ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"a t interval needs df >= 1, not {df}")
    if df <= _T_SERIES_MAX_DF:
        return _bisect(lambda t: _t_central(t, df) - level, 0.0, 1e7)
    z, v = z_critical(level), float(df)
    # Cornish-Fisher expansion of t in powers of 1/df (A&S 26.7.5).
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z)
        / (92160 * v**4)
    )


# --- the mean over users, and a paired difference --------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean over ``n`` independent units with its ``level`` t interval.

    ``low`` and ``high`` are None when there is no interval (fewer than two
    units); ``sd`` is the units' standard deviation (None likewise).
    """

    mean: float
    low: float | None
    high: float | None
    sd: float | None
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def interval_from_moments(
    *, mean: float, variance: float | None, n: int, level: float = LEVEL
) -> Interval:
    """The t interval of a mean from the units' sample variance (ddof 1)."""
    if n < 2 or variance is None:
        return Interval(mean, None, None, None, n, level)
    sd = math.sqrt(max(variance, 0.0))  # a difference of equals may dip below 0
    half = t_critical(n - 1, level) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n, level)


def mean_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL):
    """The t interval of the mean of ``values`` (one per unit)."""
    values = np.asarray(values, dtype=float)
    n = int(values.shape[0])
    if n == 0:
        raise ValueError("the mean of no values")
    variance = float(values.var(ddof=1)) if n > 1 else None
    return interval_from_moments(
        mean=float(values.mean()), variance=variance, n=n, level=level
    )


@dataclass(frozen=True, slots=True)
class UserMoments:
    """Per-user means of P policies over the same U users: each policy's mean
    over users and the P x P covariance (ddof 1) of the per-user means. Enough
    for every policy's interval and every pair's paired difference."""

    users: int
    means: list[float]
    covariance: list[list[float]] | None  # None with fewer than two users

    def interval(self, i: int, level: float = LEVEL) -> Interval:
        variance = None if self.covariance is None else self.covariance[i][i]
        return interval_from_moments(
            mean=self.means[i], variance=variance, n=self.users, level=level
        )

    def difference(self, i: int, j: int, level: float = LEVEL) -> Interval:
        """Policy i minus policy j, paired by user."""
        c = self.covariance
        variance = None if c is None else c[i][i] + c[j][j] - 2 * c[i][j]
        return interval_from_moments(
            mean=self.means[i] - self.means[j],
            variance=variance,
            n=self.users,
            level=level,
        )


def user_moments(totals: np.ndarray, *, scale: float) -> UserMoments:
    """The moments of per-user means from per-user totals in whole units.

    ``totals`` is (U, P) integers, one row per user, one column per policy;
    a per-user mean is ``total * scale``. The sums of products are exact
    integers, so the result depends only on the totals, not on any summation
    order (nor on the BLAS): a run gives the same figures to the last digit
    however its events were written.
    """
    totals = np.asarray(totals, dtype=np.int64)
    users, n_policies = totals.shape
    if users == 0:
        raise ValueError("moments of no users")
    # A common factor out first (rewards of one decimal in millionths share
    # 100,000), so the products usually fit int64; otherwise Python's integers.
    g = int(np.gcd.reduce(np.abs(totals), axis=None)) or 1
    reduced = totals // g
    peak = int(np.abs(reduced).max(initial=0))
    if peak and peak * peak * users >= 2**62:
        reduced = reduced.astype(object)
    sums = [int(s) for s in reduced.sum(axis=0)]
    unit = g * scale
    means = [s * unit / users for s in sums]
    if users < 2:
        return UserMoments(users, means, None)
    gram = reduced.T @ reduced
    covariance = [
        [
            (users * int(gram[i, j]) - sums[i] * sums[j])
            / (users * (users - 1))
            * unit
            * unit
            for j in range(n_policies)
        ]
        for i in range(n_policies)
    ]
    return UserMoments(users, means, covariance)


# --- the promotion gate -----------------------------------------------------------

PASS = "pass"
WORSE = "worse"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate on a paired difference (shadow - active) and a margin.

    ``pass``: the interval's lower end is at least -margin. ``worse``: the
    whole interval is below -margin. ``inconclusive``: it straddles -margin;
    ``users_needed`` is then about how many users would decide it (None when
    no number would: an estimate exactly on the margin, or no interval).
    """

    outcome: str
    margin: float
    users_needed: int | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == PASS


def users_to_decide(
    *, mean: float, sd: float, margin: float, level: float = LEVEL
) -> int | None:
    """About how many users make the interval's half-width smaller than the
    estimate's distance from -margin, the spread staying as it is: n with
    z sd / sqrt(n) < |mean + margin|. None when the estimate sits on it."""
    distance = abs(mean + margin)
    if distance == 0:
        return None
    return max(2, math.floor((z_critical(level) * sd / distance) ** 2) + 1)


def gate_verdict(difference: Interval, *, margin: float) -> Verdict:
    """Pass iff the lower end of the interval of shadow - active >= -margin."""
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"the margin is a finite number >= 0, not {margin}")
    if difference.low is None:
        return Verdict(INCONCLUSIVE, margin, None)
    if difference.low >= -margin:
        return Verdict(PASS, margin)
    if difference.high < -margin:
        return Verdict(WORSE, margin)
    needed = users_to_decide(
        mean=difference.mean, sd=difference.sd, margin=margin, level=difference.level
    )
    return Verdict(INCONCLUSIVE, margin, needed)


# --- off-policy estimates -----------------------------------------------------------

BOOTSTRAP_SAMPLES = 500
BOOTSTRAP_SEED = 20_261_201  # fixed: the same log shows the same interval
# Below either, an estimate says more about chance than about the policy.
MIN_SAMPLES = 50
MIN_EFFECTIVE_SAMPLES = 20
_BOOTSTRAP_BLOCK = 2_000_000  # index draws held at once (16 MB)


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class OffPolicyEvidence:
    """A target policy's value from another policy's rewarded decisions:
    self-normalised IPS and doubly robust, each with a bootstrap interval.

    ``effective_samples`` is Kish's (sum w)^2 / sum w^2 of the importance
    weights: how many of the ``samples`` the estimate really rests on.
    ``enough`` is False below ``MIN_SAMPLES`` samples or
    ``MIN_EFFECTIVE_SAMPLES`` effective ones; the estimates are still there.
    """

    samples: int
    effective_samples: float
    snips: Estimate
    dr: Estimate
    logged_mean: float
    matched: int  # samples where the target could have made the logged pick
    enough: bool

    @property
    def estimates(self) -> list[tuple[str, Estimate]]:
        return [("snips", self.snips), ("dr", self.dr)]


def snips(weights: np.ndarray, rewards: np.ndarray) -> float | None:
    """Self-normalised IPS: sum w r / sum w; None when no weight is positive."""
    total = float(np.sum(weights))
    return float(np.sum(weights * rewards)) / total if total > 0 else None


def doubly_robust(
    weights: np.ndarray,
    rewards: np.ndarray,
    direct: np.ndarray,
    estimated: np.ndarray,
) -> float:
    """Doubly robust: mean of direct + w (r - estimated), where ``direct`` is
    the model's value of the target policy on each sample (sum over actions of
    target probability x estimate) and ``estimated`` its estimate of the logged
    action. Unbiased if the propensities are right, whatever the model."""
    return float(np.mean(direct + weights * (rewards - estimated)))


def effective_sample_size(weights: np.ndarray) -> float:
    squares = float(np.sum(np.square(weights)))
    return float(np.sum(weights)) ** 2 / squares if squares > 0 else 0.0


def off_policy_evidence(
    *,
    target: np.ndarray,
    logged: np.ndarray,
    rewards: np.ndarray,
    direct: np.ndarray,
    estimated: np.ndarray,
    rng: np.random.Generator,
    resamples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
) -> OffPolicyEvidence:
    """SNIPS and DR of a target policy with percentile bootstrap intervals.

    Per sample i: ``target[i]`` the target's probability of the logged action,
    ``logged[i]`` the logging policy's propensity of it, ``rewards[i]`` what it
    earned, ``direct[i]`` and ``estimated[i]`` as in ``doubly_robust``. The
    bootstrap resamples whole samples ``resamples`` times with ``rng``.
    """
    target, logged, rewards, direct, estimated = (
        np.asarray(v, dtype=float) for v in (target, logged, rewards, direct, estimated)
    )
    n = int(rewards.shape[0])
    if n == 0:
        raise ValueError("an off-policy estimate needs at least one sample")
    weights = target / logged
    ess = effective_sample_size(weights)
    point_snips = snips(weights, rewards)
    point_dr = doubly_robust(weights, rewards, direct, estimated)

    weighted = weights * rewards
    dr_terms = direct + weights * (rewards - estimated)
    snips_draws, dr_draws = [], []
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        index = rng.integers(0, n, size=(rows, n))
        w_sum = weights[index].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            snips_draws.append(weighted[index].sum(axis=1) / w_sum)
        dr_draws.append(dr_terms[index].mean(axis=1))
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(draws: list[np.ndarray], point: float | None) -> Estimate:
        values = np.concatenate(draws)
        values = values[np.isfinite(values)]  # resamples with no positive weight
        if point is None or values.size == 0:
            return Estimate(point, None, None)
        low, high = np.percentile(values, tails)
        return Estimate(point, float(low), float(high))

    return OffPolicyEvidence(
        samples=n,
        effective_samples=ess,
        snips=interval(snips_draws, point_snips),
        dr=interval(dr_draws, point_dr),
        logged_mean=float(rewards.mean()),
        matched=int((target > 0).sum()),
        enough=n >= MIN_SAMPLES and ess >= MIN_EFFECTIVE_SAMPLES,
    )
