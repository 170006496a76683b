"""The logs at scale: partitions, retention, roll-ups and the export (docs/logs.md)."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from oo_ml import logs, partitions, tasks
from oo_ml.fields import LogJSONField
from oo_ml.partitions import DAY, LOGS
from policies import rollups, selectors
from policies.models import ActivityHour, Decision, Policy, Reward

CANDIDATES = [
    {"id": "a", "features": {"priority": 4, "is_overdue": True}},
    {"id": "b", "features": {"priority": 1}},
    {"id": "c", "features": {"task_age_days": 9}},
]


def _score(api, user_id: str) -> dict:
    response = api.post(
        "/score",
        {
            "user_id": user_id,
            "candidates": CANDIDATES,
            "context": {"hour_of_day": 9, "day_of_week": 2},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


def _reward(api, user_id: str, decision: dict, reward: float = 1.0):
    return api.post(
        "/reward",
        {
            "user_id": user_id,
            "tip_id": decision["tip_id"],
            "reward": reward,
            "decision_id": decision["decision_id"],
        },
        format="json",
    )


def _traffic(api, users: list[str], rounds: int = 3) -> list[tuple[str, dict]]:
    """Scores for each user, a shadow on, every other decision rewarded."""
    made = []
    for i in range(rounds):
        for user in users:
            decision = _score(api, user)
            made.append((user, decision))
            if i % 2 == 0:
                response = _reward(api, user, decision, reward=[1.0, 0.1, -1.0][i])
                assert response.status_code == 200, response.json()
    return made


def _agree(since=None) -> None:
    """The roll-up equals a count over the rows, hour by hour."""
    stored = rollups.activity_stored(since=since)
    counted = {k: v for k, v in rollups.activity_counts(since=since).items() if any(v)}
    assert stored.keys() == counted.keys()
    for key, values in counted.items():
        # Counts exactly; the reward sum to the float rounding of its order.
        assert stored[key][:4] == values[:4] and stored[key][5] == values[5], key
        assert stored[key][4] == pytest.approx(values[4], abs=1e-9), key


@pytest.fixture
def shadow_on(db):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)


@pytest.mark.django_db
def test_rollups_count_decisions_agreement_and_rewards_as_the_rows_do(api, shadow_on):
    _traffic(api, ["u1", "u2", "u3"])

    _agree()
    totals = {
        row.policy.name: row.all_time
        for row in selectors.policy_activity(since=timezone.now() - DAY)
    }
    active, shadow = totals["egreedy-v1"], totals["egreedy-v2"]
    assert active.decisions == shadow.decisions == 9
    assert shadow.compared == 9 and active.compared == 0
    assert active.rewards == 6 and active.reward_sum == pytest.approx(0.0)
    # Every other policy that learns from live rewards learned each of them.
    assert shadow.learned == 6 and shadow.rewards == 0


@pytest.mark.django_db
def test_a_reset_takes_the_users_decisions_out_of_the_rollups(
    api, staff_api, shadow_on
):
    _traffic(api, ["u1", "u2"])
    before = Decision.objects.filter(user_id="u2").count()

    response = staff_api.post("/reset/u1")

    assert response.status_code == 200, response.json()
    _agree()
    assert sum(r.decisions for r in ActivityHour.objects.all()) == before
    # The reward log stays (the audit trail), and so do its counts.
    assert sum(r.rewards for r in ActivityHour.objects.all()) == 4


@pytest.mark.django_db
def test_a_failed_write_counts_nothing(api):
    response = _reward(api, "u1", {"tip_id": "a", "decision_id": "0" * 32})

    assert response.status_code == 404
    assert not ActivityHour.objects.exists()


def _at(monkeypatch, when: dt.datetime) -> None:
    monkeypatch.setattr(timezone, "now", lambda: when)


@pytest.mark.postgres
@pytest.mark.django_db
def test_retention_drops_whole_old_days_and_keeps_the_rest(api, shadow_on, monkeypatch):
    now = timezone.now()
    old, recent = now - 100 * DAY, now - 50 * DAY
    for log in LOGS:
        partitions.partitions_ensure(log, start=old - DAY, end=now)
    _at(monkeypatch, old)
    gone = _score(api, "u-old")
    assert _reward(api, "u-old", gone).status_code == 200
    _at(monkeypatch, recent)
    _traffic(api, ["u-mid"], rounds=2)
    monkeypatch.undo()
    _traffic(api, ["u-new"], rounds=2)
    all_time = sum(r.decisions for r in ActivityHour.objects.all())
    # The test's one transaction still holds its rows' deferred checks, which
    # DROP TABLE refuses to leave pending; the beat task commits its own.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    result = logs.logs_retain(days=90)

    day = partitions.day_start(old)
    for log in LOGS:
        assert partitions.partition_name(log.table, day) in result.dropped
        assert day not in partitions.day_partitions(log.table)
        assert partitions.day_start(recent) in partitions.day_partitions(log.table)
    assert not Decision.objects.filter(user_id="u-old").exists()
    assert not Reward.objects.filter(user_id="u-old").exists()
    assert Decision.objects.filter(user_id="u-mid").count() == 4
    assert Decision.objects.filter(user_id="u-new").count() == 4
    # Every hour retention kept agrees with its rows; the all-time figures
    # still count what it dropped.
    _agree(since=result.cutoff)
    assert sum(r.decisions for r in ActivityHour.objects.all()) == all_time
    # A reward for a decision past retention: as for an unknown decision.
    response = _reward(api, "u-old", gone)
    assert response.status_code == 404 and response.json()["field"] == "decision_id"
    # Again: nothing more to drop.
    assert logs.logs_retain(days=90).dropped == ()


@pytest.mark.django_db
def test_retention_without_partitions_deletes_in_batches(monkeypatch, api):
    """SQLite's way, run here over the plain DELETE it uses."""
    _traffic(api, ["u1"], rounds=1)
    Decision.objects.update(created_at=timezone.now() - 100 * DAY)
    monkeypatch.setattr(partitions, "is_partitioned", lambda table: False)
    monkeypatch.setattr(logs, "DELETE_BATCH", 1)

    result = logs.logs_retain(days=90)

    assert result.deleted == 1 and not Decision.objects.exists()
    assert Reward.objects.exists()  # new: kept


