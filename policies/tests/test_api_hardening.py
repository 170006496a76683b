"""The decision API against a careless or hostile client: bodies that are not
JSON (415), objects with a key given twice, the wrong Authorization scheme, and
event ids in the platform's own namespace. Each answers its error and writes
nothing."""

from __future__ import annotations

import json
import uuid

import pytest
from rest_framework.test import APIClient

from policies.tests.test_api_errors import (
    REWARD_ROUTES,
    SCORE_ROUTES,
    assert_error,
    db_state,
    decide,
    reward_body,
    score_body,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(api) -> dict:
    """u1 has a decision and a reward, so a stray write would show."""
    decision = decide(api)
    body = reward_body(tip_id=decision["tip_id"], decision_id=decision["decision_id"])
    assert api.post("/reward", body, format="json").status_code == 200
    return decision


@pytest.mark.parametrize("route", SCORE_ROUTES[:1] + REWARD_ROUTES[:1] + ["/events"])
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
    ],
)
def test_a_body_that_is_not_json_is_415(api, seeded, route, content_type):
    before = db_state()
    body = json.dumps(score_body() if "score" in route else reward_body())
    response = api.generic("POST", route, body, content_type=content_type)
    assert_error(response, 415, field=None, error="unsupported_media_type")
    assert db_state() == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8"]
)
def test_json_with_or_without_a_charset_is_served(api, content_type):
    response = api.generic(
        "POST", "/score", json.dumps(score_body()), content_type=content_type
    )
    assert response.status_code == 200, response.content


def test_an_empty_body_needs_no_content_type(staff_api):
    # A toggle's empty body flips it: no body, nothing to parse, no 415.
    response = staff_api.generic(
        "POST", "/api/admin/policies/egreedy-v2/toggle", "", content_type=""
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("/score", '{"user_id": "u1", "user_id": "u2", "candidates": [{"id": "a"}]}'),
        ("/score", '{"user_id": "u1", "candidates": [{"id": "a", "id": "b"}]}'),
        (
            "/reward",
            '{"user_id": "u1", "tip_id": "t1", "reward": 1.0, "reward": -1.0}',
        ),
        (
            "/events",
            '{"user_id": "u1", "tip_id": "t1", "kind": "done", "kind": "dismissed"}',
        ),
    ],
)
def test_a_key_given_twice_is_400_and_writes_nothing(api, seeded, route, raw):
    before = db_state()
    response = api.generic("POST", route, raw, content_type="application/json")
    body = assert_error(response, 400, error="invalid_json")
    assert "twice" in body["detail"]
    assert db_state() == before


@pytest.mark.parametrize("scheme", ["Bearer", "Basic", "bearer", "JWT"])
def test_another_auth_scheme_is_401_saying_it_must_be_token(
    service_token, seeded, scheme
):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {service_token}")
    before = db_state()
    response = client.post("/score", score_body(), format="json")
    body = assert_error(response, 401, field=None, error="authentication_failed")
    assert "must be Token" in body["detail"]
    assert response["WWW-Authenticate"] == "Token"
    assert db_state() == before


@pytest.mark.parametrize("route", REWARD_ROUTES)
@pytest.mark.parametrize(
    "event_id", [f"event:{uuid.uuid4()}", "event:", "event:anything"]
)
def test_an_event_id_in_the_platforms_namespace_is_400(api, seeded, route, event_id):
    before = db_state()
    response = api.post(
        route,
        reward_body(
            tip_id=seeded["tip_id"],
            decision_id=seeded["decision_id"],
            event_id=event_id,
        ),
        format="json",
    )
    assert_error(response, 400, field="event_id", error="reserved")
    assert db_state() == before


def test_an_events_reward_keeps_its_id_which_reward_cannot_forge(api, seeded):
    decision = api.post("/score", score_body(user_id="u9"), format="json").json()
    event = api.post(
        "/events",
        {
            "user_id": "u9",
            "tip_id": decision["tip_id"],
            "kind": "done",
            "decision_id": decision["decision_id"],
        },
        format="json",
    ).json()
    assert event["trained"] == "egreedy-v1"
    before = db_state()
    forged = api.post(
        "/reward",
        reward_body(
            user_id="u9",
            tip_id=decision["tip_id"],
            reward=-1.0,
            event_id=f"event:{event['id']}",
        ),
        format="json",
    )
    assert_error(forged, 400, field="event_id", error="reserved")
    assert db_state() == before
