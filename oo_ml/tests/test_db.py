"""The hot path's database helpers: its JSON writer (oo_ml.db.json_dumps) and
its cursor (oo_ml.db.direct_cursor)."""

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from psycopg.types.json import Json

from oo_ml.db import (
    _DIRECT_PREPARED_MAX,
    _DirectCursor,
    direct_cursor,
    json_dumps,
    rows_insert_sql,
)
from oo_ml.models import uuid7
from policies.models import Decision, Policy, Reward
from policies.services.rewards import _decision_read


def _url() -> str:
    db = connection.settings_dict
    return (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


@pytest.fixture
def direct(transactional_db):
    """PostgreSQL, outside a transaction: where direct_cursor is itself."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (make test does)")


def _prepared_here() -> list[str]:
    """The statements this connection keeps prepared by name for direct_cursor."""
    return [
        row[0]
        for row in connection.connection.execute(
            "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'oo_ml_%%'"
        )
    ]


def test_it_writes_what_json_reads_back_the_same():
    value = {
        "candidates": [{"id": "t1", "content": "Fé", "features": {"priority": 4}}],
        "features": [[0.1, 0.30000000000000004, -1e-07, 1.0]],
        "estimates": [np.float64(0.25), np.int64(3)],
        "profile": {"preferred_hour": None, "completion_rate_30d": 0.5},
    }
    written = json_dumps(value)
    assert isinstance(written, bytes)  # orjson wrote it
    expected = {**value, "estimates": [0.25, 3]}
    assert json.loads(written) == expected


def test_what_orjson_refuses_json_writes_as_before():
    huge = {"tip_volume_30d": 10**301}  # a whole number past 64 bits
    assert json_dumps(huge) == json.dumps(huge)


# direct_cursor: the hot path's statements sent straight to libpq (PostgreSQL).

_TYPED = """
    SELECT %(n)s::bigint, %(f)s::float8, %(t)s::text, %(b)s::bytea,
        %(at)s::timestamptz, %(j)s::json, %(u)s::uuid, %(ok)s::boolean,
        %(none)s::text, 1.5::numeric, %(n)s + 1
"""
_VALUES = {
    "n": 2**40,
    "f": 0.1,
    "t": "Fé",
    "b": b"\x00\xffab",
    "at": datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC),
    "j": Json({"a": [1, None]}),
    "u": uuid.UUID("01938a2b-0000-7000-8000-000000000001"),
    "ok": True,
    "none": None,
}


def _is_direct(cursor) -> bool:
    return isinstance(cursor, _DirectCursor)


@pytest.mark.postgres
def test_a_direct_statement_reads_what_djangos_cursor_reads(direct):
    with connection.cursor() as cursor:
        cursor.execute(_TYPED, _VALUES)
        expected = cursor.fetchall()
    for _ in range(2):  # prepared, then run again as prepared
        with direct_cursor() as cursor:
            assert _is_direct(cursor)
            cursor.execute(_TYPED, _VALUES)
            assert cursor.rowcount == 1
            assert cursor.fetchall() == expected
    assert len(_prepared_here()) == 1  # prepared once, then reused
    assert expected[0][:9] == (
        2**40,
        0.1,
        "Fé",
        b"\x00\xffab",
        _VALUES["at"],
        '{"a": [1, null]}',  # Django's loader leaves JSON to its fields
        _VALUES["u"],
        True,
        None,
    )


@pytest.mark.postgres
def test_a_direct_write_commits_on_its_own_and_counts_its_rows(direct):
    with direct_cursor() as cursor:
        cursor.execute(
            "INSERT INTO auth_group (name) VALUES (%s), (%s)", ["direct", "other"]
        )
        assert cursor.rowcount == 2
        cursor.execute("DELETE FROM auth_group WHERE name = %s", ["other"])
        assert cursor.rowcount == 1
        assert cursor.fetchone() is None
        cursor.execute("DELETE FROM auth_group WHERE name = %s", ["none"])
        assert cursor.rowcount == 0
        cursor.execute("SELECT name FROM auth_group WHERE name = %s", ["none"])
        assert cursor.rowcount == 0 and cursor.fetchall() == []
    assert not connection.in_atomic_block
    # Another session sees it: it is committed, not waiting for a transaction.
    with psycopg.connect(_url(), autocommit=True) as other:
        assert other.execute("SELECT name FROM auth_group").fetchall() == [("direct",)]


@pytest.mark.postgres
def test_a_failed_direct_statement_raises_djangos_error_with_its_sqlstate(direct):
    with direct_cursor() as cursor:
        cursor.execute("INSERT INTO auth_group (name) VALUES (%s)", ["twice"])
        with pytest.raises(IntegrityError) as raised:
            cursor.execute("INSERT INTO auth_group (name) VALUES (%s)", ["twice"])
        assert raised.value.__cause__.sqlstate == "23505"
        with pytest.raises(DatabaseError) as raised:  # not even prepared
            cursor.execute("SELECT no_such_function(%s)", [1])
        assert raised.value.__cause__.sqlstate == "42883"
    assert connection.errors_occurred  # Django checks the connection after
    with direct_cursor() as cursor:  # which still works
        cursor.execute("SELECT count(*) FROM auth_group WHERE name = %s", ["twice"])
        assert cursor.fetchall() == [(1,)]


@pytest.mark.postgres
def test_inside_a_transaction_a_direct_cursor_is_djangos_and_rolls_back_with_it(direct):
    with pytest.raises(RuntimeError), transaction.atomic():
        with direct_cursor() as cursor:
            assert not _is_direct(cursor)
            cursor.execute("INSERT INTO auth_group (name) VALUES (%s)", ["undone"])
        raise RuntimeError
    assert not Group.objects.exists()


@pytest.mark.postgres
def test_recorded_queries_take_djangos_cursor_and_are_recorded(direct):
    with CaptureQueriesContext(connection) as queries, direct_cursor() as cursor:
        assert not _is_direct(cursor)
        cursor.execute("SELECT %s::int", [7])
    assert [q["sql"] for q in queries] == ["SELECT 7::int"]


@pytest.mark.postgres
def test_a_new_connection_prepares_again_and_many_statements_still_run(direct):
    with direct_cursor() as cursor:
        cursor.execute("SELECT %s::int", [1])
    connection.close()  # the server forgets the prepared statements
    for n in range(_DIRECT_PREPARED_MAX + 5):  # past what one connection keeps
        with direct_cursor() as cursor:
            assert _is_direct(cursor)
            cursor.execute(f"SELECT %s::int + {n}", [1])
            assert cursor.fetchone() == (1 + n,)
    assert len(_prepared_here()) == _DIRECT_PREPARED_MAX


@pytest.mark.postgres
def test_with_prepared_statements_off_the_direct_cursor_is_djangos(direct):
    """DATABASE_PREPARED_STATEMENTS=false (a pooler that cannot keep them)."""
    connection.ensure_connection()
    raw = connection.connection
    threshold, raw.prepare_threshold = raw.prepare_threshold, None
    try:
        with direct_cursor() as cursor:
            assert not _is_direct(cursor)
            cursor.execute("SELECT %s::int", [3])
            assert cursor.fetchone() == (3,)
        assert not _prepared_here()
    finally:
        raw.prepare_threshold = threshold


@pytest.mark.postgres
@pytest.mark.parametrize("forget", ["rollback", "deallocate"])
def test_statements_the_server_forgot_are_prepared_again(direct, forget):
    """psycopg sends DEALLOCATE ALL on a rollback once it has prepared a statement
    of its own; that drops direct_cursor's too, which must prepare them again
    rather than fail every later request on the connection."""
    connection.ensure_connection()
    connection.connection.execute("SELECT 1", prepare=True)  # psycopg's own
    with direct_cursor() as cursor:
        cursor.execute("SELECT %s::int", [1])
    if forget == "rollback":
        with pytest.raises(RuntimeError), transaction.atomic():
            Group.objects.create(name="undone")
            raise RuntimeError
    else:
        connection.connection.execute("DEALLOCATE ALL")
    assert not _prepared_here()
    with direct_cursor() as cursor:
        cursor.execute("SELECT %s::int", [2])
        assert cursor.fetchall() == [(2,)]
        cursor.execute("SELECT %s::text", ["new"])  # a name of its own
        assert cursor.fetchall() == [("new",)]
    assert len(_prepared_here()) == 2


@pytest.mark.postgres
def test_score_and_reward_send_their_statements_prepared_by_name(direct, registry, api):
    """The hot routes' statements go through direct_cursor."""
    score = {"user_id": "u", "candidates": [{"id": "a"}, {"id": "b"}]}
    tip = api.post("/score", score, format="json").json()["tip_id"]
    reward = {"user_id": "u", "tip_id": tip, "reward": 1.0, "features": {}}
    for _ in range(2):  # the first creates the states, under the locks
        assert api.post("/reward", reward, format="json").status_code == 200
    prepared = " ".join(_prepared_here())
    assert "policies_banditstate" in prepared  # the states' reads
    assert 'INSERT INTO "policies_decision"' in prepared
    assert "policies_state_moved()" in prepared  # the unlocked reward write


@pytest.mark.postgres
def test_a_rewards_decision_read_directly_is_the_orms(direct, registry, api):
    score = {
        "user_id": "u",
        "candidates": [{"id": "a", "features": {"priority": 3}}, {"id": "b"}],
        "context": {"hour_of_day": 9, "day_of_week": 2},
    }
    answer = api.post("/score", score, format="json").json()
    decision_id = uuid.UUID(answer["decision_id"])

    read = _decision_read(decision_id)

    assert "FROM policies_decision d" in " ".join(_prepared_here())
    orms = Decision.objects.select_related("policy").get(id=decision_id)
    fields = ("id", "created_at", "user_id", "policy_id", "candidates", "context")
    for name in (*fields, "profile", "features"):
        assert getattr(read, name) == getattr(orms, name), name
    assert read.policy.name == orms.policy.name == answer["policy"]
    assert read.candidate_index(answer["tip_id"]) is not None
    assert _decision_read(uuid7()) is None


# rows_insert_sql: the hot path's log rows, stored as the ORM stores them.


@pytest.mark.django_db
@pytest.mark.parametrize("plain", [False, True], ids=["instances", "plain rows"])
def test_a_log_row_inserted_reads_back_as_the_orms_own(plain):
    policy = Policy.objects.create(name="p", algorithm="hybrid", dimension=12)
    at = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    fields = {
        "policy_id": policy.id,
        "user_id": "Fé",
        "tip_id": "t",
        "reward": 0.1,
        "decision_id": uuid.UUID("01938a2b-0000-7000-8000-000000000001"),
        "event_id": None,
        "fingerprint": "",
        "features": [0.1, 0.30000000000000004, -1e-07],
        "vector": np.array([0.1, -2.0]).tobytes(),
        "learned": True,
        "created_at": at,
    }
    Reward.objects.bulk_create([Reward(**fields)])
    if plain:
        sql, params = rows_insert_sql([SimpleNamespace(id=None, **fields)], Reward)
    else:
        sql, params = rows_insert_sql([Reward(**fields)])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)

    orms, ours = (
        {name: getattr(r, name) for name in fields}
        for r in Reward.objects.order_by("id")
    )
    assert ours == orms
    assert bytes(ours["vector"]) == fields["vector"]
    assert ours["features"] == fields["features"] and ours["created_at"] == at
