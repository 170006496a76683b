#!/usr/bin/env python
"""Bulk refresh of user profiles on PostgreSQL: 10,000 users x 100 events.

Makes (or reuses) a database of its own, loads the events with COPY unless they
are there already (loading is not timed), then times ``profiles_refresh`` over
every user, several times, and prints each time and the median.

    .venv/bin/python bench/profiles_refresh.py
    .venv/bin/python bench/profiles_refresh.py --users 1000 --events 100 --runs 5

BENCH_PROFILES_DATABASE_URL names the database (default
postgres://postgres@127.0.0.1:5432/oo_ml_bench_profiles).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oo_ml_bench_profiles"
KINDS = ["served", "viewed", "done", "dismissed", "snoozed"]
KIND_SHARES = [0.5, 0.2, 0.15, 0.1, 0.05]
SPREAD_DAYS = 35  # a seventh of the events fall outside the 30-day window


def database_create(url: str) -> None:
    """Create the benchmark's database if it does not exist yet."""
    name = urlparse(url).path.lstrip("/")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
    # A key of this run's own: the app refuses its built-in one with DEBUG off.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def events_load(n_users: int, n_events: int, seed: int = 42) -> None:
    """Replace every event with n_users x n_events random ones, by COPY."""
    from django.db import connection
    from django.utils import timezone

    from oo_ml.models import uuid7
    from profiles.models import Event, Profile

    rng = np.random.default_rng(seed)
    total = n_users * n_events
    users = np.repeat(np.arange(n_users), n_events)
    kinds = rng.choice(len(KINDS), size=total, p=KIND_SHARES)
    dwell = rng.integers(0, 900_000, size=total)
    no_dwell = rng.random(total) < 0.2
    hours = rng.integers(0, 24, size=total)
    ages = rng.uniform(0, SPREAD_DAYS * 86_400, size=total)
    now = timezone.now()
    columns = (
        "id, created_at, user_id, tip_id, kind, dwell_ms, decision_id, event_id, "
        "fingerprint, occurred_at, hour_of_day"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Event._meta.db_table}, {Profile._meta.db_table}")
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        with raw.copy(f"COPY {Event._meta.db_table} ({columns}) FROM STDIN") as copy:
            for i in range(total):
                kind = KINDS[kinds[i]]
                copy.write_row(
                    (
                        uuid7(),
                        now,
                        f"user-{users[i]:05d}",
                        f"task-{i % 200}",
                        kind,
                        None if kind != "done" or no_dwell[i] else int(dwell[i]),
                        None,
                        None,
                        "bench",
                        now - timedelta(seconds=float(ages[i])),
                        int(hours[i]),
                    )
                )
        cursor.execute(f"ANALYZE {Event._meta.db_table}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100, help="per user")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--reload", action="store_true", help="reload the events")
    args = parser.parse_args()

    url = os.environ.get("BENCH_PROFILES_DATABASE_URL", DEFAULT_URL)
    database_create(url)
    django_setup(url)

    from profiles import services
    from profiles.models import Event, Profile

    expected = args.users * args.events
    if args.reload or Event.objects.count() != expected:
        started = time.perf_counter()
        events_load(args.users, args.events)
        print(f"loaded {expected:,} events in {time.perf_counter() - started:.1f} s")
    user_ids = [f"user-{i:05d}" for i in range(args.users)]

    times = []
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        refreshed = services.profiles_refresh(
            user_ids=user_ids, chunk_size=args.chunk_size
        )
        times.append(time.perf_counter() - started)
        print(f"run {run}: {refreshed:,} profiles in {times[-1]:.2f} s")

    # The bulk path must agree with the one-user path (a sample).
    for user_id in user_ids[:: max(1, args.users // 20)]:
        bulk = Profile.objects.get(user_id=user_id)
        one = services.profile_refresh(user_id=user_id, now=bulk.computed_at)
        assert one.features == bulk.features, user_id
    print(
        f"bulk refresh of {args.users:,} users x {args.events} events: "
        f"median {statistics.median(times):.2f} s over {args.runs} runs "
        f"(chunks of {args.chunk_size})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
