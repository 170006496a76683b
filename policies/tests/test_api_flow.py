"""The decision API end to end: score, reward, stats, history, reset, old routes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from oo_ml.auth import token_cache_clear
from policies import bandits
from policies.models import BanditState, Decision, Policy, Reward
from profiles.models import Profile

CANDIDATES = [
    {
        "id": "write-report",
        "content": "Write report",
        "source": "todo",
        "features": {"priority": 4, "is_overdue": True, "task_age_days": 3},
    },
    {"id": "water-plants", "content": "Water plants", "source": "todo"},
    {
        "id": "call-mum",
        "content": "Call mum",
        "source": "calendar",
        "source_id": "c1",
        "features": {"hour_of_day": 18, "priority": 2},
    },
]


def score(client, url="/score", user_id="u1", **extra):
    body = {
        "user_id": user_id,
        "candidates": CANDIDATES,
        "context": {"hour_of_day": 9, "day_of_week": 2},
        **extra,
    }
    response = client.post(url, body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def reward(client, url="/reward", **body):
    response = client.post(url, {"user_id": "u1", **body}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def enable(name: str, on: bool = True) -> None:
    Policy.objects.filter(name=name).update(enabled=on)


@pytest.mark.django_db
def test_score_answers_the_active_pick_and_logs_what_it_saw(api):
    answer = score(api)

    assert set(answer) == {
        "tip_id",
        "score",
        "policy",
        "decision_id",
        "propensity",
        "exploring",
    }
    assert answer["policy"] == "egreedy-v1"
    decision = Decision.objects.get(id=answer["decision_id"])
    assert decision.role == "active"
    assert decision.tip_id == answer["tip_id"]
    assert [c["id"] for c in decision.candidates] == [c["id"] for c in CANDIDATES]
    assert decision.context == {"hour_of_day": 9, "day_of_week": 2}
    assert len(decision.features) == 3 and len(decision.features[0]) == 7
    # Every candidate is encoded at the context hour, whatever its own hour says.
    assert decision.features[2][0] == pytest.approx(
        np.sin(2 * np.pi * 9 / 24), abs=1e-12
    )
    assert decision.profile["completion_rate_30d"] is None


@pytest.mark.django_db
def test_a_fresh_user_gets_the_first_candidate_greedily_or_an_exploration(api):
    answers = [score(api, user_id=f"new-{i}") for i in range(60)]
    greedy = [a for a in answers if not a["exploring"]]
    # theta = 0 ties every candidate: the first one in request order wins.
    assert {a["tip_id"] for a in greedy} == {"write-report"}
    assert all(a["propensity"] == pytest.approx(0.9 + 0.1 / 3) for a in greedy)


@pytest.mark.django_db
def test_score_answers_a_propensity_as_a_person_writes_it(api):
    # The README's two candidates, epsilon 0.1: 0.9 + 0.1 / 2 is 0.95, and in
    # binary arithmetic 0.9500000000000001 unless the propensity is rounded.
    body = {"candidates": CANDIDATES[:2], "context": {"hour_of_day": 9}}
    texts = set()
    for i in range(40):
        response = api.post("/score", {"user_id": f"p-{i}", **body}, format="json")
        texts.add(re.search(rb'"propensity":([^,}]+)', response.content)[1])
    assert texts <= {b"0.95", b"0.05"} and b"0.95" in texts, texts
    logged = Decision.objects.values_list("propensity", flat=True)
    assert set(logged) <= {0.95, 0.05}


@pytest.mark.django_db
def test_score_with_no_shadow_on_writes_one_decision(api):
    score(api)
    assert Decision.objects.count() == 1


@pytest.mark.django_db
def test_an_enabled_shadow_scores_the_same_request_but_is_never_returned(api):
    enable("egreedy-v2")
    answer = score(api, profile_features={"completion_rate_30d": 0.5})

    active = Decision.objects.get(id=answer["decision_id"])
    shadow = Decision.objects.get(role="shadow")
    assert answer["policy"] == "egreedy-v1"
    assert shadow.policy.name == "egreedy-v2"
    assert shadow.request_id == active.request_id
    assert len(shadow.features[0]) == 12
    assert shadow.features[0][7] == 0.5
    # The shadow sees exactly the active's first seven features.
    assert [row[:7] for row in shadow.features] == active.features
    history = api.get("/features/u1").json()["history"]
    assert {(h["policy"], h["role"]) for h in history} == {
        ("egreedy-v1", "active"),
        ("egreedy-v2", "shadow"),
    }

    enable("egreedy-v2", on=False)
    score(api)
    assert Decision.objects.filter(role="shadow").count() == 1


@pytest.mark.django_db
def test_a_failing_shadow_does_not_fail_score(api, caplog):
    enable("egreedy-v2")
    # A broken parameter makes the shadow raise inside the numeric core.
    Policy.objects.filter(name="egreedy-v2").update(params={"epsilon": "broken"})

    answer = score(api)

    assert answer["policy"] == "egreedy-v1"
    assert Decision.objects.count() == 1
    assert "egreedy-v2 failed to score" in caplog.text


@pytest.mark.django_db
def test_reward_with_a_decision_trains_the_deciding_policy_on_the_logged_vector(api):
    enable("egreedy-v2")
    score(api)
    shadow = Decision.objects.get(role="shadow")

    answer = reward(
        api,
        tip_id="call-mum",
        reward=1.0,
        decision_id=str(shadow.id),
        features={"hour_of_day": 3},
        day_of_week=6,
    )

    assert answer["policy"] == "egreedy-v2"
    assert answer["learned_by"] == ["egreedy-v1", "hybrid-v1"]
    state = BanditState.objects.select_related("policy").get(policy__name="egreedy-v2")
    x = np.array(shadow.features[2])  # call-mum, as encoded at decision time
    np.testing.assert_allclose(state.a, np.eye(12) + np.outer(x, x), atol=1e-12)
    np.testing.assert_allclose(state.b, x, atol=1e-12)
    # The active policy learns from the shadow's reward, on its own encoding of
    # call-mum in the context the decision logged (not the body's hour 3).
    active = BanditState.objects.select_related("policy").get(policy__name="egreedy-v1")
    np.testing.assert_allclose(active.b, x[:7], atol=1e-12)
    own = Reward.objects.get(learned=False)
    assert own.decision_id == shadow.id and own.policy.name == "egreedy-v2"
    assert {r.policy.name for r in Reward.objects.filter(learned=True)} == {
        "egreedy-v1",
        "hybrid-v1",
    }


@pytest.mark.django_db
def test_reward_without_a_decision_trains_the_active_policy(api):
    answer = reward(api, tip_id="t", reward=0.6, features={"priority": 3})
    assert answer["policy"] == "egreedy-v1"
    assert answer["applied"] is True and answer["replayed"] is False
    assert answer["reward_count"] == 1 and answer["cumulative_reward"] == 0.6


@pytest.mark.django_db
def test_replaying_an_event_changes_nothing_and_says_so(api):
    first = reward(api, tip_id="t", reward=1.0, event_id="e-1")
    states_before = {s.policy_id: bytes(s.a_bytes) for s in BanditState.objects.all()}

    again = reward(api, tip_id="t", reward=1.0, event_id="e-1")

    assert first["applied"] and not again["applied"] and again["replayed"]
    # The replay says what the reward did the first time, learners included.
    assert first["learned_by"] == again["learned_by"] == ["egreedy-v2", "hybrid-v1"]
    states_after = {s.policy_id: bytes(s.a_bytes) for s in BanditState.objects.all()}
    assert states_after == states_before and len(states_after) == 3
    assert {s.reward_count for s in BanditState.objects.all()} == {1}
    assert Reward.objects.count() == 3


@pytest.mark.django_db
def test_only_a_reward_with_an_event_id_keeps_the_requests_digest(api):
    reward(api, tip_id="t", reward=1.0)
    reward(api, tip_id="t", reward=1.0, event_id="e-1")

    # Without an event id there is nothing to replay, and nothing kept to tell
    # a replay by; with one, each of its rows keeps the digest.
    assert set(
        Reward.objects.filter(event_id=None, learned=False).values_list(
            "fingerprint", flat=True
        )
    ) == {""}
    kept = Reward.objects.filter(
        created_at=Reward.objects.get(event_id="e-1").created_at
    )
    assert len({r.fingerprint for r in kept}) == 1 and len(kept) == 3
    assert len(kept[0].fingerprint) == 64
    # ... by which a reuse of the id for another reward is told from a replay.
    conflict = api.post(
        "/reward",
        {"user_id": "u1", "tip_id": "t", "reward": 0.5, "event_id": "e-1"},
        format="json",
    )
    assert conflict.status_code == 409


@pytest.mark.django_db
def test_stats_count_pulls_explorations_and_rewards(api):
    Policy.objects.filter(name="egreedy-v1").update(params={"epsilon": 1.0})
    for _ in range(4):
        score(api)
    reward(api, tip_id="t", reward=1.0)
    reward(api, tip_id="t", reward=-0.5)

    stats = api.get("/policies/egreedy-v1/stats/u1").json()

    assert stats["pulls"] == 4
    assert stats["exploration_rate"] == 1.0
    assert stats["reward_count"] == 2
    assert stats["cumulative_reward"] == 0.5
    assert stats["estimated_mean_reward"] == 0.25
    assert len(stats["theta"]) == 7
    assert stats["feature_labels"][:2] == ["hour_sin", "hour_cos"]
    assert stats["last_updated"] is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("score_url", "reward_url", "stats_url", "policy"),
    [
        ("/score/egreedy", "/reward/egreedy", "/stats/egreedy/u1", "egreedy-v1"),
        (
            "/score/egreedy/v2",
            "/reward/egreedy/v2",
            "/stats/egreedy/v2/u1",
            "egreedy-v2",
        ),
        (
            "/policies/linucb-v1/score",
            "/policies/linucb-v1/reward",
            "/stats/u1",
            "linucb-v1",
        ),
    ],
)
def test_old_service_routes_reach_their_policy_whatever_its_role(
    api, score_url, reward_url, stats_url, policy
):
    assert score(api, url=score_url)["policy"] == policy
    assert reward(api, url=reward_url, tip_id="t", reward=1.0)["policy"] == policy
    stats = api.get(stats_url).json()
    assert (stats["policy"], stats["pulls"], stats["reward_count"]) == (policy, 1, 1)


@pytest.mark.django_db
def test_named_reward_refuses_a_decision_made_by_another_policy(api):
    decision_id = score(api)["decision_id"]  # made by egreedy-v1
    response = api.post(
        "/policies/egreedy-v2/reward",
        {
            "user_id": "u1",
            "tip_id": "water-plants",
            "reward": 1.0,
            "decision_id": decision_id,
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "decision_id"
    assert not Reward.objects.exists()


@pytest.mark.django_db
def test_history_is_newest_first_and_capped_at_100(api, settings):
    for i in range(103):
        score(api, context={"hour_of_day": i % 24, "day_of_week": 0})
    history = api.get("/features/u1").json()["history"]

    assert len(history) == 100
    times = [h["created_at"] for h in history]
    assert times == sorted(times, reverse=True)
    newest = history[0]
    assert newest["context"] == {"hour_of_day": 102 % 24, "day_of_week": 0}
    assert set(newest["features"]) == {
        "hour_sin",
        "hour_cos",
        "is_overdue",
        "task_age_norm",
        "priority_norm",
        "dow_sin",
        "dow_cos",
    }


@pytest.mark.django_db
def test_reset_clears_every_policy_state_and_history_but_keeps_the_reward_log(
    api, staff_api
):
    enable("egreedy-v2")
    decision_id = score(api)["decision_id"]
    reward(
        api, tip_id="water-plants", reward=1.0, decision_id=decision_id, event_id="e-9"
    )
    reward(api, url="/reward/egreedy/v2", tip_id="t", reward=1.0)
    score(api, user_id="someone-else")

    answer = staff_api.post("/reset/u1")

    assert answer.status_code == 200
    assert answer.json() == {
        "user_id": "u1",
        "states_deleted": 3,  # hybrid-v1 learned the first reward live
        "decisions_deleted": 2,
    }
    assert not BanditState.objects.filter(user_id="u1").exists()
    assert not Decision.objects.filter(user_id="u1").exists()
    assert Decision.objects.filter(user_id="someone-else").count() == 2
    # The decision's reward trained egreedy-v1 and, learning, egreedy-v2 and
    # hybrid-v1; the named route trained egreedy-v2 alone.
    assert Reward.objects.filter(user_id="u1").count() == 4
    # The log keeps its rows; their link to the cleared decision is gone.
    assert not Reward.objects.filter(decision__isnull=False).exists()
    assert api.get("/features/u1").status_code == 404
    # The event id still counts: replaying it after the reset, though its decision
    # is gone, trains nothing.
    replay = reward(
        api,
        tip_id="water-plants",
        reward=1.0,
        decision_id=decision_id,
        event_id="e-9",
    )
    assert replay["replayed"] and not BanditState.objects.filter(user_id="u1").exists()
    assert staff_api.post("/reset/u1").status_code == 404


@pytest.mark.django_db
def test_score_costs_a_fixed_number_of_queries(api, django_assert_num_queries):
    score(api)  # warms the token cache
    enable("egreedy-v2")
    # One read of the policies with this user's states, one insert of decisions;
    # the D=12 shadow reads no stored profile when the caller sent all five.
    with django_assert_num_queries(2):
        score(api, profile_features=dict.fromkeys(bandits.PROFILE_NAMES))


@pytest.mark.django_db
def test_score_without_a_profile_policy_sends_exactly_the_two_statements(api):
    # Nothing that reads the profile scores or learns: the D=12 shadows learn nothing.
    Policy.objects.filter(dimension=12).update(learns_live=False)
    score(api)  # warms the token cache
    with CaptureQueriesContext(connection) as queries:
        score(api)  # the active policy is D=7, no shadow is on, no profile sent
    # The test's own transaction puts the read under a savepoint: not counted.
    sql = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(sql) == 2, sql
    # The policies, the user's states and stored profile (unused here) in one.
    assert sql[0].lstrip().startswith("SELECT p.id")
    assert "policies_banditstate" in sql[0] and "profiles_profile" in sql[0]
    # The decisions, and the control room's roll-up, in one statement.
    assert sql[1].startswith('WITH logged AS (INSERT INTO "policies_decision" ')
    assert "INSERT INTO policies_activityhour" in sql[1]
    assert not Profile.objects.exists()  # nothing was computed for it


@pytest.mark.django_db
def test_reward_costs_a_fixed_number_of_queries(api):
    reward(api, tip_id="t", reward=1.0)
    with CaptureQueriesContext(connection) as queries:
        reward(api, tip_id="t", reward=1.0)
    # The test's own transaction turns the service's into savepoints: not counted.
    sql = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    # Find the active policy and lock the state rows in one; insert the log,
    # count it in the roll-up and update every learner's state in another.
    assert len(sql) == 2, sql
    assert "UPDATE policies_banditstate" in sql[1]


@pytest.mark.django_db
def test_service_token_reuses_the_account_and_prints_a_new_token_last(capsys):
    from oo_ml.models import ApiToken

    call_command("service_token", "recommender")
    first = capsys.readouterr().out.strip().splitlines()[-1]
    call_command("service_token", "recommender")
    second = capsys.readouterr().out.strip().splitlines()[-1]

    assert first != second and len(first) >= 40
    assert get_user_model().objects.filter(username="recommender").count() == 1
    for token in (first, second):  # the earlier one keeps working
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert client.get("/features/u1").status_code != 401

    call_command("service_token", "recommender", "--replace")
    third = capsys.readouterr().out.strip().splitlines()[-1]
    assert ApiToken.objects.count() == 1
    token_cache_clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert client.get("/features/u1").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {third}")
    assert client.get("/features/u1").status_code != 401


@pytest.mark.django_db
def test_service_token_refuses_a_staff_account(staff_user):
    from django.core.management.base import CommandError

    from oo_ml.models import ApiToken

    with pytest.raises(CommandError, match="staff account"):
        call_command("service_token", staff_user.username)
    assert not ApiToken.objects.filter(user=staff_user).exists()


@pytest.mark.django_db
def test_an_event_id_replayed_to_another_policy_is_a_conflict(api):
    reward(api, url="/reward/egreedy", tip_id="t", reward=1.0, event_id="e-5")
    response = api.post(
        "/reward/egreedy/v2",
        {"user_id": "u1", "tip_id": "t", "reward": 1.0, "event_id": "e-5"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["field"] == "event_id"
    assert not BanditState.objects.filter(policy__name="egreedy-v2").exists()


@pytest.mark.django_db
def test_answers_match_the_serializers_that_document_them(api):
    from policies.serializers import DecisionOutputSerializer, RewardOutputSerializer

    assert set(score(api)) == set(DecisionOutputSerializer().fields)
    assert set(reward(api, tip_id="t", reward=1.0)) == set(
        RewardOutputSerializer().fields
    )
