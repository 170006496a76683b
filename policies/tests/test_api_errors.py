"""The API's unhappy paths (docs/api.md): every bad input answers one error shape.

Bad input answers 400 ``{"error", "detail", "field"}`` with ``field`` naming the
offending value, and writes nothing: the decision log, the reward log and every
user's bandit state are compared before and after. Auth, unknown policies and
users, idempotent replays and a list of hostile bodies (nothing may answer 500)
are covered too.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from rest_framework.test import APIClient

from policies.models import BanditState, Decision, Reward

pytestmark = pytest.mark.django_db

JSON = "application/json"
SCORE_ROUTES = [
    "/score",
    "/policies/egreedy-v1/score",
    "/policies/egreedy-v2/score",
    "/score/egreedy",
    "/score/egreedy/v2",
]
REWARD_ROUTES = [
    "/reward",
    "/policies/egreedy-v1/reward",
    "/policies/egreedy-v2/reward",
    "/reward/egreedy",
    "/reward/egreedy/v2",
]
ANY_FIELD = object()

# --- bodies -------------------------------------------------------------------


def profile() -> dict:
    return {
        "completion_rate_30d": 0.5,
        "dismiss_rate_30d": 0.1,
        "mean_dwell_ms_30d": 1200.0,
        "preferred_hour": 9,
        "tip_volume_30d": 12,
    }


def features(priority: int = 2) -> dict:
    return {
        "hour_of_day": 9,
        "is_overdue": False,
        "task_age_days": 2.0,
        "priority": priority,
    }


def score_body(*, user_id: str = "u1", ids=("t1", "t2")) -> dict:
    """A valid /score body with every optional part present, so any path exists."""
    return {
        "user_id": user_id,
        "candidates": [{"id": tip, "features": features()} for tip in ids],
        "context": {"hour_of_day": 9, "day_of_week": 2},
        "profile_features": profile(),
    }


def reward_body(**overrides) -> dict:
    """A valid /reward body with every optional part present."""
    return {
        "user_id": "u1",
        "tip_id": "t1",
        "reward": 1.0,
        "features": features(),
        "day_of_week": 2,
        "profile_features": profile(),
        **overrides,
    }


BODIES = {"score": score_body, "reward": reward_body}

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _STEP.findall(path)]


def put(body: dict, path: str, value) -> dict:
    """A copy of ``body`` with ``value`` at ``path``, e.g. ``candidates[1].id``."""
    body = copy.deepcopy(body)
    *parents, last = _steps(path)
    node = body
    for step in parents:
        node = node[step]
    node[last] = value
    return body


def drop(body: dict, path: str) -> dict:
    body = copy.deepcopy(body)
    *parents, last = _steps(path)
    node = body
    for step in parents:
        node = node[step]
    del node[last]
    return body


def raw(body: dict, path: str, literal: str) -> bytes:
    """``body`` as JSON text with a literal the JSON encoder refuses (NaN...)."""
    marker = "__raw_literal__"
    text = json.dumps(put(body, path, marker))
    return text.replace(json.dumps(marker), literal).encode()


# --- helpers ------------------------------------------------------------------


def db_state() -> dict:
    """Everything a request could write: both logs and every state's numbers."""
    return {
        "decisions": Decision.objects.count(),
        "rewards": Reward.objects.count(),
        "states": {
            (s.policy_id, s.user_id): (
                s.reward_count,
                s.cumulative_reward,
                bytes(s.a_bytes),
                bytes(s.b_bytes),
            )
            for s in BanditState.objects.all()
        },
    }


