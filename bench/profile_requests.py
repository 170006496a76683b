"""Where a /score, /reward or /events spends its time, and how many queries it makes.

Drives the full Django stack (middleware, DRF, serializers, services, ORM) in
process through the test client, against the benchmark database, with the same
bodies as bench/*.lua. For each route it prints the queries of one request, the
mean wall time and CPU time (this process's, and its PostgreSQL backend's) per
request, and cProfile's top functions over ``--requests``
requests. No HTTP server or network is involved, so this is the server-side cost.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oo_ml_bench \\
        .venv/bin/python bench/profile_requests.py --requests 2000

``--code DIR`` runs another checkout's application code (a ``git worktree`` of an
older commit, on a database migrated by that code) with this script, so two
versions can be measured the same way; ``bench/compare_requests.py`` does that
interleaved. ``--decided`` makes each /reward name a decision, made by a
/score first (untimed), as the recommender's rewards do; without it a reward
is rebuilt from its body, as bench/reward.lua sends. ``--history N`` first
stores N events per user over the last 35 days (once, into a database without
events), so that a per-user recount has a realistic history to count.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import secrets
import sys
import time
from pathlib import Path

from cpu_share import cpu_seconds


def code_dir() -> Path:
    """The checkout whose application code runs: ``--code DIR``, else this one."""
    if "--code" in sys.argv:
        return Path(sys.argv[sys.argv.index("--code") + 1]).resolve()
    return Path(__file__).resolve().parent.parent


sys.path.insert(0, str(code_dir()))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")
# A key of this run's own: the app refuses its built-in one with DEBUG off.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1")

REWARDS = (-1, 0.1, 0.6, 1.0)
SOURCES = ("todoist", "calendar", "notion", "email")


def features(rng: random.Random) -> dict:
    return {
        "hour_of_day": rng.randint(0, 23),
        "is_overdue": rng.random() < 0.3,
        "task_age_days": round(rng.random() * 60, 2),
        "priority": rng.randint(1, 4),
    }


def score_body(rng: random.Random, users: int) -> dict:
    ids = rng.sample(range(200), 5)
    return {
        "user_id": f"user-{rng.randrange(users)}",
        "candidates": [
            {
                "id": f"task-{i}",
                "content": f"Task number {i}",
                "source": rng.choice(SOURCES),
                "source_id": f"src-{i}",
                "features": features(rng),
            }
            for i in ids
        ],
        "context": {
            "hour_of_day": rng.randint(0, 23),
            "day_of_week": rng.randint(0, 6),
        },
    }


def reward_body(rng: random.Random, users: int) -> dict:
    return {
        "user_id": f"user-{rng.randrange(users)}",
        "tip_id": f"task-{rng.randrange(200)}",
        "reward": rng.choice(REWARDS),
        "features": features(rng),
        "day_of_week": rng.randint(0, 6),
    }


KINDS = ("served", "served", "done", "dismissed", "snoozed", "viewed")


def event_body(rng: random.Random, users: int) -> dict:
    """A reaction without a decision, as bench/events.lua sends."""
    kind = rng.choice(KINDS)
    body = {
        "user_id": f"user-{rng.randrange(users)}",
        "tip_id": f"task-{rng.randrange(200)}",
        "kind": kind,
        "hour_of_day": rng.randint(0, 23),
    }
    if kind == "done":
        body["dwell_ms"] = rng.randint(1000, 900_000)
    return body


BODIES = {"/score": score_body, "/reward": reward_body, "/events": event_body}


def history_load(per_user: int, users: int, rng: random.Random) -> None:
    """``per_user`` events for each user over the last 35 days, and their
    profiles; nothing if the database has events already."""
    from datetime import timedelta

    from django.utils import timezone

    from profiles import services
    from profiles.models import Event

    if Event.objects.exists():
        return
    now = timezone.now()
    ids = [f"user-{u}" for u in range(users)]
    for user_id in ids:
        rows = []
        for _ in range(per_user):
            body = event_body(rng, 1) | {"user_id": user_id}
            body["occurred_at"] = now - timedelta(days=rng.uniform(0, 35))
            rows.append(body)
        services.events_record_bulk(rows)
    services.profiles_refresh(user_ids=ids)


def token_make() -> str:
    """A service token, by whichever name the code under test has."""
    from oo_ml import auth

    if hasattr(auth, "service_token_create"):
        return auth.service_token_create(name="bench")
    return auth.service_token_get_or_create(name="bench")


# Where a function's own time is charged: the first pattern its file matches.
CATEGORIES = (
    ("psycopg/connection.py", "waiting on PostgreSQL (round trips, commit)"),
    ("psycopg", "psycopg (adapting, sending)"),
    ("rest_framework/fields.py", "DRF fields (building, validating)"),
    ("rest_framework/serializers.py", "DRF serializers"),
    ("rest_framework", "DRF views, auth, parsing, rendering"),
    ("django/db/models/sql", "Django ORM: compiling SQL"),
    ("django/db", "Django ORM: models, querysets, backend"),
    ("django/test", "test client (not in production)"),
    ("django", "Django: request, middleware, urls"),
    ("numpy", "numpy"),
    ("json", "json"),
    ("/policies/", "policies (app code)"),
    ("/oo_ml/", "oo_ml (app code)"),
    ("copy.py", "copy.deepcopy (DRF field cloning)"),
)


def category(filename: str) -> str:
    for pattern, name in CATEGORIES:
        if pattern in filename:
            return name
    return "other (stdlib)"


def by_category(stats: pstats.Stats) -> dict[str, float]:
    """Own time per category; a builtin's time goes to its callers' categories."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, callers) in stats.stats.items():
        if filename != "~":
            name = category(filename)
            totals[name] = totals.get(name, 0.0) + tottime
            continue
        caller_time = sum(c[2] for c in callers.values()) or 1.0
        for (cfile, _, _), c in callers.items():
            name = "builtins" if cfile == "~" else category(cfile)
            totals[name] = totals.get(name, 0.0) + tottime * c[2] / caller_time
        if not callers:
            totals["builtins"] = totals.get("builtins", 0.0) + tottime
    return totals


