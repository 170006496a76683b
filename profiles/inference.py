"""Reward inference: what a user's reaction to a tip is worth (docs/rewards.md).

Pure: no Django. The API, the admin and the simulator all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SERVED = "served"
VIEWED = "viewed"
DONE = "done"
DISMISSED = "dismissed"
SNOOZED = "snoozed"
KINDS = (SERVED, VIEWED, DONE, DISMISSED, SNOOZED)
REWARDED_KINDS = frozenset({DONE, DISMISSED, SNOOZED})

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: ``kind`` with a dwell in [low_ms, high_ms)."""

    kind: str
    reward: float
    low_ms: int | None = None  # None: no lower bound
    high_ms: int | None = None  # None: no upper bound
    label: str = ""

    def matches(self, kind: str, dwell_ms: int) -> bool:
        return (
            kind == self.kind
            and (self.low_ms is None or dwell_ms >= self.low_ms)
            and (self.high_ms is None or dwell_ms < self.high_ms)
        )


# A done event's reward by dwell: too quick to be real, the sweet spot, then less
# as the task drags on. An unknown dwell counts as a plain completion.
REWARD_TABLE = (
    Rule(DISMISSED, -1.0, label="dismissed"),
    Rule(SNOOZED, 0.1, label="snoozed"),
    Rule(DONE, -0.3, None, 15 * SECOND_MS, "done, dwell < 15 s"),
    Rule(DONE, 1.0, 15 * SECOND_MS, 2 * MINUTE_MS, "done, 15 s ≤ dwell < 2 min"),
    Rule(DONE, 0.6, 2 * MINUTE_MS, 10 * MINUTE_MS, "done, 2 min ≤ dwell < 10 min"),
    Rule(DONE, 0.3, 10 * MINUTE_MS, None, "done, dwell ≥ 10 min"),
)
DONE_UNKNOWN_DWELL = Rule(DONE, 1.0, label="done, dwell unknown")


def reward_rule(kind: str, dwell_ms: int | None) -> Rule | None:
    """The table's row for a reaction, or None for a kind that carries no reward."""
    if kind not in REWARDED_KINDS:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        return None
    if kind == DONE and dwell_ms is None:
        return DONE_UNKNOWN_DWELL
    if dwell_ms is not None and dwell_ms < 0:
        raise ValueError(f"dwell must be >= 0 ms, not {dwell_ms}")
    for rule in REWARD_TABLE:
        if rule.matches(kind, 0 if dwell_ms is None else dwell_ms):
            return rule
    raise AssertionError(f"the table has no row for {kind} at {dwell_ms} ms")


def infer_reward(kind: str, dwell_ms: int | None) -> float | None:
    """The reward a reaction is worth; None for served and viewed."""
    rule = reward_rule(kind, dwell_ms)
    return None if rule is None else rule.reward


KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}


def rewards_for(kinds: np.ndarray, dwell_ms: np.ndarray) -> np.ndarray:
    """``infer_reward`` over arrays, from ``REWARD_TABLE`` itself.

    ``kinds`` holds codes (``KIND_CODES``, an event kind's index in ``KINDS``);
    ``dwell_ms`` is a float array with NaN for an unknown dwell. The answer is
    NaN where the kind carries no reward (served, viewed), like None from
    ``infer_reward``. A negative dwell is refused, as there.
    """
    kinds = np.asarray(kinds)
    dwell = np.asarray(dwell_ms, dtype=float)
    if (dwell < 0).any():
        raise ValueError("dwell must be >= 0 ms")
    if ((kinds < 0) | (kinds >= len(KINDS))).any():
        raise ValueError("unknown event kind code")
    rewards = np.full(np.broadcast_shapes(kinds.shape, dwell.shape), np.nan)
    unknown = np.isnan(dwell)
    done = kinds == KIND_CODES[DONE]
    rewards[done & unknown] = DONE_UNKNOWN_DWELL.reward
    open_ = np.isnan(rewards)
    # The first row that matches wins, as in reward_rule.
    for rule in REWARD_TABLE:
        match = open_ & (kinds == KIND_CODES[rule.kind])
        if rule.low_ms is not None:
            match &= dwell >= rule.low_ms
        if rule.high_ms is not None:
            match &= dwell < rule.high_ms
        rewards[match] = rule.reward
        open_ &= ~match
    return rewards
