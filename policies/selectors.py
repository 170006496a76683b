"""Reads: policies, per-user state, stats and decision history."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Count, OuterRef, Q, Subquery, Sum

from oo_ml.db import fetch_all, fetch_one
from oo_ml.errors import NotFound
from oo_ml.partitions import uuid7_floor
from policies import bandits, stats
from policies.models import (
    ActivityHour,
    BanditState,
    ChangeAction,
    Decision,
    Policy,
    PolicyChange,
    Reward,
    Role,
    ShadowValue,
    SharedModel,
    array_from_bytes,
    state_from_bytes,
)
from policies.rollups import MEASURES, hour_of


def policy_get(*, name: str) -> Policy:
    try:
        return Policy.objects.get(name=name)
    except Policy.DoesNotExist:
        raise NotFound(f"No policy named {name!r}.", field="policy") from None


def policy_list() -> list[Policy]:
    """Every policy: the active one first, then shadows, then retired ones."""
    order = {Role.ACTIVE: 0, Role.SHADOW: 1, Role.RETIRED: 2}
    return sorted(Policy.objects.all(), key=lambda p: (order[p.role], p.name))


_POLICY = Policy._meta.db_table
_STATE = BanditState._meta.db_table
POLICY_COLUMNS = (
    "p.id, p.name, p.algorithm, p.dimension, p.params, p.role, p.enabled, p.learns_live"
)
POLICY_WIDTH = 8  # how many columns POLICY_COLUMNS is
# The hot-path reads below are plain SQL: see oo_ml/db.py for why.
_ACTIVE_SQL = f"SELECT {POLICY_COLUMNS} FROM {_POLICY} p WHERE p.role = %s"
# The policies that score (``scores``), and those that only learn from live
# rewards: their dimension says whether the decision must log the profile.
_SHARED = SharedModel._meta.db_table
# A hybrid policy's current shared model, read with the states: no round trip.
# A policy that only learns reads no state or shared model here: its columns
# are null (the join and CASE skip it), so the read carries no unused bytes.
_LATEST_SHARED = f"""CASE WHEN ({{{{which}}}}) THEN (
    SELECT m.{{column}} FROM {_SHARED} m WHERE m.policy_id = p.id
    ORDER BY m.version DESC LIMIT 1) END"""
_SCORING_SQL = f"""
    SELECT {POLICY_COLUMNS}, s.a_bytes, s.b_bytes, ({{which}}) AS scores,
        {_LATEST_SHARED.format(column="version")},
        {_LATEST_SHARED.format(column="weights_bytes")}{{with_columns}}
    FROM {_POLICY} p
    LEFT JOIN {_STATE} s
        ON s.policy_id = p.id AND s.user_id = %(user)s AND ({{which}}){{with_join}}
    WHERE ({{which}}) OR p.learns_live
    ORDER BY ({{which}}) DESC, p.role = %(active)s DESC, p.name
"""
_ACTIVE_AND_SHADOWS = "p.role = %(active)s OR (p.role = %(shadow)s AND p.enabled)"
_ACTIVE = "p.role = %(active)s"
_NAMED = "p.name = %(name)s"


@functools.lru_cache(maxsize=16)
def _scoring_sql(which: str, first: str, with_row: str | None) -> str:
    """The scoring read; ``with_row``'s columns join the ``first`` policy's row
    (the first one read), the others' are null."""
    if with_row is None:
        return _SCORING_SQL.format(which=which, with_columns="", with_join="")
    join = f" LEFT JOIN ({with_row}) w ON {first}"
    return _SCORING_SQL.format(which=which, with_columns=", w.*", with_join=join)


@functools.lru_cache(maxsize=256)
def policy_from_row(row: tuple) -> Policy:
    """A read-only Policy from the POLICY_COLUMNS of a plain-SQL row.

    Cached on the whole row: policies change rarely, any change makes a new row,
    and building a model instance costs more than the rest of reading it.
    """
    policy_id, name, algorithm, dimension, params, role, enabled, learns = row
    if isinstance(params, str):
        params = json.loads(params)
    return Policy(
        id=policy_id,
        name=name,
        algorithm=algorithm,
        dimension=dimension,
        params=params,
        role=role,
        enabled=bool(enabled),
        learns_live=bool(learns),
    )


