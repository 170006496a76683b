"""Reads: events counted per user, stored profiles, what is stale."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum

from oo_ml.db import aware, fetch_all, fetch_one
from profiles import features, inference
from profiles.features import EventCounts
from profiles.models import COUNT_FIELDS, Event, Kind, Profile, counts_from_values


def window_start(now: datetime) -> datetime:
    return now - timedelta(days=features.WINDOW_DAYS)


def _counting() -> dict:
    """The aggregates behind the five features, as conditional counts.

    The same expressions serve one user (``aggregate``) and many (``annotate``
    under GROUP BY user_id), so the two paths cannot disagree.
    """
    done = Q(kind=Kind.DONE)
    counting = {kind: Count("id", filter=Q(kind=kind)) for kind in Kind.values}
    counting["done_dwell_sum"] = Sum("dwell_ms", filter=done)
    counting["done_dwell_count"] = Count("dwell_ms", filter=done)  # skips NULLs
    for hour in range(features.HOURS):
        counting[f"done_h{hour}"] = Count("id", filter=done & Q(hour_of_day=hour))
    return counting


_COUNTING = _counting()


def _counts(row: dict) -> EventCounts:
    return EventCounts(
        served=row[inference.SERVED],
        viewed=row[inference.VIEWED],
        done=row[inference.DONE],
        dismissed=row[inference.DISMISSED],
        snoozed=row[inference.SNOOZED],
        # SUM of a bigint is a numeric on PostgreSQL, NULL over no rows.
        done_dwell_sum=int(row["done_dwell_sum"] or 0),
        done_dwell_count=row["done_dwell_count"],
        done_by_hour=tuple(row[f"done_h{hour}"] for hour in range(features.HOURS)),
    )


_EVENT = Event._meta.db_table
# One user's counts by kind and hour: plain SQL (see oo_ml/db.py), a few dozen
# rows summed here. A user's first profile and every stale one are recounted
# with it, and compiling the ORM's thirty filtered counts cost more than running
# them.
_USER_COUNTS_SQL = f"""
    SELECT kind, hour_of_day, COUNT(*), SUM(dwell_ms), COUNT(dwell_ms)
    FROM {_EVENT} WHERE user_id = %s AND occurred_at >= %s
    GROUP BY kind, hour_of_day
"""


def event_counts(*, user_id: str, now: datetime) -> EventCounts:
    """One user's counts over the window: one grouped query."""
    rows = fetch_all(_USER_COUNTS_SQL, [user_id, window_start(now)])
    by_kind = dict.fromkeys(Kind.values, 0)
    done_by_hour = [0] * features.HOURS
    dwell_sum = dwell_count = 0
    for kind, hour, n, dwells, with_dwell in rows:
        by_kind[kind] += n
        if kind == Kind.DONE:
            done_by_hour[hour] += n
            dwell_sum += int(dwells or 0)
            dwell_count += with_dwell
    return EventCounts(
        served=by_kind[inference.SERVED],
        viewed=by_kind[inference.VIEWED],
        done=by_kind[inference.DONE],
        dismissed=by_kind[inference.DISMISSED],
        snoozed=by_kind[inference.SNOOZED],
        done_dwell_sum=dwell_sum,
        done_dwell_count=dwell_count,
        done_by_hour=tuple(done_by_hour),
    )


def event_counts_many(
    *, user_ids: Sequence[str], now: datetime
) -> dict[str, EventCounts]:
    """Many users' counts over the window: one query, grouped by user.

    A user with no event in the window is absent from the answer.
    """
    rows = (
        Event.objects.filter(user_id__in=user_ids, occurred_at__gte=window_start(now))
        .values("user_id")
        .annotate(**_COUNTING)
        .order_by()
    )
    return {row["user_id"]: _counts(row) for row in rows}


def event_kind_counts(*, user_id: str, now: datetime) -> dict[str, int]:
    """Events by kind over the window, every kind present (the admin's table)."""
    rows = (
        Event.objects.filter(user_id=user_id, occurred_at__gte=window_start(now))
        .values_list("kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = dict.fromkeys(Kind.values, 0)
    counts.update(dict(rows))
    return counts


def user_has_events(*, user_id: str) -> bool:
    return Event.objects.filter(user_id=user_id).exists()


_PROFILE = Profile._meta.db_table
# A user's stored counts and when they were recounted, for ``%(user)s``: plain
# SQL (see oo_ml/db.py). /score reads it in the same statement as the user's
# bandit states (profiles.services.SCORING_PROFILE); absent, every column is null.
PROFILE_SQL = (
    f"SELECT {', '.join(COUNT_FIELDS)}, computed_at FROM {_PROFILE} "
    "WHERE user_id = %(user)s"
)


def stored_features(*, user_id: str) -> tuple[dict, datetime] | None:
    """The features of the user's stored counts, and when those were last
    recounted from the events; None without a profile."""
    return features_of_row(fetch_one(PROFILE_SQL, {"user": user_id}))


def features_of_row(row: Sequence | None) -> tuple[dict, datetime] | None:
    """``stored_features`` of a row of PROFILE_SQL's columns (all null: none)."""
    if row is None or row[-1] is None:
        return None
    # SQLite's is read back naive (stored in UTC).
    return features.compute(counts_from_values(row[:-1])), aware(row[-1])


def profile_get(*, user_id: str) -> Profile | None:
    return Profile.objects.filter(user_id=user_id).first()


def stale_user_ids(*, now: datetime, older_than_seconds: float) -> list[str]:
    """Users whose profile is older than ``older_than_seconds`` and may have
    changed, and users with events in the window but no profile yet.

    A stale profile that counts nothing (no served, done or dismissed event)
    changes only if the user has events in the window again: the dormant users,
    most of them in time, are left alone.
    """
    active = Event.objects.filter(occurred_at__gte=window_start(now)).values("user_id")
    stale = (
        Profile.objects.filter(
            computed_at__lt=now - timedelta(seconds=older_than_seconds)
        )
        .filter(
            Q(tip_volume_30d__gt=0)
            | Q(done_30d__gt=0)
            | Q(dismissed_30d__gt=0)
            | Q(user_id__in=active)
        )
        .values_list("user_id", flat=True)
    )
    unprofiled = (
        Event.objects.filter(occurred_at__gte=window_start(now))
        .exclude(user_id__in=Profile.objects.values("user_id"))
        .values_list("user_id", flat=True)
        .distinct()
        .order_by()
    )
    return sorted({*stale, *unprofiled})
