"""The five profile features: the registry, the maths, and the two database paths."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policies import bandits
from policies.serializers import ProfileFeaturesField
from profiles import features, selectors, services
from profiles.features import EventCounts, compute, preferred_hour
from profiles.models import Profile
from profiles.services import events_record_bulk


def hours(**counts: int) -> tuple[int, ...]:
    """done_by_hour from keyword counts: hours(h20=4, h9=1)."""
    by_hour = [0] * 24
    for key, n in counts.items():
        by_hour[int(key[1:])] = n
    return tuple(by_hour)


# --- registry -------------------------------------------------------------------


def test_the_registry_names_are_the_ones_the_d12_policy_encodes():
    assert features.NAMES == bandits.PROFILE_NAMES


def test_scoring_validates_each_feature_by_its_registry_entry():
    items = ProfileFeaturesField.items
    assert tuple(items) == features.NAMES
    for feature in features.FEATURES:
        field = items[feature.name]
        assert (field.min_value, field.max_value) == (feature.minimum, feature.maximum)
        assert field.help_text == feature.description
    assert items["preferred_hour"].run_validation(23) == 23
    with pytest.raises(Exception, match="whole"):
        items["tip_volume_30d"].run_validation(1.5)


# --- pure maths ---------------------------------------------------------------


def test_the_rates_divide_by_served_and_are_null_without_it():
    values = compute(EventCounts(served=10, done=4, dismissed=2))
    assert values["completion_rate_30d"] == 0.4
    assert values["dismiss_rate_30d"] == 0.2
    assert values["tip_volume_30d"] == 10

    none_served = compute(EventCounts(done=3, dismissed=1))
    assert none_served["completion_rate_30d"] is None
    assert none_served["dismiss_rate_30d"] is None
    assert none_served["tip_volume_30d"] == 0


def test_a_rate_never_exceeds_one_when_reactions_outnumber_served_events():
    assert compute(EventCounts(served=2, done=5))["completion_rate_30d"] == 1.0


def test_mean_dwell_counts_only_done_events_that_carry_one():
    values = compute(EventCounts(done=5, done_dwell_sum=425_000, done_dwell_count=4))
    assert values["mean_dwell_ms_30d"] == 106_250
    assert compute(EventCounts(done=2))["mean_dwell_ms_30d"] is None


@pytest.mark.parametrize(
    ("by_hour", "expected"),
    [
        (hours(h20=4), 20),
        (hours(h20=2), None),  # under three done events
        (hours(h20=1, h21=1, h5=1), 5),  # a three-way tie: the earliest
        (hours(h23=2, h0=2), 0),
        (hours(h9=2, h18=3), 18),
        (hours(), None),
    ],
)
def test_preferred_hour_is_the_most_done_hour_ties_to_the_earliest(by_hour, expected):
    assert preferred_hour(by_hour) == expected


# --- database: one user, many users ---------------------------------------------

NOW = timezone.now()


def event(user: str, kind: str, *, days_ago: float = 1, **extra) -> dict:
    return {
        "user_id": user,
        "tip_id": "t",
        "kind": kind,
        "occurred_at": NOW - dt.timedelta(days=days_ago),
        **extra,
    }


def a_mixed_history(user: str, rng: np.random.Generator) -> list[dict]:
    kinds = ["served", "viewed", "done", "dismissed", "snoozed"]
    rows = []
    for _ in range(int(rng.integers(0, 40))):
        kind = kinds[int(rng.integers(5))]
        dwell = None if rng.random() < 0.3 else int(rng.integers(0, 900_000))
        rows.append(
            event(
                user,
                kind,
                days_ago=float(rng.uniform(0, 40)),  # some fall outside the window
                dwell_ms=dwell,
                hour_of_day=int(rng.integers(24)),
            )
        )
    return rows


@pytest.mark.django_db
def test_only_the_last_30_days_count():
    events_record_bulk(
        [
            event("u", "served", days_ago=29.9),
            event("u", "done", days_ago=29.9, dwell_ms=20_000),
            event("u", "served", days_ago=30.1),
            event("u", "done", days_ago=30.1, dwell_ms=500_000),
            event("other", "served"),
        ]
    )
    counts = selectors.event_counts(user_id="u", now=NOW)
    assert (counts.served, counts.done, counts.done_dwell_sum) == (1, 1, 20_000)


@pytest.mark.django_db
def test_one_user_is_a_row_lock_one_aggregate_query_and_one_upsert():
    events_record_bulk([event("u", "served"), event("u", "done", dwell_ms=30_000)])
    with CaptureQueriesContext(connection) as queries:
        profile = services.profile_refresh(user_id="u", now=NOW)
    # The test's own transaction turns the service's into savepoints.
    sql = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(sql) == 3, sql
    # The row taken (made if missing) before counting: events wait for the recount.
    assert sql[0].startswith('INSERT INTO "profiles_profile"')
    assert sql[0].endswith("DO UPDATE SET user_id = EXCLUDED.user_id")
    # One user's counts by kind and hour, summed in Python.
    assert "GROUP BY kind, hour_of_day" in sql[1] and "= 'u'" in sql[1]
    assert sql[2].startswith('INSERT INTO "profiles_profile"')
    assert "ON CONFLICT" in sql[2]
    stored = Profile.objects.get(user_id="u")
    assert stored.features == profile.features
    assert stored.features["completion_rate_30d"] == 1.0
    assert stored.computed_at == NOW


@pytest.mark.django_db
def test_the_bulk_path_gives_exactly_the_one_user_values():
    rng = np.random.default_rng(11)
    users = [f"user-{i}" for i in range(60)]
    events_record_bulk([row for u in users for row in a_mixed_history(u, rng)])
    users.append("nobody")  # no events at all

    one_by_one = {
        u: services.profile_refresh(user_id=u, now=NOW).features for u in users
    }
    Profile.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        assert services.profiles_refresh(user_ids=users, now=NOW, chunk_size=25) == 61
    # Three chunks: a lock on its users, one grouped aggregate and one upsert each.
    sql = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(sql) == 9
    assert sum("SET user_id = EXCLUDED.user_id" in statement for statement in sql) == 3
    bulk = {p.user_id: p.features for p in Profile.objects.all()}

    assert bulk == one_by_one
    assert bulk["nobody"] == {
        "completion_rate_30d": None,
        "dismiss_rate_30d": None,
        "mean_dwell_ms_30d": None,
        "preferred_hour": None,
        "tip_volume_30d": 0,
    }
    # The random histories exercise every feature, not only the nulls.
    for name in features.NAMES:
        assert any(values[name] not in (None, 0) for values in bulk.values()), name


@pytest.mark.django_db
def test_a_bulk_refresh_overwrites_older_values():
    events_record_bulk([event("u", "served")])
    services.profiles_refresh(user_ids=["u"], now=NOW - dt.timedelta(hours=1))
    events_record_bulk([event("u", "done", days_ago=0)])
    services.profiles_refresh(user_ids=["u"], now=NOW)

    profile = Profile.objects.get(user_id="u")
    assert profile.completion_rate_30d == 1.0
    assert profile.done_30d == 1
    assert profile.computed_at == NOW
