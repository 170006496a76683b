"""Summarise wrk runs of bench/*.lua beside the old service's figures (SPEC §9).

Reads wrk's output files, takes the ``BENCH_RESULT {json}`` line that the scripts'
done() hook prints (falling back to wrk's own text when it is missing), and prints
one row per route: the median over that route's runs of requests/s, p50 and p99,
and the total errors. Exits 1 when any run saw a non-2xx answer or a socket error,
2 when there is nothing to report. Standard library only.

    python bench/report.py bench/results/<stamp>/*.txt
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

# The FastAPI + JSON-file service this replaces, measured on this machine at 16
# connections (SPEC §9). It published no p50.
OLD_RPS = 870.0
OLD_P99_MS = 40.0
TARGET_RATIO = 1.5

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def _from_text(text: str, route: str) -> dict:
    """wrk's own summary, for output without the done() hook."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (rps and p50 and p99):
        raise ValueError("no BENCH_RESULT line and no wrk --latency summary")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    connect, read, write, timeout = map(int, sockets.groups()) if sockets else [0] * 4
    return {
        "route": route,
        "requests_per_s": float(rps[1]),
        "p50_ms": _ms(p50[1]),
        "p99_ms": _ms(p99[1]),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": connect + read + write + timeout,
    }


def parse(path: Path) -> dict:
    text = path.read_text()
    idle = re.search(r"^BENCH_IDLE_BEFORE (\d+)", text, re.M)
    cpu = re.search(r"^BENCH_CPU (\{.*\})$", text, re.M)
    run = _parse(text, path)
    run["idle_before"] = int(idle[1]) if idle else None
    run["cpu"] = json.loads(cpu[1]) if cpu else None
    return run


def _parse(text: str, path: Path) -> dict:
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            errors = raw["errors"]
            return {
                "route": raw["route"],
                "requests_per_s": raw["requests_per_s"],
                "p50_ms": raw["latency_us"]["p50"] / 1000,
                "p99_ms": raw["latency_us"]["p99"] / 1000,
                "non_2xx": errors["non_2xx"],
                "socket_errors": sum(
                    errors[k] for k in ("connect", "read", "write", "timeout")
                ),
            }
    # The file name is <route>-<run>.txt when the hook's line is missing.
    return _from_text(text, path.stem.rsplit("-", 1)[0])


def _median_per_request(cpu: list[dict], key: str) -> float | None:
    if not cpu:
        return None
    return statistics.median(c[key] * 1000 / c["rps"] for c in cpu if c["rps"])


def summarise(runs: list[dict]) -> list[dict]:
    routes: dict[str, list[dict]] = {}
    for run in runs:
        routes.setdefault(run["route"], []).append(run)
    rows = []
    order = {"score": 0, "reward": 1, "mixed": 2}
    for route, group in sorted(routes.items(), key=lambda i: order.get(i[0], 3)):
        rps = [r["requests_per_s"] for r in group]
        idle = [r["idle_before"] for r in group if r["idle_before"] is not None]
        cpu = [r["cpu"] | {"rps": r["requests_per_s"]} for r in group if r["cpu"]]
        rows.append(
            {
                "route": route,
                "runs": len(group),
                "requests_per_s": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "p50_ms": statistics.median(r["p50_ms"] for r in group),
                "p99_ms": statistics.median(r["p99_ms"] for r in group),
                "non_2xx": sum(r["non_2xx"] for r in group),
                "socket_errors": sum(r["socket_errors"] for r in group),
                "idle_before_min": min(idle) if idle else None,
                # CPU milliseconds per request: steady even when throughput is not.
                "server_cpu_ms": _median_per_request(cpu, "server_cores"),
                "postgres_cpu_ms": _median_per_request(cpu, "postgres_cores"),
                "other_cores_max": max(c["other_cores"] for c in cpu) if cpu else None,
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "?" if value is None else spec.format(value)


def render(rows: list[dict], title: str) -> str:
    head = (
        "route",
        "runs",
        "req/s",
        "(min-max)",
        "p50 ms",
        "p99 ms",
        "errors",
        "old req/s",
        "old p99",
        "× old req/s",
        "p99 / old",
        "server CPU ms/req",
        "pg CPU ms/req",
        "other load",
        "idle before",
    )
    body = []
    for r in rows:
        errors = r["non_2xx"] + r["socket_errors"]
        body.append(
            (
                r["route"],
                str(r["runs"]),
                f"{r['requests_per_s']:.0f}",
                f"({r['rps_min']:.0f}-{r['rps_max']:.0f})",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                str(errors) if not errors else f"{errors} !!",
                f"{OLD_RPS:.0f}",
                f"{OLD_P99_MS:.0f}",
                f"{r['requests_per_s'] / OLD_RPS:.2f}×",
                f"{r['p99_ms'] / OLD_P99_MS:.2f}",
                _fmt(r["server_cpu_ms"], "{:.2f}"),
                _fmt(r["postgres_cpu_ms"], "{:.2f}"),
                _fmt(r["other_cores_max"], "{:.2f} cores"),
                _fmt(r["idle_before_min"], "{}%"),
            )
        )
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [title, line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in body]
    out.append(
        f"old = the FastAPI + JSON-file service, SPEC §9 (16 connections); "
        f"the aim is {TARGET_RATIO}× its req/s ({OLD_RPS * TARGET_RATIO:.0f}) "
        f"with a lower p99 and no errors.\n"
        f"Medians over runs. CPU ms/req = CPU time of the gunicorn workers (of the "
        f"bench database's PostgreSQL backends) per request;\nother load = the most "
        f"cores anything else used during a run; idle before = the least idle CPU "
        f"share just before a run."
    )
    return "\n".join(out)


def verdicts(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        if r["non_2xx"] or r["socket_errors"]:
            notes.append(
                f"ERROR: {r['route']}: {r['non_2xx']} non-2xx answers and "
                f"{r['socket_errors']} socket errors over {r['runs']} run(s)"
            )
        if r["idle_before_min"] is not None and r["idle_before_min"] < 90:
            notes.append(
                f"WARNING: {r['route']}: the machine was busy before a run "
                f"({r['idle_before_min']}% idle); the figures are low"
            )
        if r["other_cores_max"] is not None and r["other_cores_max"] > 0.2:
            notes.append(
                f"WARNING: {r['route']}: other work used up to "
                f"{r['other_cores_max']:.2f} cores during a run; the figures are low"
            )
        if r["requests_per_s"] < OLD_RPS or r["p99_ms"] > OLD_P99_MS:
            notes.append(f"WARNING: {r['route']}: not better than the old service")
        elif r["requests_per_s"] < OLD_RPS * TARGET_RATIO:
            notes.append(f"note: {r['route']}: below the {TARGET_RATIO}× aim")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="wrk output files")
    parser.add_argument("--title", default="Load benchmark")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    runs = []
    for path in args.files:
        try:
            runs.append(parse(path))
        except (OSError, ValueError, KeyError) as exc:
            print(f"ERROR: {path}: {exc}", file=sys.stderr)
            return 2
    if not runs:
        print("ERROR: nothing to report", file=sys.stderr)
        return 2
    rows = summarise(runs)
    print(render(rows, args.title))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))
    notes = verdicts(rows)
    for note in notes:
        print(note, file=sys.stderr if note.startswith("ERROR") else sys.stdout)
    return 1 if any(n.startswith("ERROR") for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