# Cumulative time of the steps of one request, by (file fragment, function).
STEPS = (
    ("django/test/client.py", "request", "whole request through the test client"),
    ("django/core/handlers/base.py", "_get_response", "view (inside middleware)"),
    ("rest_framework/views.py", "initial", "DRF auth, permissions, throttles"),
    ("rest_framework/request.py", "_parse", "parsing the JSON body"),
    ("rest_framework/serializers.py", "is_valid", "input serializer is_valid"),
    ("rest_framework/serializers.py", "data", "output serializer .data"),
    ("rest_framework/response.py", "rendered_content", "rendering the JSON answer"),
    ("policies/selectors.py", "scoring_states", "selectors.scoring_states"),
    ("policies/selectors.py", "policy_get_active", "selectors.policy_get_active"),
    ("policies/services/decisions.py", "decision_make", "services.decision_make"),
    ("policies/services/decisions.py", "_decision_build", "decisions._decision_build"),
    ("policies/services/rewards.py", "reward_apply", "services.reward_apply"),
    ("policies/services/rewards.py", "_states_read", "rewards._states_read"),
    ("django/db/models/query.py", "bulk_create", "QuerySet.bulk_create"),
    ("django/db/models/query.py", "create", "QuerySet.create"),
    ("django/db/models/base.py", "save", "Model.save"),
    ("policies/bandits.py", "encode", "bandits.encode"),
    ("policies/bandits.py", "choose", "bandits.choose"),
    ("policies/bandits.py", "update", "bandits.update"),
    ("psycopg/connection.py", "wait", "psycopg wait (PostgreSQL round trips)"),
    ("django/db/models/sql/compiler.py", "as_sql", "ORM SQL compilation"),
)


def steps(stats: pstats.Stats, requests: int) -> list[tuple[str, float]]:
    found = []
    for fragment, function, label in STEPS:
        total = sum(
            value[3]
            for (filename, _, name), value in stats.stats.items()
            if fragment in filename and name == function
        )
        if total:
            found.append((label, total / requests))
    return found


@contextlib.contextmanager
def statements():
    """Every statement psycopg sends, BEGIN and COMMIT included.

    Under gunicorn each request also starts with Django's CONN_HEALTH_CHECKS
    ``SELECT 1``; the test client skips it (it disconnects close_old_connections).
    """
    import psycopg

    from oo_ml import db

    # The hot path's own cursor (oo_ml.db.direct_cursor; older code has none).
    direct_class = getattr(db, "_DirectCursor", None)
    sent: list[str] = []
    execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command
    direct = direct_class and direct_class.execute

    def counted_execute(self, query, *args, **kwargs):
        try:  # recorded after, so a BEGIN it sends comes first
            return execute(self, query, *args, **kwargs)
        finally:
            sent.append(str(query)[:300])

    def counted_command(self, cmd, *args, **kwargs):
        sent.append(bytes(cmd).decode() if isinstance(cmd, bytes) else str(cmd))
        return (yield from command(self, cmd, *args, **kwargs))

    def counted_direct(self, query, *args, **kwargs):
        try:
            return direct(self, query, *args, **kwargs)
        finally:
            sent.append(str(query)[:300])

    psycopg.Cursor.execute = counted_execute
    psycopg.Connection._exec_command = counted_command
    if direct_class:
        direct_class.execute = counted_direct
    try:
        yield sent
    finally:
        psycopg.Cursor.execute, psycopg.Connection._exec_command = execute, command
        if direct_class:
            direct_class.execute = direct


