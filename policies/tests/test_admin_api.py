"""The admin API: staff list and toggle policies; every change is recorded."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from policies.models import ChangeAction, Decision, Policy, PolicyChange
from policies.tests.test_api_flow import score

pytestmark = pytest.mark.django_db

TOGGLE = "/api/admin/policies/{}/toggle"


def test_staff_list_every_policy_active_first(staff_token_api):
    response = staff_token_api.get("/api/admin/policies")

    assert response.status_code == 200
    policies = response.json()["policies"]
    assert [(p["name"], p["role"], p["enabled"]) for p in policies] == [
        ("egreedy-v1", "active", False),
        ("egreedy-v2", "shadow", False),
        ("hybrid-v1", "shadow", False),
        ("linucb-v1", "retired", False),
    ]
    v2 = policies[1]
    assert (v2["algorithm"], v2["dimension"], v2["params"]) == (
        "egreedy",
        12,
        {"epsilon": 0.1},
    )
    assert len(v2["feature_labels"]) == 12


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", "/api/admin/policies"), ("post", TOGGLE.format("egreedy-v2"))],
)
def test_no_token_is_401_and_a_service_token_is_403(anon, api, method, url):
    assert getattr(anon, method)(url).status_code == 401
    assert getattr(api, method)(url).status_code == 403
    assert not Policy.objects.get(name="egreedy-v2").enabled
    assert not PolicyChange.objects.exists()


def test_toggling_the_shadow_on_makes_score_log_both_and_off_stops_it(
    staff_token_api, api, staff_user
):
    response = staff_token_api.post(TOGGLE.format("egreedy-v2"))
    assert response.status_code == 200
    assert response.json()["enabled"] is True

    answer = score(api)
    decisions = Decision.objects.order_by("role")
    assert [(d.policy.name, d.role) for d in decisions] == [
        ("egreedy-v1", "active"),
        ("egreedy-v2", "shadow"),
    ]
    assert len({d.request_id for d in decisions}) == 1
    assert answer["policy"] == "egreedy-v1"
    history = api.get("/features/u1").json()["history"]
    assert sorted(h["policy"] for h in history) == ["egreedy-v1", "egreedy-v2"]

    response = staff_token_api.post(TOGGLE.format("egreedy-v2"))
    assert response.json()["enabled"] is False
    score(api)
    assert Decision.objects.filter(role="shadow").count() == 1
    assert Decision.objects.filter(role="active").count() == 2

    changes = list(PolicyChange.objects.all())  # newest first
    assert [(c.action, c.before, c.after) for c in changes] == [
        (ChangeAction.TOGGLE, {"enabled": True}, {"enabled": False}),
        (ChangeAction.TOGGLE, {"enabled": False}, {"enabled": True}),
    ]
    assert {(c.actor, c.actor_name, c.policy.name) for c in changes} == {
        (staff_user, "ops", "egreedy-v2")
    }


def test_asking_for_the_state_it_has_changes_and_records_nothing(staff_token_api):
    url = TOGGLE.format("egreedy-v2")
    for _ in range(2):
        response = staff_token_api.post(url, {"enabled": True}, format="json")
        assert response.json()["enabled"] is True
    assert PolicyChange.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "body", "status", "field"),
    [
        ("egreedy-v1", None, 409, "name"),  # the active policy has no switch
        ("linucb-v1", None, 409, "name"),
        ("nope", None, 404, "name"),
        ("egreedy-v2", {"enabled": "yes"}, 400, "enabled"),
        ("egreedy-v2", {"enabled": 2}, 400, "enabled"),
        ("egreedy-v2", {"enabled": None}, 200, None),
    ],
)
def test_a_toggle_body_is_checked_and_a_bad_one_changes_nothing(
    staff_token_api, name, body, status, field
):
    response = staff_token_api.post(TOGGLE.format(name), body, format="json")

    assert response.status_code == status
    if status == 200:  # null means "flip", as an empty body does
        assert Policy.objects.get(name=name).enabled
        return
    assert response.json()["field"] == field
    assert not Policy.objects.filter(enabled=True).exists()
    assert not PolicyChange.objects.exists()


def test_a_browser_session_must_send_its_csrf_token(staff_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)

    assert client.get("/api/admin/policies").status_code == 200
    assert client.post(TOGGLE.format("egreedy-v2")).status_code == 403
    assert not Policy.objects.get(name="egreedy-v2").enabled


@pytest.mark.parametrize(
    ("url", "perm"),
    [
        (TOGGLE.format("egreedy-v2"), "change_policy"),
        ("/api/admin/policies/rollback", "change_policy"),
        ("/reset/u1", "delete_banditstate"),
    ],
)
def test_staff_need_the_permission_the_admin_asks_for(api, url, perm):
    from django.contrib.auth.models import Permission

    score(api)
    viewer = get_user_model().objects.create_user(
        username="viewer", password="x" * 12, is_staff=True
    )
    client = APIClient()
    client.force_login(viewer)
    assert client.get("/api/admin/policies").status_code == 403  # not even a view
    assert client.post(url).status_code == 403
    assert not Policy.objects.get(name="egreedy-v2").enabled
    assert Decision.objects.filter(user_id="u1").exists()

    viewer.user_permissions.add(Permission.objects.get(codename=perm))
    viewer = get_user_model().objects.get(pk=viewer.pk)  # fresh permission cache
    client.force_login(viewer)
    assert client.post(url).status_code != 403


def test_a_non_staff_user_with_a_session_is_refused(client):
    user = get_user_model().objects.create_user(username="viewer", password="x" * 12)
    api = APIClient()
    api.force_login(user)
    assert api.get("/api/admin/policies").status_code == 403


def test_reset_is_recorded_once_per_policy_it_touched(api, staff_token_api):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    answer = score(api)
    api.post(
        "/reward",
        {
            "user_id": "u1",
            "tip_id": answer["tip_id"],
            "reward": 0.5,
            "decision_id": answer["decision_id"],
        },
        format="json",
    )

    response = staff_token_api.post("/reset/u1")

    assert response.status_code == 200
    changes = {c.policy.name: c for c in PolicyChange.objects.all()}
    # hybrid-v1 learned the reward live, without scoring: it is recorded too.
    assert set(changes) == {"egreedy-v1", "egreedy-v2", "hybrid-v1"}
    v1, v2 = changes["egreedy-v1"], changes["egreedy-v2"]
    assert changes["hybrid-v1"].before == {
        "reward_count": 1,
        "cumulative_reward": 0.5,
        "decisions": 0,
    }
    assert v1.before == {"reward_count": 1, "cumulative_reward": 0.5, "decisions": 1}
    # The shadow learned the active policy's reward (learning from live rewards).
    assert v2.before == {"reward_count": 1, "cumulative_reward": 0.5, "decisions": 1}
    assert {(c.action, c.user_id, c.actor_name) for c in changes.values()} == {
        (ChangeAction.RESET, "u1", "ops")
    }
