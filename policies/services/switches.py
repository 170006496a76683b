"""A policy's on/off switches: a shadow's scoring, and learning from live
rewards. Each flip is recorded."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from oo_ml.errors import Conflict, NotFound
from policies.models import ChangeAction, Policy, Role
from policies.services.history import policy_change_record


@transaction.atomic
def policy_toggle(
    *, name: str, actor: AbstractBaseUser | None, enabled: bool | None = None
) -> Policy:
    """Turn a shadow's scoring on or off (flip it when ``enabled`` is None).

    Asking for the state it already has changes nothing and records nothing, so
    a double-clicked switch does not flip twice.
    """
    policy = _policy_for_switch(name)
    if policy.role != Role.SHADOW:
        raise Conflict(
            f"{name} is {policy.role}: only a shadow has an on/off switch.",
            field="name",
        )
    return _switch_flip(
        policy, "enabled", enabled, action=ChangeAction.TOGGLE, actor=actor
    )


def _policy_for_switch(name: str) -> Policy:
    policy = Policy.objects.select_for_update().filter(name=name).first()
    if policy is None:
        raise NotFound(f"No policy named {name!r}.", field="name")
    return policy


def _switch_flip(
    policy: Policy,
    field: str,
    wanted: bool | None,
    *,
    action: ChangeAction,
    actor: AbstractBaseUser | None,
) -> Policy:
    """Set a policy's on/off ``field`` (flip it when ``wanted`` is None),
    recorded; asking for the state it has changes and records nothing, so a
    double-clicked switch does not flip twice."""
    was = getattr(policy, field)
    new = not was if wanted is None else wanted
    if new != was:
        policy_change_record(
            action=action,
            policy=policy,
            actor=actor,
            before={field: was},
            after={field: new},
        )
        setattr(policy, field, new)
        policy.save(update_fields=[field, "updated_at"])
    return policy


@transaction.atomic
def policy_learning_set(
    *, name: str, actor: AbstractBaseUser | None, learns_live: bool | None = None
) -> Policy:
    """Turn a policy's learning from live rewards on or off (flip it when None).

    Any role may learn: a shadow to arrive warm if promoted, a retired policy
    to stay current. As with the toggle, asking for the state it has changes
    and records nothing.
    """
    return _switch_flip(
        _policy_for_switch(name),
        "learns_live",
        learns_live,
        action=ChangeAction.LEARNING,
        actor=actor,
    )
