"""The policies' history: every change made to a policy, by whom, and why."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser

from policies.models import ChangeAction, Policy, PolicyChange


def policy_change_record(
    *,
    action: ChangeAction,
    policy: Policy,
    actor: AbstractBaseUser | None,
    before: dict,
    after: dict,
    user_id: str = "",
    evidence: dict | None = None,
) -> PolicyChange:
    return PolicyChange.objects.create(
        action=action,
        policy=policy,
        user_id=user_id,
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "system",
        before=before,
        after=after,
        evidence=evidence or {},
    )
