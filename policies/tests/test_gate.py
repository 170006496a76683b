"""The promotion gate's seam: the simulations app hands over its evidence."""

from __future__ import annotations

import pytest

from oo_ml.errors import Conflict
from policies import gate, services
from policies.models import Policy
from simulations import charts, selectors


def test_the_simulations_app_is_the_gates_source_once_django_is_ready():
    source = gate._source
    assert source is not None
    assert source.evidence_for is selectors.promotion_evidence
    assert source.interval_chart is charts.interval_chart
    drawn = gate.interval_chart(
        mean=0.02, low=0.01, high=0.03, margin=0.0, outcome="pass"
    )
    assert drawn == charts.interval_chart(
        mean=0.02, low=0.01, high=0.03, margin=0.0, outcome="pass"
    )


@pytest.mark.django_db
def test_without_a_source_there_is_no_evidence_and_promotion_is_refused(
    monkeypatch, staff_user
):
    monkeypatch.setattr(gate, "_source", None)
    v1, v2 = (
        Policy.objects.get(name="egreedy-v1"),
        Policy.objects.get(name="egreedy-v2"),
    )
    assert gate.promotion_evidence(shadow=v2, active=v1) is None
    assert (
        gate.interval_chart(mean=0.02, low=0.01, high=0.03, margin=0.0, outcome="pass")
        is None
    )

    with pytest.raises(Conflict, match="No finished simulation ran egreedy-v2"):
        services.policy_promote(
            name="egreedy-v2", actor=staff_user, evidence_for=gate.promotion_evidence
        )
    assert Policy.objects.get(name="egreedy-v2").role == "shadow"
