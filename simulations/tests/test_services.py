"""Runs: creating, executing chunk by chunk, failing, summarising. On the database."""

from __future__ import annotations

import numpy as np
import pytest
from django.db.models import Sum

from oo_ml.errors import Conflict, InvalidInput
from policies.models import BanditState, Decision, Policy, array_to_bytes
from policies.services import decision_make
from profiles.inference import KINDS
from simulations import engine, services
from simulations.judges import JUDGES, RuleJudge
from simulations.models import ChunkStatus, Run, RunChunk, RunEvent, RunStatus
from simulations.personas import PERSONA_NAMES

pytestmark = pytest.mark.django_db

POLICIES = ["egreedy-v1", "egreedy-v2"]


def create(**overrides) -> Run:
    args = dict(
        policies=POLICIES,
        judge="rule",
        n_users=7,
        n_rounds=6,
        seed=42,
        actor=None,
        chunk_users=3,
    )
    return services.run_create(**{**args, **overrides})


def stored(run: Run) -> dict[str, np.ndarray]:
    rows = list(
        RunEvent.objects.filter(run=run)
        .order_by("policy", "user_index", "round")
        .values_list("policy", "user_index", "round", "kind", "dwell_ms", "reward")
    )
    names = ("policy", "user_index", "round", "kind", "dwell_ms", "reward")
    return {name: np.array([r[i] for r in rows]) for i, name in enumerate(names)}


# --- run_create ---------------------------------------------------------------


def test_run_create_records_the_run_its_policies_and_its_chunks(staff_user):
    run = create(actor=staff_user)
    assert run.status == RunStatus.QUEUED
    assert run.created_by == staff_user and run.created_by_name == "ops"
    assert run.policies == POLICIES
    v2 = Policy.objects.get(name="egreedy-v2")
    assert run.policy_specs[1] == {
        "name": "egreedy-v2",
        "algorithm": v2.algorithm,
        "dimension": 12,
        "params": v2.params,
    }
    chunks = list(run.chunks.values_list("index", "user_start", "user_stop", "status"))
    assert chunks == [
        (0, 0, 3, "pending"),
        (1, 3, 6, "pending"),
        (2, 6, 7, "pending"),
    ]
    assert run.chunks_total == 3 and run.chunks_done == 0


def test_run_create_without_an_account_names_who_started_it():
    run = create(actor_name="runsim (alice)")
    assert run.created_by is None and run.created_by_name == "runsim (alice)"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"policies": ["egreedy-v1", "nope"]}, "policies", "'nope'"),
        ({"policies": []}, "policies", "1 to 10"),
        ({"policies": "egreedy-v1"}, "policies", "list"),
        ({"policies": ["egreedy-v1", "egreedy-v1"]}, "policies", "twice"),
        ({"judge": "agent"}, "judge", "one of rule, llm"),
        ({"judge": "llm"}, "judge", "No LLM is configured"),
        ({"n_users": 0}, "n_users", "between 1"),
        ({"n_users": -5}, "n_users", "between 1"),
        ({"n_users": 10**7}, "n_users", "1,000,000"),
        ({"n_users": True}, "n_users", "whole number"),
        ({"n_users": 2.5}, "n_users", "whole number"),
        ({"n_rounds": 0}, "n_rounds", "between 1"),
        ({"n_rounds": "20"}, "n_rounds", "whole number"),
        ({"seed": -1}, "seed", "between 0"),
        ({"seed": 2**63}, "seed", "between 0"),
        ({"n_candidates": 0}, "n_candidates", "between 1"),
        ({"n_candidates": 101}, "n_candidates", "100"),
        ({"chunk_users": 0}, "chunk_users", "between 1"),
        (
            {"n_users": 50_000, "chunk_users": 50_000, "n_rounds": 10_000},
            "chunk_users",
            "too large",
        ),
    ],
)
def test_run_create_rejects_bad_input_clearly_and_writes_nothing(
    overrides, field, words
):
    with pytest.raises(InvalidInput) as error:
        create(**overrides)
    assert error.value.field == field
    assert words in error.value.detail
    assert not Run.objects.exists() and not RunChunk.objects.exists()