def backend_cpu(connection) -> float:
    """CPU seconds used so far by the connection's PostgreSQL backend (a
    process of this machine: the bench database is local); 0 on SQLite."""
    if connection.vendor != "postgresql":
        return 0.0
    return cpu_seconds(connection.connection.info.backend_pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--routes", nargs="+", default=list(BODIES))
    parser.add_argument("--dump", type=Path, help="write <dir>/<route>.prof")
    parser.add_argument(
        "--no-profile", action="store_true", help="only time and count queries"
    )
    parser.add_argument("--code", type=Path, help="run this checkout's app code")
    parser.add_argument("--history", type=int, default=0, help="events per user")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--decided",
        action="store_true",
        help="/reward names a decision (made by an untimed /score first)",
    )
    args = parser.parse_args()

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    # Set up as the web server does (its garbage collector's tuning included).
    import oo_ml.wsgi  # noqa: F401

    if connection.vendor != "postgresql":
        print("warning: not PostgreSQL; set DATABASE_URL to the bench database")
    client = Client(HTTP_AUTHORIZATION=f"Token {token_make()}")
    rng = random.Random(1)
    if args.history:
        history_load(args.history, args.users, rng)

    def post(route: str, body: dict):
        response = client.post(route, json.dumps(body), content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(
                f"{route} answered {response.status_code}: {response.content!r}"
            )
        return response

    def decided(rng: random.Random, users: int) -> dict:
        """A reward for a decision just made (its /score is not timed)."""
        body = score_body(rng, users)
        answer = post("/score", body).json()
        return {
            "user_id": body["user_id"],
            "tip_id": answer["tip_id"],
            "reward": rng.choice(REWARDS),
            "decision_id": answer["decision_id"],
        }

    for route in args.routes:
        make = decided if route == "/reward" and args.decided else BODIES[route]
        # Warm: the token cache, connection, imports; every user gets a state row.
        for _ in range(args.warmup):
            post(route, make(rng, args.users))

        # Apart: recording Django's queries makes the hot path use its cursor.
        body = make(rng, args.users)
        with CaptureQueriesContext(connection) as queries:
            post(route, body)
        body = make(rng, args.users)
        with statements() as sent:
            post(route, body)
        ping = connection.settings_dict.get("CONN_HEALTH_CHECKS")
        print(
            f"\n=== {route}: {len(queries)} queries in one request (Django's count), "
            f"{len(sent)} statements sent"
            + (" (+1 SELECT 1 under gunicorn: CONN_HEALTH_CHECKS)" if ping else "")
        )
        for sql in sent:
            print("  " + " ".join(sql.split())[:150])

        bodies = [make(rng, args.users) for _ in range(args.requests)]
        started, cpu_started = time.perf_counter(), time.process_time()
        pg_started = backend_cpu(connection)
        for body in bodies:
            post(route, body)
        plain = (time.perf_counter() - started) / args.requests
        cpu = (time.process_time() - cpu_started) / args.requests
        pg = (backend_cpu(connection) - pg_started) / args.requests

        if args.no_profile:
            print(
                f"=== {route}: {plain * 1000:.2f} ms per request, of which "
                f"{cpu * 1000:.2f} ms CPU in this process and {pg * 1000:.2f} ms "
                f"in its PostgreSQL backend, {args.requests} requests"
            )
            continue
        if make is decided:  # a decision takes one reward: new ones
            bodies = [make(rng, args.users) for _ in range(args.requests)]
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for body in bodies:
            post(route, body)
        profile.disable()
        profiled = (time.perf_counter() - started) / args.requests
        print(
            f"=== {route}: {plain * 1000:.2f} ms per request, of which "
            f"{cpu * 1000:.2f} ms CPU in this process and {pg * 1000:.2f} ms "
            f"in its PostgreSQL backend ({profiled * 1000:.2f} ms under cProfile), "
            f"{args.requests} requests"
        )
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        total = sum(by_category(stats).values())
        print(f"--- {route}: own time by category (ms per request, share)")
        for name, seconds in sorted(by_category(stats).items(), key=lambda i: -i[1]):
            per = seconds / args.requests * 1000
            print(f"  {per:6.3f} ms  {seconds / total:5.1%}  {name}")
        print(f"--- {route}: cumulative time of steps (ms per request, under cProfile)")
        for label, seconds in steps(stats, args.requests):
            print(f"  {seconds * 1000:6.3f} ms  {label}")
        stats.sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            stats.dump_stats(args.dump / f"{route.strip('/')}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
