"""Resetting a user: their state under every policy and their decisions go."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count

from oo_ml.db import names_lock
from oo_ml.errors import NotFound
from policies import rollups
from policies.models import BanditState, ChangeAction, Decision, Policy
from policies.services.history import policy_change_record
from policies.services.rewards import user_states_lock_name


@dataclass(frozen=True, slots=True)
class ResetResult:
    user_id: str
    states_deleted: int
    decisions_deleted: int


@transaction.atomic
def user_reset(*, user_id: str, actor: AbstractBaseUser | None) -> ResetResult:
    """Clear the user's state under every policy and their decision history.

    Recorded in each touched policy's history with what was cleared. The reward
    log stays: it is the audit trail, and it keeps replayed event ids from being
    applied twice.
    """
    # The user's lock, then the rows in policy order (as a reward locks them:
    # no deadlock): a reward landing meanwhile waits and then starts afresh,
    # and one creating the user's states finishes first.
    names_lock([user_states_lock_name(user_id)])
    states = {
        s.policy_id: s
        for s in BanditState.objects.filter(user_id=user_id)
        .order_by("policy_id")
        .select_for_update()
    }
    decisions = Decision.objects.filter(user_id=user_id)
    counts = dict(decisions.values_list("policy").annotate(n=Count("id")))
    if not states and not counts:
        raise NotFound(f"User {user_id!r} has no state or decisions.", field="user_id")
    for policy in Policy.objects.filter(id__in={*states, *counts}):
        state = states.get(policy.id)
        policy_change_record(
            action=ChangeAction.RESET,
            policy=policy,
            actor=actor,
            user_id=user_id,
            before={
                "reward_count": state.reward_count if state else 0,
                "cumulative_reward": state.cumulative_reward if state else 0.0,
                "decisions": counts.get(policy.id, 0),
            },
            after={"reward_count": 0, "cumulative_reward": 0.0, "decisions": 0},
        )
    BanditState.objects.filter(id__in=[s.id for s in states.values()]).delete()
    return ResetResult(user_id, len(states), _decisions_delete(user_id))


def _decisions_delete(user_id: str) -> int:
    """Delete a user's decisions without loading them, and take them out of
    the roll-ups. The rows that point at them (the reward log, events: all
    SET_NULL) keep their place and lose the link; ``QuerySet.delete()`` would
    fetch every decision, JSON and all, first.

    Deleted first: a reward in flight under the locks holds its decision
    (``_decision_hold``), so the delete waits for it to commit, and the links
    are cleared after; one written without them waits on the user's states,
    which the reset has locked, and then finds them gone (done again under
    the locks, it answers 404).
    """
    with connection.cursor() as cursor:
        cursor.execute(_DECISIONS_DELETE_SQL, [user_id])
        deleted = cursor.fetchall()
        rollups.decisions_uncount((row[1:] for row in deleted), cursor)
    ids = [row[0] for row in deleted]
    for relation in Decision._meta.related_objects:
        for start in range(0, len(ids), 5000):
            relation.related_model._base_manager.filter(
                **{f"{relation.field.name}__in": ids[start : start + 5000]}
            ).update(**{relation.field.name: None})
    return len(deleted)


_DECISIONS_DELETE_SQL = f"""
    DELETE FROM {Decision._meta.db_table} WHERE user_id = %s
    RETURNING id, policy_id, created_at, role, tip_id, request_id
"""