@pytest.mark.postgres
@pytest.mark.django_db
def test_partitions_are_made_a_week_ahead_once(db):
    tomorrow = timezone.now() + DAY
    for log in LOGS:
        assert partitions.day_start(tomorrow) in partitions.day_partitions(log.table)
    later = timezone.now() + 30 * DAY

    made = logs.log_partitions_ensure(now=later)

    assert made >= len(LOGS)
    assert logs.log_partitions_ensure(now=later) == 0
    assert partitions.day_start(later + 7 * DAY) in partitions.day_partitions(
        "policies_decision"
    )


@pytest.mark.django_db
def test_the_beat_tasks_run_by_name(db, settings):
    assert tasks.partitions_ensure.name == "logs.partitions_ensure"
    assert tasks.retain.name == "logs.retain"
    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"logs.partitions_ensure", "logs.retain"} <= names
    assert tasks.partitions_ensure() >= 0
    assert tasks.retain() == 0


def _export(**options) -> list[dict]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_log", stdout=out, stderr=err, **options)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.django_db
def test_export_streams_decisions_with_their_rewards_as_obp_reads_them(
    api, shadow_on, monkeypatch
):
    from policies import export

    monkeypatch.setattr(export, "CHUNK", 4)  # several chunks
    made = _traffic(api, ["u1", "u2", "u3"])
    today = partitions.day_start(timezone.now())

    lines = _export(since=today.isoformat(), until=(today + DAY).isoformat())

    assert len(lines) == 18 == Decision.objects.count()
    assert [line["decision_id"] for line in lines] == sorted(
        str(d) for d in Decision.objects.values_list("id", flat=True)
    )
    rewarded = {d["decision_id"] for _, d in made[:3]} | {
        d["decision_id"] for _, d in made[6:]
    }
    for line in lines:
        stored = Decision.objects.get(id=line["decision_id"])
        assert line["features"] == stored.features
        assert line["candidates"] == stored.candidates
        assert line["context"] == stored.context
        assert line["propensity"] == stored.propensity
        assert line["pick_index"] == stored.pick_index
        assert line["role"] == stored.role
        if line["decision_id"] in rewarded:
            assert (
                line["reward"]
                == Reward.objects.get(decision_id=stored.id, learned=False).reward
            )
        else:
            assert line["reward"] is None and line["rewards"] == 0

    # Open Bandit Pipeline's logged feedback: one array each, over the active
    # policy's rewarded decisions.
    logged = [
        line
        for line in lines
        if line["role"] == "active" and line["reward"] is not None
    ]
    feedback = {
        "n_rounds": len(logged),
        "action": np.array([line["pick_index"] for line in logged], dtype=int),
        "reward": np.array([line["reward"] for line in logged], dtype=float),
        "pscore": np.array([line["propensity"] for line in logged], dtype=float),
        "context": np.array(
            [line["features"][line["pick_index"]] for line in logged], dtype=float
        ),
    }
    assert feedback["n_rounds"] == 6
    assert feedback["action"].shape == feedback["pscore"].shape == (6,)
    assert feedback["context"].shape == (6, 7)
    assert ((feedback["pscore"] > 0) & (feedback["pscore"] <= 1)).all()
    assert sorted(feedback["reward"]) == sorted([1.0] * 3 + [-1.0] * 3)


