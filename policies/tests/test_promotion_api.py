"""Promotion and rollback over the admin API, gated on finished simulations."""

from __future__ import annotations

import pytest
from django.utils import timezone

from policies.models import ChangeAction, Policy, PolicyChange
from simulations import services as sim_services
from simulations.models import RunStatus
from simulations.selectors import promotion_evidence

pytestmark = pytest.mark.django_db

PROMOTE = "/api/admin/policies/egreedy-v2/promote"
ROLLBACK = "/api/admin/policies/rollback"


@pytest.fixture
def staff_token_api(staff_user):
    from rest_framework.test import APIClient

    from oo_ml.auth import token_create

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=staff_user)}")
    return client


def simulate(policies=("egreedy-v1", "egreedy-v2"), **overrides):
    """A real, small simulation run, executed in process."""
    args = dict(
        policies=list(policies),
        judge="rule",
        n_users=6,
        n_rounds=5,
        seed=7,
        actor=None,
        chunk_users=3,
    )
    run = sim_services.run_create(**{**args, **overrides})
    return sim_services.run_execute(run_id=run.id)


def with_means(run, **means):
    """The run's stored results with chosen mean rewards: the gate's two cases."""
    for row in run.summary["policies"]:
        row["mean_reward"] = means[row["policy"].replace("-", "_")]
    run.save(update_fields=["summary"])
    return run


def active() -> str:
    return Policy.objects.get(role="active").name


def test_the_evidence_is_the_latest_finished_run_of_both_as_they_are_now():
    older = with_means(simulate(), egreedy_v1=0.1, egreedy_v2=0.9)
    latest = with_means(simulate(), egreedy_v1=0.5, egreedy_v2=0.2)
    simulate(policies=("egreedy-v2", "linucb-v1"))  # not beside the active one
    v1, v2 = (
        Policy.objects.get(name="egreedy-v1"),
        Policy.objects.get(name="egreedy-v2"),
    )

    evidence = promotion_evidence(shadow=v2, active=v1)

    assert evidence.run_id == str(latest.id)  # not the older, kinder one
    assert (evidence.shadow_mean_reward, evidence.active_mean_reward) == (0.2, 0.5)
    assert older.finished_at < latest.finished_at
    # Once the shadow's parameters change, no run speaks for it any more.
    Policy.objects.filter(pk=v2.pk).update(params={"epsilon": 0.2})
    v2.refresh_from_db()
    assert promotion_evidence(shadow=v2, active=v1) is None


def test_promote_without_a_simulation_is_409_with_the_reason(staff_token_api):
    response = staff_token_api.post(PROMOTE)

    assert response.status_code == 409
    assert "No finished simulation ran egreedy-v2 beside" in response.json()["detail"]
    assert active() == "egreedy-v1" and not PolicyChange.objects.exists()


def test_a_run_that_is_not_finished_is_no_evidence(staff_token_api):
    run = sim_services.run_create(
        policies=["egreedy-v1", "egreedy-v2"],
        judge="rule",
        n_users=3,
        n_rounds=2,
        seed=1,
        actor=None,
    )
    assert run.status == RunStatus.QUEUED
    assert staff_token_api.post(PROMOTE).status_code == 409


def test_promote_after_a_worse_run_is_409_saying_by_how_much(staff_token_api):
    with_means(simulate(), egreedy_v1=0.5, egreedy_v2=0.25)

    response = staff_token_api.post(PROMOTE)

    assert response.status_code == 409
    assert "0.2500, below egreedy-v1's 0.5000" in response.json()["detail"]
    assert active() == "egreedy-v1"


def test_a_real_run_decides_and_then_rollback_restores(staff_token_api, staff_user):
    run = simulate(n_users=20, n_rounds=30)
    means = {row["policy"]: row["mean_reward"] for row in run.summary["policies"]}
    response = staff_token_api.post(PROMOTE)

    if means["egreedy-v2"] < means["egreedy-v1"]:  # the seed decides, not the test
        assert response.status_code == 409
        with_means(run, egreedy_v1=0.3, egreedy_v2=0.3)  # a tie is enough
        response = staff_token_api.post(PROMOTE)
    assert response.status_code == 200, response.json()
    assert response.json()["role"] == "active"
    assert active() == "egreedy-v2"
    change = PolicyChange.objects.get(action=ChangeAction.PROMOTE)
    assert change.evidence["run_id"] == str(run.id)
    assert change.actor_name == "ops"

    response = staff_token_api.post(ROLLBACK)

    assert response.status_code == 200
    assert response.json()["name"] == "egreedy-v1"
    assert active() == "egreedy-v1"
    assert Policy.objects.get(name="egreedy-v2").role == "shadow"
    assert staff_token_api.post(ROLLBACK).status_code == 409


def test_the_active_policy_cannot_be_promoted(staff_token_api):
    response = staff_token_api.post("/api/admin/policies/egreedy-v1/promote")
    assert response.status_code == 409
    assert staff_token_api.post("/api/admin/policies/nope/promote").status_code == 404


@pytest.mark.parametrize("url", [PROMOTE, ROLLBACK])
def test_promote_and_rollback_are_for_staff_only(anon, api, url):
    with_means(simulate(), egreedy_v1=0.1, egreedy_v2=0.9)
    assert anon.post(url).status_code == 401
    assert api.post(url).status_code == 403
    assert active() == "egreedy-v1"


def test_finished_at_is_what_orders_the_evidence():
    first = with_means(simulate(), egreedy_v1=0.1, egreedy_v2=0.9)
    second = with_means(simulate(), egreedy_v1=0.9, egreedy_v2=0.1)
    # The first run finishes last (a long run started earlier): it is the latest.
    first.finished_at = timezone.now()
    first.save(update_fields=["finished_at"])
    v1, v2 = (
        Policy.objects.get(name="egreedy-v1"),
        Policy.objects.get(name="egreedy-v2"),
    )
    assert promotion_evidence(shadow=v2, active=v1).run_id == str(first.id)
    assert second.id != first.id
