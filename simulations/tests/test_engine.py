"""The engine: determinism, chunk independence, common random numbers, learning.

No database: the engine is pure.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from policies.registry import HYBRID_V1
from profiles.inference import KINDS, infer_reward
from simulations import engine, generator, personas
from simulations.judges import JUDGES

V1 = engine.PolicySpec("egreedy-v1", "egreedy", 7, {"epsilon": 0.1})
V2 = engine.PolicySpec("egreedy-v2", "egreedy", 12, {"epsilon": 0.1})
UCB = engine.PolicySpec("linucb-v1", "linucb", 5, {"alpha": 1.0})
RANDOM = engine.PolicySpec("uniform", "egreedy", 7, {"epsilon": 1.0})
HYBRID = engine.PolicySpec("hybrid-v1", "hybrid", 12, HYBRID_V1["params"])


def run(
    policies=(V1, V2, UCB), *, seed=42, start=0, stop=20, rounds=15, n=5, users=None
):
    """Users [start, stop) of a run of ``users`` (default: ``stop``)."""
    return engine.simulate(
        policies=list(policies),
        judge=JUDGES["rule"],
        seed=seed,
        user_start=start,
        user_stop=stop,
        n_rounds=rounds,
        n_candidates=n,
        n_users=users or stop,
    )


def assert_same(a: engine.Events, b: engine.Events):
    for name, column in a.columns().items():
        np.testing.assert_array_equal(column, getattr(b, name), err_msg=name)


def test_same_seed_gives_identical_events_to_the_bit():
    first, second = run(), run()
    assert_same(first, second)
    assert first.reward.dtype == np.float64 and len(first) == 3 * 20 * 15


def test_a_different_seed_gives_different_events():
    a, b = run(seed=42), run(seed=43)
    assert not np.array_equal(a.reward, b.reward)
    assert not np.array_equal(a.hour, b.hour)


def test_one_row_per_policy_user_round_in_key_order():
    events = run(stop=7, rounds=4)
    key = np.stack([events.policy, events.user_index, events.round])
    assert key.shape[1] == len({tuple(k) for k in key.T}) == 3 * 7 * 4
    assert (np.lexsort(key[::-1]) == np.arange(key.shape[1])).all()


@pytest.mark.parametrize("splits", [[0, 7, 20], [0, 1, 2, 13, 20], [0, 19, 20]])
def test_a_run_is_the_union_of_its_chunks(splits):
    whole = run(start=0, stop=20)
    parts = [run(start=a, stop=b) for a, b in zip(splits, splits[1:], strict=False)]
    merged = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in whole.columns()
    }
    order = np.lexsort((merged["round"], merged["user_index"], merged["policy"]))
    for name, column in whole.columns().items():
        np.testing.assert_array_equal(column, merged[name][order], err_msg=name)


def test_a_run_with_a_hybrid_policy_is_the_union_of_any_chunks():
    """The hybrid policy learns from its block of 1,000 users whatever the chunk:
    chunks of 130 users give the events of one chunk per block, to the bit, so a
    run can have small chunks (a moving progress bar) and its documented figures."""
    n_users = 1_200  # a block of 1,000 and a last one of 200
    policies = [V1, HYBRID]

    def chunk(start, stop):
        return engine.simulate(
            policies=policies,
            judge=JUDGES["rule"],
            seed=5,
            user_start=start,
            user_stop=stop,
            n_rounds=4,
            n_candidates=5,
            n_users=n_users,
        )

    whole = [chunk(0, 1_000), chunk(1_000, n_users)]
    splits = [0, 130, 990, 1_010, 1_130, n_users]  # one chunk straddles the blocks
    parts = [chunk(a, b) for a, b in zip(splits, splits[1:], strict=False)]

    def by_key(events):
        columns = {
            name: np.concatenate([getattr(e, name) for e in events])
            for name in engine.Events.__slots__
        }
        order = np.lexsort((columns["round"], columns["user_index"], columns["policy"]))
        return {name: column[order] for name, column in columns.items()}

    expected, got = by_key(whole), by_key(parts)
    for name, column in expected.items():
        np.testing.assert_array_equal(column, got[name], err_msg=name)
    assert len(got["reward"]) == 2 * n_users * 4


def test_two_identical_policies_get_identical_results():
    twin = engine.PolicySpec("egreedy-v1-copy", "egreedy", 7, {"epsilon": 0.1})
    events = run(policies=(V1, twin))
    first, second = events.policy == 0, events.policy == 1
    for name, column in events.columns().items():
        if name != "policy":
            np.testing.assert_array_equal(column[first], column[second], err_msg=name)


def test_every_policy_faces_the_same_candidates_and_draws():
    events = run(policies=(V1, V2, UCB), stop=30, rounds=40)
    world = generator.world_draw(
        seed=42,
        user_start=0,
        user_stop=30,
        n_rounds=40,
        n_candidates=5,
        judge_uniforms=JUDGES["rule"].uniforms,
    )
    u, r, pick = events.user_index, events.round, events.pick
    # What each policy picked is the world's candidate at that position.
    np.testing.assert_array_equal(events.hour, world.hour[r, u])
    np.testing.assert_array_equal(events.priority, world.priority[r, u, pick])
    np.testing.assert_array_equal(events.is_overdue, world.is_overdue[r, u, pick])
    np.testing.assert_array_equal(events.task_age_days, world.task_age_days[r, u, pick])
    # Where two policies picked the same candidate, the same reaction.
    by_policy = [events.policy == p for p in range(3)]
    v1, v2 = (
        {name: col[mask] for name, col in events.columns().items()}
        for mask in by_policy[:2]
    )
    same = v1["pick"] == v2["pick"]
    assert 0 < same.sum() < len(same)  # they do differ, and often agree
    for name in ("kind", "dwell_ms", "reward"):
        np.testing.assert_array_equal(v1[name][same], v2[name][same], err_msg=name)
    # The same exploration draws: same epsilon, same rounds explored.
    np.testing.assert_array_equal(v1["explored"], v2["explored"])
    assert 0 < v1["explored"].mean() < 0.3


def test_rewards_are_the_profiles_tables():
    events = run(stop=10, rounds=10)
    for kind, dwell, reward in zip(
        events.kind, events.dwell_ms, events.reward, strict=True
    ):
        assert reward == infer_reward(KINDS[kind], int(dwell))


def test_personas_are_assigned_round_robin():
    events = run(stop=12, rounds=2)
    np.testing.assert_array_equal(events.persona, events.user_index % 5)


def test_the_learners_beat_a_uniform_random_policy_for_some_personas():
    events = run(policies=(RANDOM, V1, V2), stop=250, rounds=150, seed=7)
    late = events.round >= 50  # after some learning
    beaten = []
    for index, name in enumerate(personas.PERSONA_NAMES):
        mean = [
            events.reward[
                (events.policy == p) & (events.persona == index) & late
            ].mean()
            for p in range(3)
        ]
        if min(mean[1], mean[2]) > mean[0] + 0.1:
            beaten.append(name)
    assert len(beaten) >= 2, beaten


def test_the_learners_beat_random_overall():
    events = run(policies=(RANDOM, V2), stop=100, rounds=100, seed=3)
    random_mean = events.reward[events.policy == 0].mean()
    assert events.reward[events.policy == 1].mean() > random_mean + 0.05


@pytest.mark.parametrize(
    "module", ["engine.py", "generator.py", "judges.py", "personas.py"]
)
def test_the_engine_modules_import_no_django(module):
    source = (Path(engine.__file__).parent / module).read_text()
    imported = {
        (node.module or "").split(".")[0]
        if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "django" not in imported


# --- the oracle and regret ----------------------------------------------------------


def test_each_event_carries_its_picks_expected_reward_and_the_oracles():
    events = run(stop=10, rounds=6)
    world = generator.world_draw(
        seed=42, user_start=0, user_stop=10, n_rounds=6, n_candidates=5,
        judge_uniforms=JUDGES["rule"].uniforms,
    )  # fmt: skip
    judge = JUDGES["rule"]
    for i in range(len(events)):
        r, u = events.round[i], events.user_index[i]
        every = judge.expected_reward(
            persona=world.persona[u],
            hour=world.hour[r, u],
            is_overdue=world.is_overdue[r, u],
            task_age_days=world.task_age_days[r, u],
            priority=world.priority[r, u],
        )
        assert events.oracle_reward[i] == every.max()
        assert events.expected_reward[i] == every[events.pick[i]]
    assert (events.oracle_reward >= events.expected_reward).all()
    assert (events.oracle_reward > events.expected_reward).any()


def test_a_judge_without_expected_rewards_leaves_them_empty():
    rule = JUDGES["rule"]

    class Blind:  # the rule judge's reactions, without its expected rewards
        name, uniforms = "blind", rule.uniforms

        def react(self, **arguments):
            return rule.react(**arguments)

    events = engine.simulate(
        policies=[V1],
        judge=Blind(),
        seed=42,
        user_start=0,
        user_stop=4,
        n_rounds=3,
        n_candidates=5,
        n_users=4,
    )
    assert np.isnan(events.expected_reward).all()
    assert np.isnan(events.oracle_reward).all()
    np.testing.assert_array_equal(events.reward, run((V1,), stop=4, rounds=3).reward)


def test_the_regret_record_of_1000_users_x_100_rounds_seed_1():
    """The figures docs/evidence.md records, computed independently for the
    issue: regrets near 0.090, 0.076 and 0.077 against an oracle near 0.391;
    and the population-informed policy's bar (docs/algorithms.md): at most half
    of egreedy-v2's regret, and a third over the first 10 rounds."""
    events = run((V1, V2, UCB, HYBRID), stop=1_000, rounds=100, seed=1)
    oracle = events.oracle_reward[events.policy == 0].mean()
    assert oracle == pytest.approx(0.391, abs=0.003)
    regrets, early = [], []
    for p in range(4):
        mine = events.policy == p
        gap = events.oracle_reward[mine] - events.expected_reward[mine]
        regrets.append(gap.mean())
        early.append(gap[events.round[mine] < 10].mean())
    for p, target in enumerate((0.090, 0.076, 0.077)):
        assert regrets[p] == pytest.approx(target, abs=0.003), (p, regrets[p])
    assert regrets[3] <= regrets[1] / 2, regrets
    assert early[3] <= early[1] / 3, early


def test_a_hybrid_policy_is_reproducible_and_learns_from_its_population():
    """Same seed, same events to the bit; its shared model, refit each round from
    its population's rewards, changes its picks from the second round on."""
    first = run((V2, HYBRID), stop=60, rounds=6, seed=3)
    assert_same(first, run((V2, HYBRID), stop=60, rounds=6, seed=3))
    alone = engine.PolicySpec(
        "no-population", "hybrid", 12, {**HYBRID_V1["params"], "refit_every": 10**6}
    )
    blind = run((V2, alone), stop=60, rounds=6, seed=3)
    hybrid = first.policy == 1
    same_round0 = first.round[hybrid] == 0
    # Round 0: no refit yet, so the same picks as without a shared model.
    np.testing.assert_array_equal(
        first.pick[hybrid][same_round0], blind.pick[hybrid][same_round0]
    )
    assert (first.pick[hybrid] != blind.pick[hybrid]).any()
