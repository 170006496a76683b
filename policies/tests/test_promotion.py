"""Promotion behind the simulation gate, and rollback (docs/promotion.md)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from oo_ml.errors import Conflict, NotFound
from policies import services
from policies.models import ChangeAction, Policy, PolicyChange
from policies.tests.test_api_flow import reward, score


def _evidence(low: float = 0.01, high: float = 0.05, **extra):
    """A run of 1,000 users whose paired difference (shadow - active) has the
    95% interval [low, high]."""
    difference = (low + high) / 2
    half = (high - low) / 2
    fields = dict(
        run_id="run-1",
        shadow="egreedy-v2",
        active="egreedy-v1",
        shadow_mean_reward=0.5 + difference,
        active_mean_reward=0.5,
        seed=42,
        finished_at="2026-11-24T12:00:00+00:00",
        users=1_000,
        difference=difference,
        low=low,
        high=high,
        # The sd that gives this half-width over 1,000 users (t, 999 df).
        difference_sd=half * math.sqrt(1_000) / 1.962341461,
    )
    return services.Evidence(**{**fields, **extra})


def _roles() -> dict[str, tuple[str, bool]]:
    return {p.name: (p.role, p.enabled) for p in Policy.objects.all()}


@pytest.mark.django_db
def test_promotion_swaps_roles_keeps_both_states_and_records_the_evidence(
    api, staff_user
):
    Policy.objects.filter(name="egreedy-v2").update(enabled=True)
    answer = score(api)
    reward(api, tip_id=answer["tip_id"], reward=1.0, decision_id=answer["decision_id"])
    before = api.get("/policies/egreedy-v1/stats/u1").json()

    services.policy_promote(
        name="egreedy-v2", actor=staff_user, evidence_for=lambda **_: _evidence()
    )

    assert _roles() == {
        "egreedy-v2": ("active", False),
        "egreedy-v1": ("shadow", False),
        "hybrid-v1": ("shadow", False),
        "linucb-v1": ("retired", False),
    }
    assert score(api)["policy"] == "egreedy-v2"
    # The old active keeps what it learned; it can be promoted back later.
    assert api.get("/policies/egreedy-v1/stats/u1").json()["theta"] == before["theta"]
    change = PolicyChange.objects.get()
    assert (change.action, change.policy.name, change.actor_name) == (
        ChangeAction.PROMOTE,
        "egreedy-v2",
        "ops",
    )
    assert change.evidence["run_id"] == "run-1"
    assert (change.evidence["low"], change.evidence["high"]) == (0.01, 0.05)
    assert change.evidence["users"] == 1_000
    assert (change.evidence["margin"], change.evidence["verdict"]) == (0.0, "pass")
    assert "egreedy-v1 became a shadow" in change.summary


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (None, "No finished simulation ran egreedy-v2 beside"),
        (_evidence(shadow="linucb-v1"), "No finished simulation ran egreedy-v2"),
        (_evidence(active="linucb-v1"), "No finished simulation ran egreedy-v2"),
        (
            _evidence(-0.05, -0.01),
            r"= -0.0300 per decision, 95% interval \[-0.0500, -0.0100\]: all of it "
            "below 0",
        ),
        (
            _evidence(-0.02, 0.04),
            r"Inconclusive: In simulation run-1 \(1,000 users\), egreedy-v2 - "
            r"egreedy-v1 = \+0.0100 per decision, 95% interval \[-0.0200, "
            # 1,000 users x (half-width 0.03 / distance 0.01)^2 x (z / t)^2
            r"\+0.0400\] straddles 0; about 8,979 users would decide it",
        ),
        (
            _evidence(-0.03, 0.03),
            "straddles 0; the estimate sits on the margin: no number of users",
        ),
        (
            dataclasses.replace(
                _evidence(), users=1, low=None, high=None, difference_sd=None
            ),
            "Inconclusive: .* has no interval",
        ),
    ],
)
def test_promotion_without_sufficient_evidence_is_refused_with_the_reason(
    staff_user, evidence, reason
):
    with pytest.raises(Conflict, match=reason):
        services.policy_promote(
            name="egreedy-v2", actor=staff_user, evidence_for=lambda **_: evidence
        )

    assert _roles()["egreedy-v1"] == ("active", False)
    assert not PolicyChange.objects.exists()


@pytest.mark.django_db
def test_an_interval_starting_exactly_at_zero_is_enough_evidence(staff_user):
    services.policy_promote(
        name="egreedy-v2",
        actor=staff_user,
        evidence_for=lambda **_: _evidence(0.0, 0.02),
    )
    assert _roles()["egreedy-v2"][0] == "active"


@pytest.mark.django_db
def test_the_margin_lets_a_slightly_worse_interval_pass(staff_user, settings):
    evidence = _evidence(-0.004, 0.01)
    assert "Inconclusive" in services.promotion_refusal(
        shadow="egreedy-v2", active="egreedy-v1", evidence=evidence
    )
    settings.GATE_MARGIN = 0.005
    assert (
        services.promotion_refusal(
            shadow="egreedy-v2", active="egreedy-v1", evidence=evidence
        )
        is None
    )
    # Beyond the margin it is still refused, naming the margin.
    with pytest.raises(Conflict, match=r"straddles -0.005;"):
        services.policy_promote(
            name="egreedy-v2",
            actor=staff_user,
            evidence_for=lambda **_: _evidence(-0.006, 0.01),
        )

    services.policy_promote(
        name="egreedy-v2", actor=staff_user, evidence_for=lambda **_: evidence
    )
    assert PolicyChange.objects.get().evidence["margin"] == 0.005


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "error"),
    [("egreedy-v1", Conflict), ("linucb-v1", Conflict), ("nope", NotFound)],
)
def test_only_a_shadow_can_be_promoted(staff_user, name, error):
    with pytest.raises(error):
        services.policy_promote(
            name=name, actor=staff_user, evidence_for=lambda **_: _evidence()
        )
    assert _roles()["egreedy-v1"] == ("active", False)


@pytest.mark.django_db
def test_rollback_restores_the_previous_active_and_is_recorded(staff_user):
    services.policy_promote(
        name="egreedy-v2", actor=staff_user, evidence_for=lambda **_: _evidence()
    )

    services.policy_rollback(actor=staff_user)

    assert _roles()["egreedy-v1"] == ("active", False)
    assert _roles()["egreedy-v2"] == ("shadow", False)
    rollback, promote = PolicyChange.objects.all()  # newest first
    assert rollback.action == ChangeAction.ROLLBACK
    assert rollback.policy.name == "egreedy-v1"
    assert rollback.evidence == {"undoes": str(promote.id)}
    # Nothing left to undo: a second rollback is refused, roles stay.
    with pytest.raises(Conflict, match="no promotion to roll back"):
        services.policy_rollback(actor=staff_user)
    assert _roles()["egreedy-v1"] == ("active", False)


@pytest.mark.django_db
def test_rollback_with_nothing_promoted_is_refused(staff_user):
    with pytest.raises(Conflict):
        services.policy_rollback(actor=staff_user)
    assert not PolicyChange.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_two_admins_promoting_at_once_leave_exactly_one_active(registry):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    Policy.objects.create(
        name="linucb-v2", algorithm="linucb", dimension=12, role="shadow"
    )
    barrier = threading.Barrier(2)
    outcomes = []

    def promote(name: str) -> None:
        barrier.wait()
        try:
            services.policy_promote(
                name=name, actor=None, evidence_for=lambda **_: _evidence(shadow=name)
            )
            outcomes.append("promoted")
        except Conflict:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=promote, args=(n,)) for n in ("egreedy-v2", "linucb-v2")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The second waits for the first's locks, then finds a new active policy
    # its evidence does not name.
    assert sorted(outcomes) == ["promoted", "refused"]
    assert Policy.objects.filter(role="active").count() == 1
    assert PolicyChange.objects.filter(action=ChangeAction.PROMOTE).count() == 1


@pytest.mark.parametrize(
    ("raw", "ok"), [("0.01", True), ("0", True), ("-0.1", False), ("nan", False),
                    ("inf", False), ("wide", False)]
)  # fmt: skip
def test_the_gate_margin_setting_fails_loudly_on_a_bad_value(raw, ok):
    env = {**os.environ, "OO_ML_GATE_MARGIN": raw}
    done = subprocess.run(
        [sys.executable, "-c", "import oo_ml.settings as s; print(s.GATE_MARGIN)"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],  # the project's root
        capture_output=True,
        text=True,
        check=False,
    )
    if ok:
        assert done.returncode == 0, done.stderr
        assert float(done.stdout) == float(raw)
    else:
        assert done.returncode != 0
        assert "ImproperlyConfigured" in done.stderr
        assert "OO_ML_GATE_MARGIN" in done.stderr