@pytest.mark.parametrize(
    ("sizes", "chunk_users", "chunks"),
    [
        # 150,000 candidate scorings a chunk: 1,000 per user here.
        ({"n_users": 1_000, "n_rounds": 100}, 150, 7),
        # With a hybrid policy too (it learns from its block of 1,000 users
        # whatever the chunk): the form's three policies, ten chunks.
        (
            {"n_users": 1_000, "n_rounds": 100, "policies": POLICIES + ["hybrid-v1"]},
            100,
            10,
        ),
        (
            {"n_users": 5_000, "n_rounds": 10, "policies": ["hybrid-v1"]},
            2_000,
            3,
        ),
        ({"n_users": 7, "n_rounds": 6}, 7, 1),  # one chunk: all of a small run
        ({"n_users": 100_000, "n_rounds": 1}, 2_000, 50),  # at most 2,000 users
        # At least as many users as keep 1,000,000 within the 1,000 chunks a run has.
        ({"n_users": 1_000_000, "n_rounds": 100}, 1_000, 1_000),
    ],
)
def test_without_a_chunk_size_the_runs_size_chooses_one(sizes, chunk_users, chunks):
    run = create(chunk_users=None, **sizes)
    assert (run.chunk_users, run.chunks_total) == (chunk_users, chunks)
    assert create(chunk_users=None, **sizes).chunk_users == chunk_users  # the same


def test_a_chosen_chunk_size_is_held_to_the_limits_of_a_given_one():
    with pytest.raises(InvalidInput, match="too large for one worker") as error:
        create(chunk_users=None, n_users=1_000_000, n_rounds=10_000, n_candidates=100)
    assert error.value.field == "chunk_users"


def test_a_hybrid_policy_s_whole_block_must_fit_one_worker_whatever_the_chunk():
    # 1,000 users x 10,000 rounds x 5 candidates: chunks of 3 users fit, but each
    # simulates the hybrid policy over its block of 1,000 (5e7 cells, cap 2e7).
    sizes = dict(n_users=1_000, n_rounds=10_000, n_candidates=5, chunk_users=3)
    assert create(policies=["egreedy-v1"], **sizes).chunk_users == 3
    with pytest.raises(InvalidInput, match="blocks of 1,000 users") as error:
        create(policies=["egreedy-v1", "hybrid-v1"], **sizes)
    assert error.value.field == "n_rounds"
    assert Run.objects.filter(policies__contains=["hybrid-v1"]).count() == 0


def test_every_problem_of_a_run_s_parameters_is_found_at_once():
    values, problems = services.run_parameters(
        {"policies": [], "judge": "rule", "n_users": 0, "n_rounds": 5, "seed": -1}
    )
    assert [p.field for p in problems] == ["policies", "n_users", "seed"]
    assert values == {"judge": "rule", "n_rounds": 5}  # no chunk size without users


# --- executing ----------------------------------------------------------------


def test_run_execute_runs_every_chunk_then_summarises():
    progress = []
    run = services.run_execute(
        run_id=create().id, on_progress=lambda d, t: progress.append((d, t))
    )
    assert run.status == RunStatus.FINISHED and run.error == ""
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert run.chunks_done == 3
    assert RunEvent.objects.filter(run=run).count() == 2 * 7 * 6
    assert run.started_at <= run.finished_at
    assert run.engine_seconds > 0 and run.storage_seconds > 0
    assert run.summary_seconds is not None
    assert [p["pulls"] for p in run.summary["policies"]] == [42, 42]
    assert set(run.chunks.values_list("status", flat=True)) == {ChunkStatus.DONE}


def test_stored_events_are_the_engines_whatever_the_chunking():
    run = services.run_execute(run_id=create(chunk_users=2).id)
    events = engine.simulate(
        policies=services._specs(run),
        judge=JUDGES["rule"],
        seed=42,
        user_start=0,
        user_stop=7,
        n_rounds=6,
        n_candidates=5,
        n_users=7,
    )
    rows = stored(run)
    np.testing.assert_array_equal(rows["reward"], events.reward)
    np.testing.assert_array_equal(rows["user_index"], events.user_index)
    np.testing.assert_array_equal(rows["dwell_ms"], events.dwell_ms.astype(int))
    assert rows["kind"].tolist() == [KINDS[k] for k in events.kind]


