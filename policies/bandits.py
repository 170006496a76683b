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
HYBRID = "hybrid"  # epsilon-greedy on a per-user ridge around a shared model
ALGORITHMS = (LINUCB, EGREEDY, HYBRID)
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
# Candidates that tie exactly in real arithmetic can differ in the last bit after
# a solve; values within this (relative) tolerance of the top count as tied.
TIE_TOLERANCE = 1e-12
_DWELL_SCALE_MS = 600_000.0
_LOG1P_100 = math.log1p(100.0)


def feature_labels(dimension: int) -> tuple[str, ...]:
    return FEATURE_LABELS[:dimension]


def _profile_values(profile: Mapping[str, float | None]) -> tuple[float, ...]:
    """The five profile features in ``PROFILE_NAMES`` order, NaN for a null."""
    return tuple(
        math.nan if (value := profile.get(name)) is None else float(value)
        for name in PROFILE_NAMES
    )


def _clip01(value):
    return np.minimum(np.maximum(value, 0.0), 1.0)  # np.clip: 2x slower


def _alignment(preferred, hour):
    """Feature 10: how close ``hour`` is to the preferred one; 0.5 for a null."""
    null = np.isnan(preferred)
    angle = _TWO_PI * (np.where(null, 0.0, preferred) - hour) / 24.0
    return np.where(null, 0.5, (np.cos(angle) + 1.0) / 2.0)


class _Arrays:
    """How ``_columns`` computes over numpy arrays (``encode_batch``, many
    candidates): each input broadcasts to the arrays' shape."""

    hour_sin = staticmethod(lambda hour: np.sin(_TWO_PI * hour / 24.0))
    hour_cos = staticmethod(lambda hour: np.cos(_TWO_PI * hour / 24.0))
    day_sin = staticmethod(lambda day: np.sin(_TWO_PI * day / 7.0))
    day_cos = staticmethod(lambda day: np.cos(_TWO_PI * day / 7.0))
    clip01 = staticmethod(_clip01)
    zero_if_null = staticmethod(lambda value: np.where(np.isnan(value), 0.0, value))
    log1p = staticmethod(np.log1p)
    alignment = staticmethod(_alignment)


# The few angles of whole hours and days: their sines and cosines as
# ``_Arrays`` computes them, and the hour alignment by preferred hour - hour.
_HOURS = np.arange(24.0)
_DAYS = np.arange(7.0)
_ALIGNED = _alignment(np.arange(-23.0, 24.0), 0.0).tolist()


def _aligned(preferred: float, hour: int) -> float:
    return 0.5 if preferred != preferred else _ALIGNED[int(preferred) - hour + 23]


class _Floats:
    """How ``_columns`` computes for one candidate in Python floats (``encode``,
    a few candidates: numpy's calls cost more than the arithmetic on so few).

    The angles' sines and cosines are looked up in tables that ``_Arrays``
    computed, so both give the same numbers, bit for bit, whatever libm's and
    numpy's ``sin`` would: only whole hours, days and preferred hours come here
    (``_floats_apply``)."""

    hour_sin = _Arrays.hour_sin(_HOURS).tolist().__getitem__
    hour_cos = _Arrays.hour_cos(_HOURS).tolist().__getitem__
    day_sin = _Arrays.day_sin(_DAYS).tolist().__getitem__
    day_cos = _Arrays.day_cos(_DAYS).tolist().__getitem__
    # 0.0 first: max(-0.0, 0.0) is -0.0, where numpy's maximum gives 0.0.
    clip01 = staticmethod(lambda value: min(max(0.0, value), 1.0))
    zero_if_null = staticmethod(lambda value: 0.0 if value != value else value)
    log1p = staticmethod(lambda value: float(np.log1p(value)))  # numpy's, as above
    alignment = staticmethod(_aligned)


def _columns(ops, *, hour, day_of_week, overdue, age, priority, profile, dimension):
    """The ``dimension`` features by docs/features.md, computed with ``ops``
    (``_Arrays`` or ``_Floats``): the one copy of the formulas, shared by
    ``encode`` and ``encode_batch``. ``profile`` is five values, NaN for a null."""
    columns = [
        ops.hour_sin(hour),
        ops.hour_cos(hour),
        overdue,
        ops.clip01(age / 30.0),
        (priority - 1.0) / 3.0,
    ]
    if dimension >= 7:
        columns += [ops.day_sin(day_of_week), ops.day_cos(day_of_week)]
    if dimension == PROFILE_DIMENSION:
        completion, dismiss, dwell, preferred, volume = profile
        columns += [
            ops.zero_if_null(completion),
            ops.zero_if_null(dismiss),
            ops.clip01(ops.zero_if_null(dwell) / _DWELL_SCALE_MS),
            ops.alignment(preferred, hour),
            ops.clip01(ops.log1p(ops.zero_if_null(volume)) / _LOG1P_100),
        ]
    return columns


