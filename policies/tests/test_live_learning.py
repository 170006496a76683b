"""Shadows learn from live rewards; a decision takes one reward (PostgreSQL)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection

from policies import bandits
from policies.models import (
    BanditState,
    ChangeAction,
    Decision,
    Policy,
    PolicyChange,
    Reward,
)
from policies.services import reward_apply
from policies.tests.test_promotion_api import simulate, with_means
from profiles.models import Event

pytestmark = pytest.mark.django_db

CANDIDATES = [
    {"id": "a", "features": {"is_overdue": True, "priority": 4, "task_age_days": 9}},
    {"id": "b", "features": {"priority": 2, "task_age_days": 2}},
    {"id": "c", "features": {"task_age_days": 40}},
]


def score(api, user_id="u1", url="/score", **body) -> dict:
    response = api.post(
        url,
        {"user_id": user_id, "candidates": CANDIDATES, **body},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


def post_reward(api, url="/reward", **body):
    return api.post(url, {"user_id": "u1", **body}, format="json")


def reward(api, **body) -> dict:
    response = post_reward(api, **body)
    assert response.status_code == 200, response.json()
    return response.json()


def state(name: str, user_id: str = "u1") -> BanditState:
    return BanditState.objects.select_related("policy").get(
        policy__name=name, user_id=user_id
    )


def switches() -> dict:
    return {
        p.name: (p.role, p.enabled, p.learns_live)
        for p in Policy.objects.order_by("name")
    }


def test_a_promoted_shadow_arrives_with_the_ridge_solution_of_live_rewards(
    api, staff_api
):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    rng = np.random.default_rng(3)
    users = [f"user-{i}" for i in range(20)]
    for i in range(200):
        user = users[i % 20]
        context = {"hour_of_day": int(rng.integers(24)), "day_of_week": i % 7}
        profile = {"completion_rate_30d": float(rng.uniform()), "tip_volume_30d": i}
        answer = score(api, user, context=context, profile_features=profile)
        assert answer["policy"] == "egreedy-v1"
        reward(
            api,
            user_id=user,
            tip_id=answer["tip_id"],
            reward=float(rng.choice([-1.0, -0.3, 0.1, 0.6, 1.0])),
            decision_id=answer["decision_id"],
        )
    with_means(simulate(), egreedy_v1=0.30, egreedy_v2=0.31)
    promoted = staff_api.post("/api/admin/policies/egreedy-v2/promote")
    assert promoted.status_code == 200, promoted.json()

    for user in users:
        # The ridge solution, from the log alone: egreedy-v2's own D=12 vectors
        # of the rewarded candidates, as it logged them on the same requests.
        a, b = np.eye(12), np.zeros(12)
        for r in Reward.objects.filter(user_id=user, learned=False):
            shadow = Decision.objects.get(
                request_id=r.decision.request_id, policy__name="egreedy-v2"
            )
            x = np.array(shadow.features[shadow.candidate_index(r.tip_id)])
            a += np.outer(x, x)
            b += r.reward * x
        learned = state("egreedy-v2", user)
        assert learned.reward_count == 10
        np.testing.assert_allclose(
            bandits.theta(learned.a, learned.b),
            np.linalg.solve(a, b),
            rtol=0,
            atol=1e-9,
        )
    # Warm from the first answer: no cold start after the promotion.
    first = [score(api, user) for user in users]
    assert {f["policy"] for f in first} == {"egreedy-v2"}
    assert all(f["score"] != 0.0 for f in first)


def test_every_learner_trains_on_its_own_encoding_of_a_body_reward(api):
    # No decision: each policy encodes the body in its own dimension.
    Policy.objects.filter(name="linucb-v1").update(learns_live=True)
    body = {
        "tip_id": "t",
        "reward": 0.6,
        "features": {"hour_of_day": 7, "priority": 3, "is_overdue": True},
        "day_of_week": 4,
        "profile_features": {"completion_rate_30d": 0.5, "preferred_hour": 7},
    }

    answer = reward(api, **body)

    assert answer["policy"] == "egreedy-v1"
    assert sorted(answer["learned_by"]) == ["egreedy-v2", "hybrid-v1", "linucb-v1"]
    for name, dimension in (("linucb-v1", 5), ("egreedy-v1", 7), ("egreedy-v2", 12)):
        x = bandits.encode(
            [body["features"]],
            hours=[7],
            day_of_week=4,
            profile=body["profile_features"],
            dimension=dimension,
        )[0]
        got = state(name)
        np.testing.assert_allclose(got.a, np.eye(dimension) + np.outer(x, x))
        np.testing.assert_allclose(got.b, 0.6 * x)
    rows = {r.policy.name: r for r in Reward.objects.select_related("policy")}
    assert [n for n, r in rows.items() if not r.learned] == ["egreedy-v1"]
    assert rows["egreedy-v2"].features == pytest.approx(
        list(state("egreedy-v2").b / 0.6)
    )


def test_a_policy_with_learning_off_learns_only_its_own_decisions(api):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    Policy.objects.exclude(role="active").update(learns_live=False)
    answer = score(api)

    result = reward(
        api, tip_id=answer["tip_id"], reward=1.0, decision_id=answer["decision_id"]
    )

    assert result["learned_by"] == []
    assert not BanditState.objects.filter(policy__name="egreedy-v2").exists()
    stats = api.get("/policies/egreedy-v1/stats/u1").json()
    assert (stats["reward_count"], stats["learned_count"]) == (1, 0)


def test_a_named_route_trains_that_policy_alone(api):
    # The routes of the service this replaces trained one policy each.
    reward(api, url="/reward/egreedy", tip_id="t", reward=1.0)
    assert list(BanditState.objects.values_list("policy__name", flat=True)) == [
        "egreedy-v1"
    ]


def test_stats_say_how_many_rewards_a_policy_learned_from_others(api):
    for _ in range(3):
        answer = score(api)
        reward(
            api, tip_id=answer["tip_id"], reward=0.5, decision_id=answer["decision_id"]
        )
    reward(api, url="/reward/egreedy/v2", tip_id="t", reward=1.0)

    v2 = api.get("/stats/egreedy/v2/u1").json()
    assert (v2["reward_count"], v2["learned_count"]) == (4, 3)
    assert v2["cumulative_reward"] == pytest.approx(2.5)
    v1 = api.get("/stats/egreedy/u1").json()
    assert (v1["reward_count"], v1["learned_count"]) == (3, 0)


# --- one reward per decision ----------------------------------------------------


def test_a_decision_takes_one_reward_from_reward_and_events_together(api):
    decision = score(api)
    body = {"tip_id": decision["tip_id"], "decision_id": decision["decision_id"]}

    first = reward(api, reward=1.0, event_id="A", **body)
    event = api.post(
        "/events", {"user_id": "u1", "kind": "done", **body}, format="json"
    )
    late = post_reward(api, reward=0.6, event_id="B", **body)

    assert first["applied"]
    assert event.status_code == 200
    said = event.json()
    assert said["stored"] and said["trained"] is None and said["reward"] is None
    assert "already rewarded" in said["reason"] and "'A'" in said["reason"]
    assert late.status_code == 409
    error = late.json()
    assert error["error"] == "already_rewarded" and error["field"] == "decision_id"
    assert "'A'" in error["detail"] and "+1" in error["detail"]
    assert Reward.objects.filter(learned=False).count() == 1
    assert state("egreedy-v1").reward_count == 1
    assert state("egreedy-v2").reward_count == 1  # learned once, too
    assert Event.objects.count() == 1  # the event is kept for the profile
    # A replay of the first is still a replay, not a conflict.
    again = reward(api, reward=1.0, event_id="A", **body)
    assert again["replayed"] and not again["applied"]
    # Nor is a replay of the refused event: it is stored and says so again.
    assert state("egreedy-v1").reward_count == 1


def test_with_sum_aggregation_every_reward_of_a_decision_trains(api, settings):
    settings.REWARD_AGGREGATION = "sum"
    decision = score(api)
    body = {"tip_id": decision["tip_id"], "decision_id": decision["decision_id"]}

    reward(api, reward=1.0, event_id="A", **body)
    api.post("/events", {"user_id": "u1", "kind": "done", **body}, format="json")
    reward(api, reward=0.6, event_id="B", **body)

    assert (
        Reward.objects.filter(decision_id=decision["decision_id"])
        .filter(learned=False)
        .count()
        == 3
    )
    assert state("egreedy-v1").reward_count == 3
    assert state("egreedy-v1").cumulative_reward == pytest.approx(2.6)


@pytest.mark.parametrize("value", [5, -1.01, 1.0000001, 1e6])
def test_a_reward_outside_the_range_is_refused_and_writes_nothing(api, value):
    response = post_reward(api, tip_id="t", reward=value)
    assert response.status_code == 400
    assert response.json()["field"] == "reward"
    assert not Reward.objects.exists() and not BanditState.objects.exists()


def test_the_reward_range_is_a_setting(api, settings):
    settings.REWARD_MIN, settings.REWARD_MAX = 0.0, 10.0
    assert reward(api, tip_id="t", reward=5)["applied"]
    assert post_reward(api, tip_id="t", reward=-0.5).status_code == 400


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_rewards_for_one_decision_apply_exactly_one(registry):
    from policies.services import decision_make

    decision = decision_make(
        user_id="u",
        candidates=[{"id": "a", "features": dict(bandits.CANDIDATE_DEFAULTS)}],
        context=dict(bandits.CONTEXT_DEFAULTS),
        profile={},
        rng=np.random.default_rng(0),
    )
    barrier = threading.Barrier(8)
    outcomes = []

    def apply(i: int) -> None:
        barrier.wait()
        try:
            reward_apply(
                user_id="u",
                tip_id="a",
                reward=0.1 * i,
                features={},
                day_of_week=0,
                profile={},
                decision_id=decision.id,
            )
            outcomes.append("applied")
        except Exception as error:  # noqa: BLE001 - counted below
            outcomes.append(getattr(error, "code", repr(error)))
        finally:
            connection.close()

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["already_rewarded"] * 7 + ["applied"]
    assert Reward.objects.filter(learned=False).count() == 1
    for learned in BanditState.objects.all():
        assert learned.reward_count == 1


# --- the learning switch --------------------------------------------------------


def test_the_learning_switch_over_the_api_is_recorded(staff_api):
    url = "/api/admin/policies/egreedy-v2/learning"
    off = staff_api.post(url, {"learns_live": False}, format="json")
    assert off.status_code == 200 and off.json()["learns_live"] is False
    again = staff_api.post(url, {"learns_live": False}, format="json")
    assert again.status_code == 200  # the state it has: nothing recorded
    flipped = staff_api.post(url, {}, format="json")
    assert flipped.json()["learns_live"] is True

    changes = PolicyChange.objects.filter(action=ChangeAction.LEARNING)
    assert [c.after for c in changes] == [{"learns_live": True}, {"learns_live": False}]
    assert changes[0].summary == "learning from live rewards turned on"
    listed = staff_api.get("/api/admin/policies").json()["policies"]
    assert {p["name"]: p["learns_live"] for p in listed} == {
        "egreedy-v1": True,
        "egreedy-v2": True,
        "hybrid-v1": True,
        "linucb-v1": False,
    }


@pytest.mark.parametrize(
    "body, field",
    [({"learns_live": "yes"}, "learns_live"), ({"learns_live": 2}, "learns_live")],
)
def test_a_bad_learning_switch_body_is_a_400_and_changes_nothing(
    staff_api, body, field
):
    response = staff_api.post(
        "/api/admin/policies/egreedy-v2/learning", body, format="json"
    )
    assert response.status_code == 400 and response.json()["field"] == field
    assert Policy.objects.get(name="egreedy-v2").learns_live
    assert not PolicyChange.objects.exists()


def test_the_learning_switch_needs_a_staff_user_with_the_permission(api, anon, client):
    from django.contrib.auth import get_user_model

    url = "/api/admin/policies/egreedy-v2/learning"
    assert anon.post(url, {}, format="json").status_code == 401
    assert api.post(url, {}, format="json").status_code == 403  # a service token
    viewer = get_user_model().objects.create_user(
        username="viewer", password="x" * 12, is_staff=True
    )
    client.force_login(viewer)
    assert client.post(url, {}, content_type="application/json").status_code == 403
    pk = Policy.objects.get(name="egreedy-v2").pk
    admin_url = f"/admin/policies/policy/{pk}/learning/"
    assert client.post(admin_url, {"learns_live": "off"}).status_code == 403
    assert Policy.objects.get(name="egreedy-v2").learns_live
    assert not PolicyChange.objects.exists()
    unknown = "/api/admin/policies/nope/learning"
    from rest_framework.test import APIClient

    staff = APIClient()
    staff.force_authenticate(
        get_user_model().objects.create_superuser(username="root", password="x" * 12)
    )
    assert staff.post(unknown, {}, format="json").status_code == 404


# --- rollback is an undo ----------------------------------------------------------


def test_rollback_restores_roles_toggles_and_learning_switches(staff_api):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True, learns_live=True)
    Policy.objects.filter(name="egreedy-v1").update(learns_live=False)
    Policy.objects.filter(name="linucb-v1").update(learns_live=True)
    before = switches()
    with_means(simulate(), egreedy_v1=0.30, egreedy_v2=0.31)

    assert staff_api.post("/api/admin/policies/egreedy-v2/promote").status_code == 200
    promoted = switches()
    assert promoted["egreedy-v2"][0] == "active"
    # The old active policy steps down not scoring, but learning: warm for a
    # rollback.
    assert promoted["egreedy-v1"] == ("shadow", False, True)

    rolled = staff_api.post("/api/admin/policies/rollback")

    assert rolled.status_code == 200, rolled.json()
    assert switches() == before
    rollback = PolicyChange.objects.filter(action=ChangeAction.ROLLBACK).get()
    assert rollback.after["policies"]["egreedy-v2"] == {
        "role": "shadow",
        "enabled": True,
        "learns_live": True,
    }
    assert rollback.before["policies"]["egreedy-v1"] == {
        "role": "shadow",
        "enabled": False,
        "learns_live": True,
    }
