"""The shadows' off-policy values for the control room, computed by beat and
stored.

Estimating a shadow's value reads up to a day of the active policy's rewarded
decisions and bootstraps them (``selectors.shadow_values``): a fraction of a
second at a few thousand samples, about a second at the sample cap on a busy
machine. The control room must answer in well under that whatever the logs
hold, so beat computes the values every ``OO_ML_SHADOW_VALUE_SECONDS`` and
stores them (``ShadowValue``); the page reads the stored rows and shows their
age.
"""

from __future__ import annotations

import datetime as dt
import time

from django.db import transaction

from policies import selectors, stats
from policies.models import Policy, Role, ShadowValue

WINDOW = dt.timedelta(days=1)

_ESTIMATES = ("snips", "dr")
_FIELDS = [
    "computed_at",
    "since",
    "seconds",
    "samples",
    "effective_samples",
    "matched",
    "logged_mean",
    "enough",
    *(f"{name}{end}" for name in _ESTIMATES for end in ("", "_low", "_high")),
]


def _row(
    policy: Policy, evidence: stats.OffPolicyEvidence | None, **common
) -> ShadowValue:
    if evidence is None:
        return ShadowValue(policy=policy, samples=0, **common)
    estimates = {}
    for name, estimate in evidence.estimates:
        estimates[name] = estimate.value
        estimates[f"{name}_low"] = estimate.low
        estimates[f"{name}_high"] = estimate.high
    return ShadowValue(
        policy=policy,
        samples=evidence.samples,
        effective_samples=evidence.effective_samples,
        matched=evidence.matched,
        logged_mean=evidence.logged_mean,
        enough=evidence.enough,
        **estimates,
        **common,
    )


def shadow_values_refresh(*, now: dt.datetime | None = None) -> list[ShadowValue]:
    """Compute every shadow's value over the day before ``now`` and store it,
    replacing the one stored before; drop the rows of policies no longer
    shadows. Idempotent: a second run over the same log stores the same
    values (the bootstrap is seeded)."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - WINDOW
    started = time.perf_counter()
    shadows = list(Policy.objects.filter(role=Role.SHADOW))
    values = selectors.shadow_values(since=since, shadows=shadows)
    common = {
        "computed_at": now,
        "since": since,
        "seconds": time.perf_counter() - started,
    }
    rows = [_row(policy, values.get(policy.id), **common) for policy in shadows]
    with transaction.atomic():
        ShadowValue.objects.exclude(policy__in=shadows).delete()
        # An upsert: two refreshes at once both succeed, the later one wins.
        ShadowValue.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["policy"],
            update_fields=_FIELDS,
        )
    return rows
