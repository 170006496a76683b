"""The personas and the rule judge: preferences that make the policies differ.

No database.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from policies import bandits
from profiles.inference import KIND_CODES, rewards_for
from simulations import personas
from simulations.judges import JUDGES, Judge, Reactions, RuleJudge

DRAWS = 20_000
JUDGE = RuleJudge()


def persona_index(name: str) -> int:
    return personas.PERSONA_NAMES.index(name)


def react(name: str, *, hour=14, overdue=False, age=3, priority=2, seed=0):
    """The reactions of DRAWS users of one persona to the same kind of task."""
    rng = np.random.default_rng(seed)
    full = np.full(DRAWS, 1)
    return JUDGE.react(
        persona=full * persona_index(name),
        hour=full * hour,
        is_overdue=full.astype(bool) & overdue,
        task_age_days=full * age,
        priority=full * priority,
        uniforms=rng.random((DRAWS, JUDGE.uniforms)),
    )


def share(reactions: Reactions, kind: str) -> float:
    return float((reactions.kind == KIND_CODES[kind]).mean())


def mean_reward(reactions: Reactions) -> float:
    return float(rewards_for(reactions.kind, reactions.dwell_ms).mean())


def test_the_five_personas_of_the_spec_with_the_profile_features_policies_read():
    assert personas.PERSONA_NAMES == (
        "deadline-driven",
        "evening-relaxed",
        "low-priority-first",
        "consistent-responder",
        "overdue-ignorer",
    )
    for persona in personas.PERSONAS:
        assert tuple(persona.profile) == bandits.PROFILE_NAMES
        with pytest.raises(dataclasses.FrozenInstanceError):
            persona.base = 1.0  # type: ignore[misc]


def test_d12_policies_read_each_personas_profile_features():
    index = np.arange(len(personas.PERSONAS))
    arrays = personas.profile_arrays(index)
    x = bandits.encode_batch(
        hours=np.full(len(index), 20),
        day_of_week=np.zeros(len(index)),
        is_overdue=np.zeros((len(index), 1), dtype=bool),
        task_age_days=np.zeros((len(index), 1)),
        priority=np.ones((len(index), 1)),
        profile=arrays,
        dimension=12,
    )
    for i, persona in enumerate(personas.PERSONAS):
        expected = bandits.encode(
            [{}], hours=[20], day_of_week=0, profile=persona.profile, dimension=12
        )
        np.testing.assert_array_equal(x[i], expected)
    # Distinct personas look distinct to a D=12 policy.
    assert len({tuple(row[0, 7:]) for row in x}) == len(personas.PERSONAS)


def test_reactions_are_done_dismissed_or_snoozed_with_a_dwell():
    for name in personas.PERSONA_NAMES:
        reactions = react(name)
        assert set(np.unique(reactions.kind)) <= {
            KIND_CODES["done"],
            KIND_CODES["dismissed"],
            KIND_CODES["snoozed"],
        }
        assert (reactions.dwell_ms >= 0).all() and not np.isnan(
            reactions.dwell_ms
        ).any()


def test_the_same_uniforms_give_the_same_reactions():
    a, b = react("deadline-driven", seed=5), react("deadline-driven", seed=5)
    np.testing.assert_array_equal(a.kind, b.kind)
    np.testing.assert_array_equal(a.dwell_ms, b.dwell_ms)
    c = react("deadline-driven", seed=6)
    assert not np.array_equal(a.dwell_ms, c.dwell_ms)


def test_evening_relaxed_completes_in_the_evening_and_dismisses_mornings():
    evening, morning = (
        react("evening-relaxed", hour=20),
        react("evening-relaxed", hour=9),
    )
    assert share(evening, "done") > 0.6
    assert share(morning, "dismissed") > 0.7
    assert mean_reward(evening) > mean_reward(morning) + 0.8


def test_deadline_driven_favours_overdue_and_high_priority():
    urgent = react("deadline-driven", overdue=True, priority=4, age=20)
    idle = react("deadline-driven", overdue=False, priority=1, age=1)
    assert share(urgent, "done") > 0.8 > 0.3 > share(idle, "done")
    assert mean_reward(urgent) > mean_reward(idle) + 0.8


def test_low_priority_first_favours_priority_one_and_two():
    for low in (1, 2):
        for high in (3, 4):
            assert mean_reward(react("low-priority-first", priority=low)) > (
                mean_reward(react("low-priority-first", priority=high)) + 0.4
            )


def test_overdue_ignorer_dismisses_overdue_tasks():
    overdue = react("overdue-ignorer", overdue=True, age=10)
    fresh = react("overdue-ignorer", overdue=False, age=1)
    assert share(overdue, "dismissed") > 0.8
    assert share(fresh, "done") > 0.6


def test_consistent_responder_completes_most_things_with_mid_dwell():
    for hour, overdue, priority in [(8, True, 1), (14, False, 4), (21, False, 2)]:
        reactions = react(
            "consistent-responder", hour=hour, overdue=overdue, priority=priority
        )
        assert share(reactions, "done") > 0.85
        done = reactions.dwell_ms[reactions.kind == KIND_CODES["done"]]
        assert np.median(done) >= 120_000  # the table's +0.6 band, mostly


def test_every_dwell_band_of_the_table_occurs_so_dwell_matters():
    dwell = np.concatenate(
        [
            (r := react(name, hour=hour)).dwell_ms[r.kind == KIND_CODES["done"]]
            for name in personas.PERSONA_NAMES
            for hour in (9, 20)
        ]
    )
    bands = [(0, 15_000), (15_000, 120_000), (120_000, 600_000), (600_000, 1e12)]
    for low, high in bands:
        assert ((dwell >= low) & (dwell < high)).mean() > 0.02, (low, high)


def test_a_worse_fit_is_done_faster_so_it_is_worth_less():
    good = react("deadline-driven", overdue=True, priority=4)
    bad = react("deadline-driven", overdue=False, priority=1)
    good_done = good.dwell_ms[good.kind == KIND_CODES["done"]]
    bad_done = bad.dwell_ms[bad.kind == KIND_CODES["done"]]
    assert np.median(bad_done) < np.median(good_done)
    assert (bad_done < 15_000).mean() > (good_done < 15_000).mean()


def test_the_registry_holds_the_rule_judge_behind_the_interface():
    judge: Judge = JUDGES["rule"]
    assert isinstance(judge, RuleJudge) and judge.name == "rule"
    assert judge.uniforms == 2


# --- the expected reward ---------------------------------------------------------


def test_the_expected_reward_is_what_the_reactions_average_to():
    """Every persona on tasks of every kind, morning and evening, each against
    DRAWS reactions: the closed form sits within 4.5 standard errors."""
    grid = np.array(
        [
            (persona, hour, overdue, age, priority)
            for persona in range(len(personas.PERSONAS))
            for hour in (8, 14, 21)
            for overdue in (0, 1)
            for age in (0, 12, 60)
            for priority in (1, 2, 4)
        ]
    )
    cells = len(grid)
    columns = dict(
        persona=grid[:, 0],
        hour=grid[:, 1],
        is_overdue=grid[:, 2].astype(bool),
        task_age_days=grid[:, 3],
        priority=grid[:, 4],
    )
    expected = JUDGE.expected_reward(**columns)
    repeated = {name: np.repeat(values, DRAWS) for name, values in columns.items()}
    uniforms = np.random.default_rng(11).random((cells * DRAWS, JUDGE.uniforms))
    reactions = JUDGE.react(**repeated, uniforms=uniforms)
    rewards = rewards_for(reactions.kind, reactions.dwell_ms).reshape(cells, DRAWS)
    error = np.abs(rewards.mean(axis=1) - expected)
    standard = rewards.std(axis=1) / np.sqrt(DRAWS)
    assert (error < 4.5 * standard).all(), grid[error >= 4.5 * standard]
    # And they differ enough between tasks for an oracle to matter.
    assert expected.max() - expected.min() > 1.0


def test_the_expected_reward_by_hand():
    # consistent-responder, priority 4 at 14 h: logit 2 + 0.5, p = 0.924142.
    # A completion's dwell is c 4^(2u - 1) with c = 240 s x (0.25 + 0.75 p):
    # under 120 s (+1.0) for u < (1 + log4(119.9995 / c)) / 2, under 600 s
    # (+0.6) likewise, longer +0.3; never under 15 s, since c / 4 > 15 s.
    # Not completed: dismissed 30% (-1.0), snoozed 70% (+0.1).
    p = 1 / (1 + math.exp(-2.5))
    c = 240 * (0.25 + 0.75 * p)

    def below(seconds: float) -> float:
        return (1 + math.log((seconds - 0.0005) / c, 4)) / 2

    done = 1.0 * below(120) + 0.6 * (below(600) - below(120)) + 0.3 * (1 - below(600))
    by_hand = p * done + (1 - p) * (0.3 * -1.0 + 0.7 * 0.1)
    value = JUDGE.expected_reward(
        persona=persona_index("consistent-responder"),
        hour=14,
        is_overdue=False,
        task_age_days=0,
        priority=4,
    )
    assert float(value) == pytest.approx(by_hand, abs=1e-12)
    assert float(value) == pytest.approx(0.5961, abs=1e-4)  # worked on paper


def test_a_near_sure_refusal_is_worth_about_the_dismiss_and_snooze_mixture():
    # overdue-ignorer on an overdue, old task: logit 0.8 - 3.5 - 1.5, p = 0.0148;
    # 90% of the rest dismissed at -1.0, 10% snoozed at +0.1.
    p = 1 / (1 + math.exp(4.2))
    refusal = (1 - p) * (0.9 * -1.0 + 0.1 * 0.1)
    value = JUDGE.expected_reward(
        persona=persona_index("overdue-ignorer"),
        hour=14,
        is_overdue=True,
        task_age_days=60,
        priority=1,
    )
    # A completion is worth between -0.3 and +1.0.
    assert refusal + p * -0.3 <= float(value) <= refusal + p * 1.0
