"""POST /events end to end: rewards inferred and applied, replays, bad input."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.utils import timezone

from policies.models import BanditState, Decision, Reward
from profiles.models import Event, Profile

pytestmark = pytest.mark.django_db

CANDIDATES = [{"id": "t1"}, {"id": "t2"}, {"id": "t3"}]


def decide(api, user_id: str = "u1") -> str:
    response = api.post(
        "/score", {"user_id": user_id, "candidates": CANDIDATES}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()["decision_id"]


def post_event(api, **body):
    return api.post("/events", {"user_id": "u1", "tip_id": "t1", **body}, format="json")


def ok(api, **body) -> dict:
    response = post_event(api, **body)
    assert response.status_code == 200, response.json()
    return response.json()


def written() -> tuple[int, int, int]:
    return Event.objects.count(), Reward.objects.count(), BanditState.objects.count()


def test_the_done_when_scenario(api):
    decisions = [decide(api) for _ in range(10)]
    bodies = [
        {"kind": "served", "decision_id": d, "event_id": f"served-{i}"}
        for i, d in enumerate(decisions)
    ]
    reactions = [
        ("done", 60_000),
        ("done", 60_000),
        ("done", 300_000),
        ("done", 5_000),
        ("dismissed", None),
        ("dismissed", None),
        ("snoozed", None),
    ]
    for i, (kind, dwell) in enumerate(reactions):
        body = {"kind": kind, "decision_id": decisions[i], "event_id": f"r-{i}"}
        if kind == "done":
            body |= {"dwell_ms": dwell, "hour_of_day": 20}
        bodies.append(body)

    answers = [ok(api, **body) for body in bodies]

    assert [a["reward"] for a in answers[10:]] == [1.0, 1.0, 0.6, -0.3, -1.0, -1.0, 0.1]
    assert {a["trained"] for a in answers[10:]} == {"egreedy-v1"}
    assert all(a["trained"] is None and a["reward"] is None for a in answers[:10])
    state = BanditState.objects.get(policy__name="egreedy-v1", user_id="u1")
    assert state.reward_count == 7
    assert state.cumulative_reward == pytest.approx(0.4)
    assert Reward.objects.filter(policy__name="egreedy-v1").count() == 7

    profile = api.get("/profiles/u1").json()
    assert profile["user_id"] == "u1"
    assert profile["features"] == {
        "completion_rate_30d": 0.4,
        "dismiss_rate_30d": 0.2,
        "mean_dwell_ms_30d": 106_250.0,
        "preferred_hour": 20,
        "tip_volume_30d": 10,
    }

    # Replaying every event changes nothing and says so.
    before = written(), state.a_bytes, state.b_bytes
    replays = [ok(api, **body) for body in bodies]
    assert all(r["replayed"] and r["stored"] for r in replays)
    assert [r["id"] for r in replays] == [a["id"] for a in answers]
    assert [r["reward"] for r in replays] == [a["reward"] for a in answers]
    assert [r["trained"] for r in replays] == [a["trained"] for a in answers]
    state.refresh_from_db()
    assert (written(), state.a_bytes, state.b_bytes) == before
    assert state.reward_count == 7


def test_a_reward_trains_the_deciding_policy_on_the_vector_it_logged(api):
    from policies.models import Policy

    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    decide(api)
    shadow = Decision.objects.get(role="shadow")

    answer = ok(api, tip_id="t2", kind="done", decision_id=str(shadow.id))

    assert answer["trained"] == "egreedy-v2" and answer["reward"] == 1.0
    # The active policy learns too, and hybrid-v1 (a shadow learning live).
    assert answer["learned_by"] == ["egreedy-v1", "hybrid-v1"]
    reward = Reward.objects.get(learned=False)
    assert reward.features == shadow.features[1]
    learned = Reward.objects.get(learned=True, policy__name="egreedy-v1")
    assert learned.features == shadow.features[1][:7] and learned.event_id is None
    assert reward.decision_id == shadow.id
    assert reward.event_id == f"event:{answer['id']}"
    assert Event.objects.get().decision_id == shadow.id


def test_an_event_without_a_decision_is_stored_counts_and_trains_nothing(api):
    answer = ok(api, kind="done", dwell_ms=30_000)

    assert answer["stored"] and not answer["replayed"]
    assert answer["trained"] is None and answer["reward"] is None
    assert "no decision" in answer["reason"].lower()
    assert answer["event_id"] is None
    assert Reward.objects.count() == 0 and BanditState.objects.count() == 0
    assert api.get("/profiles/u1").json()["features"]["mean_dwell_ms_30d"] == 30_000


def test_a_kind_without_a_reward_says_so(api):
    decision = decide(api)
    answer = ok(api, kind="viewed", decision_id=decision, dwell_ms=1_000)
    assert answer["reward"] is None and answer["trained"] is None
    assert answer["reason"] == "A viewed event carries no reward."
    assert Reward.objects.count() == 0
    assert Event.objects.get().decision_id == uuid.UUID(decision)


def test_events_without_event_id_are_each_stored(api):
    decision = decide(api)
    first, second = (ok(api, kind="snoozed", decision_id=decision) for _ in range(2))
    assert Event.objects.count() == 2
    # One reward per decision: the second event is stored, and trains nothing.
    assert first["trained"] == "egreedy-v1" and second["trained"] is None
    assert second["reward"] is None and "already rewarded" in second["reason"]
    state = BanditState.objects.get(user_id="u1", policy__name="egreedy-v1")
    assert state.reward_count == 1


def test_an_event_id_reused_with_other_content_is_a_conflict(api):
    decision = decide(api)
    ok(api, kind="done", dwell_ms=20_000, decision_id=decision, event_id="e1")
    before = written()

    for change in (
        {"dwell_ms": 20_001},
        {"kind": "dismissed"},
        {"tip_id": "t2"},
        {"hour_of_day": 3},
        {"user_id": "u2"},
    ):
        body = {"kind": "done", "dwell_ms": 20_000, "decision_id": decision}
        response = post_event(api, event_id="e1", **(body | change))
        assert response.status_code == 409, change
        assert response.json()["field"] == "event_id"
    assert written() == before


def test_a_replay_that_leaves_occurred_at_out_again_is_a_replay(api):
    first = ok(api, kind="served", event_id="e1")
    again = ok(api, kind="served", event_id="e1")
    assert again["replayed"] and again["id"] == first["id"]
    assert Event.objects.count() == 1


def test_hour_of_day_defaults_to_the_hour_occurred_at_was_written_in(api):
    at = (timezone.now() - dt.timedelta(days=1)).replace(microsecond=0)
    local = at.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    ok(api, kind="served", occurred_at=local.isoformat(), event_id="a")
    ok(api, kind="served", occurred_at=at.replace(tzinfo=None).isoformat())
    ok(api, kind="served", occurred_at=local.isoformat(), hour_of_day=7)

    first, naive, given = Event.objects.order_by("created_at")
    assert first.occurred_at == at and first.hour_of_day == local.hour
    assert naive.occurred_at == at and naive.hour_of_day == at.hour  # UTC
    assert given.hour_of_day == 7


def test_occurred_at_defaults_to_now(api):
    before = timezone.now()
    ok(api, kind="served")
    event = Event.objects.get()
    assert before <= event.occurred_at <= timezone.now()
    assert event.hour_of_day == event.occurred_at.hour


# --- bad input ------------------------------------------------------------------

FUTURE = (timezone.now() + dt.timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "clicked"}, "kind"),
        ({"kind": None}, "kind"),
        ({"kind": 3}, "kind"),
        ({"kind": "done", "dwell_ms": -1}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": "60000"}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": "nan"}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": 1.5}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": True}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": "__1e999__"}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": "__NaN__"}, "dwell_ms"),
        ({"kind": "done", "dwell_ms": 30 * 86_400_000 + 1}, "dwell_ms"),
        ({"kind": "done", "user_id": None}, "user_id"),
        ({"kind": "done", "user_id": ""}, "user_id"),
        ({"kind": "done", "user_id": "x" * 129}, "user_id"),
        ({"kind": "done", "tip_id": {"id": 1}}, "tip_id"),
        ({"kind": "done", "hour_of_day": 24}, "hour_of_day"),
        ({"kind": "done", "hour_of_day": -1}, "hour_of_day"),
        ({"kind": "done", "decision_id": "not-a-uuid"}, "decision_id"),
        ({"kind": "done", "decision_id": 12}, "decision_id"),
        ({"kind": "done", "event_id": ["e"]}, "event_id"),
        ({"kind": "done", "occurred_at": "yesterday"}, "occurred_at"),
        ({"kind": "done", "occurred_at": 1732450000}, "occurred_at"),
        ({"kind": "done", "occurred_at": FUTURE}, "occurred_at"),
        ({"kind": "done", "occurred_at": "0001-01-01T00:00:00+01:00"}, "occurred_at"),
    ],
)
def test_bad_input_answers_400_naming_the_field_and_writes_nothing(api, body, field):
    decide(api)
    before = written()
    # Literals JSON encoders refuse to write go in as raw text.
    raw = json.dumps({"user_id": "u1", "tip_id": "t1", **body})
    raw = raw.replace('"__1e999__"', "1e999").replace('"__NaN__"', "NaN")
    response = api.generic("POST", "/events", raw, content_type="application/json")
    assert response.status_code == 400, response.json()
    assert response.json()["field"] == field
    assert set(response.json()) == {"error", "detail", "field"}
    assert written() == before


@pytest.mark.parametrize("missing", ["user_id", "tip_id", "kind"])
def test_a_missing_required_field_is_named(api, missing):
    body = {"user_id": "u1", "tip_id": "t1", "kind": "done"}
    del body[missing]
    response = api.post("/events", body, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == missing
    assert Event.objects.count() == 0


@pytest.mark.parametrize("kind", ["done", "served"])
def test_a_tip_that_the_decision_did_not_offer_is_refused(api, kind):
    decision = decide(api)
    before = written()
    response = post_event(api, kind=kind, tip_id="t9", decision_id=decision)
    assert response.status_code == 400
    assert response.json()["field"] == "tip_id"
    assert written() == before


@pytest.mark.parametrize("kind", ["dismissed", "viewed"])
def test_a_decision_made_for_another_user_is_refused(api, kind):
    decision = decide(api, user_id="someone-else")
    before = written()
    response = post_event(api, kind=kind, decision_id=decision)
    assert response.status_code == 400
    assert response.json()["field"] == "user_id"
    assert written() == before


@pytest.mark.parametrize("kind", ["done", "served"])
def test_an_unknown_decision_is_404_and_writes_nothing(api, kind):
    response = post_event(api, kind=kind, decision_id=str(uuid.uuid4()), event_id="e")
    assert response.status_code == 404
    assert response.json()["field"] == "decision_id"
    assert written() == (0, 0, 0)


def test_no_token_is_401_and_writes_nothing(anon):
    response = anon.post(
        "/events", {"user_id": "u1", "tip_id": "t", "kind": "served"}, format="json"
    )
    assert response.status_code == 401
    assert set(response.json()) == {"error", "detail", "field"}
    assert Event.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.generic(
        "POST", "/events", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


# --- GET /profiles/<user_id> ------------------------------------------------------


def test_a_user_never_seen_has_no_profile(api):
    response = api.get("/profiles/nobody")
    assert response.status_code == 404
    assert response.json()["field"] == "user_id"
    assert Profile.objects.count() == 0


def test_profiles_need_a_token(anon):
    assert anon.get("/profiles/u1").status_code == 401


def test_a_profile_keeps_up_with_events_and_the_ttl_lets_old_ones_go(api):
    ok(api, kind="served")
    first = api.get("/profiles/u1").json()
    assert first["features"]["tip_volume_30d"] == 1

    ok(api, kind="served")
    now = api.get("/profiles/u1").json()
    assert now["features"]["tip_volume_30d"] == 2  # the moment /events answered
    # Added to the stored counts, not recounted: computed_at is the last recount.
    assert now["computed_at"] == first["computed_at"]
    assert api.get("/profiles/u1").json() == now  # a read alone recomputes nothing

    # Within the TTL the stored values stand, even as events leave the window...
    month_ago = timezone.now() - dt.timedelta(days=31)
    Event.objects.update(occurred_at=month_ago)
    assert api.get("/profiles/u1").json() == now
    # ...and once the TTL has passed, the next read counts them out.
    Profile.objects.update(computed_at=timezone.now() - dt.timedelta(minutes=16))
    assert api.get("/profiles/u1").json()["features"]["tip_volume_30d"] == 0


def test_a_user_with_events_only_outside_the_window_reads_as_empty(api):
    ok(api, kind="served", occurred_at="2020-01-01T00:00:00Z")
    answer = api.get("/profiles/u1").json()
    assert answer["features"]["tip_volume_30d"] == 0
    assert answer["features"]["completion_rate_30d"] is None


def test_the_schema_documents_events_and_profiles(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    events = schema["paths"]["/events"]["post"]
    profiles = schema["paths"]["/profiles/{user_id}"]["get"]
    assert "404" in profiles["responses"] and "200" in events["responses"]
    features = schema["components"]["schemas"]["ProfileFeatures"]["properties"]
    assert set(features) == {
        "completion_rate_30d",
        "dismiss_rate_30d",
        "mean_dwell_ms_30d",
        "preferred_hour",
        "tip_volume_30d",
    }
    assert "ties to the earliest" in features["preferred_hour"]["description"]
