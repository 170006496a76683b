"""Who used the CPU during a wrk run: the server, PostgreSQL, wrk, or anything else.

This machine is shared (tests, a dev server); a run that had to share its two
cores reports low figures, and this says so. Takes one snapshot of /proc a second
into the run and one a second before its end, and prints one JSON line of cores
used on average by: the gunicorn master and its workers, the PostgreSQL backends
of the bench database, wrk, and the rest (other processes, PostgreSQL's own
background writers, kernel time charged to no process). Linux only, stdlib only.

    python bench/cpu_share.py --server-pid 123 --database oo_ml_bench --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
    return user + nice + system + irq + softirq + steal


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` of this machine has used:
    a PostgreSQL backend's, say, read from outside it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def processes() -> dict[int, tuple[int, str, str, int]]:
    """pid -> (ppid, comm, cmdline, utime + stime ticks)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
        found[int(entry.name)] = (
            int(rest[1]),
            comm,
            cmdline,
            int(rest[11]) + int(rest[12]),
        )
    return found


def classify(procs, server_pid: int, database: str) -> dict[int, str]:
    roles = {}
    for pid, (ppid, comm, cmdline, _) in procs.items():
        if pid == server_pid or ppid == server_pid:
            roles[pid] = "server"
        elif comm == "wrk":
            roles[pid] = "wrk"
        elif cmdline.startswith("postgres: ") and f" {database} " in cmdline:
            roles[pid] = "postgres"
    return roles


def snapshot(server_pid: int, database: str):
    procs = processes()
    roles = classify(procs, server_pid, database)
    return busy_ticks(), time.monotonic(), procs, roles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--duration", type=float, required=True, help="wrk's, seconds")
    args = parser.parse_args()

    time.sleep(1)
    busy0, t0, procs0, _ = snapshot(args.server_pid, args.database)
    time.sleep(max(args.duration - 2, 1))
    busy1, t1, procs1, roles = snapshot(args.server_pid, args.database)

    window = t1 - t0
    used = {"server": 0, "postgres": 0, "wrk": 0}
    for pid, role in roles.items():
        if pid in procs0:  # present all along; ours are
            used[role] += procs1[pid][3] - procs0[pid][3]
    cores = {role: ticks / TICK / window for role, ticks in used.items()}
    total = (busy1 - busy0) / TICK / window
    result = {
        "window_s": round(window, 2),
        "cores": os.cpu_count(),
        "busy_cores": round(total, 3),
        "server_cores": round(cores["server"], 3),
        "postgres_cores": round(cores["postgres"], 3),
        "wrk_cores": round(cores["wrk"], 3),
        "other_cores": round(max(total - sum(cores.values()), 0.0), 3),
    }
    print("BENCH_CPU " + json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
