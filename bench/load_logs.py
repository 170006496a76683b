"""Fill the logs with N million realistic decisions and their rewards, spread
over the last DAYS days, then bring the roll-ups up to date (PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oo_ml_logs \\
        .venv/bin/python bench/load_logs.py --decisions 10 --days 120

Every request is answered by the active policy (egreedy-v1, D=7) and one
shadow (egreedy-v2, D=12, switched on): two decision rows of about 1.5 KB, with
5 candidates, their task features, every candidate's vector and estimates, as
/score writes them. A share of the active decisions (--rewarded, 0.3) gets a
reward a few minutes later, with the shadow's learned row beside it. The
payloads come from a pool of real encodings, as /score writes their text; ids
are uuid7s of each row's time.
The rows are made by the server itself (INSERT ... SELECT over
generate_series, one day's partition at a time): no client-side formatting,
and no round trip per row, so it goes at the speed of the disk. Prints the
timings and the table sizes as JSON at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from oo_ml import partitions  # noqa: E402
from oo_ml.db import json_dumps  # noqa: E402
from oo_ml.partitions import DAY, LOGS  # noqa: E402
from policies import bandits, rollups  # noqa: E402
from policies.models import Policy  # noqa: E402

POOL = 1000
EPSILON = 0.1
N_CANDIDATES = 5

# One expression, so PostgreSQL inlines it: the time's milliseconds in front of
# a random (v4) uuid's tail, with the version nibble set to 7.
UUID7_SQL = """
CREATE OR REPLACE FUNCTION bench_uuid7(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7'
          || substr(gen_random_uuid()::text, 16))::uuid
  FROM (SELECT lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
        AS h) AS t
$$
"""

DECISIONS_SQL = """
WITH r AS (
    SELECT t, bench_uuid7(t) AS request_id, k, user_id, pick,
           CASE WHEN random() < 0.6 THEN pick
                ELSE floor(random() * %(n)s)::int END AS shadow_pick,
           random() < %(epsilon)s AS exploring
    FROM (
        SELECT %(day)s::timestamptz
                   + floor(random() * 86400000) * interval '1 millisecond' AS t,
               g %% %(pool)s AS k,
               'user-' || floor(random() * %(users)s)::int AS user_id,
               floor(random() * %(n)s)::int AS pick
        FROM generate_series(1, %(requests)s) AS g
    ) AS base
)
INSERT INTO policies_decision (
    created_at, id, request_id, policy_id, role, user_id, candidates, context,
    profile, features, estimates, bonuses, pick_index, tip_id, score, propensity,
    exploring)
SELECT r.t, bench_uuid7(r.t), r.request_id, w.policy_id, w.role, r.user_id,
       p.candidates, p.context, p.profile,
       CASE WHEN w.role = 'active' THEN p.features7 ELSE p.features12 END,
       CASE WHEN w.role = 'active' THEN p.estimates7 ELSE p.estimates12 END,
       NULL, w.pick, p.candidates -> w.pick ->> 'id',
       (CASE WHEN w.role = 'active' THEN p.estimates7 ELSE p.estimates12 END
            ->> w.pick)::float,
       CASE WHEN r.exploring THEN %(explore_p)s ELSE %(greedy_p)s END,
       r.exploring
FROM r JOIN bench_payload p ON p.k = r.k
CROSS JOIN LATERAL (VALUES (%(active)s, 'active', r.pick),
                           (%(shadow)s, 'shadow', r.shadow_pick))
    AS w(policy_id, role, pick)
"""

REWARDS_SQL = """
WITH d AS (
    SELECT d.id, d.created_at + floor(random() * 600000) * interval '1 millisecond'
               AS at,
           d.user_id, d.tip_id, d.pick_index, d.request_id,
           (ARRAY[-1.0, 0.1, 0.6, 1.0])[1 + floor(random() * 4)::int] AS reward
    FROM policies_decision d
    WHERE d.id >= %(lo)s AND d.id < %(hi)s AND d.role = 'active'
      AND random() < %(rewarded)s
)
INSERT INTO policies_reward (
    created_at, user_id, tip_id, reward, decision_id, event_id, fingerprint,
    features, policy_id, learned)
SELECT d.at, d.user_id, d.tip_id, d.reward, d.id, NULL, md5(d.id::text),
       s.features -> d.pick_index, s.policy_id, s.policy_id <> %(active)s
FROM d JOIN policies_decision s
    ON s.request_id = d.request_id AND s.id >= %(lo)s AND s.id < %(hi)s
"""


def _text(value) -> str:
    """A JSON column's text as /score writes it (json columns keep it as is)."""
    text = json_dumps(value)
    return text.decode() if isinstance(text, bytes) else text


