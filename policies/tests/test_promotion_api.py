"""Promotion and rollback over the admin API, gated on finished simulations."""

from __future__ import annotations

import math
import re

import pytest
from django.utils import timezone

from policies.models import ChangeAction, Policy, PolicyChange
from simulations import services as sim_services
from simulations.models import RunEvent, RunStatus
from simulations.selectors import promotion_evidence

pytestmark = pytest.mark.django_db

PROMOTE = "/api/admin/policies/egreedy-v2/promote"
ROLLBACK = "/api/admin/policies/rollback"


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
    """The run's stored results made decisive at chosen mean rewards, as if
    every user had moved alike (a zero spread, so each interval is a point):
    for tests about what a promotion does rather than about the gate."""
    summary = run.summary
    order = [row["policy"] for row in summary["policies"]]
    for row in summary["policies"]:
        row["mean_reward"] = means[row["policy"].replace("-", "_")]
    summary["per_user"]["means"] = [means[n.replace("-", "_")] for n in order]
    summary["per_user"]["covariance"] = [[0.0] * len(order) for _ in order]
    run.save(update_fields=["summary"])
    return run


# 200 users x 100 rounds, seed 1: egreedy-v2 - egreedy-v1 = +0.0186 per
# decision, 95% interval [+0.0094, +0.0277]: large enough to decide.
DECISIVE = dict(n_users=200, n_rounds=100, seed=1, chunk_users=100)
# The issue's command line: 5 users x 20 rounds, seed 42: +0.0090, [-0.1011,
# +0.1191], far too small.
SMALL = dict(n_users=5, n_rounds=20, seed=42)


def active() -> str:
    return Policy.objects.get(role="active").name


def per_user_difference(run, shadow: str, active: str) -> list[float]:
    """Each user's mean reward under ``shadow`` minus under ``active``, from the
    stored events (not from the summary)."""
    totals = {}
    for policy, user, reward in RunEvent.objects.filter(run=run).values_list(
        "policy", "user_index", "reward"
    ):
        totals[(policy, user)] = totals.get((policy, user), 0.0) + reward
    return [
        (totals[(shadow, u)] - totals[(active, u)]) / run.n_rounds
        for u in range(run.n_users)
    ]


def test_the_evidence_is_the_latest_finished_run_of_both_as_they_are_now():
    older = simulate(**DECISIVE)
    # Neither policy first: the pair comes from the stored per-user moments.
    latest = simulate(policies=("linucb-v1", "egreedy-v2", "egreedy-v1"), seed=3)
    simulate(policies=("egreedy-v2", "linucb-v1"))  # not beside the active one
    v1, v2 = (
        Policy.objects.get(name="egreedy-v1"),
        Policy.objects.get(name="egreedy-v2"),
    )

    evidence = promotion_evidence(shadow=v2, active=v1)

    assert evidence.run_id == str(latest.id)  # not the older, kinder one
    assert older.finished_at < latest.finished_at
    differences = per_user_difference(latest, "egreedy-v2", "egreedy-v1")
    mean = sum(differences) / 6
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 5)
    half = 2.570582 * sd / math.sqrt(6)  # t for 5 degrees of freedom
    assert evidence.users == 6
    assert evidence.difference == pytest.approx(mean, abs=1e-12)
    assert evidence.difference_sd == pytest.approx(sd, abs=1e-12)
    assert (evidence.low, evidence.high) == pytest.approx(
        (mean - half, mean + half), abs=1e-6
    )
    # Once the shadow's parameters change, no run speaks for it any more.
    Policy.objects.filter(pk=v2.pk).update(params={"epsilon": 0.2})
    v2.refresh_from_db()
    assert promotion_evidence(shadow=v2, active=v1) is None


def test_a_run_summarised_before_intervals_is_no_interval(staff_token_api):
    run = simulate(**DECISIVE)
    del run.summary["per_user"]
    run.save(update_fields=["summary"])

    response = staff_token_api.post(PROMOTE)

    assert response.status_code == 409
    assert "has no interval" in response.json()["detail"]
    assert active() == "egreedy-v1"


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


@pytest.mark.postgres
def test_the_issues_small_run_is_refused_as_inconclusive_naming_its_interval(
    staff_token_api,
):
    run = simulate(**SMALL)

    response = staff_token_api.post(PROMOTE)

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith(f"Inconclusive: In simulation {run.id} (5 users)")
    assert "= +0.0090 per decision, 95% interval [-0.1011, +0.1191] straddles 0" in (
        detail
    )
    assert "users would decide it" in detail
    assert active() == "egreedy-v1" and not PolicyChange.objects.exists()


@pytest.mark.postgres
def test_a_run_large_enough_to_decide_promotes_and_rollback_restores(
    staff_token_api,
):
    run = simulate(**DECISIVE)
    diff = run.summary["policies"][1]["diff_vs_first"]
    assert diff == {
        "mean": 0.01857,
        "low": pytest.approx(0.009395, abs=1e-6),
        "high": pytest.approx(0.027745, abs=1e-6),
    }

    response = staff_token_api.post(PROMOTE)

    assert response.status_code == 200, response.json()
    assert response.json()["role"] == "active"
    assert active() == "egreedy-v2"
    change = PolicyChange.objects.get(action=ChangeAction.PROMOTE)
    assert change.evidence["run_id"] == str(run.id)
    assert change.evidence["low"] == pytest.approx(0.009395, abs=1e-6)
    assert change.evidence["verdict"] == "pass"
    assert change.actor_name == "ops"

    response = staff_token_api.post(ROLLBACK)

    assert response.status_code == 200
    assert response.json()["name"] == "egreedy-v1"
    assert active() == "egreedy-v1"
    assert Policy.objects.get(name="egreedy-v2").role == "shadow"
    assert staff_token_api.post(ROLLBACK).status_code == 409


