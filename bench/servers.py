"""Compare WSGI servers on the same app, same workers, same load, interleaved.

For each round, each server in turn (A B C A B C ...): start it on a free port,
warm up, run wrk on ``/score`` (bench/score.lua) and on a request that does no work
(bench/unauthorized.lua: a 401 before any of ours), with bench/cpu_share.py
watching who used the CPU, then stop it. ``--faults`` instead runs each server
once under load through a graceful reload (SIGHUP), a SIGKILLed worker and worker
recycling, and counts the failed requests. Prints one JSON line per run and a table
of medians. Needs wrk, and granian and uWSGI (pyuwsgi) in the virtualenv for theirs.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oo_ml_serve_bench \\
        .venv/bin/python bench/servers.py --rounds 3 --workers 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.prefix) / "bin"
APP = "oo_ml.wsgi:application"


def gunicorn(worker_class: str, threads: int = 1, recycle: int = 0):
    def command(port: int, workers: int) -> list[str]:
        extra = ["--max-requests", str(recycle)] if recycle else []
        return [
            *(sys.executable, "-m", "gunicorn", APP),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--worker-class", worker_class, "--threads", str(threads)),
            *("--worker-tmp-dir", "/dev/shm", "--log-level", "warning", *extra),
        ]

    return command


def granian(threads: int = 1, lifetime: int = 0):
    def command(port: int, workers: int) -> list[str]:
        extra = ["--workers-lifetime", str(lifetime)] if lifetime else []
        return [
            *(str(BIN / "granian"), "--interface", "wsgi", APP),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--blocking-threads", str(threads), "--respawn-failed-workers"),
            *("--log-level", "warning", *extra),
        ]

    return command


def uwsgi(recycle: int = 0):
    def command(port: int, workers: int) -> list[str]:
        extra = ["--max-requests", str(recycle)] if recycle else []
        return [
            *(str(BIN / "uwsgi"), "--http11-socket", f"127.0.0.1:{port}"),
            *("--module", APP, "--master", "--processes", str(workers)),
            *("--need-app", "--die-on-term", "--disable-logging", "--lazy-apps"),
            *extra,
        ]

    return command


SERVERS = {
    "gunicorn-sync": gunicorn("sync"),
    "gunicorn-gthread-t4": gunicorn("gthread", threads=4),
    "granian": granian(),
    "granian-t4": granian(threads=4),
    "uwsgi": uwsgi(),
}
# For --faults: the same servers, recycling workers (gunicorn and uWSGI after N
# requests; granian has no request count, only a lifetime of at least 60 s).
RECYCLING = {
    "gunicorn-sync": gunicorn("sync", recycle=100),
    "granian": granian(lifetime=60),
    "uwsgi": uwsgi(recycle=100),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, command, workers: int, log: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            command(self.port, workers), cwd=ROOT, stdout=self.out, stderr=self.out
        )
        self.wait_until_up(workers)

    def wait_until_up(self, workers: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see its log")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
            except urllib.error.HTTPError:
                pass  # it answers
            except OSError:
                time.sleep(0.2)
                continue
            if len(self.workers()) >= workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def workers(self) -> list[int]:
        """The master's children that serve (not multiprocessing's helpers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == self.proc.pid and b"resource_tracker" not in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT if "uwsgi" in self.name else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def quiet(wait: float) -> float:
    """Wait up to ``wait`` seconds for a machine at most 0.3 cores busy; how busy."""
    deadline = time.monotonic() + wait
    busy = busy_cores()
    while busy > 0.3 and time.monotonic() < deadline:
        busy = busy_cores()
    return busy


def busy_cores(seconds: float = 1.0) -> float:
    def ticks():
        fields = list(map(int, Path("/proc/stat").read_text().split()[1:9]))
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy0, all0 = ticks()
    time.sleep(seconds)
    busy1, all1 = ticks()
    return round(os.cpu_count() * (busy1 - busy0) / max(all1 - all0, 1), 2)


