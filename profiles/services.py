"""Writes: events (and the rewards they imply) and profiles."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from oo_ml.db import (
    fetch_one,
    names_lock,
    on_postgresql,
    rows_insert,
    rows_insert_sql,
)
from oo_ml.errors import Conflict, NotFound
from oo_ml.idempotency import EVENT_REWARD_PREFIX, fingerprint, previous_or_conflict
from policies.models import Reward
from policies.services import (
    decision_candidate,
    decision_gone,
    learned_by,
    reward_apply,
)
from profiles import features, inference, selectors
from profiles.models import COUNT_FIELDS, Event, Kind, Profile, count_values

# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventResult:
    id: uuid.UUID
    event_id: str | None
    kind: str
    decision_id: uuid.UUID | None
    stored: bool
    replayed: bool
    reward: float | None
    trained: str | None  # the policy whose decision it rewarded
    reason: str
    learned_by: tuple[str, ...] = ()  # the other policies that learned from it


def reward_event_id(event_id: uuid.UUID) -> str:
    """The event id of the reward an event implies.

    Derived from the event's own primary key, not the caller's event_id: every
    rewarded event has one (the caller's id is optional), it is unique by
    construction, and the namespace keeps it apart from ids callers send to
    /reward. Replays never reach reward_apply (the event's unique event_id stops
    them first); this id links the reward back to its event and would stop a
    second application all the same.
    """
    return f"{EVENT_REWARD_PREFIX}{event_id}"


def _event_build(
    *,
    user_id: str,
    tip_id: str,
    kind: str,
    dwell_ms: int | None = None,
    decision_id: uuid.UUID | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    hour_of_day: int | None = None,
    now: datetime | None = None,
) -> Event:
    # What the caller sent, not the defaults filled in: a replay that leaves
    # occurred_at out again is the same request.
    digest = fingerprint(
        user_id=user_id,
        tip_id=tip_id,
        kind=kind,
        dwell_ms=dwell_ms,
        decision_id=decision_id,
        occurred_at=None if occurred_at is None else occurred_at.isoformat(),
        hour_of_day=hour_of_day,
    )
    occurred = occurred_at or now or timezone.now()
    return Event(
        user_id=user_id,
        tip_id=tip_id,
        kind=kind,
        dwell_ms=dwell_ms,
        decision_id=decision_id,
        event_id=event_id,
        fingerprint=digest,
        occurred_at=occurred,
        # The hour as the caller wrote occurred_at (their local time if they
        # gave an offset), UTC when they left it out.
        hour_of_day=occurred.hour if hour_of_day is None else hour_of_day,
    )


def _reason(
    event: Event,
    rule: inference.Rule | None,
    trained: str | None,
    refused: str | None = None,
) -> str:
    if rule is None:
        return f"A {event.kind} event carries no reward."
    if event.decision_id is None:
        return "No decision_id: stored for the profile, no decision to learn from."
    if trained is None:
        return f"Stored for the profile; trained nothing: {refused}"
    return f"{rule.label}: {rule.reward:+g} to {trained}."


def _replay_result(event: Event) -> EventResult:
    rule = inference.reward_rule(event.kind, event.dwell_ms)
    reward = (
        Reward.objects.select_related("policy")
        .filter(event_id=reward_event_id(event.id))
        .first()
    )
    trained = reward.policy.name if reward else None
    refused = None
    if rule is not None and event.decision_id is not None and reward is None:
        refused = "the decision had already been rewarded."
    return EventResult(
        id=event.id,
        event_id=event.event_id,
        kind=event.kind,
        decision_id=event.decision_id,
        stored=True,
        replayed=True,
        reward=reward.reward if reward else None,
        trained=trained,
        reason=_reason(event, rule, trained, refused),
        learned_by=learned_by(reward) if reward else (),
    )


def _previous(event: Event) -> Event | None:
    """The event stored before with the same event id, if any (a Conflict if
    its content differs). Under a lock on the id where the log is partitioned:
    its event ids cannot have a unique index (docs/logs.md), so two posts of
    one id queue here and the second finds the first."""
    if on_postgresql():
        names_lock([f"event-id:{event.event_id}"])
    return previous_or_conflict(
        Event.objects, event_id=event.event_id, fingerprint=event.fingerprint
    )


def event_record(
    *,
    user_id: str,
    tip_id: str,
    kind: str,
    dwell_ms: int | None = None,
    decision_id: uuid.UUID | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    hour_of_day: int | None = None,
) -> EventResult:
    """Store one reaction, apply the reward it implies, and bring the user's
    stored profile up to date: together or not at all.

    done, dismissed and snoozed with a ``decision_id`` train the policy that made
    the decision, on the vector it logged, and every policy that learns from
    live rewards (``policies.services.reward_apply``). A decision already
    rewarded trains nothing more (unless rewards are summed): the event is
    still stored, and says why. Without a decision the event only counts for
    the profile. A repeated ``event_id`` with the same content changes nothing;
    with other content it is a Conflict.
    """
    now = timezone.now()
    event = _event_build(
        user_id=user_id,
        tip_id=tip_id,
        kind=kind,
        dwell_ms=dwell_ms,
        decision_id=decision_id,
        event_id=event_id,
        occurred_at=occurred_at,
        hour_of_day=hour_of_day,
        now=now,
    )
    rule = inference.reward_rule(kind, dwell_ms)
    trains = rule is not None and decision_id is not None
    result, refused = None, None
    try:
        with transaction.atomic():
            if event_id is not None and (previous := _previous(event)):
                return _replay_result(previous)
            if decision_id is not None and not trains:
                # reward_apply checks the decision for rewarded kinds; check it
                # for the others too: it exists, is this user's, and offered
                # this tip.
                decision_candidate(
                    decision_id=decision_id,
                    user_id=user_id,
                    tip_id=tip_id,
                    policy_name=None,
                )
            # The event first: a concurrent post of the same event_id waits on
            # the lock taken above (or, on plain tables, on this row's unique
            # index entry, then fails, and replays below).
            _event_store(event, now=now)
            if trains:
                try:
                    result = reward_apply(
                        user_id=user_id,
                        tip_id=tip_id,
                        reward=rule.reward,
                        features={},
                        day_of_week=0,
                        profile={},
                        decision_id=decision_id,
                        event_id=reward_event_id(event.id),
                    )
                except Conflict as conflict:
                    if conflict.code != "already_rewarded":
                        raise
                    refused = conflict.detail
    except IntegrityError:
        decision_gone(decision_id)
        if event_id is None or not (
            previous := previous_or_conflict(
                Event.objects, event_id=event_id, fingerprint=event.fingerprint
            )
        ):
            raise
        return _replay_result(previous)
    return EventResult(
        id=event.id,
        event_id=event_id,
        kind=kind,
        decision_id=decision_id,
        stored=True,
        replayed=False,
        reward=rule.reward if result else None,
        trained=result.policy if result else None,
        reason=_reason(event, rule, result.policy if result else None, refused),
        learned_by=result.learned_by if result else (),
    )


def events_record_bulk(
    events: Iterable[Mapping[str, Any]], *, batch_size: int = 5000
) -> int:
    """Store many events at once (the tests' and benchmarks' loader); answers
    how many.

    Each mapping takes ``event_record``'s arguments. No rewards are inferred
    and no replay is checked: the caller owns both. An event_id already stored
    fails the whole batch.
    """
    now = timezone.now()
    rows = [_event_build(now=now, **event) for event in events]
    Event.objects.bulk_create(rows, batch_size=batch_size)
    return len(rows)


# --- profiles -----------------------------------------------------------------
#
# A profile row keeps the user's counts over the window; each event adds itself
# to them (``_event_store``), and a recount from the events (``profile_refresh``,
# ``profiles_refresh``) replaces them: for the events leaving the window (the
# TTL), and for a user's first profile. The two writers never lose each other's
# work: an event's upsert holds the row until it commits, and a recount takes
# the row (creating it if need be) before it counts, so it either counts a
# committed event or runs before the event's upsert adds to its result.

_PROFILE = Profile._meta.db_table
_COUNTS = ", ".join(COUNT_FIELDS)
_VALUES = ", ".join(["%s"] * (len(COUNT_FIELDS) + 4))
_ADDS = ", ".join(f"{c} = {_PROFILE}.{c} + EXCLUDED.{c}" for c in COUNT_FIELDS)
_INCREMENT_SQL = f"""
    INSERT INTO {_PROFILE} (user_id, {_COUNTS}, computed_at, created_at, updated_at)
    VALUES ({_VALUES})
    ON CONFLICT (user_id) DO UPDATE SET {_ADDS}, updated_at = EXCLUDED.updated_at
    RETURNING computed_at = updated_at
"""  # true only for an insert: it stamps both times with one value
_NO_COUNTS = features.EventCounts()


def _event_counts(event: Event, *, now: datetime) -> features.EventCounts:
    """What one event adds to its user's counts: nothing if it is older than
    the window, as a recount at ``now`` would not count it."""
    if event.occurred_at < selectors.window_start(now):
        return _NO_COUNTS
    if event.kind == Kind.SERVED:
        return features.EventCounts(served=1)
    if event.kind == Kind.DISMISSED:
        return features.EventCounts(dismissed=1)
    if event.kind != Kind.DONE:
        return _NO_COUNTS  # viewed and snoozed count for no feature
    by_hour = [0] * features.HOURS
    by_hour[event.hour_of_day] = 1
    return features.EventCounts(
        done=1,
        done_dwell_sum=event.dwell_ms or 0,
        done_dwell_count=int(event.dwell_ms is not None),
        done_by_hour=tuple(by_hour),
    )


def _event_store(event: Event, *, now: datetime) -> None:
    """Insert ``event`` and add it to its user's stored counts, in the caller's
    transaction; on PostgreSQL in one statement (the insert in a WITH clause).

    A user's first profile is recounted from all their events at once, so that
    events stored without one (the bulk loader) count too.
    """
    stamp = Profile._meta.get_field("computed_at").get_db_prep_save(now, connection)
    counts = [event.user_id, *count_values(_event_counts(event, now=now))]
    counts += [stamp, stamp, stamp]
    if on_postgresql():
        insert, params = rows_insert_sql([event])
        (inserted,) = fetch_one(
            f"WITH e AS ({insert}) {_INCREMENT_SQL}", params + counts
        )
    else:  # SQLite takes no insert in a WITH clause
        rows_insert([event])
        (inserted,) = fetch_one(_INCREMENT_SQL, counts)
    if inserted:
        profile_refresh(user_id=event.user_id, now=now)


def _profile_build(
    *, user_id: str, counts: features.EventCounts, now: datetime
) -> Profile:
    return Profile(
        user_id=user_id,
        computed_at=now,
        **dict(zip(COUNT_FIELDS, count_values(counts), strict=True)),
    )


def _profiles_take(user_ids: Sequence[str], *, now: datetime) -> None:
    """Lock the users' profile rows until the transaction ends, creating the
    missing ones (all zero, about to be overwritten); in one order, so two
    recounts of overlapping users cannot deadlock."""
    rows = [Profile(user_id=u, computed_at=now) for u in sorted(user_ids)]
    sql, params = rows_insert_sql(rows)
    with connection.cursor() as cursor:
        cursor.execute(
            f"{sql} ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id",
            params,
        )


def _profiles_upsert(profiles: Sequence[Profile]) -> None:
    Profile.objects.bulk_create(
        profiles,
        update_conflicts=True,
        unique_fields=["user_id"],
        update_fields=[*COUNT_FIELDS, "computed_at", "updated_at"],
    )


@transaction.atomic(savepoint=False)  # inside an event's transaction: no savepoint
def profile_refresh(*, user_id: str, now: datetime | None = None) -> Profile:
    """Recount one user's events in the window now, and store the counts."""
    now = now or timezone.now()
    _profiles_take([user_id], now=now)
    counts = selectors.event_counts(user_id=user_id, now=now)
    profile = _profile_build(user_id=user_id, counts=counts, now=now)
    _profiles_upsert([profile])
    return profile


def profiles_refresh(
    *, user_ids: Iterable[str], now: datetime | None = None, chunk_size: int = 2000
) -> int:
    """Recount and store many users' profiles: three statements per chunk."""
    now = now or timezone.now()
    ids = list(dict.fromkeys(user_ids))
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        with transaction.atomic():
            _profiles_take(chunk, now=now)
            counts = selectors.event_counts_many(user_ids=chunk, now=now)
            _profiles_upsert(
                [
                    _profile_build(user_id=u, counts=counts.get(u, _NO_COUNTS), now=now)
                    for u in chunk
                ]
            )
    return len(ids)


def profiles_refresh_stale(
    *, older_than_seconds: float | None = None, now: datetime | None = None
) -> int:
    """Refresh every profile older than ``older_than_seconds`` (default: the
    TTL), and profile the users who have events but no profile yet; answers how
    many."""
    now = now or timezone.now()
    if older_than_seconds is None:
        older_than_seconds = settings.PROFILE_TTL_SECONDS
    user_ids = selectors.stale_user_ids(now=now, older_than_seconds=older_than_seconds)
    return profiles_refresh(user_ids=user_ids, now=now)


def profile_get_fresh(*, user_id: str) -> Profile:
    """The user's profile, refreshed first if older than the TTL.

    NotFound for a user never seen: no profile and no event at all.
    """
    profile = selectors.profile_get(user_id=user_id)
    if profile is None and not selectors.user_has_events(user_id=user_id):
        raise NotFound(f"User {user_id!r} has no events.", field="user_id")
    if profile is None or profile.is_stale(ttl_seconds=settings.PROFILE_TTL_SECONDS):
        profile = profile_refresh(user_id=user_id)
    return profile


@dataclass(frozen=True)
class ScoringProfile:
    """The stored features /score feeds a profile policy, refreshed if stale.

    /score reads ``sql``'s row with the user's bandit states, in one statement
    (policies.services.decision_make), and ``features`` makes the features of
    it: no other read when the profile is fresh. A user with no profile yet
    gets one computed and stored (all null and zero without events), so the
    next request reads it with the states again.
    """

    sql: str = selectors.PROFILE_SQL

    def features(
        self, user_id: str, row: Sequence | None
    ) -> dict[str, float | int | None]:
        stored = selectors.features_of_row(row)
        if stored is not None:
            values, computed_at = stored
            age = (timezone.now() - computed_at).total_seconds()
            if age <= settings.PROFILE_TTL_SECONDS:
                return values
        return profile_refresh(user_id=user_id).features


SCORING_PROFILE = ScoringProfile()
