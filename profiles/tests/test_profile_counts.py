"""Stored profiles counted as events arrive equal a recount from the events.

Random sequences of events (old, late, replayed, conflicting, rewarding a
decision or not), recounts and bulk refreshes; after every step each stored
profile must hold exactly the counts a recount of the user's events would give.
Then the same with concurrent writers on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oo_ml.db import fetch_one
from oo_ml.errors import Conflict
from policies.services import decision_make
from profiles import features, selectors, services
from profiles.models import Event, Profile, count_values
from profiles.services import event_record, events_record_bulk

KINDS = ("served", "served", "viewed", "done", "done", "dismissed", "snoozed")
USERS = ("a", "b", "c")


def recount(user_id: str) -> features.EventCounts:
    return selectors.event_counts(user_id=user_id, now=timezone.now())


def assert_exact(user_id: str) -> None:
    """The stored counts, and the features /score reads, equal a recount's."""
    stored = Profile.objects.get(user_id=user_id)
    expected = recount(user_id)
    assert count_values(stored.counts) == count_values(expected), user_id
    values, _ = selectors.stored_features(user_id=user_id)
    assert values == features.compute(expected) == stored.features


def days_ago(rng: np.random.Generator) -> float | None:
    """Now, in the window, or older than it; never within an hour of its edge,
    which the seconds a test takes could carry an event across."""
    draw = rng.uniform()
    if draw < 0.4:
        return None
    if draw < 0.85:
        return float(rng.uniform(0, 29.9))
    return float(rng.uniform(30.1, 90))


def random_event(rng: np.random.Generator, now: dt.datetime) -> dict:
    kind = str(rng.choice(KINDS))
    body = {
        "user_id": str(rng.choice(USERS)),
        "tip_id": f"t{rng.integers(3)}",
        "kind": kind,
    }
    if kind == "done" and rng.uniform() < 0.8:
        body["dwell_ms"] = int(rng.integers(0, 900_000))
    if rng.uniform() < 0.5:
        body["hour_of_day"] = int(rng.integers(24))
    if (ago := days_ago(rng)) is not None:
        body["occurred_at"] = now - dt.timedelta(days=ago)
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_any_sequence_of_events_leaves_each_profile_equal_to_a_recount(seed, registry):
    rng = np.random.default_rng(seed)
    now = timezone.now()
    # History stored by the bulk loader, no profile yet: a user's first event
    # must count it all.
    events_record_bulk(random_event(rng, now) | {"user_id": "a"} for _ in range(20))
    decisions = {
        user: decision_make(
            user_id=user,
            candidates=[{"id": f"t{i}", "features": {}} for i in range(3)],
            context={"hour_of_day": 9, "day_of_week": 1},
            profile={},
            rng=rng,
        )
        for user in USERS
    }
    sent: dict[str, dict] = {}  # event id -> the body posted with it
    for step in range(150):
        draw = rng.uniform()
        if draw < 0.08:
            services.profile_refresh(user_id=str(rng.choice(USERS)))
        elif draw < 0.12:
            services.profiles_refresh(user_ids=USERS)
        elif draw < 0.22 and sent:
            event_id = str(rng.choice(sorted(sent)))
            assert event_record(**sent[event_id]).replayed
        elif draw < 0.26 and sent:
            event_id = str(rng.choice(sorted(sent)))
            other = sent[event_id] | {"tip_id": "elsewhere"}
            with pytest.raises(Conflict):
                event_record(**other)
        else:
            body = random_event(rng, now)
            if rng.uniform() < 0.3:
                body["event_id"] = f"e{step}"
                sent[body["event_id"]] = body
            if rng.uniform() < 0.3:
                body["decision_id"] = decisions[body["user_id"]].id
            assert not event_record(**body).replayed
        for user in Profile.objects.values_list("user_id", flat=True):
            assert_exact(user)
    assert set(Profile.objects.values_list("user_id", flat=True)) == set(USERS)
    assert Event.objects.filter(occurred_at__lt=selectors.window_start(now)).exists()


