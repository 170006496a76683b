"""Time what must not grow with the logs: the control room, the export, and
retention (docs/logs.md; docs/performance.md, "Logs at scale").

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oo_ml_logs \\
        .venv/bin/python bench/logs_at_scale.py control-room export
    ... bench/logs_at_scale.py retention     # drops data: last

control-room: the shadows' off-policy values computed and stored three times
as beat does (timed), then GET /admin/policies/ in process (Django's test
client, logged in as a superuser), --runs times after one warm-up; the median,
and the CPU ms.
export: the log of one day (yesterday by default, --day) through export_log's
generator into /dev/null; decisions per second and the process's peak memory
before and after. retention: logs_retain at OO_ML_LOG_RETENTION_DAYS, timed,
then the roll-ups checked against a count over the rows kept, hour by hour.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oo_ml.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from oo_ml import logs, partitions  # noqa: E402
from policies import export, rollups, services  # noqa: E402


def _count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


def control_room(runs: int) -> dict:
    settings.ALLOWED_HOSTS = ["*"]
    # No collectstatic here: plain static URLs, as the tests have them.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }
    user, _ = get_user_model().objects.get_or_create(
        username="bench-ops", defaults={"is_staff": True, "is_superuser": True}
    )
    # What beat does every few minutes, so the page has values to show.
    refreshes = []
    for _ in range(3):
        t = time.perf_counter()
        values = services.shadow_values_refresh()
        refreshes.append((time.perf_counter() - t) * 1e3)
    client = Client()
    client.force_login(user)
    assert client.get("/admin/policies/").status_code == 200
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        response = client.get("/admin/policies/")
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
        assert response.status_code == 200
    return {
        "control_room_ms_median": round(statistics.median(wall), 1),
        "control_room_ms_max": round(max(wall), 1),
        "control_room_cpu_ms_median": round(statistics.median(cpu), 1),
        "runs": runs,
        "shadow_value_refresh_ms": [round(ms) for ms in refreshes],
        "shadow_value_samples": {v.policy.name: v.samples for v in values},
    }


def export_day(day: dt.datetime) -> dict:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    n = 0
    size = 0
    with open(os.devnull, "wb") as sink:
        for block in export.log_export(since=day, until=day + partitions.DAY):
            sink.write(block)
            size += len(block)
            n += block.count(b"\n")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "export_day": f"{day:%Y-%m-%d}",
        "export_decisions": n,
        "export_mb": round(size / 1e6, 1),
        "export_s": round(seconds, 2),
        "export_decisions_per_s": round(n / seconds) if seconds else None,
        "peak_rss_mb_before": round(before / 1024, 1),
        "peak_rss_mb_after": round(after / 1024, 1),
    }


def retention() -> dict:
    decisions_before = _count("policies_decision")
    rewards_before = _count("policies_reward")
    result = logs.logs_retain()
    t = time.perf_counter()
    stored = rollups.activity_stored(since=result.cutoff)
    counted = {
        k: v for k, v in rollups.activity_counts(since=result.cutoff).items() if any(v)
    }
    mismatched = [
        k
        for k in stored.keys() | counted.keys()
        if k not in stored
        or k not in counted
        or stored[k][:4] != counted[k][:4]
        or stored[k][5] != counted[k][5]
        or abs(stored[k][4] - counted[k][4]) > 1e-6
    ]
    oldest = partitions.day_start(result.cutoff)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM policies_decision WHERE id < %s",
            [partitions.uuid7_floor(oldest)],
        )
        (older_left,) = cursor.fetchone()
    return {
        "retention_days": settings.LOG_RETENTION_DAYS,
        "retention_s": round(result.seconds, 2),
        "partitions_dropped": len(result.dropped),
        "decisions_before": decisions_before,
        "decisions_after": _count("policies_decision"),
        "rewards_before": rewards_before,
        "rewards_after": _count("policies_reward"),
        "decisions_older_than_cutoff_day_left": older_left,
        "rollup_hours_checked": len(counted),
        "rollup_hours_mismatched": len(mismatched),
        "check_s": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="+", choices=["control-room", "export", "retention"]
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--day", help="the day to export (default: yesterday)")
    args = parser.parse_args()
    common = {"decisions_stored": _count("policies_decision")}
    for what in args.what:
        if what == "control-room":
            print(json.dumps({**common, **control_room(args.runs)}), flush=True)
        elif what == "export":
            day = (
                dt.datetime.fromisoformat(args.day).replace(tzinfo=dt.UTC)
                if args.day
                else partitions.day_start(dt.datetime.now(dt.UTC)) - partitions.DAY
            )
            print(json.dumps({**common, **export_day(day)}), flush=True)
        else:
            print(json.dumps({**common, **retention()}), flush=True)


if __name__ == "__main__":
    main()