def assert_error(response, status: int, field=ANY_FIELD, error: str | None = None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(JSON), response.content
    body = response.json()
    assert set(body) == {"error", "detail", "field"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    if field is not ANY_FIELD:
        assert body["field"] == field, body
    return body


def decide(client, *, user_id: str = "u1", ids=("t1", "t2"), route="/score"):
    response = client.post(route, score_body(user_id=user_id, ids=ids), format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def seeded(api):
    """u1 already has a decision and a reward, so a stray update would show."""
    decision = decide(api)
    response = api.post(
        "/reward",
        reward_body(tip_id=decision["tip_id"], decision_id=decision["decision_id"]),
        format="json",
    )
    assert response.status_code == 200, response.content
    return decision


@pytest.fixture
def lenient_api(service_token) -> APIClient:
    """A client that answers 500 instead of raising, so the status can be checked."""
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {service_token}")
    return client


# --- bad values, field by field -----------------------------------------------

SCORE_BAD_VALUES = [
    # numbers taken strictly: no strings, no booleans, no fractions for integers
    ("candidates[1].features.priority", "1", "priority-numeric-string"),
    ("candidates[1].features.priority", "nan", "priority-string-nan"),
    ("candidates[1].features.priority", True, "priority-bool"),
    ("candidates[1].features.priority", 2.5, "priority-fraction"),
    ("candidates[1].features.priority", 0, "priority-0"),
    ("candidates[1].features.priority", 5, "priority-5"),
    ("candidates[1].features.hour_of_day", 24, "candidate-hour-24"),
    ("candidates[1].features.hour_of_day", -1, "candidate-hour-neg"),
    ("candidates[0].features.task_age_days", -0.5, "age-negative"),
    ("candidates[0].features.task_age_days", "Infinity", "age-string-inf"),
    ("candidates[0].features.task_age_days", False, "age-bool"),
    ("candidates[1].features.is_overdue", "yes", "overdue-string"),
    ("candidates[1].features.is_overdue", 2, "overdue-2"),
    ("context.hour_of_day", 24, "hour-24"),
    ("context.hour_of_day", -1, "hour-neg"),
    ("context.hour_of_day", 12.5, "hour-fraction"),
    ("context.hour_of_day", "12", "hour-numeric-string"),
    ("context.hour_of_day", True, "hour-bool"),
    ("context.day_of_week", 7, "day-7"),
    ("context.day_of_week", -1, "day-neg"),
    ("context.day_of_week", "1", "day-numeric-string"),
    ("context.day_of_week", False, "day-bool"),
    ("profile_features.completion_rate_30d", 1.5, "completion-1.5"),
    ("profile_features.completion_rate_30d", -0.1, "completion-neg"),
    ("profile_features.completion_rate_30d", "0.5", "completion-string"),
    ("profile_features.completion_rate_30d", True, "completion-bool"),
    ("profile_features.dismiss_rate_30d", 1.01, "dismiss-over-1"),
    ("profile_features.mean_dwell_ms_30d", -1, "dwell-negative"),
    ("profile_features.mean_dwell_ms_30d", "-inf", "dwell-string-inf"),
    ("profile_features.preferred_hour", 24, "preferred-hour-24"),
    ("profile_features.preferred_hour", -1, "preferred-hour-neg"),
    ("profile_features.tip_volume_30d", -1, "volume-neg"),
    ("profile_features.tip_volume_30d", 2.5, "volume-fraction"),
    ("profile_features.tip_volume_30d", "many", "volume-string"),
    # shapes and ids
    ("user_id", "", "user-empty"),
    ("user_id", None, "user-null"),
    ("user_id", {"id": 1}, "user-object"),
    ("user_id", "u" * 129, "user-too-long"),
    ("candidates", [], "no-candidates"),
    ("candidates", None, "candidates-null"),
    ("candidates", {"id": "t1"}, "candidates-object"),
    ("candidates[0]", "t1", "candidate-not-object"),
    ("candidates[1].id", None, "candidate-id-null"),
    ("candidates[1].id", "", "candidate-id-empty"),
    ("candidates[1].id", True, "candidate-id-bool"),
    ("candidates[1].id", "t" * 201, "candidate-id-too-long"),
    ("candidates[1].features", [1, 2], "features-list"),
    ("context", None, "context-null"),
    ("context", [9, 2], "context-list"),
    ("profile_features", "x", "profile-string"),
]


@pytest.mark.parametrize(
    ("path", "value"),
    [case[:2] for case in SCORE_BAD_VALUES],
    ids=[case[2] for case in SCORE_BAD_VALUES],
)
def test_score_bad_value_is_400_naming_the_field(api, seeded, path, value):
    before = db_state()
    response = api.post("/score", put(score_body(), path, value), format="json")
    assert_error(response, 400, field=path)
    assert db_state() == before


REWARD_BAD_VALUES = [
    ("reward", "nan", "reward-string-nan"),
    ("reward", "1", "reward-numeric-string"),
    ("reward", "Infinity", "reward-string-inf"),
    ("reward", True, "reward-bool"),
    ("reward", None, "reward-null"),
    ("reward", [1], "reward-list"),
    ("reward", 1e6 + 1, "reward-too-large"),
    ("reward", -1e6 - 1, "reward-too-small"),
    ("features.hour_of_day", 24, "hour-24"),
    ("features.hour_of_day", -1, "hour-neg"),
    ("features.priority", 0, "priority-0"),
    ("features.priority", 5, "priority-5"),
    ("features.priority", "3", "priority-numeric-string"),
    ("features.task_age_days", -1, "age-negative"),
    ("features.is_overdue", "false", "overdue-string"),
    ("day_of_week", 7, "day-7"),
    ("day_of_week", -1, "day-neg"),
    ("day_of_week", True, "day-bool"),
    ("profile_features.completion_rate_30d", 1.5, "completion-1.5"),
    ("profile_features.mean_dwell_ms_30d", -1, "dwell-negative"),
    ("profile_features.preferred_hour", 24, "preferred-hour-24"),
    ("profile_features.tip_volume_30d", -1, "volume-neg"),
    ("profile_features.tip_volume_30d", 2.5, "volume-fraction"),
    ("profile_features.tip_volume_30d", "12", "volume-string"),
    ("user_id", "", "user-empty"),
    ("tip_id", None, "tip-null"),
    ("tip_id", "", "tip-empty"),
    ("decision_id", "not-a-uuid", "decision-not-uuid"),
    ("decision_id", "", "decision-empty"),
    ("decision_id", 4.2, "decision-float"),
    ("event_id", {"id": 1}, "event-object"),
    ("event_id", "e" * 201, "event-too-long"),
]


@pytest.mark.parametrize(
    ("path", "value"),
    [case[:2] for case in REWARD_BAD_VALUES],
    ids=[case[2] for case in REWARD_BAD_VALUES],
)
def test_reward_bad_value_is_400_naming_the_field(api, seeded, path, value):
    before = db_state()
    response = api.post("/reward", put(reward_body(), path, value), format="json")
    assert_error(response, 400, field=path)
    assert db_state() == before


# The named and legacy routes share the serializers; a few cases per route prove it.
ROUTE_CASES = [
    (route, path, value)
    for route in SCORE_ROUTES
    for path, value in [
        ("candidates[1].features.priority", 5),
        ("context.hour_of_day", 24),
        ("profile_features.completion_rate_30d", 1.5),
    ]
] + [
    (route, path, value)
    for route in REWARD_ROUTES
    for path, value in [
        ("reward", "nan"),
        ("day_of_week", 7),
        ("profile_features.tip_volume_30d", 2.5),
    ]
]


@pytest.mark.parametrize(
    ("route", "path", "value"),
    ROUTE_CASES,
    ids=[f"{route}-{path}" for route, path, _ in ROUTE_CASES],
)
def test_every_route_validates_the_same(api, seeded, route, path, value):
    kind = "score" if "score" in route else "reward"
    before = db_state()
    response = api.post(route, put(BODIES[kind](), path, value), format="json")
    assert_error(response, 400, field=path)
    assert db_state() == before


# Literals json.dumps refuses to write, sent as raw bytes.
RAW_LITERALS = [
    ("score", "candidates[1].features.priority", "NaN"),
    ("score", "context.hour_of_day", "Infinity"),
    ("score", "profile_features.completion_rate_30d", "-Infinity"),
    ("score", "candidates[0].features.task_age_days", "1e999"),
    ("score", "profile_features.mean_dwell_ms_30d", "-1e999"),
    ("reward", "reward", "NaN"),
    ("reward", "reward", "Infinity"),
    ("reward", "features.task_age_days", "-Infinity"),
    ("reward", "reward", "1e999"),
    ("reward", "reward", "-1e999"),
]


@pytest.mark.parametrize(
    ("kind", "path", "literal"),
    RAW_LITERALS,
    ids=[f"{kind}-{path}-{literal}" for kind, path, literal in RAW_LITERALS],
)
def test_non_finite_literal_is_400_naming_the_field(api, seeded, kind, path, literal):
    before = db_state()
    response = api.post(
        f"/{kind}", data=raw(BODIES[kind](), path, literal), content_type=JSON
    )
    assert_error(response, 400)
    assert db_state() == before
    # 1e999 reaches the serializer and is named; NaN and Infinity must be too.
    assert response.json()["field"] == path, response.json()


# --- candidate lists ----------------------------------------------------------


@pytest.mark.parametrize("route", SCORE_ROUTES)
def test_more_than_100_candidates_is_400(api, seeded, route):
    ids = [f"t{i}" for i in range(101)]
    before = db_state()
    response = api.post(route, score_body(ids=ids), format="json")
    assert_error(response, 400, field="candidates", error="too_many")
    assert db_state() == before


def test_100_candidates_is_fine(api):
    response = api.post(
        "/score", score_body(ids=[f"t{i}" for i in range(100)]), format="json"
    )
    assert response.status_code == 200, response.content


def test_candidate_limit_is_configurable(api, settings):
    settings.MAX_CANDIDATES = 3
    before = db_state()
    response = api.post("/score", score_body(ids=["a", "b", "c", "d"]), format="json")
    assert_error(response, 400, field="candidates", error="too_many")
    assert db_state() == before

    response = api.post("/score", score_body(ids=["a", "b", "c"]), format="json")
    assert response.status_code == 200, response.content
    assert Decision.objects.count() == before["decisions"] + 1


@pytest.mark.parametrize("route", SCORE_ROUTES)
@pytest.mark.parametrize(
    "ids",
    [("t1", "t2", "t1"), ("7", 7)],  # a JSON 7 is the id "7"
    ids=["same-string", "string-and-number"],
)
def test_duplicate_candidate_ids_are_400(api, seeded, route, ids):
    body = score_body(ids=("a",) * len(ids))
    for candidate, tip in zip(body["candidates"], ids, strict=True):
        candidate["id"] = tip
    before = db_state()
    response = api.post(route, body, format="json")
    assert_error(response, 400, field="candidates", error="duplicate")
    assert db_state() == before


# --- rewards against a decision -----------------------------------------------


@pytest.mark.parametrize("route", ["/reward", "/reward/egreedy"])
def test_tip_not_a_candidate_of_the_decision_is_400(api, seeded, route):
    before = db_state()
    body = reward_body(tip_id="t9", decision_id=seeded["decision_id"])
    response = api.post(route, body, format="json")
    assert_error(response, 400, field="tip_id")
    assert db_state() == before


def test_decision_of_another_user_is_400(api, seeded):
    before = db_state()
    body = reward_body(
        user_id="u2", tip_id=seeded["tip_id"], decision_id=seeded["decision_id"]
    )
    response = api.post("/reward", body, format="json")
    body = assert_error(response, 400)
    assert body["field"] in ("user_id", "decision_id"), body
    assert db_state() == before


@pytest.mark.parametrize("route", ["/reward", "/reward/egreedy/v2"])
def test_unknown_decision_is_404(api, seeded, route):
    before = db_state()
    body = reward_body(decision_id="00000000-0000-7000-8000-000000000000")
    response = api.post(route, body, format="json")
    assert_error(response, 404, field="decision_id", error="not_found")
    assert db_state() == before


@pytest.mark.parametrize("route", ["/policies/egreedy-v2/reward", "/reward/egreedy/v2"])
def test_decision_of_another_policy_is_400_on_a_named_route(api, seeded, route):
    # seeded's decision was made by the active egreedy-v1
    before = db_state()
    body = reward_body(tip_id=seeded["tip_id"], decision_id=seeded["decision_id"])
    response = api.post(route, body, format="json")
    assert_error(response, 400, field="decision_id")
    assert db_state() == before


# --- whole bodies -------------------------------------------------------------

MALFORMED = [
    (b"{", "unclosed"),
    (b'{"user_id": "u1",}', "trailing-comma"),
    (b"{'user_id': 'u1'}", "single-quotes"),
    (b'{"user_id": "u1"} {}', "two-documents"),
    (b'{"user_id": "\xff\xfe"}', "invalid-utf8"),
    (b"\xef\xbb\xbf{}", "utf8-bom"),
    (b"user_id=u1", "form-encoded"),
]


@pytest.mark.parametrize("route", ["/score", "/reward"])
@pytest.mark.parametrize(
    "data", [m[0] for m in MALFORMED], ids=[m[1] for m in MALFORMED]
)
def test_malformed_json_is_400(api, seeded, route, data):
    before = db_state()
    response = api.post(route, data=data, content_type=JSON)
    assert_error(response, 400, field=None, error="invalid_json")
    assert db_state() == before


NOT_OBJECTS = [
    (b"[]", "empty-array"),
    (json.dumps([score_body()]).encode(), "array-of-body"),
    (b'"u1"', "string"),
    (b"42", "number"),
    (b"true", "bool"),
    (b"null", "null"),
]


@pytest.mark.parametrize("route", ["/score", "/reward"])
@pytest.mark.parametrize(
    "data", [n[0] for n in NOT_OBJECTS], ids=[n[1] for n in NOT_OBJECTS]
)
def test_json_that_is_not_an_object_is_400(api, seeded, route, data):
    before = db_state()
    response = api.post(route, data=data, content_type=JSON)
    assert_error(response, 400, field=None)
    assert db_state() == before


@pytest.mark.parametrize(
    ("route", "kind", "missing"),
    [
        ("/score", "score", "user_id"),
        ("/score", "score", "candidates"),
        ("/reward", "reward", "user_id"),
        ("/reward", "reward", "tip_id"),
        ("/reward", "reward", "reward"),
    ],
    ids=["score-user_id", "score-candidates", "user_id", "tip_id", "reward"],
)
def test_missing_required_field_is_400(api, seeded, route, kind, missing):
    before = db_state()
    response = api.post(route, drop(BODIES[kind](), missing), format="json")
    assert_error(response, 400, field=missing, error="required")
    assert db_state() == before


def padded(body: dict, size: int) -> bytes:
    """``body`` as JSON of exactly ``size`` bytes, padded by an unknown field."""
    base = json.dumps({**body, "pad": ""}).encode()
    return json.dumps({**body, "pad": "x" * (size - len(base))}).encode()


@pytest.mark.parametrize("kind", ["score", "reward"])
def test_body_over_64_kib_is_413(api, seeded, settings, kind):
    data = padded(BODIES[kind](), settings.MAX_BODY_BYTES + 1)
    assert len(data) == 64 * 1024 + 1
    before = db_state()
    response = api.post(f"/{kind}", data=data, content_type=JSON)
    assert_error(response, 413, field=None, error="body_too_large")
    assert db_state() == before


@pytest.mark.parametrize("kind", ["score", "reward"])
def test_body_of_exactly_64_kib_is_served(api, settings, kind):
    data = padded(BODIES[kind](), settings.MAX_BODY_BYTES)
    response = api.post(f"/{kind}", data=data, content_type=JSON)
    assert response.status_code == 200, response.content


def test_unknown_fields_are_ignored(api):
    body = score_body()
    body["extra"] = {"nested": [1, 2]}
    body["context"]["timezone"] = "UTC"
    body["profile_features"]["streak_days"] = 4
    body["candidates"][0]["colour"] = "red"
    body["candidates"][0]["features"]["effort"] = "high"
    response = api.post("/score", body, format="json")
    assert response.status_code == 200, response.content
    decision = response.json()

    body = reward_body(
        tip_id=decision["tip_id"], decision_id=decision["decision_id"], mood="happy"
    )
    body["features"]["effort"] = 3
    response = api.post("/reward", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["applied"] is True


# --- auth ---------------------------------------------------------------------

PROTECTED = [
    ("post", "/score"),
    ("post", "/reward"),
    ("post", "/policies/egreedy-v1/score"),
    ("post", "/policies/egreedy-v1/reward"),
    ("get", "/policies/egreedy-v1/stats/u1"),
    ("get", "/features/u1"),
    ("post", "/reset/u1"),
    ("post", "/score/egreedy"),
    ("post", "/reward/egreedy"),
    ("post", "/score/egreedy/v2"),
    ("post", "/reward/egreedy/v2"),
    ("get", "/stats/u1"),
    ("get", "/stats/egreedy/u1"),
    ("get", "/stats/egreedy/v2/u1"),
]


def call(client, method: str, url: str):
    if method == "get":
        return client.get(url)
    # a valid body, so only the missing credentials can be refused
    body = reward_body() if "reward" in url else score_body()
    return client.post(url, body, format="json")


@pytest.mark.parametrize(("method", "url"), PROTECTED, ids=[u for _, u in PROTECTED])
def test_no_token_is_401(anon, seeded, method, url):
    before = db_state()
    response = call(anon, method, url)
    assert_error(response, 401, field=None, error="not_authenticated")
    assert db_state() == before


@pytest.mark.parametrize(
    "header",
    ["Token not-a-real-token", "Token", "Token two words", "Bearer {token}"],
    ids=["unknown-token", "no-key", "key-with-space", "bearer-scheme"],
)
@pytest.mark.parametrize(
    ("method", "url"), PROTECTED[:3], ids=["score", "reward", "named-score"]
)
def test_wrong_token_is_401(seeded, service_token, header, method, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header.format(token=service_token))
    before = db_state()
    response = call(client, method, url)
    assert_error(response, 401, field=None)
    assert db_state() == before


def test_health_needs_no_token(anon):
    response = anon.get("/health")
    assert response.status_code == 200, response.content
    assert response.json()["database"] is True


def test_service_token_cannot_reset(api, seeded):
    before = db_state()
    response = api.post("/reset/u1")
    assert_error(response, 403, field=None, error="permission_denied")
    assert db_state() == before


def test_staff_session_can_reset(staff_api, seeded):
    response = staff_api.post("/reset/u1")
    assert response.status_code == 200, response.content
    assert response.json()["decisions_deleted"] >= 1
    assert not Decision.objects.filter(user_id="u1").exists()
    assert not BanditState.objects.filter(user_id="u1").exists()


def test_staff_reset_of_unknown_user_is_404(staff_api, seeded):
    before = db_state()
    response = staff_api.post("/reset/ghost")
    assert_error(response, 404, field="user_id", error="not_found")
    assert db_state() == before


# --- unknown policies and users -----------------------------------------------

UNKNOWN_POLICY = [
    ("post", "/policies/{name}/score"),
    ("post", "/policies/{name}/reward"),
    ("get", "/policies/{name}/stats/u1"),
]


@pytest.mark.parametrize("name", ["nope", "no.such"], ids=["slug", "not-a-slug"])
@pytest.mark.parametrize(
    ("method", "url"), UNKNOWN_POLICY, ids=["score", "reward", "stats"]
)
def test_unknown_policy_is_404(api, seeded, name, method, url):
    before = db_state()
    response = call(api, method, url.format(name=name))
    assert_error(response, 404)
    assert db_state() == before


@pytest.mark.parametrize(
    "url",
    [
        "/stats/ghost",
        "/stats/egreedy/ghost",
        "/stats/egreedy/v2/ghost",
        "/policies/egreedy-v1/stats/ghost",
        "/features/ghost",
    ],
)
def test_unknown_user_is_404(api, seeded, url):
    assert_error(api.get(url), 404, field="user_id", error="not_found")


# --- idempotency --------------------------------------------------------------


@pytest.mark.parametrize("route", ["/reward", "/reward/egreedy"])
@pytest.mark.parametrize("with_decision", [False, True], ids=["rebuilt", "decision"])
def test_replayed_event_changes_nothing(api, route, with_decision):
    body = reward_body(event_id="evt-1")
    if with_decision:
        decision = decide(api)
        body.update(tip_id=decision["tip_id"], decision_id=decision["decision_id"])
    first = api.post(route, body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["applied"] is True and first.json()["replayed"] is False
    before = db_state()

    again = api.post(route, body, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["replayed"] is True
    assert again.json()["applied"] is False
    assert again.json()["reward_count"] == first.json()["reward_count"]
    assert db_state() == before


CONFLICTS = [
    ({"reward": 0.5}, "reward"),
    ({"tip_id": "t2"}, "tip_id"),
    ({"user_id": "u2"}, "user_id"),
    # the rebuilt vector differs, so the learning would differ
    ({"features": features(priority=4)}, "features"),
]


@pytest.mark.parametrize(
    "change", [c[0] for c in CONFLICTS], ids=[c[1] for c in CONFLICTS]
)
def test_same_event_with_other_content_is_409(api, change):
    first = api.post("/reward", reward_body(event_id="evt-1"), format="json")
    assert first.status_code == 200, first.content
    before = db_state()

    response = api.post(
        "/reward", reward_body(event_id="evt-1", **change), format="json"
    )
    assert_error(response, 409, error="conflict")
    assert db_state() == before


def test_same_event_for_another_decision_is_409(api):
    one, two = decide(api, ids=("t1",)), decide(api, ids=("t1",))
    body = reward_body(event_id="evt-1", decision_id=one["decision_id"])
    assert api.post("/reward", body, format="json").status_code == 200
    before = db_state()

    body["decision_id"] = two["decision_id"]
    response = api.post("/reward", body, format="json")
    assert_error(response, 409, field="event_id", error="conflict")
    assert db_state() == before


# --- nothing answers 500 ------------------------------------------------------

SCORE_JSON = json.dumps(score_body())
REWARD_JSON = json.dumps(reward_body())


def score_with(path: str, value) -> bytes:
    return json.dumps(put(score_body(), path, value)).encode()


def reward_with(path: str, value) -> bytes:
    return json.dumps(put(reward_body(), path, value)).encode()


HOSTILE = [
    # integers too large for a float: float(10**400) raises OverflowError
    (raw(reward_body(), "reward", "1" + "0" * 400), "huge-int-reward"),
    (
        raw(score_body(), "candidates[0].features.priority", "1" + "0" * 400),
        "huge-int-priority",
    ),
    (
        raw(score_body(), "profile_features.tip_volume_30d", "-1" + "0" * 400),
        "huge-negative-int-volume",
    ),
    (raw(reward_body(), "reward", "1" + "0" * 5000), "int-over-4300-digits"),
    # nesting deep enough to exhaust the JSON decoder's recursion, well under 64 KiB
    (b"[" * 5000 + b"]" * 5000, "deep-array"),
    (b'{"user_id":' + b"[" * 5000 + b"]" * 5000 + b"}", "deep-field"),
    (raw(score_body(), "context.hour_of_day", "NaN"), "nan"),
    (raw(reward_body(), "reward", "1e-400"), "underflow"),
    (raw(reward_body(), "reward", "-0.0"), "negative-zero"),
    (REWARD_JSON.replace('"u1"', '"\\ud800"').encode(), "lone-surrogate-user"),
    (SCORE_JSON.replace('"t1"', '"\\udfff"').encode(), "lone-surrogate-candidate"),
    (REWARD_JSON.replace('"u1"', '"u\\u0000"').encode(), "nul-in-user"),
    (SCORE_JSON.replace('"t2"', '"t\\u0000"').encode(), "nul-in-candidate"),
    (score_with("user_id", "u" * 60_000), "long-user"),
    (b"", "empty"),
    (b"   \n", "whitespace"),
    (b"\xff\xfe\x00{", "binary"),
    (b'{"reward": 1, "reward": "x", "user_id": "u1", "tip_id": "t1"}', "dup-keys"),
    (score_with("candidates", [None, 1]), "candidates-junk"),
    (score_with("candidates[0].features", "x"), "features-string"),
    (score_with("context", "noon"), "context-string"),
    (score_with("profile_features", []), "profile-list"),
    (score_with("candidates[0].features.task_age_days", 1e308), "age-1e308"),
    (score_with("profile_features.tip_volume_30d", 10**300), "volume-10e300"),
    (reward_with("decision_id", {"a": 1}), "decision-object"),
    # DRF reads a JSON integer as UUID(int=...): out of range must still be a 400
    (reward_with("decision_id", -1), "decision-negative-int"),
    (reward_with("decision_id", 2**128), "decision-huge-int"),
    (reward_with("decision_id", "ffffffff-ffff-ffff-ffff-ffff"), "short-uuid"),
    (reward_with("reward", {"value": 1}), "reward-object"),
    (reward_with("features", None), "features-null"),
]


@pytest.mark.parametrize("data", [h[0] for h in HOSTILE], ids=[h[1] for h in HOSTILE])
def test_hostile_body_never_answers_500(lenient_api, data):
    # every POST route gets every body: a score body on /reward must fail cleanly too
    failed = {}
    for route in SCORE_ROUTES + REWARD_ROUTES:
        response = lenient_api.post(route, data=data, content_type=JSON)
        if response.status_code >= 500:
            failed[route] = response.status_code
    assert not failed, f"500 from {failed}"
