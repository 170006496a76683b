"""POST /api/simulations against a careless client: every value is checked
before any query, a run's size in chunks is bounded, a start sends one message
whatever that size, a retry with the same Idempotency-Key answers the same run,
and a broker that cannot take the run is a 503 that keeps nothing."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from conftest import celery_sending_to
from oo_ml.auth import token_create
from oo_ml.errors import InvalidInput
from simulations import services, tasks
from simulations.models import Run, RunChunk
from simulations.tests.test_api import BODY, URL


@pytest.fixture
def broker(monkeypatch) -> dict[str, list]:
    """What reaches the broker: the start's messages, then the fan-out's."""
    sent: dict[str, list] = {"fan_out": [], "chunks": []}
    fan_out, chunks = sent["fan_out"], sent["chunks"]
    monkeypatch.setattr(tasks.run_fan_out, "delay", lambda *a: fan_out.append(a))
    monkeypatch.setattr(tasks.run_chunk, "delay", lambda *a: chunks.append(a))
    return sent


def post(client, body, capture, **headers):
    with capture(execute=True):
        return client.post(URL, body, format="json", headers=headers)


# --- checked before any query ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"policies": ["egreedy-v1", "egreedy\x00-v2"]}, "policies"),
        ({"policies": ["\x00"]}, "policies"),
        ({"policies": ["x" * 65]}, "policies"),
        ({"policies": [""]}, "policies"),
        ({"judge": "ru\x00le"}, "judge"),
        ({"judge": {"name": "rule"}}, "judge"),
        ({"n_users": 100_000, "chunk_users": 1}, "chunk_users"),
    ],
)
def test_bad_values_are_400_before_any_query(
    staff_token_api, broker, django_capture_on_commit_callbacks, change, field
):
    response = post(
        staff_token_api, {**BODY, **change}, django_capture_on_commit_callbacks
    )
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not Run.objects.exists() and broker == {"fan_out": [], "chunks": []}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"policies": ["egreedy\x00-v1"], "judge": "rule"},
        {"policies": ["nope"], "judge": "oracle"},  # the judge is told first
        {"policies": ["nope"], "n_users": 0},
        {"policies": ["nope"], "n_users": 100_000, "chunk_users": 1},
    ],
)
def test_the_service_queries_nothing_for_a_bad_run(change):
    with CaptureQueriesContext(connection) as queries, pytest.raises(InvalidInput):
        services.run_create(**{**BODY, **change}, actor=None)
    # The service's transaction is a savepoint in the test's: not a query.
    assert [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]] == []


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["a\x00b", "x" * 201, "", "ключ", "tab\there"])
def test_a_bad_idempotency_key_is_400(
    staff_token_api, broker, django_capture_on_commit_callbacks, key
):
    response = post(
        staff_token_api,
        BODY,
        django_capture_on_commit_callbacks,
        **{"Idempotency-Key": key},
    )
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "Idempotency-Key"
    assert not Run.objects.exists()


# --- bounded, and started with one message ----------------------------------------


@pytest.mark.django_db
def test_the_number_of_chunks_is_bounded_by_a_setting(
    staff_token_api, broker, django_capture_on_commit_callbacks, settings
):
    settings.SIMULATION_MAX_CHUNKS = 2
    response = post(staff_token_api, BODY, django_capture_on_commit_callbacks)
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "chunk_users"
    assert "at least 4 users per chunk" in body["detail"]
    ok = post(
        staff_token_api,
        {**BODY, "chunk_users": 4},
        django_capture_on_commit_callbacks,
    )
    assert ok.status_code == 202


@pytest.mark.django_db
def test_a_start_sends_one_message_which_a_worker_fans_out(
    staff_token_api, broker, django_capture_on_commit_callbacks
):
    body = {**BODY, "n_users": 1000, "n_rounds": 1, "chunk_users": 1}
    response = post(staff_token_api, body, django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    assert broker == {"fan_out": [(run_id,)], "chunks": []}
    assert not RunChunk.objects.filter(run_id=run_id, sent_at__isnull=True).exists()

    assert tasks.run_fan_out(run_id) == 1000  # on a worker
    assert broker["chunks"] == [(run_id, index) for index in range(1000)]
    tasks.run_chunk(run_id, 0)
    assert tasks.run_fan_out(run_id) == 999  # again: only what is still pending


# --- Idempotency-Key -----------------------------------------------------------


@pytest.mark.django_db
def test_a_retry_with_the_same_key_answers_the_same_run(
    staff_token_api, broker, django_capture_on_commit_callbacks, staff_user
):
    key = {"Idempotency-Key": "start-7f3a"}
    first = post(staff_token_api, BODY, django_capture_on_commit_callbacks, **key)
    again = post(staff_token_api, BODY, django_capture_on_commit_callbacks, **key)

    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Run.objects.count() == 1
    assert len(broker["fan_out"]) == 1  # started once

    other = post(
        staff_token_api,
        {**BODY, "seed": 43},
        django_capture_on_commit_callbacks,
        **key,
    )
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"
    # Another key, or none, is another run.
    assert (
        post(
            staff_token_api,
            BODY,
            django_capture_on_commit_callbacks,
            **{"Idempotency-Key": "start-7f3b"},
        ).json()["id"]
        != first.json()["id"]
    )
    post(staff_token_api, BODY, django_capture_on_commit_callbacks)
    assert Run.objects.count() == 3


@pytest.mark.django_db
def test_a_key_is_one_accounts_own(
    staff_token_api, broker, django_capture_on_commit_callbacks
):
    from django.contrib.auth import get_user_model

    colleague = get_user_model().objects.create_superuser("ops2", password=None)
    theirs = APIClient()
    theirs.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=colleague)}")
    key = {"Idempotency-Key": "nightly"}
    mine = post(staff_token_api, BODY, django_capture_on_commit_callbacks, **key)
    other = post(theirs, BODY, django_capture_on_commit_callbacks, **key)
    assert mine.json()["id"] != other.json()["id"]


# --- a broker that cannot take the run ------------------------------------------


@pytest.fixture
def missing_broker_folder(tmp_path):
    folder = tmp_path / "no-such-folder"
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder),
        "control_folder": str(folder),
        "store_processed": False,
    }
    with celery_sending_to("filesystem://", "celery", options):
        yield folder


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_cannot_take_the_run_is_503_and_keeps_nothing(
    registry, staff_token_api, missing_broker_folder, anon
):
    assert anon.get("/health").json()["broker"] is False

    key = {"Idempotency-Key": "retry-me"}
    response = staff_token_api.post(URL, BODY, format="json", headers=key)

    assert response.status_code == 503, response.content
    assert response.json()["error"] == "broker_unavailable"
    assert not Run.objects.exists() and not RunChunk.objects.exists()

    missing_broker_folder.mkdir()  # the broker is back: the retry starts it
    retried = staff_token_api.post(URL, BODY, format="json", headers=key)
    assert retried.status_code == 202, retried.content
    assert Run.objects.count() == 1
    assert len(list(missing_broker_folder.glob("*.msg"))) == 1  # one: the start