def test_a_chunk_executed_twice_writes_its_events_once():
    run = create()
    first = services.run_chunk_execute(run_id=run.id, chunk_index=1)
    again = services.run_chunk_execute(run_id=run.id, chunk_index=1)
    assert first.executed and first.events == 2 * 3 * 6
    assert not again.executed and again.events == 0
    assert RunEvent.objects.filter(run=run).count() == 2 * 3 * 6
    run.refresh_from_db()
    assert run.chunks_done == 1 and run.status == RunStatus.RUNNING
    # Finishing runs the rest; the summary is the same as a run done in one go.
    finished = services.run_execute(run_id=run.id)
    assert RunEvent.objects.filter(run=run).count() == 2 * 7 * 6
    in_one_go = services.run_execute(run_id=create(chunk_users=7).id)
    assert finished.summary == in_one_go.summary


def test_a_chunk_that_crashes_before_commit_leaves_nothing_and_runs_again(
    monkeypatch,
):
    run = create()
    real_write = services.events_write

    def write_then_die(**kwargs):
        real_write(**kwargs)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(services, "events_write", write_then_die)
    with pytest.raises(RuntimeError):
        services.run_chunk_execute(run_id=run.id, chunk_index=0)
    assert not RunEvent.objects.filter(run=run).exists()
    chunk = run.chunks.get(index=0)
    assert chunk.status == ChunkStatus.PENDING
    monkeypatch.setattr(services, "events_write", real_write)
    assert services.run_chunk_execute(run_id=run.id, chunk_index=0).executed
    assert RunEvent.objects.filter(run=run).count() == 2 * 3 * 6


def test_events_write_by_insert_stores_what_copy_stores():
    events = engine.simulate(
        policies=[engine.PolicySpec("egreedy-v1", "egreedy", 7, {"epsilon": 0.1})],
        judge=JUDGES["rule"],
        seed=1,
        user_start=0,
        user_stop=4,
        n_rounds=3,
        n_candidates=5,
        n_users=4,
    )
    runs = [create(policies=["egreedy-v1"]), create(policies=["egreedy-v1"])]
    services.events_write(
        run_id=runs[0].id, policy_names=["egreedy-v1"], events=events, method="copy"
    )
    services.events_write(
        run_id=runs[1].id, policy_names=["egreedy-v1"], events=events, method="insert"
    )
    columns = [f.attname for f in RunEvent._meta.concrete_fields][2:]
    copied, inserted = (
        list(
            RunEvent.objects.filter(run=r)
            .order_by("user_index", "round")
            .values_list(*columns)
        )
        for r in runs
    )
    assert copied == inserted and len(copied) == 12


def test_a_failing_chunk_fails_the_run_and_says_why(monkeypatch):
    class BrokenJudge(RuleJudge):
        name = "broken"

        def react(self, **kwargs):
            raise ValueError("the judge fell over")

    monkeypatch.setitem(JUDGES, "broken", BrokenJudge())
    run = services.run_execute(run_id=create(judge="broken").id)
    assert run.status == RunStatus.FAILED
    assert run.error == "chunk 0 (users 0-2): ValueError: the judge fell over"
    assert run.finished_at is not None and run.summary is None
    assert not RunEvent.objects.filter(run=run).exists()
    # A failed run runs no more chunks and cannot be finished.
    assert not services.run_chunk_execute(run_id=run.id, chunk_index=1).executed
    with pytest.raises(Conflict):
        services.run_finish(run_id=run.id)


def test_run_finish_refuses_a_run_with_chunks_to_do():
    run = create()
    services.run_chunk_execute(run_id=run.id, chunk_index=0)
    with pytest.raises(Conflict, match="1 of 3 chunks"):
        services.run_finish(run_id=run.id)


def test_an_unknown_chunk_is_bad_input():
    with pytest.raises(InvalidInput):
        services.run_chunk_execute(run_id=create().id, chunk_index=3)


