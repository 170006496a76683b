"""Judges: how a simulated user reacts to the tip a policy picked. Pure: no Django.

A judge maps (persona, picked candidate, hour, its uniforms) to a reaction kind
(done, dismissed or snoozed) and a dwell; the profiles app's reward table turns
that into the reward (``profiles.inference.rewards_for``), as for a real user.
Judges work on arrays, one entry per user, and draw nothing themselves: their
randomness is the uniforms the run drew for each candidate, so the same candidate
shown twice in the same (user, round) gets the same reaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from profiles import inference
from simulations import personas

DONE = inference.KIND_CODES[inference.DONE]
DISMISSED = inference.KIND_CODES[inference.DISMISSED]
SNOOZED = inference.KIND_CODES[inference.SNOOZED]


@dataclass(frozen=True, slots=True)
class Reactions:
    kind: np.ndarray  # (U,) codes of inference.KINDS
    dwell_ms: np.ndarray  # (U,) float, whole milliseconds; NaN for unknown


class Judge(Protocol):
    """What the engine needs of a judge. A judge that knows each candidate's
    expected reward also has ``expected_reward`` (same arguments as ``react``
    but the uniforms, any broadcastable shapes); the engine then records the
    oracle and each policy's regret."""

    name: str
    uniforms: int  # how many uniforms it takes per candidate

    def react(
        self,
        *,
        persona: np.ndarray,
        hour: np.ndarray,
        is_overdue: np.ndarray,
        task_age_days: np.ndarray,
        priority: np.ndarray,
        uniforms: np.ndarray,
    ) -> Reactions:
        """Each user's reaction to their picked candidate: arrays of shape (U,),
        ``uniforms`` (U, self.uniforms) in [0, 1)."""
        ...


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class RuleJudge:
    """Reactions from each persona's preference weights (``personas.Persona``).

    The chance of completing is a logistic function of the weights on the task
    and the time of day. Otherwise the user dismisses (the persona's
    ``dismiss_share``) or snoozes. A completed tip's dwell is log-uniform within
    a factor of 4 of the persona's typical time, shortened when the tip suits
    them less (ticked off in a few seconds is worth -0.3 in the reward table,
    the sweet spot 15 s - 2 min is +1.0, longer ones +0.6 and +0.3).
    """

    name = "rule"
    uniforms = 2  # the kind, then the dwell

    def __init__(self) -> None:
        self._weights = {name: personas.column(name) for name in personas.WEIGHTS}
        self._dismiss_share = personas.column("dismiss_share")
        self._dwell_s = personas.column("dwell_s")

    def done_probability(
        self,
        *,
        persona: np.ndarray,
        hour: np.ndarray,
        is_overdue: np.ndarray,
        task_age_days: np.ndarray,
        priority: np.ndarray,
    ) -> np.ndarray:
        w = {name: weights[persona] for name, weights in self._weights.items()}
        hour = np.asarray(hour)
        priority = np.asarray(priority)
        logit = (
            w["base"]
            + w["overdue"] * np.asarray(is_overdue, dtype=float)
            + w["priority"] * (priority - 1.0) / 3.0
            + w["low_priority"] * (priority <= 2)
            + w["age"] * np.minimum(np.asarray(task_age_days) / 30.0, 1.0)
            + w["morning"] * ((hour >= 6) & (hour < 12))
            + w["evening"] * (hour >= 18)
        )
        return _sigmoid(logit)

    def _typical_dwell_s(self, persona: np.ndarray, p_done: np.ndarray) -> np.ndarray:
        """The middle of a completion's dwell: shorter when the tip suits less."""
        return self._dwell_s[persona] * (0.25 + 0.75 * p_done)

    def react(
        self,
        *,
        persona: np.ndarray,
        hour: np.ndarray,
        is_overdue: np.ndarray,
        task_age_days: np.ndarray,
        priority: np.ndarray,
        uniforms: np.ndarray,
    ) -> Reactions:
        p_done = self.done_probability(
            persona=persona,
            hour=hour,
            is_overdue=is_overdue,
            task_age_days=task_age_days,
            priority=priority,
        )
        u_kind, u_dwell = uniforms[:, 0], uniforms[:, 1]
        dismiss = p_done + (1.0 - p_done) * self._dismiss_share[persona]
        kind = np.where(
            u_kind < p_done, DONE, np.where(u_kind < dismiss, DISMISSED, SNOOZED)
        )
        spread = 4.0 ** (2.0 * u_dwell - 1.0)
        done_s = self._typical_dwell_s(persona, p_done) * spread
        other_s = 2.0 + 10.0 * u_dwell  # a dismissal or a snooze takes seconds
        dwell_s = np.where(kind == DONE, done_s, other_s)
        return Reactions(kind=kind, dwell_ms=np.round(dwell_s * 1000.0))

    def expected_reward(
        self,
        *,
        persona: np.ndarray,
        hour: np.ndarray,
        is_overdue: np.ndarray,
        task_age_days: np.ndarray,
        priority: np.ndarray,
    ) -> np.ndarray:
        """The reward ``react`` gives on average over its two uniforms, exactly.

        Completed with probability p, else dismissed or snoozed as in ``react``.
        A completion's dwell is c 4^(2u - 1) seconds, u uniform, with c the
        persona's typical time x (0.25 + 0.75 p), rounded to whole milliseconds:
        it reaches N ms when u >= (1 + log4((N - 0.5) / 1000 / c)) / 2, which
        gives each of the reward table's dwell bands its probability.
        """
        persona = np.asarray(persona)
        p_done = self.done_probability(
            persona=persona,
            hour=hour,
            is_overdue=is_overdue,
            task_age_days=task_age_days,
            priority=priority,
        )
        typical_s = self._typical_dwell_s(persona, p_done)

        def at_least(ms: int | None, unbounded: float) -> np.ndarray:
            """P(the rounded dwell >= ms); ``unbounded`` for no bound."""
            if ms is None:
                return np.full(np.shape(typical_s), unbounded)
            exponent = np.log((ms - 0.5) / 1000.0 / typical_s) / np.log(4.0)
            return np.clip(0.5 - 0.5 * exponent, 0.0, 1.0)

        done = np.zeros(np.shape(typical_s))
        for rule in inference.REWARD_TABLE:
            if rule.kind == inference.DONE:
                band = at_least(rule.low_ms, 1.0) - at_least(rule.high_ms, 0.0)
                done = done + rule.reward * band
        share = self._dismiss_share[persona]
        # A dismissal's or a snooze's reward does not depend on its dwell.
        dismissed = inference.infer_reward(inference.DISMISSED, 0)
        snoozed = inference.infer_reward(inference.SNOOZED, 0)
        return p_done * done + (1.0 - p_done) * (
            share * dismissed + (1.0 - share) * snoozed
        )


JUDGES: dict[str, Judge] = {"rule": RuleJudge()}
