"""POST /api/simulations and GET /api/simulations[/<id>]: staff start runs on the
workers and follow them. The chunks are executed as a worker executes them: the
tasks ``run_start`` sends once the request commits, called by their arguments."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from simulations import services, tasks
from simulations.models import Run, RunChunk, RunEvent

pytestmark = pytest.mark.django_db

URL = "/api/simulations"
MISSING = object()
BODY = {
    "policies": ["egreedy-v1", "egreedy-v2"],
    "judge": "rule",
    "n_users": 7,
    "n_rounds": 6,
    "seed": 42,
    "chunk_users": 3,
}


@pytest.fixture
def sent(monkeypatch) -> list[tuple]:
    """The messages run_start hands the broker, kept here instead."""
    messages: list[tuple] = []
    monkeypatch.setattr(tasks.run_chunk, "delay", lambda *args: messages.append(args))
    # A worker fans the start out into the chunks' tasks: here, at once.
    monkeypatch.setattr(tasks.run_fan_out, "delay", tasks.run_fan_out)
    return messages


def start(client: APIClient, body, capture) -> tuple:
    """POST a start; answer the response and the callbacks run on commit."""
    with capture(execute=False) as callbacks:
        if isinstance(body, str):
            response = client.post(URL, body, content_type="application/json")
        else:
            response = client.post(URL, body, format="json")
    return response, callbacks


def test_a_run_started_over_the_api_runs_on_the_workers_and_reports_its_results(
    staff_token_api, staff_user, sent, django_capture_on_commit_callbacks
):
    response, callbacks = start(
        staff_token_api, BODY, django_capture_on_commit_callbacks
    )

    assert response.status_code == 202
    body = response.json()
    run_id = body["id"]
    assert body["status"] == "queued"
    assert body["progress"] == {"chunks_done": 0, "chunks_total": 3, "fraction": 0.0}
    assert body["created_by"] == "ops" and body["results"] is None
    assert body["links"] == {
        "self": f"/api/simulations/{run_id}",
        "admin": f"/admin/simulations/run/{run_id}/change/",
    }
    assert response["Location"] == f"/api/simulations/{run_id}"
    assert Run.objects.get(pk=run_id).created_by == staff_user
    assert sent == []  # nothing reaches the broker before the commit

    for callback in callbacks:  # the commit
        callback()
    assert sent == [(run_id, 0), (run_id, 1), (run_id, 2)]

    tasks.run_chunk(*sent[0])  # one worker takes the first message
    running = staff_token_api.get(f"{URL}/{run_id}").json()
    assert running["status"] == "running"
    assert running["progress"] == {
        "chunks_done": 1,
        "chunks_total": 3,
        "fraction": 0.3333,
    }
    assert running["timings"]["started_at"] is not None
    assert running["timings"]["duration_seconds"] >= 0
    assert running["results"] is None

    for message in sent[1:]:
        tasks.run_chunk(*message)
    finished = staff_token_api.get(f"{URL}/{run_id}").json()

    assert finished["status"] == "finished"
    assert finished["progress"]["fraction"] == 1.0
    assert finished["error"] is None
    assert finished["timings"]["finished_at"] is not None
    # The same results as the same run executed in this process.
    reference = services.run_create(**BODY, actor=None)
    reference = services.run_execute(run_id=reference.id)
    results = finished["results"]
    assert results == reference.summary
    assert [(p["policy"], p["pulls"]) for p in results["policies"]] == [
        ("egreedy-v1", 42),
        ("egreedy-v2", 42),
    ]
    assert all(-1.0 <= p["mean_reward"] <= 1.0 for p in results["policies"])
    first, second = results["policies"]
    for row in results["policies"]:
        low, high = row["mean_ci"]
        assert low < row["mean_reward"] < high
        assert row["regret"] == pytest.approx(
            results["oracle_mean"] - row["expected_reward"], abs=2e-6
        )
    assert first["diff_vs_first"] is None
    assert set(second["diff_vs_first"]) == {"mean", "low", "high"}
    assert set(results["regret_curve"]) == {"egreedy-v1", "egreedy-v2"}
    assert RunEvent.objects.filter(run_id=run_id).count() == 2 * 7 * 6


def test_n_candidates_is_optional_and_passed_on(
    staff_token_api, sent, django_capture_on_commit_callbacks
):
    response, _ = start(
        staff_token_api,
        {**BODY, "n_candidates": 9},
        django_capture_on_commit_callbacks,
    )
    assert response.status_code == 202
    assert response.json()["n_candidates"] == 9
    without, _ = start(
        staff_token_api,
        {k: v for k, v in BODY.items() if k != "chunk_users"},
        django_capture_on_commit_callbacks,
    )
    assert (without.json()["n_candidates"], without.json()["chunk_users"]) == (5, 7)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"policies": MISSING}, "policies"),
        ({"policies": None}, "policies"),
        ({"policies": []}, "policies"),
        ({"policies": "egreedy-v1"}, "policies"),
        ({"policies": ["egreedy-v1", "nope"]}, "policies"),
        ({"policies": ["egreedy-v1", "egreedy-v1"]}, "policies"),
        ({"policies": [1]}, "policies"),
        ({"judge": "oracle"}, "judge"),
        ({"judge": ["rule"]}, "judge"),
        ({"judge": None}, "judge"),
        ({"n_users": 0}, "n_users"),
        ({"n_users": "7"}, "n_users"),
        ({"n_users": 1.5}, "n_users"),
        ({"n_users": True}, "n_users"),
        ({"n_users": 10**30}, "n_users"),
        ({"n_rounds": -1}, "n_rounds"),
        ({"n_rounds": None}, "n_rounds"),
        ({"n_rounds": MISSING}, "n_rounds"),
        ({"seed": MISSING}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": "nan"}, "seed"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"n_candidates": 101}, "n_candidates"),
        ({"chunk_users": 0}, "chunk_users"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    staff_token_api, sent, django_capture_on_commit_callbacks, change, field
):
    body = {k: v for k, v in {**BODY, **change}.items() if v is not MISSING}
    response, callbacks = start(
        staff_token_api, body, django_capture_on_commit_callbacks
    )

    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["detail"]
    assert not Run.objects.exists() and not RunChunk.objects.exists()
    assert callbacks == [] and sent == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            '{"policies": ["egreedy-v1"], "judge": "rule", "n_users": NaN, '
            '"n_rounds": 2, "seed": 1}',
            "n_users",
        ),
        (
            '{"policies": ["egreedy-v1"], "judge": "rule", "n_users": 2, '
            '"n_rounds": 2, "seed": 1e999}',
            "seed",
        ),
        ("[1, 2]", None),
        ("{not json", None),
    ],
)
def test_malformed_bodies_are_400_and_write_nothing(
    staff_token_api, sent, django_capture_on_commit_callbacks, raw, field
):
    response, callbacks = start(
        staff_token_api, raw, django_capture_on_commit_callbacks
    )
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not Run.objects.exists() and callbacks == []


def test_a_run_too_large_for_one_chunk_names_chunk_users(
    staff_token_api, sent, django_capture_on_commit_callbacks
):
    body = {**BODY, "n_users": 100_000, "n_rounds": 10_000, "chunk_users": 2_000}
    response, _ = start(staff_token_api, body, django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert response.json()["field"] == "chunk_users"
    assert not Run.objects.exists()


def test_an_unknown_run_is_404_and_a_malformed_id_400(staff_token_api):
    response = staff_token_api.get(f"{URL}/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["field"] == "id"

    for bad in ("not-a-uuid", "1234", "0" * 33):
        response = staff_token_api.get(f"{URL}/{bad}")
        assert response.status_code == 400, bad
        assert response.json()["field"] == "id"


def test_a_failed_run_reports_why(staff_token_api):
    run = services.run_create(**BODY, actor=None)
    services.run_fail(run_id=run.id, reason="chunk 1: RuntimeError: judge exploded")

    body = staff_token_api.get(f"{URL}/{run.id}").json()
    assert body["status"] == "failed"
    assert body["error"] == "chunk 1: RuntimeError: judge exploded"
    assert body["results"] is None
    assert body["progress"]["fraction"] == 0.0


def test_the_list_is_newest_first_paginated_and_without_results(staff_token_api):
    runs = [services.run_create(**{**BODY, "seed": s}, actor=None) for s in range(3)]
    services.run_execute(run_id=runs[0].id)

    first = staff_token_api.get(URL, {"page_size": 2}).json()
    assert first["count"] == 3
    assert [r["seed"] for r in first["results"]] == [2, 1]
    assert "results" not in first["results"][0]
    second = staff_token_api.get(first["next"]).json()
    assert [(r["seed"], r["status"]) for r in second["results"]] == [(0, "finished")]
    assert second["next"] is None
    assert staff_token_api.get(URL, {"page": 9}).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", URL), ("post", URL), ("get", f"{URL}/{uuid.uuid4()}")],
)
def test_no_token_is_401_a_service_token_or_a_non_staff_user_403(
    anon, api, method, path, sent
):
    kwargs = {"data": BODY, "format": "json"} if method == "post" else {}
    assert getattr(anon, method)(path, **kwargs).status_code == 401
    assert getattr(api, method)(path, **kwargs).status_code == 403
    viewer = APIClient()
    viewer.force_login(
        get_user_model().objects.create_user(username="viewer", password="x" * 12)
    )
    assert getattr(viewer, method)(path, **kwargs).status_code == 403
    assert not Run.objects.exists() and sent == []


def test_an_admin_session_may_start_a_run_with_its_csrf_token(staff_user, sent):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.get(URL).status_code == 200
    assert client.post(URL, BODY, format="json").status_code == 403  # no token
    assert not Run.objects.exists()

    client.get("/admin/simulations/")  # any admin page sets the cookie
    token = client.cookies["csrftoken"].value
    response = client.post(URL, BODY, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202


def test_the_schema_documents_the_simulation_routes(staff_api):
    schema = json.loads(
        staff_api.get("/api/schema/", HTTP_ACCEPT="application/json").content
    )
    start_op = schema["paths"]["/api/simulations"]["post"]
    assert set(start_op["responses"]) >= {"202", "400", "401", "403"}
    read = schema["paths"]["/api/simulations/{run_id}"]["get"]
    assert set(read["responses"]) >= {"200", "400", "404"}
    components = schema["components"]["schemas"]
    assert set(components["SimulationInput"]["required"]) == {
        "policies",
        "judge",
        "n_users",
        "n_rounds",
        "seed",
    }
    properties = components["PolicyResult"]["properties"]
    for name in ("mean_reward", "mean_ci", "diff_vs_first", "regret"):
        assert name in properties, name
    assert "oracle_mean" in components["Results"]["properties"]