def policy_get_active() -> Policy:
    row = fetch_one(_ACTIVE_SQL, [Role.ACTIVE])
    if row is None:
        raise NotFound("No policy is active.", field="policy")
    return policy_from_row(row)


@dataclass(frozen=True, slots=True)
class LoadedState:
    policy: Policy
    a: np.ndarray
    b: np.ndarray
    # A hybrid policy's current shared model: its version and weights.
    model_version: int | None = None
    shared: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ScoringStates:
    """The policies that score a request, with the user's states, and the widest
    dimension of any policy that scores it or may learn from its reward."""

    states: list[LoadedState]
    dimension: int
    # The row ``with_row`` read beside them (its columns all null: none).
    with_row: tuple | None = None


_STATE_COLUMNS = 5  # what the scoring read has after POLICY_COLUMNS


def scoring_states(
    *,
    user_id: str,
    policy_name: str | None = None,
    cursor: CursorWrapper | None = None,
    with_row: str | None = None,
) -> ScoringStates:
    """The policies that score a request, each with this user's A and b.

    Without a name: the active policy first, then every shadow whose toggle is
    on. One query loads the policies, the user's states, and the policies that
    learn from live rewards without scoring. ``with_row``, a SELECT of at most
    one row for ``%(user)s`` (the user's stored profile), rides in that query:
    a request that needs it makes no other read.
    """
    params = {"user": user_id, "active": Role.ACTIVE}
    if policy_name is None:
        which, first = _ACTIVE_AND_SHADOWS, _ACTIVE
        params["shadow"] = Role.SHADOW
    else:
        which = first = _NAMED
        params["name"] = policy_name
    rows = fetch_all(_scoring_sql(which, first, with_row), params, cursor)
    loaded = []
    dimension = 0
    width = POLICY_WIDTH + _STATE_COLUMNS
    for row in rows:
        policy = policy_from_row(row[:POLICY_WIDTH])
        a_bytes, b_bytes, scores, version, weights = row[POLICY_WIDTH:width]
        dimension = max(dimension, policy.dimension)
        if scores:
            a, b = state_from_bytes(a_bytes, b_bytes, policy.dimension)
            if version is not None:
                weights = array_from_bytes(weights, (bandits.SHARED_DIMENSION,))
            loaded.append(LoadedState(policy, a, b, version, weights))
    if not loaded:
        if policy_name is None:
            raise NotFound("No policy is active.", field="policy")
        raise NotFound(f"No policy named {policy_name!r}.", field="policy")
    return ScoringStates(loaded, dimension, rows[0][width:] if with_row else None)


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    policy: str
    pulls: int
    reward_count: int
    # Of those, the rewards of other policies' decisions it learned from live.
    learned_count: int
    cumulative_reward: float
    estimated_mean_reward: float
    exploration_rate: float
    theta: list[float]
    feature_labels: tuple[str, ...]
    last_updated: datetime | None


def user_pulls(*, policy: Policy, user_id: str) -> dict[str, int]:
    """``{"pulls", "explorations"}``: the user's decisions under the policy,
    counted from the decision log."""
    return Decision.objects.filter(policy=policy, user_id=user_id).aggregate(
        pulls=Count("id"), explorations=Count("id", filter=Q(exploring=True))
    )


def user_learned_count(*, policy: Policy, user_id: str) -> int:
    """How many of the user's rewards under ``policy`` it learned from other
    policies' decisions (or, with no decision, a reward sent to another)."""
    return Reward.objects.filter(policy=policy, user_id=user_id, learned=True).count()


