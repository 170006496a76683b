#!/usr/bin/env python
"""A hybrid policy's shared-model refit over a large reward log, on PostgreSQL.

Makes (or reuses) a database of its own, loads N reward rows of hybrid-v1 with
COPY unless they are there already (loading and the VACUUM after it are not
timed), then times a full refit (every row read and summed) and an incremental
one after 1% more rows, and prints both: the wall time, the CPU time of this
process and of its PostgreSQL backend (the machine may be shared: the CPU times
say what the refit costs, the wall time what it took beside the rest), and the
load average. One process and one BLAS thread, as a Celery worker runs it.

    .venv/bin/python bench/refit.py --rewards 1000000

BENCH_REFIT_DATABASE_URL names the database (default
postgres://postgres@127.0.0.1:5432/oo_ml_bench_refit).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy, as oo_ml does

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oo_ml_bench_refit"
sys.path.insert(0, str(ROOT / "bench"))
from cpu_share import cpu_seconds  # noqa: E402
from profiles_refresh import database_create, django_setup  # noqa: E402

# The vector's column is left out of a load without vectors (NULL), so the
# bench also runs on a schema from before it.
COLUMNS = (
    "policy_id, user_id, tip_id, reward, features, {vector}learned, fingerprint, "
    "created_at"
)
_DAY = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_TEXT = 12 * 10 + 1  # "[" then each number as "0.dddddd, ", the last "]" not ","


def _rows(
    policy_id: int, start: int, xs: np.ndarray, rewards: np.ndarray, vectors, jsonb
):
    """COPY's binary rows of ``COLUMNS``, built by numpy: each number in the
    JSON written with six decimals, as the vector holds it exactly. A ``json``
    column's binary form is its text; a ``jsonb`` one's (``jsonb``, a schema
    from before the log kept its JSON as text) has a version byte in front."""
    n = len(xs)
    vector = [("x_length", ">i4"), ("x", "<f8", (12,))] if vectors else []
    version = [("jsonb_version", "u1")] if jsonb else []
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("policy_length", ">i4"),
            ("policy", ">i8"),
            ("user_length", ">i4"),
            ("user", "S5"),
            ("tip_length", ">i4"),
            ("tip", "S1"),
            ("reward_length", ">i4"),
            ("reward", ">f8"),
            ("features_length", ">i4"),
            *version,
            ("text", f"S{_TEXT}"),
            *vector,
            ("learned_length", ">i4"),
            ("learned", "u1"),
            ("fingerprint_length", ">i4"),
            ("fingerprint", "S1"),
            ("at_length", ">i4"),
            ("at", ">i8"),
        ]
    )
    rows = np.zeros(n, dtype=row)
    rows["fields"] = 9 if vectors else 8
    rows["policy_length"], rows["policy"] = 8, policy_id
    users = (start + np.arange(n)) % 10_000
    digits = np.stack([users // 10**k % 10 for k in (3, 2, 1, 0)], axis=1) + ord("0")
    user = np.concatenate([np.full((n, 1), ord("u")), digits], axis=1).astype("u1")
    rows["user_length"], rows["user"] = 5, user.view("S5")[:, 0]
    rows["tip_length"], rows["tip"] = 1, b"t"
    rows["reward_length"], rows["reward"] = 8, rewards
    millionths = np.rint(xs * 1e6).astype(np.int64)  # 0 to 1,000,000
    text = np.full((n, 12, 10), ord(" "), dtype="u1")
    text[:, :, 0] = millionths // 10**6 + ord("0")
    text[:, :, 1] = ord(".")
    for k in range(6):
        text[:, :, 2 + k] = millionths // 10 ** (5 - k) % 10 + ord("0")
    text[:, :, 8] = ord(",")
    text[:, -1, 8], text[:, -1, 9] = ord("]"), ord(" ")
    text = np.concatenate([np.full((n, 1), ord("[")), text.reshape(n, 120)], axis=1)
    rows["features_length"] = len(version) + _TEXT
    if jsonb:
        rows["jsonb_version"] = 1
    rows["text"] = text.astype("u1").view(f"S{_TEXT}")[:, 0]
    if vectors:
        rows["x_length"], rows["x"] = 96, millionths / 1e6
    rows["learned_length"], rows["learned"] = 1, 0
    rows["fingerprint_length"], rows["fingerprint"] = 1, b"x"
    rows["at_length"], rows["at"] = 8, _DAY // dt.timedelta(microseconds=1)
    return rows.tobytes()


def rewards_load(
    url: str, n: int, policy_id: int, seed: int, *, vectors: bool = True
) -> None:
    """n reward rows with random D=12 vectors, in batches of 100,000, by binary
    COPY: each with its vector in binary as the platform writes it, unless
    ``vectors`` is False (a row logged before the binary column, read from its
    JSON)."""
    rng = np.random.default_rng(seed)
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT atttypid = 'jsonb'::regtype FROM pg_attribute "
            "WHERE attrelid = 'policies_reward'::regclass AND attname = 'features'"
        )
        (jsonb,) = cursor.fetchone()
        for start in range(0, n, 100_000):
            size = min(100_000, n - start)
            xs = rng.uniform(size=(size, 12))
            rewards = rng.choice([-1.0, -0.3, 0.1, 0.6, 1.0], size=size)
            with cursor.copy(
                "COPY policies_reward ("
                + COLUMNS.format(vector="vector, " if vectors else "")
                + ") FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
                copy.write(_rows(policy_id, start, xs, rewards, vectors, jsonb))
                copy.write(b"\xff\xff")
        conn.commit()


def _timed(what: str, refit, backend: int):
    """Run ``refit`` and print what it cost."""
    load = os.getloadavg()[0]
    wall, cpu, db = time.perf_counter(), time.process_time(), cpu_seconds(backend)
    model = refit()
    wall = time.perf_counter() - wall
    cpu, db = time.process_time() - cpu, cpu_seconds(backend) - db
    load = max(load, os.getloadavg()[0])
    print(
        f"{what}: {wall:.2f} s ({cpu:.2f} s CPU here, {db:.2f} s in PostgreSQL; "
        f"load average up to {load:.1f} on {os.cpu_count()} cores)",
        flush=True,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", type=int, default=1_000_000)
    parser.add_argument(
        "--json-only",
        action="store_true",
        help="load rows without their binary vector, as logged before it existed",
    )
    args = parser.parse_args()
    url = os.environ.get("BENCH_REFIT_DATABASE_URL", DEFAULT_URL)
    database_create(url)
    django_setup(url)
    from django.db import connection

    from policies.models import Policy, Reward, SharedModel
    from policies.services import shared_model_refit

    hybrid = Policy.objects.get(name="hybrid-v1")
    have = Reward.objects.filter(policy=hybrid).count()
    if have < args.rewards:
        print(f"loading {args.rewards - have:,} rewards", flush=True)
        rewards_load(
            url,
            args.rewards - have,
            hybrid.id,
            seed=have,
            vectors=not args.json_only,
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE policies_reward")
        have = args.rewards
    elif have > args.rewards:
        sys.exit(f"the database has {have:,} rewards: give --rewards {have}")
    SharedModel.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    full = _timed(
        f"full refit of {have:,} rewards",
        lambda: shared_model_refit(policy_name="hybrid-v1", full=True),
        backend,
    )
    more = max(1, args.rewards // 100)
    rewards_load(url, more, hybrid.id, seed=args.rewards, vectors=not args.json_only)
    step = _timed(
        f"incremental refit of {more:,} new rewards",
        lambda: shared_model_refit(policy_name="hybrid-v1"),
        backend,
    )
    Reward.objects.filter(id__gt=full.through_reward_id).delete()
    assert step.version == full.version + 1
    assert step.rewards == full.rewards + more


if __name__ == "__main__":
    main()