def test_live_user_state_and_decisions_are_untouched():
    # A live user "0" (the simulated user 0 shares the id, not the state).
    policy = Policy.objects.get(name="egreedy-v1")
    a, b = np.eye(7) * 2.0, np.arange(7.0)
    BanditState.objects.create(
        policy=policy,
        user_id="0",
        a_bytes=array_to_bytes(a),
        b_bytes=array_to_bytes(b),
        reward_count=3,
        cumulative_reward=1.5,
    )
    decision_make(
        user_id="0",
        candidates=[{"id": "t1", "features": {}}, {"id": "t2", "features": {}}],
        context={"hour_of_day": 9, "day_of_week": 1},
        profile={},
        rng=np.random.default_rng(0),
    )
    services.run_execute(run_id=create().id)
    state = BanditState.objects.get()
    np.testing.assert_array_equal(state.a, a)
    np.testing.assert_array_equal(state.b, b)
    assert (state.reward_count, state.cumulative_reward) == (3, 1.5)
    assert Decision.objects.count() == 1


# --- the summary --------------------------------------------------------------


def test_the_summary_matches_the_events_it_summarises():
    run = services.run_execute(run_id=create(n_users=10, n_rounds=8).id)
    events = RunEvent.objects.filter(run=run)
    summary = run.summary
    for row in summary["policies"]:
        mine = events.filter(policy=row["policy"])
        total = mine.aggregate(s=Sum("reward"))["s"]
        assert row["pulls"] == mine.count() == 80
        assert row["total_reward"] == pytest.approx(total, abs=1e-6)
        assert row["mean_reward"] == pytest.approx(total / 80, abs=1e-6)
        assert row["explorations"] == mine.filter(explored=True).count()
        # The curve: one mean per round.
        curve = summary["curve"][row["policy"]]
        assert len(curve) == 8
        for r in (0, 7):
            values = list(mine.filter(round=r).values_list("reward", flat=True))
            assert curve[r] == pytest.approx(np.mean(values), abs=1e-6)
        picks = summary["picks"][row["policy"]]
        for part in ("priority", "overdue", "age", "reaction"):
            assert sum(picks[part].values()) == 80, part
        assert picks["priority"]["4"] == mine.filter(priority=4).count()
        assert picks["overdue"]["overdue"] == mine.filter(is_overdue=True).count()
        assert picks["age"]["30+ days"] == mine.filter(task_age_days__gte=30).count()
        assert picks["reaction"].get("dismissed", 0) == (
            mine.filter(kind="dismissed").count()
        )
    cells = {(c["persona"], c["policy"]): c["mean_reward"] for c in summary["personas"]}
    assert len(cells) == 5 * 2
    for winner in summary["winners"]:
        means = [cells[(winner["persona"], p)] for p in POLICIES]
        assert winner["mean_reward"] == max(means)
        assert winner["policy"] == POLICIES[means.index(max(means))]
    assert [w["persona"] for w in summary["winners"]] == list(PERSONA_NAMES)


def test_same_seed_same_summary_other_seed_other_summary():
    a = services.run_execute(run_id=create().id)
    b = services.run_execute(run_id=create().id)
    c = services.run_execute(run_id=create(seed=43).id)
    assert a.summary == b.summary
    assert a.summary != c.summary


def test_the_summary_does_not_depend_on_the_order_chunks_were_written_in():
    # A chunk redone after its worker was killed is written last. With these
    # sizes, summing the rewards as floats in that order changed a mean reward
    # of the curve in its sixth digit (0.208187 against 0.208188).
    sizes = dict(n_users=1_600, chunk_users=400, n_rounds=100)
    in_order = services.run_execute(run_id=create(**sizes).id)
    run = create(**sizes)
    for index in (0, 2, 3, 1):
        services.run_chunk_execute(run_id=run.id, chunk_index=index)
    assert services.run_finish(run_id=run.id).summary == in_order.summary


def test_finishing_a_finished_run_changes_nothing():
    run = services.run_execute(run_id=create().id)
    again = services.run_finish(run_id=run.id)
    assert again.summary == run.summary and again.finished_at == run.finished_at