def user_stats(*, policy: Policy, user_id: str) -> UserStats:
    state = BanditState.objects.filter(policy=policy, user_id=user_id).first()
    counts = user_pulls(policy=policy, user_id=user_id)
    if state is None and not counts["pulls"]:
        raise NotFound(
            f"User {user_id!r} has no state under {policy.name}.", field="user_id"
        )
    if state is None:
        a, b = bandits.initial_state(policy.dimension)
        reward_count, cumulative, last_updated = 0, 0.0, None
    else:
        state.policy = policy
        a, b = state.a, state.b
        reward_count, cumulative = state.reward_count, state.cumulative_reward
        last_updated = state.updated_at
    pulls = counts["pulls"]
    return UserStats(
        user_id=user_id,
        policy=policy.name,
        pulls=pulls,
        reward_count=reward_count,
        learned_count=user_learned_count(policy=policy, user_id=user_id)
        if reward_count
        else 0,
        cumulative_reward=cumulative,
        estimated_mean_reward=cumulative / reward_count if reward_count else 0.0,
        exploration_rate=counts["explorations"] / pulls if pulls else 0.0,
        theta=bandits.theta(a, b).tolist(),
        feature_labels=policy.feature_labels,
        last_updated=last_updated,
    )


def user_history(*, user_id: str) -> list[dict]:
    """The user's last decisions, newest first, shadows' included."""
    decisions = list(
        Decision.objects.filter(user_id=user_id)
        .select_related("policy")
        .order_by("-created_at", "-id")[: settings.HISTORY_LIMIT]
    )
    if not decisions:
        raise NotFound(f"User {user_id!r} has no decisions.", field="user_id")
    return [
        {
            "decision_id": d.id,
            "request_id": d.request_id,
            "created_at": d.created_at,
            "policy": d.policy.name,
            "role": d.role,
            "tip_id": d.tip_id,
            "score": d.score,
            "propensity": d.propensity,
            "exploring": d.exploring,
            "candidates": [c["id"] for c in d.candidates],
            "context": d.context,
            "profile": d.profile,
            "features": dict(
                zip(d.policy.feature_labels, d.features[d.pick_index], strict=True)
            ),
        }
        for d in decisions
    ]


@dataclass(frozen=True, slots=True)
class Activity:
    """What one policy did over one window of time."""

    decisions: int
    # Shadows: how often their pick equalled the active pick on the same request.
    compared: int
    agreed: int
    rewards: int  # the rewards of its own decisions (or sent to it)
    reward_sum: float
    learned: int = 0  # the rewards of other policies it learned from

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.rewards if self.rewards else None


@dataclass(frozen=True, slots=True)
class PolicyActivity:
    policy: Policy
    last_day: Activity
    all_time: Activity
    # Shadows: their value estimated from the active policy's rewarded decisions
    # (None: no sample), as beat last computed it, and when (None: not yet).
    off_policy: stats.OffPolicyEvidence | None = None
    off_policy_at: datetime | None = None


def _activity(since: datetime) -> dict[int, dict]:
    """Per policy, each roll-up measure over all time and (``<name>_day``) over
    the hours from ``since``'s."""
    recent = Q(hour__gte=hour_of(since))
    annotations = {}
    for name in MEASURES:  # named apart from the fields they sum
        annotations[f"{name}_all"] = Sum(name)
        annotations[f"{name}_day"] = Sum(name, filter=recent)
    rows = ActivityHour.objects.values("policy_id").annotate(**annotations)
    return {row.pop("policy_id"): row for row in rows.order_by()}


def policy_activity(*, since: datetime) -> list[PolicyActivity]:
    """Every policy's decisions, agreement and rewards, since ``since`` (in
    whole hours: from the start of its hour) and ever.

    Read from the hourly roll-ups (``policies.rollups``), one grouped query
    whatever the size of the logs. The agreement of a shadow counts only
    requests the active policy also answered (not the named routes, where a
    shadow scores alone). "Ever" includes rows retention has since dropped.
    The shadows' off-policy values are those beat last stored
    (``services.shadow_values_refresh``): nothing here reads the decision log.
    """
    activity = _activity(since)
    policies = policy_list()
    stored = {
        value.policy_id: value
        for value in ShadowValue.objects.filter(policy__role=Role.SHADOW)
    }

    def window(policy_id: int, suffix: str) -> Activity:
        row = activity.get(policy_id, {})
        return Activity(**{name: row.get(f"{name}{suffix}") or 0 for name in MEASURES})

    def value(policy_id: int) -> dict:
        row = stored.get(policy_id)
        if row is None:
            return {}
        return {"off_policy": row.evidence, "off_policy_at": row.computed_at}

    return [
        PolicyActivity(
            policy,
            window(policy.id, "_day"),
            window(policy.id, "_all"),
            **value(policy.id),
        )
        for policy in policies
    ]