@pytest.mark.django_db
def test_events_leaving_the_window_are_counted_out_by_the_recount_after_the_ttl(
    settings,
):
    for kind in ("served", "served", "done", "dismissed"):
        event_record(user_id="u", tip_id="t", kind=kind, dwell_ms=1000)
    assert_exact("u")
    # A month passes for two of them: they leave the window, and the stored
    # counts keep them until the recount...
    old = timezone.now() - dt.timedelta(days=31)
    Event.objects.filter(kind__in=["served", "done"]).update(occurred_at=old)
    stored = Profile.objects.get(user_id="u")
    assert (stored.tip_volume_30d, stored.done_30d) == (2, 1)
    # ...which the TTL brings (here at once), and events count on from it.
    settings.PROFILE_TTL_SECONDS = 0
    row = fetch_one(services.SCORING_PROFILE.sql, {"user": "u"})  # as /score reads
    assert services.SCORING_PROFILE.features("u", row)["tip_volume_30d"] == 0
    event_record(user_id="u", tip_id="t", kind="done", hour_of_day=7, dwell_ms=5)
    assert_exact("u")
    assert Profile.objects.get(user_id="u").done_h7 == 1


@pytest.mark.django_db
def test_an_event_older_than_the_window_counts_for_nothing():
    event_record(user_id="u", tip_id="t", kind="served")
    before = count_values(Profile.objects.get(user_id="u").counts)
    old = timezone.now() - dt.timedelta(days=30, minutes=1)
    for kind in ("served", "done", "dismissed"):
        event_record(user_id="u", tip_id="t", kind=kind, occurred_at=old)
    assert count_values(Profile.objects.get(user_id="u").counts) == before
    assert Event.objects.count() == 4


@pytest.mark.django_db
def test_an_event_is_one_statement_and_a_first_profile_a_recount():
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")

    def statements(**body) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            event_record(user_id="u", tip_id="t", **body)
        # The test's own transaction turns the service's into savepoints.
        return [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]

    first = statements(kind="served")
    assert len(first) == 4  # the event and its count, then the recount's three
    assert first[0].startswith('WITH e AS (INSERT INTO "profiles_event"')
    assert "ON CONFLICT (user_id) DO UPDATE" in first[0]
    assert len(statements(kind="done", dwell_ms=10)) == 1
    # With an event id: its lock and the replay check first.
    assert len(statements(kind="served", event_id="x")) == 3
    # A replay: the lock, the check, and the reward the event implied, if any.
    assert len(statements(kind="served", event_id="x")) == 3
    assert_exact("u")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_events_and_recounts_of_one_user_leave_it_exact():
    """Sixteen writers race for a user with history but no profile yet (each
    may be the first, which recounts), while recounts run beside them."""
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    rng = np.random.default_rng(5)
    now = timezone.now()
    events_record_bulk(random_event(rng, now) | {"user_id": "u"} for _ in range(30))
    bodies = [
        [random_event(rng, now) | {"user_id": "u"} for _ in range(8)] for _ in range(16)
    ]
    barrier = threading.Barrier(len(bodies) + 2)
    errors = []

    def post(mine: list[dict]) -> None:
        barrier.wait()
        try:
            for body in mine:
                event_record(**body)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    def recounts() -> None:
        barrier.wait()
        try:
            for _ in range(6):
                services.profile_refresh(user_id="u")
                services.profiles_refresh(user_ids=["u", "v"])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(mine,)) for mine in bodies]
    threads += [threading.Thread(target=recounts) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Event.objects.filter(user_id="u").count() == 30 + 16 * 8
    assert_exact("u")
    assert recount("u").done > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_recount_waits_for_an_event_stored_but_not_yet_committed():
    """An event's transaction is held open after its upsert while a recount
    starts: the recount must wait for it and count it, not count without it
    and then overwrite the event's addition."""
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL: set DATABASE_URL (make test does)")
    event_record(user_id="u", tip_id="t", kind="served")
    stored, release = threading.Event(), threading.Event()
    errors = []

    def event_held_open() -> None:
        try:
            with transaction.atomic():
                event_record(user_id="u", tip_id="t", kind="done", dwell_ms=9)
                stored.set()
                release.wait(timeout=10)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    def recount_now() -> None:
        stored.wait(timeout=10)
        try:
            services.profile_refresh(user_id="u")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=f) for f in (event_held_open, recount_now)]
    for thread in threads:
        thread.start()
    stored.wait(timeout=10)
    time.sleep(0.5)  # the recount reaches the row and waits (or, wrongly, counts)
    release.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert_exact("u")
    assert Profile.objects.get(user_id="u").done_30d == 1