def _per_user_means(run: Run, column: str = "reward") -> dict[str, np.ndarray]:
    sums = {name: np.zeros(run.n_users) for name in run.policies}
    for policy, user, value in RunEvent.objects.filter(run=run).values_list(
        "policy", "user_index", column
    ):
        sums[policy][user] += value
    return {name: total / run.n_rounds for name, total in sums.items()}


def test_the_summary_intervals_are_t_intervals_of_the_per_user_means():
    run = services.run_execute(
        run_id=create(policies=["linucb-v1", *POLICIES], n_users=10, n_rounds=8).id
    )
    means = _per_user_means(run)
    t9 = 2.262157163  # Student's t, 9 degrees of freedom, 95%
    first = means["linucb-v1"]
    for row in run.summary["policies"]:
        mine = means[row["policy"]]
        half = t9 * mine.std(ddof=1) / np.sqrt(10)
        assert row["mean_ci"] == pytest.approx(
            [mine.mean() - half, mine.mean() + half], abs=2e-6
        )
        if row["policy"] == "linucb-v1":
            assert row["diff_vs_first"] is None
            continue
        paired = mine - first
        half = t9 * paired.std(ddof=1) / np.sqrt(10)
        assert row["diff_vs_first"] == pytest.approx(
            {
                "mean": paired.mean(),
                "low": paired.mean() - half,
                "high": paired.mean() + half,
            },
            abs=2e-6,
        )
    per_user = run.summary["per_user"]
    assert per_user["users"] == 10
    assert per_user["means"] == pytest.approx([m.mean() for m in means.values()])


def test_the_summary_has_the_oracle_and_each_policys_regret_overall_and_by_round():
    run = services.run_execute(run_id=create(n_users=10, n_rounds=8).id)
    events = RunEvent.objects.filter(run=run)
    summary = run.summary
    oracle = (
        np.mean(
            events.filter(policy=POLICIES[0]).values_list("oracle_units", flat=True)
        )
        / 1e6
    )
    assert summary["oracle_mean"] == pytest.approx(oracle, abs=1e-6)
    for row in summary["policies"]:
        mine = events.filter(policy=row["policy"])
        expected = np.mean(mine.values_list("expected_units", flat=True)) / 1e6
        assert row["expected_reward"] == pytest.approx(expected, abs=1e-6)
        assert row["regret"] == pytest.approx(oracle - expected, abs=1e-6)
        assert row["regret"] > 0
        curve = summary["regret_curve"][row["policy"]]
        assert len(curve) == 8
        for r in (0, 7):
            gaps = [
                (o - e) / 1e6
                for o, e in mine.filter(round=r).values_list(
                    "oracle_units", "expected_units"
                )
            ]
            assert curve[r] == pytest.approx(np.mean(gaps), abs=1e-6)
        assert np.mean(curve) == pytest.approx(row["regret"], abs=1e-5)
    assert len(summary["oracle_curve"]) == 8


def test_a_judge_without_expected_rewards_gives_no_oracle_or_regret(monkeypatch):
    rule = JUDGES["rule"]

    class Blind:
        name, uniforms = "blind", rule.uniforms

        def react(self, **arguments):
            return rule.react(**arguments)

    monkeypatch.setitem(JUDGES, "blind", Blind())
    run = services.run_execute(run_id=create(judge="blind").id)

    assert RunEvent.objects.filter(run=run, expected_units__isnull=False).count() == 0
    summary = run.summary
    assert summary["oracle_mean"] is None and summary["regret_curve"] is None
    assert all(row["regret"] is None for row in summary["policies"])
    assert all(row["mean_ci"] is not None for row in summary["policies"])


def test_one_user_has_means_but_no_intervals():
    run = services.run_execute(run_id=create(n_users=1, chunk_users=1).id)
    first, second = run.summary["policies"]
    assert first["mean_ci"] is None and second["mean_ci"] is None
    assert second["diff_vs_first"]["low"] is None
    assert second["diff_vs_first"]["mean"] == pytest.approx(
        second["mean_reward"] - first["mean_reward"], abs=1e-6
    )
