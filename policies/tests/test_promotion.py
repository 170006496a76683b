"""Promotion behind the simulation gate, and rollback (SPEC §7)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from oo_ml.errors import Conflict, NotFound
from policies import services
from policies.models import ChangeAction, Policy, PolicyChange
from policies.tests.test_api_flow import reward, score


def _evidence(shadow_mean: float = 0.6, active_mean: float = 0.5, **extra):
    fields = dict(
        run_id="run-1",
        shadow="egreedy-v2",
        active="egreedy-v1",
        shadow_mean_reward=shadow_mean,
        active_mean_reward=active_mean,
        seed=42,
        finished_at="2026-11-24T12:00:00+00:00",
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
    assert change.evidence["shadow_mean_reward"] == 0.6
    assert "egreedy-v1 became a shadow" in change.summary


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (None, "No finished simulation ran egreedy-v2 beside"),
        (_evidence(shadow="linucb-v1"), "No finished simulation ran egreedy-v2"),
        (_evidence(active="linucb-v1"), "No finished simulation ran egreedy-v2"),
        (_evidence(0.49, 0.5), "mean reward of 0.4900, below egreedy-v1's 0.5000"),
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
def test_a_tie_is_enough_evidence(staff_user):
    services.policy_promote(
        name="egreedy-v2",
        actor=staff_user,
        evidence_for=lambda **_: _evidence(0.5, 0.5),
    )
    assert _roles()["egreedy-v2"][0] == "active"


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
