"""The promotion gate's one seam to the simulations app.

``policies`` is the lowest app and imports no higher one. The evidence that a
shadow may replace the active policy is a simulation run, so the simulations
app hands the gate its evidence finder, and the drawing of the evidence's
interval, when Django starts (``SimulationsConfig.ready``). Without a source
there is no evidence, and the gate refuses every promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.models import Policy
    from policies.services import Evidence


@dataclass(frozen=True, slots=True)
class EvidenceSource:
    # (shadow=, active=) -> the latest evidence for promoting shadow, or None
    evidence_for: Callable[..., Evidence | None]
    # (mean=, low=, high=, margin=, outcome=) -> the interval's chart geometry
    interval_chart: Callable[..., Any]


_source: EvidenceSource | None = None


def evidence_source_register(source: EvidenceSource) -> None:
    global _source
    _source = source


def promotion_evidence(*, shadow: Policy, active: Policy) -> Evidence | None:
    """The evidence for promoting ``shadow`` over ``active``; None without any."""
    if _source is None:
        return None
    return _source.evidence_for(shadow=shadow, active=active)


def interval_chart(
    *, mean: float, low: float, high: float, margin: float, outcome: str
) -> Any:
    """The evidence's interval laid out for the promote page; None without a
    source to draw it."""
    if _source is None:
        return None
    return _source.interval_chart(
        mean=mean, low=low, high=high, margin=margin, outcome=outcome
    )
