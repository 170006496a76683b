"""The llm judge on its own: prompts, validation, the cache and the fallback to
the rule judge's draw. No database, no HTTP (a dict cache, a function that
answers): the runs through the client and the table are in test_llm_runs.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations import llm_judge, personas
from simulations.judges import DISMISSED, DONE, SNOOZED, RuleJudge
from simulations.llm_judge import Asked, LlmJudge, age_band, parse_reaction

U = 200


class DictCache:
    def __init__(self) -> None:
        self.kept: dict[str, str] = {}

    def get_many(self, keys):
        return {k: self.kept[k] for k in keys if k in self.kept}

    def put_many(self, asked: list[Asked]):
        for a in asked:
            self.kept.setdefault(a.key, a.answer)
        return {a.key: self.kept[a.key] for a in asked}


def world(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "persona": rng.integers(0, len(personas.PERSONAS), U),
        "hour": rng.integers(7, 24, U),
        "is_overdue": rng.random(U) < 0.3,
        "task_age_days": rng.integers(0, 60, U),
        "priority": rng.integers(1, 5, U),
        "uniforms": rng.random((U, RuleJudge.uniforms)),
    }


def user_text(messages) -> str:
    return messages[-1]["content"]


@pytest.mark.parametrize(
    "text, parsed",
    [
        ('{"reaction": "done", "dwell_ms": 45000}', (DONE, 45000)),
        ('{"dwell_ms": 3000.0, "reaction": "dismissed"}', (DISMISSED, 3000)),
        ('{"reaction": "snoozed", "dwell_ms": 0}', (SNOOZED, 0)),
        ("not json", None),
        ('["done", 100]', None),
        ('{"reaction": "done"}', None),
        ('{"reaction": "done", "dwell_ms": 1, "why": "x"}', None),
        ('{"reaction": "maybe", "dwell_ms": 1}', None),
        ('{"reaction": "done", "dwell_ms": -1}', None),
        ('{"reaction": "done", "dwell_ms": 3600001}', None),
        ('{"reaction": "done", "dwell_ms": 1.5}', None),
        ('{"reaction": "done", "dwell_ms": true}', None),
        ('{"reaction": "done", "dwell_ms": "60000"}', None),
        ('{"reaction": "done", "dwell_ms": NaN}', None),
    ],
)
def test_only_the_asked_shape_is_a_reaction(text, parsed):
    assert parse_reaction(text) == parsed


def test_the_prompt_says_who_the_user_is_the_task_and_the_hour():
    persona = personas.PERSONAS[0]
    messages = llm_judge.messages_for(
        persona, hour=9, overdue=True, band=age_band(10), priority=4
    )
    assert messages[0]["role"] == "system" and '"dwell_ms"' in messages[0]["content"]
    text = user_text(messages)
    assert persona.description in text
    assert "60 tips shown, 55% done, 20% dismissed, 75 s" in text
    assert "most active around 09:00" in text
    assert "It is 09:00" in text
    assert "priority 4 (1 low to 4 urgent), overdue, 1 to 2 weeks old" in text
    assert [age_band(d) for d in (0, 1, 3, 4, 7, 8, 14, 15, 30, 31, 365)] == [
        0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5
    ]  # fmt: skip


def test_the_key_changes_with_the_model_and_the_messages():
    messages = [{"role": "user", "content": "a"}]
    key = llm_judge.prompt_key(model="m", messages=messages)
    assert key == llm_judge.prompt_key(model="m", messages=[dict(messages[0])])
    assert key != llm_judge.prompt_key(model="n", messages=messages)
    assert key != llm_judge.prompt_key(
        model="m", messages=[{"role": "user", "content": "b"}]
    )


def test_answers_are_used_and_unusable_ones_fall_back_to_the_rule_draw():
    """Overdue tasks get a usable answer, the others an unusable one: each user
    gets the model's reaction or exactly the rule judge's for the same draw."""

    def ask(messages):
        if ", overdue," in user_text(messages):
            return json.dumps({"reaction": "done", "dwell_ms": 42_000})
        return "Sure! The user would probably snooze it."

    judge = LlmJudge(ask=ask, cache=DictCache(), model="m")
    w = world()
    got = judge.react(**w)
    rule = RuleJudge().react(**w)
    overdue = w["is_overdue"]
    assert (got.kind[overdue] == DONE).all()
    assert (got.dwell_ms[overdue] == 42_000).all()
    assert np.array_equal(got.kind[~overdue], rule.kind[~overdue])
    assert np.array_equal(got.dwell_ms[~overdue], rule.dwell_ms[~overdue])
    stats = judge.stats
    assert stats.reactions == U
    assert stats.fallbacks_invalid == int((~overdue).sum())
    assert stats.fallbacks_unavailable == 0
    # One question per distinct prompt, however many users share it.
    assert stats.asked == stats.prompts < U


def test_a_rerun_reads_the_cache_and_reacts_the_same():
    calls = []

    def ask(messages):
        calls.append(messages)
        if "It is 13:00" in user_text(messages):
            return "{not json"
        return json.dumps({"reaction": "dismissed", "dwell_ms": 2_000})

    cache = DictCache()
    first = LlmJudge(ask=ask, cache=cache, model="m")
    a = first.react(**world())
    asked = len(calls)
    again = LlmJudge(ask=ask, cache=cache, model="m")
    b = again.react(**world())
    assert len(calls) == asked  # nothing asked twice
    assert np.array_equal(a.kind, b.kind) and np.array_equal(a.dwell_ms, b.dwell_ms)
    assert again.stats.cached == again.stats.prompts and again.stats.asked == 0
    assert again.stats.fallbacks_invalid == first.stats.fallbacks_invalid > 0


def test_no_answer_falls_back_is_not_kept_and_stops_asking_after_a_few():
    calls = []

    def ask(messages):
        calls.append(1)
        return None

    cache = DictCache()
    judge = LlmJudge(ask=ask, cache=cache, model="m", concurrency=1)
    w = world()
    got = judge.react(**w)
    rule = RuleJudge().react(**w)
    assert np.array_equal(got.kind, rule.kind)
    assert np.array_equal(got.dwell_ms, rule.dwell_ms)
    assert judge.stats.fallbacks_unavailable == U
    assert len(calls) == llm_judge.UNAVAILABLE_LIMIT
    assert cache.kept == {}


def test_the_first_kept_answer_wins():
    """Two workers asked the same prompt: both go on with the kept answer."""
    cache = DictCache()
    w = world()
    done = json.dumps({"reaction": "done", "dwell_ms": 30_000})
    snoozed = json.dumps({"reaction": "snoozed", "dwell_ms": 1_000})
    LlmJudge(ask=lambda m: done, cache=cache, model="m").react(**w)
    later = LlmJudge(ask=lambda m: snoozed, cache=cache, model="m")
    # A cache that has every key already but says it has none: put_many decides.
    later._cache = type(
        "Racing", (), {"get_many": lambda s, k: {}, "put_many": cache.put_many}
    )()
    assert (later.react(**w).kind == DONE).all()