def _payloads(rng: np.random.Generator) -> list[tuple]:
    rows = []
    for k in range(POOL):
        candidates = [
            {
                "id": f"task-{int(rng.integers(200))}-{i}",
                "content": "A task to do",
                "source": "todo",
                "features": {
                    "is_overdue": bool(rng.integers(2)),
                    "priority": int(rng.integers(1, 5)),
                    "task_age_days": float(round(rng.uniform(0, 40), 2)),
                    "due_in_days": float(round(rng.uniform(-5, 30), 2)),
                },
            }
            for i in range(N_CANDIDATES)
        ]
        context = {"hour_of_day": int(rng.integers(24)), "day_of_week": k % 7}
        profile = {
            "completion_rate_30d": float(round(rng.uniform(), 3)),
            "dismiss_rate_30d": float(round(rng.uniform(), 3)),
            "mean_dwell_ms_30d": float(round(rng.uniform(1e3, 1e5), 1)),
            "preferred_hour": int(rng.integers(24)),
            "tip_volume_30d": int(rng.integers(200)),
        }
        x = bandits.encode(
            [c["features"] for c in candidates],
            hours=[context["hour_of_day"]] * N_CANDIDATES,
            day_of_week=context["day_of_week"],
            profile=profile,
            dimension=12,
        )
        rows.append(
            (
                k,
                _text(candidates),
                _text(context),
                _text(profile),
                _text(x[:, :7].tolist()),
                _text(x.tolist()),
                _text(rng.normal(0, 0.3, N_CANDIDATES).tolist()),
                _text(rng.normal(0, 0.3, N_CANDIDATES).tolist()),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=float, required=True, help="millions")
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rewarded", type=float, default=0.3)
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "the loader needs PostgreSQL"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    first = partitions.day_start(now - args.days * DAY)
    for log in LOGS:
        partitions.partitions_ensure(log, start=first, end=now + 7 * DAY)
    active = Policy.objects.get(role="active")
    shadow = Policy.objects.get(name="egreedy-v2")
    Policy.objects.filter(id=shadow.id).update(enabled=True)
    with connection.cursor() as cursor:
        cursor.execute(UUID7_SQL)
        cursor.execute(
            """CREATE TEMP TABLE bench_payload (k int PRIMARY KEY, candidates json,
               context json, profile json, features7 json, features12 json,
               estimates7 json, estimates12 json)"""
        )
        with cursor.cursor.copy("COPY bench_payload FROM STDIN") as copy:
            for row in _payloads(np.random.default_rng(14)):
                copy.write_row(row)
    requests_per_day = int(args.decisions * 1e6 / 2 / args.days)
    greedy = 1 - EPSILON + EPSILON / N_CANDIDATES
    t = time.perf_counter()
    for i in range(args.days):
        day = first + i * DAY
        with connection.cursor() as cursor:
            cursor.execute(
                DECISIONS_SQL,
                {
                    "day": day,
                    "requests": requests_per_day,
                    "pool": POOL,
                    "users": args.users,
                    "n": N_CANDIDATES,
                    "epsilon": EPSILON,
                    "explore_p": EPSILON / N_CANDIDATES,
                    "greedy_p": greedy,
                    "active": active.id,
                    "shadow": shadow.id,
                },
            )
            # Its statistics, or the planner joins the rewards blind.
            cursor.execute(
                f'ANALYZE "{partitions.partition_name("policies_decision", day)}" '
                "(id, request_id, role)"  # the JSON columns cost seconds to sample
            )
            cursor.execute(
                REWARDS_SQL,
                {
                    "lo": partitions.uuid7_floor(day),
                    "hi": partitions.uuid7_floor(day + DAY),
                    "rewarded": args.rewarded,
                    "active": active.id,
                },
            )
        print(f"day {i + 1}/{args.days} {day:%Y-%m-%d}", file=sys.stderr, flush=True)
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE policies_decision (id, request_id, role, user_id)")
        cursor.execute("ANALYZE policies_reward (decision_id, created_at, user_id)")
    timings["analyze_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rollups.activity_rebuild()
    timings["rollups_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM policies_decision")
        (decisions,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM policies_reward")
        (rewards,) = cursor.fetchone()
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        (size,) = cursor.fetchone()
    print(
        json.dumps(
            {
                **{k: round(v, 1) for k, v in timings.items()},
                "decisions": decisions,
                "rewards": rewards,
                "database": size,
                "decisions_per_s": round(decisions / timings["load_s"]),
            }
        )
    )


if __name__ == "__main__":
    main()