def promotion_to_undo() -> PolicyChange | None:
    """The latest promotion, unless a rollback came after it."""
    latest = (
        PolicyChange.objects.filter(
            action__in=[ChangeAction.PROMOTE, ChangeAction.ROLLBACK]
        )
        .select_related("policy")
        .first()
    )
    return latest if latest and latest.action == ChangeAction.PROMOTE else None


_DECISION = Decision._meta.db_table
_REWARD = Reward._meta.db_table
# Each reward of an active decision since a time, with what every shadow that
# scored the same request computed. Newest first, so a limit keeps the latest.
_SHADOW_SAMPLES_SQL = f"""
    SELECT s.policy_id, s.estimates, s.bonuses, a.pick_index, a.propensity, r.reward
    FROM {_REWARD} r
    JOIN {_DECISION} a ON a.id = r.decision_id AND a.role = %s AND a.id >= %s
    JOIN {_DECISION} s ON s.request_id = a.request_id AND s.role = %s
        AND s.id >= %s
    WHERE r.created_at >= %s AND NOT r.learned
    ORDER BY r.created_at DESC
    LIMIT %s
"""
OFF_POLICY_SAMPLES = 20_000


def shadow_values(
    *, since: datetime, shadows: Sequence[Policy]
) -> dict[int, stats.OffPolicyEvidence]:
    """Each shadow's value on the active policy's rewarded decisions since
    ``since`` (docs/evidence.md): self-normalised IPS and doubly robust, each with a
    bootstrap 95% interval, and the effective sample size.

    A shadow's probability of each candidate comes from the estimates (and
    bonuses) it logged on the same request, and the active policy's logged
    propensity of its pick is the denominator. Doubly robust's model is the
    shadow's own ridge estimate θ·x, as it logged it. At most the latest
    OFF_POLICY_SAMPLES rewards are read; the bootstrap is seeded, so the same
    log shows the same intervals.
    """
    # Decisions made at most a day before the window: the bound prunes the
    # decision log's partitions (a request's decisions share one).
    made = Decision._meta.pk.get_db_prep_value(
        uuid7_floor(since - timedelta(days=1)), connection
    )
    rows = fetch_all(
        _SHADOW_SAMPLES_SQL,
        [Role.ACTIVE, made, Role.SHADOW, made, since, OFF_POLICY_SAMPLES],
    )
    policies = {p.id: p for p in shadows}
    samples: dict[int, list[tuple]] = {}
    for row in rows:
        if row[0] in policies:  # else no longer a shadow
            samples.setdefault(row[0], []).append(row)
    values = {}
    for policy_id, rows in samples.items():
        policy = policies[policy_id]
        _, estimates, bonuses, picks, logged, rewards = zip(*rows, strict=True)
        estimates, counts = _padded(estimates)
        linucb = policy.algorithm == bandits.LINUCB
        bonuses = _padded(bonuses)[0] if linucb else None  # else all null
        probabilities = bandits.action_probabilities_batch(
            policy.algorithm, policy.params, estimates, bonuses, counts
        )
        picked = (np.arange(len(rows)), np.asarray(picks))
        values[policy_id] = stats.off_policy_evidence(
            target=probabilities[picked],
            logged=logged,
            rewards=rewards,
            direct=(probabilities * estimates).sum(axis=1),
            estimated=estimates[picked],
            rng=np.random.default_rng(stats.BOOTSTRAP_SEED),
        )
    return values