@pytest.mark.django_db
def test_export_keeps_quotes_backslashes_control_characters_and_unicode(api, shadow_on):
    """The database writes the lines and COPY escapes backslashes on the way:
    what comes out must read back as what was stored."""
    _traffic(api, ["u1"], rounds=1)
    odd = 'a "quoted" \\ back\\slash, a tab\t, a newline\n, \u0001 and ☃'
    candidates = [{"id": odd, "features": {"priority": 2}, "content": odd}]
    Decision.objects.update(user_id=odd, tip_id=odd, candidates=candidates)
    today = partitions.day_start(timezone.now())

    lines = _export(since=today.isoformat(), until=(today + DAY).isoformat())

    assert len(lines) == 2
    for line in lines:
        assert line["user_id"] == line["tip_id"] == odd
        assert line["candidates"] == candidates


@pytest.mark.django_db
def test_export_of_one_policy_and_of_an_empty_range(api, shadow_on):
    _traffic(api, ["u1"], rounds=2)
    today = partitions.day_start(timezone.now())
    until = (today + DAY).isoformat()

    shadow = _export(since=today.isoformat(), until=until, policy="egreedy-v2")
    before = _export(since=(today - DAY).date().isoformat(), until=today.isoformat())

    assert len(shadow) == 2 and {line["policy"] for line in shadow} == {"egreedy-v2"}
    assert before == []
    assert _export(since=today.isoformat(), until=until, policy="nope") == []


# The log's JSON columns, by table: every LogJSONField of its models.
_LOG_JSON = {
    model._meta.db_table: [
        f.column for f in model._meta.concrete_fields if isinstance(f, LogJSONField)
    ]
    for model in (Decision, Reward)
}


@pytest.mark.django_db
def test_the_logs_json_is_kept_as_written_and_exported_as_stored(api, shadow_on):
    """The log's JSON columns are PostgreSQL ``json`` (oo_ml.fields): the text
    the writer sent is what is stored, raw statements read it as text, the ORM
    decodes it, and the export passes that very text on."""
    _traffic(api, ["u1"], rounds=1)
    weird = [{"z": 1, "id": "x", "a": [0.1, 1e-05, 2.5e300]}]  # key order kept
    Decision.objects.filter(role="shadow").update(candidates=weird)
    today = partitions.day_start(timezone.now())
    out = io.StringIO()
    call_command(
        "export_log",
        since=today.isoformat(),
        until=(today + DAY).isoformat(),
        stdout=out,
        stderr=io.StringIO(),
    )
    lines = out.getvalue().splitlines()

    assert len(lines) == 2
    stored = Decision.objects.get(role="shadow")
    assert stored.candidates == weird
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT candidates, {', '.join(_LOG_JSON[Decision._meta.db_table])} "
            "FROM policies_decision WHERE id = %s",
            [Decision._meta.pk.get_db_prep_value(stored.id, connection)],
        )
        texts = cursor.fetchone()
    assert all(value is None or isinstance(value, str) for value in texts)
    assert json.loads(texts[0]) == weird
    line = next(line for line in lines if str(stored.id) in line)
    assert f'"candidates":{texts[0]},' in line
    assert json.loads(line)["candidates"] == weird
    if connection.vendor == "postgresql":
        assert texts[0] == json.dumps(weird)  # the ORM's writer, verbatim
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name, data_type FROM "
                "information_schema.columns WHERE table_name = ANY(%s) "
                "AND data_type IN ('json', 'jsonb')",
                [list(_LOG_JSON)],
            )
            types = cursor.fetchall()
        assert {(t, c) for t, c, _ in types} == {
            (t, c) for t, columns in _LOG_JSON.items() for c in columns
        }
        assert {kind for _, _, kind in types} == {"json"}
        assert len(types) == 8