def wrk(server: Server, script: str, duration: int, connections: int, database: str):
    """One wrk run with cpu_share watching; returns wrk's and cpu_share's JSON."""
    watch = subprocess.Popen(
        [
            *(sys.executable, ROOT / "bench" / "cpu_share.py"),
            *("--server-pid", str(server.proc.pid), "--database", database),
            *("--duration", str(duration)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    out = subprocess.run(
        [
            *("wrk", "--latency", "-t", "2", "-c", str(connections)),
            *("-d", f"{duration}s", "-s", str(ROOT / "bench" / script), server.url),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_out, _ = watch.communicate()
    result = parse(out, "BENCH_RESULT ")
    result["cpu"] = parse(cpu_out, "BENCH_CPU ")
    return result


def parse(text: str, prefix: str) -> dict:
    for line in text.splitlines():
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise RuntimeError(f"no {prefix.strip()} line in: {text[-500:]}")


def summary(run: dict) -> dict:
    seconds = run["duration_us"] / 1e6
    cpu = run["cpu"]
    errors = run["errors"]
    return {
        "rps": round(run["requests_per_s"]),
        "p50_ms": round(run["latency_us"]["p50"] / 1000, 1),
        "p99_ms": round(run["latency_us"]["p99"] / 1000, 1),
        "server_cpu_ms": round(
            1000 * cpu["server_cores"] * seconds / max(run["requests"], 1), 3
        ),
        "other_cores": cpu["other_cores"],
        "non_2xx": errors["non_2xx"],
        "socket_errors": sum(v for k, v in errors.items() if k != "non_2xx"),
    }


def compare(args, log: Path) -> None:
    rows: dict[str, list[dict]] = {name: [] for name in args.servers}
    for rnd in range(1, args.rounds + 1):
        for name in args.servers:
            idle = quiet(args.quiet_wait)
            server = Server(name, SERVERS[name], args.workers, log)
            try:
                wrk(server, "score.lua", args.warmup, args.connections, args.database)
                score = summary(
                    wrk(server, "score.lua", args.duration, 16, args.database)
                )
                floor = summary(
                    wrk(server, "unauthorized.lua", args.floor, 16, args.database)
                )
            finally:
                server.stop()
            row = {
                "round": rnd,
                "server": name,
                "busy_before": idle,
                "score": score,
                "floor": floor,
            }
            print("SERVER_RUN " + json.dumps(row), flush=True)
            rows[name].append(row)
    print()
    print(
        "| server | /score req/s | p99 ms | errors | server CPU ms/req "
        "| 401 req/s | 401 CPU ms/req | other load (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in rows.items():

        def med(part, key, runs=runs):
            return statistics.median(run[part][key] for run in runs)

        errors = sum(r["score"]["non_2xx"] + r["score"]["socket_errors"] for r in runs)
        other = max(r["score"]["other_cores"] for r in runs)
        print(
            f"| {name} | {med('score', 'rps'):.0f} | {med('score', 'p99_ms'):.1f} "
            f"| {errors} | {med('score', 'server_cpu_ms'):.2f} "
            f"| {med('floor', 'rps'):.0f} | {med('floor', 'server_cpu_ms'):.2f} "
            f"| ≤ {other:.2f} |"
        )


def under_load(server: Server, args, seconds: int, at: float, action) -> dict:
    """wrk on /score for ``seconds``; ``action(server)`` ``at`` seconds in."""
    load = subprocess.Popen(
        [
            *("wrk", "--latency", "-t", "2", "-c", "16", "-d", f"{seconds}s"),
            *("-s", str(ROOT / "bench" / "score.lua"), server.url),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(at)
    before = server.workers()
    note = action(server)
    out, _ = load.communicate()
    time.sleep(1)
    result = parse(out, "BENCH_RESULT ")
    return {
        "requests": result["requests"],
        "rps": round(result["requests_per_s"]),
        "p99_ms": round(result["latency_us"]["p99"] / 1000, 1),
        "errors": result["errors"],
        "workers_before": len(before),
        "workers_after": len(server.workers()),
        "replaced": len(set(before) - set(server.workers())),
        "note": note,
    }


def faults(args, log: Path) -> None:
    def hup(server):
        server.proc.send_signal(signal.SIGHUP)

    def kill_one(server):
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        return f"killed {victim}"

    for name in args.servers:
        checks = {}
        for check, action in (("reload", hup), ("sigkill", kill_one)):
            if check not in args.checks:
                continue
            server = Server(name, SERVERS[name], args.workers, log)
            try:
                wrk(server, "score.lua", args.warmup, 16, args.database)
                checks[check] = under_load(server, args, 15, 5, action)
                time.sleep(5)  # a respawn may take a few seconds
                checks[check]["workers_later"] = len(server.workers())
                checks[check]["alive"] = server.proc.poll() is None
            finally:
                server.stop()
        if name in RECYCLING and "recycle" in args.checks:
            lifetime = "granian" in name
            server = Server(name, RECYCLING[name], args.workers, log)
            try:
                checks["recycle"] = under_load(
                    server, args, 75 if lifetime else 20, 1, lambda s: None
                )
            finally:
                server.stop()
        print("SERVER_FAULTS " + json.dumps({"server": name, **checks}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="/score, seconds")
    parser.add_argument("--floor", type=int, default=8, help="the 401, seconds")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument(
        "--checks", nargs="+", default=["reload", "sigkill", "recycle"], help="--faults"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=0, help="seconds to wait for quiet"
    )
    parser.add_argument("--log", default="/tmp/oo_ml-servers.log")
    args = parser.parse_args()
    args.database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    if not os.environ.get("BENCH_TOKEN"):
        parser.error("BENCH_TOKEN: a service token (manage.py service_token bench)")
    (faults if args.faults else compare)(args, Path(args.log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
