#!/usr/bin/env python
"""A hybrid policy's shared-model refit over a large reward log, on PostgreSQL.

Makes (or reuses) a database of its own, loads N reward rows of hybrid-v1 with
COPY unless they are there already (loading is not timed), then times a full
refit (every row read and summed) and an incremental one after 1% more rows,
and prints both.

    .venv/bin/python bench/refit.py --rewards 1000000

BENCH_REFIT_DATABASE_URL names the database (default
postgres://postgres@127.0.0.1:5432/oo_ml_bench_refit).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oo_ml_bench_refit"
sys.path.insert(0, str(ROOT / "bench"))
from profiles_refresh import database_create, django_setup  # noqa: E402


def rewards_load(url: str, n: int, policy_id: int, seed: int) -> None:
    """n reward rows with random D=12 vectors, in batches of 100,000."""
    rng = np.random.default_rng(seed)
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for start in range(0, n, 100_000):
            size = min(100_000, n - start)
            xs = rng.uniform(size=(size, 12)).round(6)
            rewards = rng.choice([-1.0, -0.3, 0.1, 0.6, 1.0], size=size)
            buffer = io.StringIO()
            for i in range(size):
                buffer.write(
                    f"{policy_id}\tu{(start + i) % 10_000}\tt\t{rewards[i]}\t"
                    f"{json.dumps(xs[i].tolist())}\tf\tx\t2026-12-01 00:00:00+00\n"
                )
            buffer.seek(0)
            with cursor.copy(
                "COPY policies_reward (policy_id, user_id, tip_id, reward, "
                "features, learned, fingerprint, created_at) FROM STDIN"
            ) as copy:
                copy.write(buffer.read())
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", type=int, default=1_000_000)
    args = parser.parse_args()
    url = os.environ.get("BENCH_REFIT_DATABASE_URL", DEFAULT_URL)
    database_create(url)
    django_setup(url)
    from policies.models import Policy, Reward, SharedModel
    from policies.services import shared_model_refit

    hybrid = Policy.objects.get(name="hybrid-v1")
    have = Reward.objects.filter(policy=hybrid).count()
    if have < args.rewards:
        print(f"loading {args.rewards - have:,} rewards")
        rewards_load(url, args.rewards - have, hybrid.id, seed=have)
    SharedModel.objects.all().delete()

    started = time.perf_counter()
    full = shared_model_refit(policy_name="hybrid-v1", full=True)
    elapsed = time.perf_counter() - started
    print(
        f"full refit of {full.rewards:,} rewards: {elapsed:.1f} s "
        f"({full.rewards / elapsed:,.0f} rewards/s)"
    )
    more = max(1, args.rewards // 100)
    rewards_load(url, more, hybrid.id, seed=args.rewards)
    started = time.perf_counter()
    step = shared_model_refit(policy_name="hybrid-v1")
    elapsed = time.perf_counter() - started
    print(f"incremental refit of {more:,} new rewards: {elapsed:.2f} s")
    Reward.objects.filter(id__gt=full.through_reward_id).delete()
    assert step.version == full.version + 1


if __name__ == "__main__":
    main()
