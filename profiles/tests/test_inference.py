"""The reward table (docs/rewards.md), at every boundary. No database."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from profiles import inference
from profiles.inference import infer_reward, reward_rule


@pytest.mark.parametrize(
    ("dwell_ms", "reward"),
    [
        (0, -0.3),
        (14_999, -0.3),
        (15_000, 1.0),
        (60_000, 1.0),
        (119_999, 1.0),
        (120_000, 0.6),
        (300_000, 0.6),
        (599_999, 0.6),
        (600_000, 0.3),
        (30 * 24 * 3_600_000, 0.3),
        (None, 1.0),
    ],
)
def test_done_is_worth_what_its_dwell_says(dwell_ms, reward):
    assert infer_reward("done", dwell_ms) == reward


@pytest.mark.parametrize("dwell_ms", [None, 0, 14_999, 600_000])
def test_dismissed_and_snoozed_are_worth_the_same_whatever_the_dwell(dwell_ms):
    assert infer_reward("dismissed", dwell_ms) == -1.0
    assert infer_reward("snoozed", dwell_ms) == 0.1


@pytest.mark.parametrize("kind", ["served", "viewed"])
@pytest.mark.parametrize("dwell_ms", [None, 60_000])
def test_served_and_viewed_carry_no_reward(kind, dwell_ms):
    assert infer_reward(kind, dwell_ms) is None
    assert reward_rule(kind, dwell_ms) is None


def test_each_rule_says_which_row_it_is():
    assert reward_rule("done", 15_000).label == "done, 15 s ≤ dwell < 2 min"
    assert reward_rule("done", None).label == "done, dwell unknown"


@pytest.mark.parametrize(
    ("kind", "dwell_ms"), [("clicked", None), ("DONE", 1), ("done", -1)]
)
def test_an_unknown_kind_or_a_negative_dwell_is_an_error_not_a_reward(kind, dwell_ms):
    with pytest.raises(ValueError):
        reward_rule(kind, dwell_ms)


def test_the_table_imports_no_django():
    for module in ("inference.py", "features.py"):
        source = Path(inference.__file__).with_name(module).read_text()
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (
                node.names
                if isinstance(node, ast.Import)
                else [ast.alias(node.module or "")]
            )
        }
        assert "django" not in imported, module


# --- the vectorised lookup the simulator uses -----------------------------------

BOUNDARIES = [
    None,
    0,
    1,
    14_999,
    15_000,
    15_001,
    119_999,
    120_000,
    599_999,
    600_000,
    30 * 24 * 3_600_000,
]


def test_rewards_for_equals_infer_reward_for_every_kind_at_every_boundary():
    pairs = [(kind, dwell) for kind in inference.KINDS for dwell in BOUNDARIES]
    kinds = np.array([inference.KIND_CODES[kind] for kind, _ in pairs])
    dwell = np.array([np.nan if d is None else d for _, d in pairs], dtype=float)
    got = inference.rewards_for(kinds, dwell)
    for (kind, dwell_ms), value in zip(pairs, got, strict=True):
        expected = infer_reward(kind, dwell_ms)
        if expected is None:
            assert np.isnan(value), (kind, dwell_ms)
        else:
            assert value == expected, (kind, dwell_ms)


def test_rewards_for_reads_the_table_itself(monkeypatch):
    # Change a row: the vectorised lookup follows, as there is only one table.
    table = tuple(
        inference.Rule(r.kind, 0.5, r.low_ms, r.high_ms, r.label)
        if r.label == "snoozed"
        else r
        for r in inference.REWARD_TABLE
    )
    monkeypatch.setattr(inference, "REWARD_TABLE", table)
    snoozed = np.array([inference.KIND_CODES["snoozed"]])
    assert inference.rewards_for(snoozed, np.array([1.0]))[0] == 0.5
    assert infer_reward("snoozed", 1) == 0.5


@pytest.mark.parametrize(
    ("kinds", "dwell"), [([2], [-1.0]), ([len(inference.KINDS)], [1.0]), ([-1], [1.0])]
)
def test_rewards_for_refuses_a_negative_dwell_or_an_unknown_kind(kinds, dwell):
    with pytest.raises(ValueError):
        inference.rewards_for(np.array(kinds), np.array(dwell))