@pytest.mark.postgres
def test_a_run_large_enough_to_decide_refuses_the_worse_policy(staff_token_api):
    # egreedy-v2 active, egreedy-v1 its shadow: the same run, the other way.
    Policy.objects.filter(name="egreedy-v1").update(role="retired")
    Policy.objects.filter(name="egreedy-v2").update(role="active")
    Policy.objects.filter(name="egreedy-v1").update(role="shadow")
    simulate(**DECISIVE)

    response = staff_token_api.post("/api/admin/policies/egreedy-v1/promote")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "egreedy-v1 - egreedy-v2 = -0.0186 per decision" in detail
    assert "95% interval [-0.0277, -0.0094]: all of it below 0" in detail
    assert "Inconclusive" not in detail
    assert active() == "egreedy-v2"


@pytest.mark.postgres
def test_a_margin_wider_than_the_shortfall_lets_it_through(staff_token_api, settings):
    Policy.objects.filter(name="egreedy-v1").update(role="retired")
    Policy.objects.filter(name="egreedy-v2").update(role="active")
    Policy.objects.filter(name="egreedy-v1").update(role="shadow")
    simulate(**DECISIVE)
    settings.GATE_MARGIN = 0.03

    response = staff_token_api.post("/api/admin/policies/egreedy-v1/promote")

    assert response.status_code == 200, response.json()
    assert active() == "egreedy-v1"


def test_the_active_policy_cannot_be_promoted(staff_token_api):
    response = staff_token_api.post("/api/admin/policies/egreedy-v1/promote")
    assert response.status_code == 409
    assert staff_token_api.post("/api/admin/policies/nope/promote").status_code == 404


@pytest.mark.parametrize("url", [PROMOTE, ROLLBACK])
def test_promote_and_rollback_are_for_staff_only(anon, api, url):
    simulate(**DECISIVE)
    assert anon.post(url).status_code == 401
    assert api.post(url).status_code == 403
    assert active() == "egreedy-v1"


def test_finished_at_is_what_orders_the_evidence():
    first = simulate()
    second = simulate(seed=8)
    # The first run finishes last (a long run started earlier): it is the latest.
    first.finished_at = timezone.now()
    first.save(update_fields=["finished_at"])
    v1, v2 = (
        Policy.objects.get(name="egreedy-v1"),
        Policy.objects.get(name="egreedy-v2"),
    )
    assert promotion_evidence(shadow=v2, active=v1).run_id == str(first.id)
    assert second.id != first.id


def _promote_page(client, staff_user, name: str = "egreedy-v2") -> str:
    client.force_login(staff_user)
    policy = Policy.objects.get(name=name)
    return client.get(f"/admin/policies/policy/{policy.pk}/promote/").content.decode()


@pytest.mark.postgres
def test_the_promote_page_charts_the_interval_and_gives_the_verdict(
    client, staff_user, settings
):
    Policy.objects.filter(name="egreedy-v1").update(role="retired")
    Policy.objects.filter(name="egreedy-v2").update(role="active")
    Policy.objects.filter(name="egreedy-v1").update(role="shadow")
    run = simulate(**DECISIVE)

    html = _promote_page(client, staff_user, "egreedy-v1")

    assert 'class="oo-interval oo-interval-worse"' in html
    assert "from \u22120.0277 to \u22120.0094; the gate's floor is 0" in html
    assert 'data-verdict="worse"' in html and "all of the interval lies below" in html
    assert f'id="evidence-run">{run.id}</a>' in html
    assert 'id="promote-form"' not in html

    settings.GATE_MARGIN = 0.03  # now the floor is below the whole interval
    html = _promote_page(client, staff_user, "egreedy-v1")
    assert 'data-verdict="pass"' in html and 'id="promote-form"' in html
    assert "floor \u22120.030" in html


def test_with_means_makes_a_run_decide_at_those_means(staff_token_api):
    with_means(simulate(), egreedy_v1=0.31, egreedy_v2=0.30)
    refused = staff_token_api.post(PROMOTE)
    assert refused.status_code == 409
    assert "[-0.0100, -0.0100]: all of it below 0" in refused.json()["detail"]

    with_means(simulate(), egreedy_v1=0.30, egreedy_v2=0.31)
    assert staff_token_api.post(PROMOTE).status_code == 200


def test_the_promote_page_of_a_small_run_suggests_a_run_that_would_decide(
    client, staff_user
):
    simulate(**SMALL)

    html = _promote_page(client, staff_user)

    assert 'data-verdict="inconclusive"' in html
    needed = re.search(r"about (\d+) users would decide it", html).group(1)
    assert f"policies=egreedy-v2&amp;n_users={needed}" in html
    assert int(needed) > 5
