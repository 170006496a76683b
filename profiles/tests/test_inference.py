"""The reward table of SPEC section 6, at every boundary. No database."""

from __future__ import annotations

import ast
from pathlib import Path

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
