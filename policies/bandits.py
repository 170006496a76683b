"""The numeric core: feature encoding, LinUCB, epsilon-greedy, the rank-one update.

Plain functions over numpy arrays, no Django. The API, the admin, the simulator and
the management commands all call these, so every number the product shows comes
from one place. Randomness is always an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LINUCB = "linucb"
EGREEDY = "egreedy"
ALGORITHMS = (LINUCB, EGREEDY)
DIMENSIONS = (5, 7, 12)
PROFILE_DIMENSION = 12  # the feature set that reads the user's profile

FEATURE_LABELS = (
    "hour_sin",
    "hour_cos",
    "is_overdue",
    "task_age_norm",
    "priority_norm",
    "dow_sin",
    "dow_cos",
    "completion_rate_30d",
    "dismiss_rate_30d",
    "mean_dwell_norm",
    "preferred_hour_alignment",
    "tip_volume_norm",
)

CANDIDATE_DEFAULTS = {
    "hour_of_day": 12,
    "is_overdue": False,
    "task_age_days": 0.0,
    "priority": 1,
}
CONTEXT_DEFAULTS = {"hour_of_day": 12, "day_of_week": 0}
PROFILE_NAMES = (
    "completion_rate_30d",
    "dismiss_rate_30d",
    "mean_dwell_ms_30d",
    "preferred_hour",
    "tip_volume_30d",
)

_TWO_PI = 2.0 * math.pi
_DWELL_SCALE_MS = 600_000.0
_LOG1P_100 = math.log1p(100.0)


def feature_labels(dimension: int) -> tuple[str, ...]:
    return FEATURE_LABELS[:dimension]


def profile_block(profile: Mapping[str, float | None], hour: float) -> np.ndarray:
    """Features 7-11 (SPEC section 3): nulls map to their neutral values."""
    completion = profile.get("completion_rate_30d")
    dismiss = profile.get("dismiss_rate_30d")
    dwell = profile.get("mean_dwell_ms_30d")
    preferred = profile.get("preferred_hour")
    volume = profile.get("tip_volume_30d")
    return np.array(
        [
            0.0 if completion is None else float(completion),
            0.0 if dismiss is None else float(dismiss),
            0.0 if dwell is None else min(max(dwell / _DWELL_SCALE_MS, 0.0), 1.0),
            0.5
            if preferred is None
            else (math.cos(_TWO_PI * (preferred - hour) / 24.0) + 1.0) / 2.0,
            0.0
            if volume is None
            else min(max(math.log1p(volume) / _LOG1P_100, 0.0), 1.0),
        ]
    )


def encode(
    features: Sequence[Mapping[str, float]],
    *,
    hours: Sequence[float],
    day_of_week: int,
    profile: Mapping[str, float | None],
    dimension: int,
) -> np.ndarray:
    """Encode candidates into an (N, dimension) matrix, exactly as SPEC section 3.

    ``features`` are the candidates' feature dicts (missing keys take the SPEC
    defaults); ``hours[i]`` is the hour used for candidate i (the context hour at
    /score, the candidate's own hour when a reward is rebuilt from its body).
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {DIMENSIONS}, not {dimension}")
    n = len(features)
    hour = np.asarray(hours, dtype=float).reshape(n)
    get = [(f.get if f else {}.get) for f in features]
    overdue = np.array([bool(g("is_overdue", False)) for g in get], dtype=float)
    age = np.array([g("task_age_days", 0.0) for g in get], dtype=float)
    priority = np.array([g("priority", 1) for g in get], dtype=float)

    x = np.empty((n, dimension))
    x[:, 0] = np.sin(_TWO_PI * hour / 24.0)
    x[:, 1] = np.cos(_TWO_PI * hour / 24.0)
    x[:, 2] = overdue
    x[:, 3] = np.clip(age / 30.0, 0.0, 1.0)
    x[:, 4] = (priority - 1.0) / 3.0
    if dimension >= 7:
        x[:, 5] = math.sin(_TWO_PI * day_of_week / 7.0)
        x[:, 6] = math.cos(_TWO_PI * day_of_week / 7.0)
    if dimension == PROFILE_DIMENSION:
        for i in range(n):
            x[i, 7:] = profile_block(profile, hour[i])
    return x


def initial_state(dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh bandit: A = I, b = 0."""
    return np.eye(dimension), np.zeros(dimension)


def theta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta = A^-1 b, by solving rather than inverting."""
    return np.linalg.solve(a, b)


@dataclass(frozen=True, slots=True)
class Choice:
    """One policy's pick over N candidates, with what it computed for each."""

    index: int
    score: float
    propensity: float
    exploring: bool
    estimates: np.ndarray  # theta . x for every candidate
    bonuses: np.ndarray | None  # LinUCB confidence bonus per candidate, else None


def first_max(values: np.ndarray) -> int:
    """Index of the first maximum, counting values within rounding of it as tied.

    Candidates that tie exactly in real arithmetic can differ in the last bit
    after a solve; the first in request order must still win (SPEC section 4).
    """
    top = values.max()
    tolerance = 1e-12 * max(1.0, abs(top))
    return int(np.flatnonzero(values >= top - tolerance)[0])


def linucb_choose(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, *, alpha: float = 1.0
) -> Choice:
    """argmax theta.x + alpha sqrt(x^T A^-1 x); the first candidate wins ties."""
    # One solve serves both terms: A^-1 [b | x_1 .. x_N].
    solved = np.linalg.solve(a, np.column_stack((b, x.T)))
    estimates = x @ solved[:, 0]
    variances = np.einsum("ij,ji->i", x, solved[:, 1:])
    bonuses = alpha * np.sqrt(np.maximum(variances, 0.0))
    ucb = estimates + bonuses
    index = first_max(ucb)
    return Choice(index, float(ucb[index]), 1.0, False, estimates, bonuses)


def egreedy_choose(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    epsilon: float = 0.1,
    rng: np.random.Generator,
) -> Choice:
    """With probability epsilon a uniform pick (exploring), else argmax theta.x."""
    n = x.shape[0]
    estimates = x @ theta(a, b)
    greedy = first_max(estimates)
    exploring = bool(rng.random() < epsilon)
    index = int(rng.integers(n)) if exploring else greedy
    propensity = epsilon / n + (1.0 - epsilon if index == greedy else 0.0)
    return Choice(
        index, float(estimates[index]), propensity, exploring, estimates, None
    )


def choose(
    algorithm: str,
    params: Mapping[str, float],
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    rng: np.random.Generator,
) -> Choice:
    """Dispatch on the policy's algorithm with its parameters."""
    if algorithm == LINUCB:
        return linucb_choose(a, b, x, alpha=params.get("alpha", 1.0))
    if algorithm == EGREEDY:
        return egreedy_choose(a, b, x, epsilon=params.get("epsilon", 0.1), rng=rng)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def update(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, reward: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rank-one update: A + x x^T, b + r x. Returns new arrays."""
    return a + np.outer(x, x), b + reward * x


def update_many(
    a: np.ndarray, b: np.ndarray, xs: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply several updates at once: A + sum x x^T, b + sum r x."""
    return a + xs.T @ xs, b + xs.T @ rewards