def _stacked(columns: list, shape: tuple[int, ...]) -> np.ndarray:
    """``_Arrays``' columns as one array of ``shape`` + (D,)."""
    x = np.empty((*shape, len(columns)))
    for i, column in enumerate(columns):
        x[..., i] = column
    return x


def _check_dimension(dimension: int) -> None:
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {DIMENSIONS}, not {dimension}")


# Up to this many candidates, ``encode`` computes in Python floats.
_FLOATS_UP_TO = 16


def _whole(value, top: int) -> bool:
    """``value`` is an int in 0 .. top - 1."""
    return type(value) is int and 0 <= value < top


def encode(
    features: Sequence[Mapping[str, float]],
    *,
    hours: Sequence[float],
    day_of_week: int,
    profile: Mapping[str, float | None],
    dimension: int,
) -> np.ndarray:
    """Encode candidates into an (N, dimension) matrix, as docs/features.md says.

    ``features`` are the candidates' feature dicts (missing keys take the documented
    defaults); ``hours[i]`` is the hour used for candidate i (the context hour at
    /score, the candidate's own hour when a reward is rebuilt from its body).
    """
    _check_dimension(dimension)
    n = len(features)
    get = [(f.get if f else {}.get) for f in features]
    overdue = [float(bool(g("is_overdue", False))) for g in get]
    age = [float(g("task_age_days", 0.0)) for g in get]
    priority = [float(g("priority", 1)) for g in get]
    values = _profile_values(profile) if dimension == PROFILE_DIMENSION else ()
    if n <= _FLOATS_UP_TO and _floats_apply(hours, day_of_week, values):
        rows = [
            _columns(
                _Floats,
                hour=hour,
                day_of_week=day_of_week,
                overdue=o,
                age=a,
                priority=p,
                profile=values,
                dimension=dimension,
            )
            for hour, o, a, p in zip(hours, overdue, age, priority, strict=True)
        ]
        return np.array(rows, dtype=float).reshape(n, dimension)
    columns = _columns(
        _Arrays,
        hour=np.asarray(hours, dtype=float).reshape(n),
        day_of_week=float(day_of_week),
        overdue=np.array(overdue),
        age=np.array(age),
        priority=np.array(priority),
        profile=values,
        dimension=dimension,
    )
    return _stacked(columns, (n,))


def _floats_apply(hours: Sequence, day_of_week, profile: tuple) -> bool:
    """Whether ``_Floats`` can encode: whole hours and day, and a whole
    preferred hour or none (what the API's validation lets through)."""
    preferred = profile[3] if profile else math.nan
    return (
        all(_whole(hour, 24) for hour in hours)
        and _whole(day_of_week, 7)
        and (preferred != preferred or (preferred.is_integer() and 0 <= preferred < 24))
    )


def encode_batch(
    *,
    hours: np.ndarray,
    day_of_week: np.ndarray,
    is_overdue: np.ndarray,
    task_age_days: np.ndarray,
    priority: np.ndarray,
    profile: Mapping[str, np.ndarray] | None,
    dimension: int,
) -> np.ndarray:
    """``encode`` for B users at once: a (B, N, dimension) array.

    The candidates' features are (B, N) arrays (no defaults to fill in: the
    caller has them all); ``hours`` and ``day_of_week`` are each user's context,
    shape (B,), the hour applying to every candidate as at /score. ``profile``
    maps each of ``PROFILE_NAMES`` to a (B,) float array, NaN for a null; only
    a D=12 encoding reads it.
    """
    _check_dimension(dimension)
    overdue = np.asarray(is_overdue, dtype=float)
    b, n = overdue.shape
    columns = _columns(
        _Arrays,
        hour=np.asarray(hours, dtype=float).reshape(b, 1),
        day_of_week=np.asarray(day_of_week, dtype=float).reshape(b, 1),
        overdue=overdue,
        age=np.asarray(task_age_days, dtype=float),
        priority=np.asarray(priority, dtype=float),
        profile=()
        if dimension != PROFILE_DIMENSION
        else tuple(
            np.asarray(profile[name], dtype=float).reshape(b, 1)
            for name in PROFILE_NAMES
        ),
        dimension=dimension,
    )
    return _stacked(columns, (b, n))