def _padded(arrays: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """JSON arrays of numbers (as text, or parsed) as one (S, K) array, each
    row padded with zeros after its own length; and those lengths."""
    if all(isinstance(a, str) for a in arrays):
        arrays = json.loads(f"[{','.join(arrays)}]")  # one parse, not S
    lengths = np.fromiter(map(len, arrays), dtype=np.intp, count=len(arrays))
    padded = np.zeros((len(arrays), int(lengths.max())))
    padded[np.arange(padded.shape[1]) < lengths[:, None]] = np.fromiter(
        itertools.chain.from_iterable(arrays), dtype=float, count=int(lengths.sum())
    )
    return padded, lengths


def shared_models_current() -> dict[int, SharedModel]:
    """Each hybrid policy's current shared model (its latest version), by
    policy id, in one query; the arrays are left unread."""
    latest = (
        SharedModel.objects.filter(policy=OuterRef("policy"))
        .order_by("-version")
        .values("version")[:1]
    )
    return {
        model.policy_id: model
        for model in SharedModel.objects.filter(version=Subquery(latest)).defer(
            "weights_bytes", "gram_bytes", "moment_bytes"
        )
    }


# --- a hybrid policy's reward vectors, for its shared model's refit -------------


@dataclass(frozen=True, slots=True)
class RewardVectors:
    """A batch of a policy's reward log rows: each one's vector and reward."""

    xs: np.ndarray  # (n, D)
    rewards: np.ndarray  # (n,)
    last_id: int  # the largest row id in the batch


REFIT_BATCH = 100_000
# On PostgreSQL a refit reads the rows with COPY's binary format, in which every
# row is as wide as the next, so numpy decodes a batch at once. A row's vector
# is its binary copy (``Reward.vector``), or for a row logged before there was
# one, its JSON cast to a float8[] in the database: decoding decimals, there or
# in Python, costs several times all the rest. No ORDER BY: sums need none, and
# sorting millions of rows would cost more than the sums.
_VECTORS_COPY = f"""
    COPY (SELECT id, reward, vector FROM {_REWARD}
        WHERE policy_id = %s AND id > %s AND vector IS NOT NULL)
    TO STDOUT (FORMAT BINARY)"""
_JSON_VECTORS_COPY = f"""
    COPY (SELECT id, reward, translate(features::text, '[]', '{{}}')::float8[]
        FROM {_REWARD} WHERE policy_id = %s AND id > %s AND vector IS NULL)
    TO STDOUT (FORMAT BINARY)"""
# A binary COPY file: its signature, no flags and no header extension first.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_FLOAT8_OID = 701


# Every row starts with its field count, then the id and the reward.
_COPY_ID_REWARD = [
    ("fields", ">i2"),
    ("id_length", ">i4"),
    ("id", ">i8"),
    ("reward_length", ">i4"),
    ("reward", ">f8"),
]
_COPY_ID_REWARD_FIXED = {"fields": 3, "id_length": 8, "reward_length": 8}


@dataclass(frozen=True, slots=True)
class _CopyRow:
    """The shape of one binary COPY row of (bigint, float8, a vector): numpy's
    record of it, and the value of each of its fields that is not data."""

    dtype: np.dtype
    fixed: dict[str, int]


def _copy_row(dimension: int) -> _CopyRow:
    """A row of (id, reward, vector as bytea): big-endian, each field after its
    length, the vector's float64s little-endian as ``array_to_bytes`` wrote."""
    return _CopyRow(
        np.dtype(
            [
                *_COPY_ID_REWARD,
                ("x_length", ">i4"),
                ("x", "<f8", (dimension,)),
            ]
        ),
        {**_COPY_ID_REWARD_FIXED, "x_length": 8 * dimension},
    )


def _json_copy_row(dimension: int) -> _CopyRow:
    """A row of (id, reward, vector as float8[]): the array after its header,
    each number after its length."""
    return _CopyRow(
        np.dtype(
            [
                *_COPY_ID_REWARD,
                ("x_length", ">i4"),
                ("ndim", ">i4"),
                ("has_nulls", ">i4"),
                ("element_type", ">u4"),
                ("size", ">i4"),
                ("lower_bound", ">i4"),
                ("x", [("length", ">i4"), ("value", ">f8")], (dimension,)),
            ]
        ),
        {
            **_COPY_ID_REWARD_FIXED,
            "x_length": 20 + 12 * dimension,
            "ndim": 1,
            "has_nulls": 0,
            "element_type": _FLOAT8_OID,
            "size": dimension,
            "lower_bound": 1,
        },
    )


def _copy_rows_decode(rows: np.ndarray, row: _CopyRow) -> RewardVectors:
    """A batch of binary COPY rows, after checking each is what the query
    makes: a row of another shape would shift every row after it."""
    x = rows["x"]
    if x.dtype.names:  # a float8[]: each number after its length
        fixed = (x["length"] == 8).all()
        x = x["value"]
    else:
        fixed = True
    if not fixed or any((rows[k] != v).any() for k, v in row.fixed.items()):
        raise ValueError("a reward row's vector is not of the policy's dimension")
    return RewardVectors(
        xs=x.astype(float),
        rewards=rows["reward"].astype(float),
        last_id=int(rows["id"].max()),
    )


def reward_vectors(
    *, policy: Policy, after_id: int, batch: int = REFIT_BATCH
) -> Iterator[RewardVectors]:
    """Every reward log row of ``policy`` after row ``after_id``, in batches of
    up to ``batch`` rows, in no particular order: what a shared-model refit sums.
    On PostgreSQL the connection is busy with a COPY until the iterator ends: no
    other statement may run on it in between."""
    if connection.vendor != "postgresql":
        yield from _reward_vectors_orm(policy=policy, after_id=after_id, batch=batch)
        return
    for sql, row in (
        (_VECTORS_COPY, _copy_row(policy.dimension)),
        (_JSON_VECTORS_COPY, _json_copy_row(policy.dimension)),
    ):
        # The driver's own cursor: Django's has no COPY.
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(sql, [policy.id, after_id]) as copy,
        ):
            for rows in _copy_batches(copy, row.dtype, batch):
                yield _copy_rows_decode(rows, row)


