"""Promotion behind the simulation gate, and its rollback."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from oo_ml.errors import Conflict, NotFound
from policies import stats
from policies.models import ChangeAction, Policy, Role
from policies.selectors import promotion_to_undo
from policies.services.history import policy_change_record


@dataclass(frozen=True, slots=True)
class Evidence:
    """A finished simulation that ran a shadow beside the active policy
    (docs/promotion.md):
    the paired per-user difference of mean reward, shadow - active, over
    ``users`` users, with its 95% interval [low, high] (None without one)."""

    run_id: str
    shadow: str
    active: str
    shadow_mean_reward: float
    active_mean_reward: float
    seed: int
    finished_at: str
    users: int
    difference: float
    low: float | None
    high: float | None
    difference_sd: float | None

    @property
    def interval(self) -> stats.Interval:
        return stats.Interval(
            self.difference, self.low, self.high, self.difference_sd, self.users
        )


def gate_margin() -> float:
    """How far below the active policy a shadow's interval may start (a setting)."""
    return float(settings.GATE_MARGIN)


# What a promotion changes, and a rollback puts back.
_SWITCHES = ("role", "enabled", "learns_live")


def _switches(policy: Policy) -> dict:
    return {field: getattr(policy, field) for field in _SWITCHES}


def _switches_set(policies: Sequence[tuple[Policy, Mapping]]) -> None:
    """Give each policy its switches, in the order given.

    The policy stepping down must come first: the database allows one active
    policy at any moment, even inside a transaction.
    """
    for policy, switches in policies:
        for field in _SWITCHES:
            setattr(policy, field, switches[field])
        policy.save(update_fields=[*_SWITCHES, "updated_at"])


def _policies_lock() -> dict[str, Policy]:
    """Every policy, locked in one order (by id), so two admins cannot interleave."""
    return {p.name: p for p in Policy.objects.select_for_update().order_by("id")}


@transaction.atomic
def policy_promote(
    *,
    name: str,
    actor: AbstractBaseUser | None,
    evidence_for: Callable[..., Evidence | None],
) -> Policy:
    """Make shadow ``name`` active, if the evidence allows (docs/promotion.md).

    ``evidence_for(shadow=, active=)`` finds the evidence (callers pass
    ``policies.gate.promotion_evidence``, which the simulations app serves): a
    finished simulation of this shadow beside the active policy in which the 95%
    interval of the paired per-user difference (shadow - active) starts at
    -margin or above (``promotion_refusal``).
    It is asked under the policies' locks, so it judges the policy that is
    active at that moment. Both keep their per-user state. Recorded with the
    evidence.
    """
    policies = _policies_lock()
    shadow = policies.get(name)
    if shadow is None:
        raise NotFound(f"No policy named {name!r}.", field="name")
    active = next((p for p in policies.values() if p.role == Role.ACTIVE), None)
    if shadow.role != Role.SHADOW:
        raise Conflict(f"{name} is {shadow.role}: only a shadow can be promoted.")
    if active is None:
        raise Conflict("No policy is active: there is nothing to compare with.")
    evidence = evidence_for(shadow=shadow, active=active)
    margin = gate_margin()
    refusal = promotion_refusal(
        shadow=name, active=active.name, evidence=evidence, margin=margin
    )
    if refusal:
        raise Conflict(refusal, field="name")
    before = {p.name: _switches(p) for p in (shadow, active)}
    # The old active becomes a shadow that does not score but keeps learning,
    # so a rollback hands it back warm.
    _switches_set(
        [
            (active, {"role": Role.SHADOW, "enabled": False, "learns_live": True}),
            (shadow, {**before[shadow.name], "role": Role.ACTIVE, "enabled": False}),
        ]
    )
    policy_change_record(
        action=ChangeAction.PROMOTE,
        policy=shadow,
        actor=actor,
        before={"role": Role.SHADOW, "active": active.name, "policies": before},
        after={
            "role": Role.ACTIVE,
            "shadow": active.name,
            "policies": {p.name: _switches(p) for p in (shadow, active)},
        },
        evidence={
            **dataclasses.asdict(evidence),
            "margin": margin,
            "verdict": stats.PASS,
        },
    )
    return shadow


def promotion_refusal(
    *,
    shadow: str,
    active: str,
    evidence: Evidence | None,
    margin: float | None = None,
) -> str | None:
    """Why ``shadow`` may not replace ``active`` on this evidence; None if it may.

    It may iff the lower end of the 95% interval of the paired difference
    (shadow - active) is at least -``margin`` (default: the setting).
    """
    if evidence is None or {evidence.shadow, evidence.active} != {shadow, active}:
        return (
            f"No finished simulation ran {shadow} beside the active policy "
            f"{active}: run one first."
        )
    margin = gate_margin() if margin is None else margin
    verdict = stats.gate_verdict(evidence.interval, margin=margin)
    if verdict.passed:
        return None
    where = f"In simulation {evidence.run_id} ({evidence.users:,} users)"
    diff = f"{shadow} - {active} = {evidence.difference:+.4f} per decision"
    floor = f"-{margin:g}" if margin else "0"
    if evidence.low is None:
        return (
            f"Inconclusive: {where}, {diff} has no interval (it needs at least 2 "
            "users, and a run summarised with per-user results): run a larger "
            "simulation."
        )
    ci = f"95% interval [{evidence.low:+.4f}, {evidence.high:+.4f}]"
    if verdict.outcome == stats.WORSE:
        return f"{where}, {diff}, {ci}: all of it below {floor}."
    if verdict.users_needed is None:
        needed = "the estimate sits on the margin: no number of users would decide it"
    else:
        needed = f"about {verdict.users_needed:,} users would decide it"
    return f"Inconclusive: {where}, {diff}, {ci} straddles {floor}; {needed}."


@transaction.atomic
def policy_rollback(*, actor: AbstractBaseUser | None) -> Policy:
    """Undo the latest promotion: both policies get back the role, scoring
    toggle and learning switch they had before it, in one step.

    Refused when there is nothing to undo, or when the active policy has changed
    since that promotion (roll back the later change first).
    """
    policies = _policies_lock()
    latest = promotion_to_undo()
    if latest is None:
        raise Conflict("There is no promotion to roll back.")
    promoted = policies[latest.policy.name]
    previous = policies.get(latest.before["active"])
    if promoted.role != Role.ACTIVE or previous is None:
        raise Conflict(
            f"{promoted.name} is no longer the active policy: the promotion of "
            f"{latest.created_at:%Y-%m-%d %H:%M} cannot be rolled back."
        )
    was = previous.role
    now = {p.name: _switches(p) for p in (promoted, previous)}
    # A promotion recorded before the switches were: roles only, as it did.
    restore = latest.before.get("policies") or {
        promoted.name: {**now[promoted.name], "role": Role.SHADOW, "enabled": False},
        previous.name: {**now[previous.name], "role": Role.ACTIVE, "enabled": False},
    }
    _switches_set(
        [
            (promoted, restore[promoted.name]),
            (previous, restore[previous.name]),
        ]
    )
    policy_change_record(
        action=ChangeAction.ROLLBACK,
        policy=previous,
        actor=actor,
        before={"role": was, "active": promoted.name, "policies": now},
        after={
            "role": Role.ACTIVE,
            "shadow": promoted.name,
            "policies": {p.name: _switches(p) for p in (promoted, previous)},
        },
        evidence={"undoes": str(latest.id)},
    )
    return previous