def initial_state(dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh bandit: A = I, b = 0."""
    return np.eye(dimension), np.zeros(dimension)


def initial_state_batch(users: int, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """``users`` fresh bandits: A (users, D, D) identities, b (users, D) zeros."""
    a = np.zeros((users, dimension, dimension))
    a[:, np.arange(dimension), np.arange(dimension)] = 1.0
    return a, np.zeros((users, dimension))


def theta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta = A^-1 b, by solving rather than inverting."""
    return np.linalg.solve(a, b)


# The single-user functions and their batched forms (leading axis: users) share
# the helpers below, so both compute every number with the same formulas.


def _estimates(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """theta . x for every candidate: x (..., N, D) -> (..., N)."""
    return (x @ np.linalg.solve(a, b[..., None]))[..., 0]


def _linucb_terms(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """theta . x and alpha sqrt(x^T A^-1 x) for every candidate, (..., N) each."""
    # One solve serves both terms: A^-1 [b | x_1 .. x_N].
    solved = np.linalg.solve(
        a, np.concatenate((b[..., None], np.swapaxes(x, -1, -2)), -1)
    )
    estimates = (x @ solved[..., :1])[..., 0]
    variances = np.einsum("...ij,...ji->...i", x, solved[..., 1:])
    return estimates, alpha * np.sqrt(np.maximum(variances, 0.0))


def _tie_floor(top, maximum=np.maximum):
    """The least value tied with ``top``: within TIE_TOLERANCE of it, relative
    to its size above 1 (arrays with numpy's ``maximum``, a float with ``max``)."""
    return top - TIE_TOLERANCE * maximum(1.0, abs(top))


def _first_max(values: np.ndarray) -> np.ndarray:
    """Index of the first maximum along the last axis, within TIE_TOLERANCE."""
    floor = _tie_floor(values.max(axis=-1, keepdims=True))
    return (values >= floor).argmax(axis=-1)


def _egreedy_propensity(epsilon: float, n: int, greedy):
    """(1 - epsilon) + epsilon/N for the greedy candidate, epsilon/N otherwise;
    ``greedy`` is a bool or a bool array."""
    return epsilon / n + (1.0 - epsilon) * greedy


def _logged(propensity: float) -> float:
    """A pick's propensity to 15 significant digits, as it is logged and answered:
    the sum (1 - epsilon) + epsilon/N would otherwise read 0.9500000000000001 for
    0.95. It moves the value by a few units in the last place, which no estimator
    resolves."""
    return float(f"{propensity:.15g}")


@dataclass(frozen=True, slots=True)
class Choice:
    """One policy's pick over N candidates, with what it computed for each."""

    index: int
    score: float
    propensity: float
    exploring: bool
    estimates: np.ndarray  # theta . x for every candidate
    bonuses: np.ndarray | None  # LinUCB confidence bonus per candidate, else None
    # A hybrid policy: the shared model's part of each estimate, else None.
    shared: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class BatchChoice:
    """One policy's picks for B users at once: ``Choice``'s fields as arrays."""

    index: np.ndarray  # (B,) int
    score: np.ndarray  # (B,)
    propensity: np.ndarray  # (B,)
    exploring: np.ndarray  # (B,) bool
    estimates: np.ndarray  # (B, N)
    bonuses: np.ndarray | None  # (B, N) for LinUCB, else None
    shared: np.ndarray | None = None  # (B, N) for a hybrid policy, else None


def first_max(values: np.ndarray) -> int:
    """Index of the first maximum, counting values within rounding of it as tied.

    Candidates that tie exactly in real arithmetic can differ in the last bit
    after a solve; the first in request order must still win (docs/algorithms.md).
    In Python floats: a request's few values cost numpy more in calls than in
    arithmetic; a NaN or an infinity (a broken state) goes numpy's way, as the
    batch has it.
    """
    floats = values.tolist()
    if not math.isfinite(sum(floats)):
        return int(_first_max(values))
    floor = _tie_floor(max(floats), max)
    return next(i for i, value in enumerate(floats) if value >= floor)


def first_max_batch(values: np.ndarray) -> np.ndarray:
    """``first_max`` of every row of a (B, N) array: (B,) indices."""
    return _first_max(values)


def linucb_choose(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, *, alpha: float = 1.0
) -> Choice:
    """argmax theta.x + alpha sqrt(x^T A^-1 x); the first candidate wins ties."""
    estimates, bonuses = _linucb_terms(a, b, x, alpha)
    ucb = estimates + bonuses
    index = first_max(ucb)
    return Choice(index, float(ucb[index]), 1.0, False, estimates, bonuses)


def linucb_choose_batch(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, *, alpha: float = 1.0
) -> BatchChoice:
    """``linucb_choose`` for B users: a (B, D, D), b (B, D), x (B, N, D)."""
    estimates, bonuses = _linucb_terms(a, b, x, alpha)
    ucb = estimates + bonuses
    index = _first_max(ucb)
    users = np.arange(len(index))
    return BatchChoice(
        index,
        ucb[users, index],
        np.ones(len(index)),
        np.zeros(len(index), dtype=bool),
        estimates,
        bonuses,
    )


def egreedy_choose(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    epsilon: float = 0.1,
    rng: np.random.Generator,
) -> Choice:
    """With probability epsilon a uniform pick (exploring), else argmax theta.x."""
    return _epsilon_pick(_estimates(a, b, x), epsilon, rng)


def egreedy_choose_batch(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    epsilon: float = 0.1,
    explore_uniforms: np.ndarray,
    pick_uniforms: np.ndarray,
) -> BatchChoice:
    """``egreedy_choose`` for B users, its draws given as uniforms in [0, 1).

    User i explores when ``explore_uniforms[i] < epsilon`` and then picks
    candidate ``floor(pick_uniforms[i] * N)``: the same decision
    ``egreedy_choose`` makes when its generator's ``random()`` gives the first
    uniform and ``integers(N)`` the candidate. Passing the uniforms in lets a
    simulation give every policy the same draws.
    """
    return _epsilon_pick_batch(
        _estimates(a, b, x), epsilon, explore_uniforms, pick_uniforms
    )


def _epsilon_pick(
    estimates: np.ndarray,
    epsilon: float,
    rng: np.random.Generator,
    shared: np.ndarray | None = None,
) -> Choice:
    """The epsilon-greedy pick over one user's estimates."""
    n = estimates.shape[0]
    greedy = first_max(estimates)
    exploring = bool(rng.random() < epsilon)
    index = int(rng.integers(n)) if exploring else greedy
    propensity = _logged(_egreedy_propensity(epsilon, n, index == greedy))
    return Choice(
        index, float(estimates[index]), propensity, exploring, estimates, None, shared
    )


def _epsilon_pick_batch(
    estimates: np.ndarray,
    epsilon: float,
    explore_uniforms: np.ndarray,
    pick_uniforms: np.ndarray,
    shared: np.ndarray | None = None,
) -> BatchChoice:
    """The epsilon-greedy picks over B users' estimates, (B, N)."""
    n = estimates.shape[1]
    greedy = _first_max(estimates)
    exploring = np.asarray(explore_uniforms) < epsilon
    uniform_pick = np.minimum((np.asarray(pick_uniforms) * n).astype(np.intp), n - 1)
    index = np.where(exploring, uniform_pick, greedy)
    users = np.arange(len(index))
    return BatchChoice(
        index,
        estimates[users, index],
        _egreedy_propensity(epsilon, n, index == greedy),
        exploring,
        estimates,
        None,
        shared,
    )


def choose(
    algorithm: str,
    params: Mapping[str, float],
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    rng: np.random.Generator,
    shared: np.ndarray | None = None,
) -> Choice:
    """Dispatch on the policy's algorithm with its parameters; ``shared`` is a
    hybrid policy's shared weights (None before its first refit)."""
    if algorithm == LINUCB:
        return linucb_choose(a, b, x, alpha=params.get("alpha", 1.0))
    if algorithm == EGREEDY:
        return egreedy_choose(a, b, x, epsilon=params.get("epsilon", 0.1), rng=rng)
    if algorithm == HYBRID:
        return hybrid_choose(
            a,
            b,
            x,
            weights=shared,
            epsilon=params.get("epsilon", HYBRID_EPSILON),
            prior_weight=params.get("prior_weight", HYBRID_PRIOR_WEIGHT),
            rng=rng,
        )
    raise ValueError(f"unknown algorithm {algorithm!r}")


def choose_batch(
    algorithm: str,
    params: Mapping[str, float],
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    explore_uniforms: np.ndarray,
    pick_uniforms: np.ndarray,
    shared: np.ndarray | None = None,
) -> BatchChoice:
    """``choose`` for B users; LinUCB ignores the uniforms (it never explores)."""
    if algorithm == LINUCB:
        return linucb_choose_batch(a, b, x, alpha=params.get("alpha", 1.0))
    if algorithm == EGREEDY:
        return egreedy_choose_batch(
            a,
            b,
            x,
            epsilon=params.get("epsilon", 0.1),
            explore_uniforms=explore_uniforms,
            pick_uniforms=pick_uniforms,
        )
    if algorithm == HYBRID:
        return hybrid_choose_batch(
            a,
            b,
            x,
            weights=shared,
            epsilon=params.get("epsilon", HYBRID_EPSILON),
            prior_weight=params.get("prior_weight", HYBRID_PRIOR_WEIGHT),
            explore_uniforms=explore_uniforms,
            pick_uniforms=pick_uniforms,
        )
    raise ValueError(f"unknown algorithm {algorithm!r}")


# --- the hybrid (population-informed) policy --------------------------------------
#
# A shared model, fit on every user's rewards, says what a user like this one (by
# profile and hour) gets from a candidate; each user's own ridge estimate is
# centred on it. In the policy's D=12 encoding x (docs/features.md), the shared
# model is linear in the interactions of x with the user's side u = (1, hour_sin,
# hour_cos, the five profile features): estimate_shared(x) = x^T W u, so for a
# user it is the prior mean theta_0 = W u. The user's posterior mean, with
# A = I + sum x x^T and b = sum r x as every policy keeps them, is
#     theta = (A + (lambda - 1) I)^-1 (b + lambda theta_0),
# the ridge solution pulled towards theta_0 with strength lambda (prior_weight).
# The per-user state and its rank-one update are those of every other policy;
# the shared model enters only at scoring. docs/algorithms.md has the details.

HYBRID_EPSILON = 0.01
HYBRID_PRIOR_WEIGHT = 300.0
HYBRID_RIDGE = 0.02
# The user's side of the interactions: x's hour (0, 1) and profile (7-11).
_USER_SIDE = (0, 1, 7, 8, 9, 10, 11)
SHARED_USER_WIDTH = 1 + len(_USER_SIDE)
SHARED_DIMENSION = PROFILE_DIMENSION * SHARED_USER_WIDTH


def _user_side(x: np.ndarray) -> np.ndarray:
    """u = (1, hour_sin, hour_cos, profile...) of D=12 vectors, (..., 8)."""
    return np.concatenate((np.ones(x.shape[:-1] + (1,)), x[..., _USER_SIDE]), -1)


def shared_features(x: np.ndarray) -> np.ndarray:
    """z = vec(x u^T) of D=12 vectors (..., 12) -> (..., 96): the shared model's
    inputs, so its estimate is z . w = x^T W u with W = w reshaped (12, 8)."""
    u = _user_side(x)
    return (x[..., :, None] * u[..., None, :]).reshape(x.shape[:-1] + (-1,))


def shared_moments(
    xs: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Z^T Z and Z^T r of rewarded vectors xs (n, 12): what a refit sums, so a
    refit can add new rewards to an earlier one's sums."""
    z = shared_features(np.asarray(xs, dtype=float))
    return z.T @ z, z.T @ np.asarray(rewards, dtype=float)


def shared_fit(
    gram: np.ndarray, moment: np.ndarray, *, ridge: float = HYBRID_RIDGE
) -> np.ndarray:
    """The shared weights w = (Z^T Z + ridge I)^-1 Z^T r."""
    return np.linalg.solve(gram + ridge * np.eye(gram.shape[-1]), moment)


def _hybrid_terms(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    weights: np.ndarray | None,
    prior_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's estimate x . theta and its shared part x . theta_0,
    (..., N) each; x (..., N, 12). No weights yet: theta_0 = 0."""
    d = x.shape[-1]
    if weights is None:
        theta0 = np.zeros(x.shape[:-2] + (d,))
    else:
        u = _user_side(x[..., 0, :])  # the same for every candidate of a request
        theta0 = u @ np.asarray(weights).reshape(d, SHARED_USER_WIDTH).T
    pulled = a + (prior_weight - 1.0) * np.eye(d)
    theta = np.linalg.solve(pulled, (b + prior_weight * theta0)[..., None])[..., 0]
    estimates = (x @ theta[..., None])[..., 0]
    return estimates, (x @ theta0[..., None])[..., 0]


def hybrid_choose(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    weights: np.ndarray | None,
    epsilon: float = HYBRID_EPSILON,
    prior_weight: float = HYBRID_PRIOR_WEIGHT,
    rng: np.random.Generator,
) -> Choice:
    """epsilon-greedy on the estimates of the per-user ridge around the shared
    model; ``shared`` in the answer is the shared part of each estimate."""
    estimates, shared = _hybrid_terms(a, b, x, weights, prior_weight)
    return _epsilon_pick(estimates, epsilon, rng, shared)


def hybrid_choose_batch(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    *,
    weights: np.ndarray | None,
    epsilon: float = HYBRID_EPSILON,
    prior_weight: float = HYBRID_PRIOR_WEIGHT,
    explore_uniforms: np.ndarray,
    pick_uniforms: np.ndarray,
) -> BatchChoice:
    """``hybrid_choose`` for B users, its draws given as uniforms (as
    ``egreedy_choose_batch``)."""
    estimates, shared = _hybrid_terms(a, b, x, weights, prior_weight)
    return _epsilon_pick_batch(
        estimates, epsilon, explore_uniforms, pick_uniforms, shared
    )


# --- off-policy evaluation (the estimators are in policies.stats) ---------------


def action_probabilities(
    algorithm: str,
    params: Mapping[str, float],
    estimates: np.ndarray,
    bonuses: np.ndarray | None,
) -> np.ndarray:
    """How likely a policy was to pick each candidate, from what it computed.

    epsilon-greedy spreads epsilon evenly and puts the rest on its greedy
    candidate; LinUCB picks its first maximum of estimate + bonus for sure.
    """
    estimates = np.asarray(estimates, dtype=float)
    bonuses = None if bonuses is None else np.asarray(bonuses, dtype=float)[None]
    return action_probabilities_batch(
        algorithm, params, estimates[None], bonuses, np.array([estimates.shape[0]])
    )[0]


def action_probabilities_batch(
    algorithm: str,
    params: Mapping[str, float],
    estimates: np.ndarray,
    bonuses: np.ndarray | None,
    counts: np.ndarray,
) -> np.ndarray:
    """``action_probabilities`` of S requests at once.

    ``estimates`` and ``bonuses`` are (S, K): row i's first ``counts[i]``
    entries are its candidates, the rest padding (ignored), so requests with
    different numbers of candidates share one array. Answers (S, K), zero on
    the padding.
    """
    estimates = np.asarray(estimates, dtype=float)
    counts = np.asarray(counts)[:, None]
    real = np.arange(estimates.shape[-1]) < counts
    if algorithm == LINUCB:
        values = estimates + np.asarray(bonuses, dtype=float)
    elif algorithm in (EGREEDY, HYBRID):
        values = estimates
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    best = _first_max(np.where(real, values, -np.inf))
    chosen = np.arange(estimates.shape[-1]) == best[:, None]
    if algorithm == LINUCB:
        return chosen.astype(float)
    default = 0.1 if algorithm == EGREEDY else HYBRID_EPSILON
    epsilon = params.get("epsilon", default)
    return np.where(real, _egreedy_propensity(epsilon, counts, chosen), 0.0)


def _rank_one(a, b, x, reward, out=None):
    """A + x x^T and b + r x over any leading axes; into ``out`` when given."""
    outer = x[..., :, None] * x[..., None, :]
    step = np.asarray(reward)[..., None] * x
    if out is None:
        return a + outer, b + step
    np.add(a, outer, out=out[0])
    np.add(b, step, out=out[1])
    return out


def update(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, reward: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rank-one update: A + x x^T, b + r x. Returns new arrays."""
    return _rank_one(a, b, x, reward)


def update_batch(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    rewards: np.ndarray,
    *,
    in_place: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``update`` for B users, one vector and reward each: x (B, D), rewards (B,).

    ``in_place`` writes into ``a`` and ``b`` (a simulation's run-local state)
    instead of allocating new arrays.
    """
    return _rank_one(a, b, x, rewards, out=(a, b) if in_place else None)


def update_many(
    a: np.ndarray, b: np.ndarray, xs: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply several updates at once: A + sum x x^T, b + sum r x."""
    return a + xs.T @ xs, b + xs.T @ rewards
