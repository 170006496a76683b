"""/score feeds stored profile features to the D=12 policy, and only to it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policies.models import Decision, Policy
from profiles.models import Profile
from profiles.services import events_record_bulk

pytestmark = pytest.mark.django_db

CANDIDATES = [{"id": "t1"}, {"id": "t2"}]
STORED = {
    "completion_rate_30d": 0.5,
    "dismiss_rate_30d": 0.25,
    "mean_dwell_ms_30d": 60_000.0,
    "preferred_hour": 9,
    "tip_volume_30d": 4,
}


@pytest.fixture
def history():
    """u1: 4 served, 2 done (60 s each) at hour 9 plus one at 9 without dwell,
    1 dismissed: the STORED values."""
    events = [{"kind": "served"}] * 4 + [
        {"kind": "done", "dwell_ms": 60_000, "hour_of_day": 9},
        {"kind": "done", "dwell_ms": 60_000, "hour_of_day": 9},
        {"kind": "dismissed"},
    ]
    events_record_bulk([{"user_id": "u1", "tip_id": "t1", **e} for e in events])


def score(api, url="/score", **extra) -> Decision:
    body = {"user_id": "u1", "candidates": CANDIDATES, **extra}
    response = api.post(url, body, format="json")
    assert response.status_code == 200, response.json()
    return Decision.objects.get(id=response.json()["decision_id"])


def test_the_named_d12_route_logs_and_encodes_the_stored_values(api, history):
    decision = score(api, "/policies/egreedy-v2/score")

    assert decision.policy.name == "egreedy-v2"
    expected = STORED | {"preferred_hour": None}  # 2 done events: under three
    assert decision.profile == expected
    assert decision.features[0][7:9] == [0.5, 0.25]
    assert decision.features[0][9] == pytest.approx(0.1)  # 60 s / 10 min
    assert Profile.objects.get(user_id="u1").features == expected


def test_caller_sent_values_win_name_by_name_and_the_rest_come_stored(api, history):
    sent = {"completion_rate_30d": 0.9, "mean_dwell_ms_30d": None}
    decision = score(api, "/policies/egreedy-v2/score", profile_features=sent)

    assert decision.profile == {
        "completion_rate_30d": 0.9,
        "dismiss_rate_30d": 0.25,
        "mean_dwell_ms_30d": None,  # sent as null: the caller's word
        "preferred_hour": None,
        "tip_volume_30d": 4,
    }
    assert decision.features[0][7] == 0.9


def test_all_five_sent_means_the_stored_profile_is_not_read(api, history):
    sent = dict.fromkeys(STORED, 0.0) | {"preferred_hour": 3, "tip_volume_30d": 1}
    decision = score(api, "/policies/egreedy-v2/score", profile_features=sent)
    assert decision.profile == sent
    assert not Profile.objects.exists()


def test_an_enabled_d12_shadow_gets_the_stored_values(api, history):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    active = score(api)
    shadow = Decision.objects.get(role="shadow")
    assert active.policy.name == "egreedy-v1"
    assert shadow.profile["tip_volume_30d"] == 4
    assert shadow.features[0][11] > 0


def test_a_request_no_d12_policy_scores_or_learns_from_reads_no_profile(api, history):
    Policy.objects.filter(dimension=12).update(learns_live=False)
    decision = score(api)
    assert decision.policy.dimension == 7
    assert decision.profile == dict.fromkeys(STORED)
    assert not Profile.objects.exists()


def test_a_learning_d12_shadow_has_the_decision_log_the_stored_profile(api, history):
    # egreedy-v2 does not score, but learns from the active policy's rewards:
    # the decision logs the profile it will encode the rewarded candidate in.
    decision = score(api)
    assert decision.policy.dimension == 7
    assert decision.profile["tip_volume_30d"] == 4
    assert Decision.objects.count() == 1


def test_a_stale_profile_is_refreshed_before_it_is_used(api, history):
    Profile.objects.create(
        user_id="u1",
        tip_volume_30d=99,
        computed_at=timezone.now() - dt.timedelta(minutes=16),
    )
    decision = score(api, "/policies/egreedy-v2/score")
    assert decision.profile["tip_volume_30d"] == 4
    assert Profile.objects.get().tip_volume_30d == 4


def test_a_fresh_profile_is_used_as_stored(api, history):
    Profile.objects.create(user_id="u1", tip_volume_30d=99, computed_at=timezone.now())
    decision = score(api, "/policies/egreedy-v2/score")
    assert decision.profile["tip_volume_30d"] == 99


def test_a_user_without_events_scores_with_an_empty_profile(api):
    decision = score(api, "/policies/egreedy-v2/score")
    assert decision.profile == dict.fromkeys(STORED) | {"tip_volume_30d": 0}


def test_a_fresh_stored_profile_is_read_with_the_states(api, history):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    score(api)  # warms the token cache, computes and stores the profile
    body = {"user_id": "u1", "candidates": CANDIDATES}
    with CaptureQueriesContext(connection) as queries:
        assert api.post("/score", body, format="json").status_code == 200
    # The test's own transaction puts the read under a savepoint: not counted.
    sql = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(sql) == 2, sql
    assert "profiles_profile" in sql[0] and "policies_banditstate" in sql[0]


@pytest.mark.django_db(transaction=True)
def test_a_failing_profile_read_does_not_fail_the_active_answer(
    registry, api, history, caplog
):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    table = Profile._meta.db_table
    with connection.cursor() as cursor:  # the profiles table goes away for a moment
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            active = score(api)
        finally:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")

    assert active.policy.name == "egreedy-v1"
    shadow = Decision.objects.get(role="shadow")
    assert set(shadow.profile.values()) == {None}  # neutral values, logged as such
    assert "stored profile of u1 unavailable" in caplog.text