@pytest.mark.django_db
def test_export_refuses_a_backwards_range(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="before"):
        _export(since="2026-12-02", until="2026-12-01")
    with pytest.raises(CommandError, match="ISO"):
        _export(since="yesterday", until="2026-12-01")


def test_uuid7_bounds_order_as_their_times():
    at = dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC)
    from oo_ml.models import uuid7

    inside = uuid7(at)
    assert partitions.uuid7_floor(at) <= inside < partitions.uuid7_floor(at + DAY)
    assert partitions.uuid7_floor(at - DAY) < partitions.uuid7_floor(at)


def _log_json_types() -> set[str]:
    """The types of the logs' JSON columns, on every partition and the parents."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT c.data_type FROM information_schema.columns c "
            "JOIN pg_inherits i ON i.inhrelid = c.table_name::regclass "
            "WHERE c.column_name = ANY(%s) AND i.inhparent = ANY(%s::regclass[]) "
            "UNION SELECT data_type FROM information_schema.columns "
            "WHERE table_name = ANY(%s) AND column_name = ANY(%s)",
            [
                _LOG_JSON[Decision._meta.db_table],
                list(_LOG_JSON),
                list(_LOG_JSON),
                _LOG_JSON[Decision._meta.db_table],
            ],
        )
        return {row[0] for row in cursor.fetchall()}


def _log_json_values() -> dict:
    return {
        d.id: [getattr(d, f.name) for f in Decision._meta.concrete_fields]
        for d in Decision.objects.all()
    } | {("reward", r.id): r.features for r in Reward.objects.all()}


@pytest.mark.django_db(transaction=True)
def test_the_json_migration_keeps_every_logged_value_forward_and_back(
    registry, api, shadow_on
):
    """policies.0009 retypes the logs' JSON columns on every partition, the
    default one included, and back, and every value reads the same after."""
    from django.db.migrations.executor import MigrationExecutor

    before = [("policies", "0008_reward_vector")]
    after = [("policies", "0009_log_json_text")]
    try:
        MigrationExecutor(connection).migrate(before)
        _traffic(api, ["u1", "u2"], rounds=2)  # the current code, on jsonb columns
        table = Decision._meta.db_table
        columns = ", ".join(
            f.column for f in Decision._meta.concrete_fields if not f.primary_key
        )
        with connection.cursor() as cursor:  # one row past the made partitions
            cursor.execute(
                f"INSERT INTO {table} (id, {columns}) SELECT %s, {columns} "
                f"FROM {table} LIMIT 1",
                [partitions.uuid7_floor(timezone.now() + 400 * DAY)],
            )
            cursor.execute(f"SELECT count(*) FROM {table}_default")
            assert cursor.fetchone()[0] == 1
        logged = _log_json_values()
        assert len(logged) > 5 and _log_json_types() == {"jsonb"}

        MigrationExecutor(connection).migrate(after)
        assert _log_json_types() == {"json"}
        assert _log_json_values() == logged

        MigrationExecutor(connection).migrate(before)
        assert _log_json_types() == {"jsonb"}
        assert _log_json_values() == logged
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