def _copy_batches(
    messages: Iterable[bytes], row: np.dtype, batch: int
) -> Iterator[np.ndarray]:
    """The rows of a binary COPY's output, ``batch`` at a time (the last batch
    shorter), as numpy records of ``row``: the file's header and trailer off."""
    pending = bytearray()
    start = len(_COPY_HEADER)  # where the rows begin in ``pending``
    whole = batch * row.itemsize
    for data in messages:
        pending += data
        if len(pending) - start >= whole:
            _copy_header_check(pending, start)
            yield np.frombuffer(bytes(pending[start : start + whole]), dtype=row)
            del pending[: start + whole]
            start = 0
    _copy_header_check(pending, start)
    rest = pending[start:]
    if rest[-2:] != _COPY_TRAILER or (len(rest) - 2) % row.itemsize:
        raise ValueError("a binary COPY's rows are not all of one width")
    if len(rest) > 2:
        yield np.frombuffer(bytes(rest[:-2]), dtype=row)


def _copy_header_check(pending: bytearray, start: int) -> None:
    if start and not pending.startswith(_COPY_HEADER):
        raise ValueError("not a binary COPY of rows alone")


def _reward_vectors_orm(
    *, policy: Policy, after_id: int, batch: int
) -> Iterator[RewardVectors]:
    """``reward_vectors`` where there is no COPY (SQLite): the JSON, decoded."""
    rows = (
        Reward.objects.filter(policy=policy, id__gt=after_id)
        .order_by("id")
        .values_list("id", "features", "reward")
        .iterator(chunk_size=batch)
    )
    while chunk := list(itertools.islice(rows, batch)):
        ids, xs, rewards = zip(*chunk, strict=True)
        yield RewardVectors(
            xs=np.array(xs, dtype=float),
            rewards=np.array(rewards, dtype=float),
            last_id=ids[-1],
        )


def policies_without_state(*, user_id: str) -> list[Policy]:
    """The policies under which ``user_id`` has learned nothing yet, in the
    control room's order."""
    having = set(
        BanditState.objects.filter(user_id=user_id).values_list("policy_id", flat=True)
    )
    return [p for p in policy_list() if p.id not in having]
