"""Summarise wrk runs of bench/*.lua: oo_ml beside the service it replaces.

Reads wrk's output files, takes the ``BENCH_RESULT {json}`` line that the scripts'
done() hook prints (falling back to wrk's own text when it is missing) and the
``BENCH_SIDE``/``BENCH_CONNECTIONS`` lines bin/bench-load writes, and prints one row
per route and connection count: the medians over runs of requests/s and p99 for oo_ml
and for the old service run beside it in the same sitting, the ratio of the medians,
and the errors of each. Exits 1 when any oo_ml run saw a non-2xx answer or a socket
error (the old service's errors are reported, not judged), 2 when there is nothing
to report. Standard library only.

    python bench/report.py bench/results/<stamp>/*.txt
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

# oo_ml's aim against the service it replaces, side by side at 16 connections.
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
    side = re.search(r"^BENCH_SIDE (\S+)", text, re.M)
    connections = re.search(r"^BENCH_CONNECTIONS (\d+)", text, re.M)
    run["side"] = side[1] if side else "oo_ml"
    run["connections"] = int(connections[1]) if connections else None
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


def _side(group: list[dict]) -> dict:
    """One server's figures over its runs of one route at one connection count."""
    rps = [r["requests_per_s"] for r in group]
    cpu = [r["cpu"] | {"rps": r["requests_per_s"]} for r in group if r["cpu"]]
    idle = [r["idle_before"] for r in group if r["idle_before"] is not None]
    return {
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


def summarise(
    runs: list[dict], ours: str | None = None, baseline: str = "old"
) -> list[dict]:
    """A row per (route, connections): ``ours``'s figures (by default the label
    that is not ``baseline``), and the baseline's when it ran beside it (the old
    service, or another version or set-up of oo_ml), with the ratio of the
    medians."""
    if ours is None:
        labels = sorted({r["side"] for r in runs} - {baseline}) or [baseline]
        ours = labels[0]
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for run in runs:
        key = (run["route"], run["connections"])
        groups.setdefault(key, {}).setdefault(run["side"], []).append(run)
    order = {"score": 0, "reward": 1, "mixed": 2}
    rows = []
    for (route, connections), sides in sorted(
        groups.items(), key=lambda i: (i[0][1] or 0, order.get(i[0][0], 3), i[0][0])
    ):
        mine = _side(sides[ours]) if ours in sides else None
        old = _side(sides[baseline]) if baseline in sides else None
        ratio = None
        if mine and old and old["requests_per_s"]:
            ratio = mine["requests_per_s"] / old["requests_per_s"]
        rows.append(
            {
                "route": route,
                "connections": connections,
                "ours": mine,
                "old": old,
                "ratio": ratio,
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def _errors(side: dict | None) -> str:
    if side is None:
        return "-"
    errors = side["non_2xx"] + side["socket_errors"]
    return str(errors) if not errors else f"{errors} !!"


def render(rows: list[dict], title: str, ours: str, baseline: str) -> str:
    head = (
        "route",
        "conns",
        "runs",
        f"{ours} req/s",
        "(min-max)",
        f"{baseline} req/s",
        "(min-max)",
        f"× {baseline}",
        "p99 ms",
        f"{baseline} p99",
        "errors",
        f"{baseline} errors",
        "CPU ms/req",
        "pg ms/req",
        f"{baseline} CPU ms/req",
        f"{baseline} pg ms/req",
        "other load",
        "idle before",
    )
    body = []
    for r in rows:
        ours, old = r["ours"] or {}, r["old"] or {}
        sides = [s for s in (ours, old) if s]
        other = [s["other_cores_max"] for s in sides]
        other = [o for o in other if o is not None]
        idle = [s["idle_before_min"] for s in sides]
        idle = [i for i in idle if i is not None]
        body.append(
            (
                r["route"],
                _fmt(r["connections"], "{}"),
                "/".join(str(s["runs"]) for s in sides),
                _fmt(ours.get("requests_per_s"), "{:.0f}"),
                _range(ours),
                _fmt(old.get("requests_per_s"), "{:.0f}"),
                _range(old),
                _fmt(r["ratio"], "{:.2f}×"),
                _fmt(ours.get("p99_ms"), "{:.1f}"),
                _fmt(old.get("p99_ms"), "{:.1f}"),
                _errors(r["ours"]),
                _errors(r["old"]),
                _fmt(ours.get("server_cpu_ms"), "{:.2f}"),
                _fmt(ours.get("postgres_cpu_ms"), "{:.2f}"),
                _fmt(old.get("server_cpu_ms"), "{:.2f}"),
                _fmt(old.get("postgres_cpu_ms"), "{:.2f}"),
                _fmt(max(other) if other else None, "{:.2f} cores"),
                _fmt(min(idle) if idle else None, "{}%"),
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
    if baseline == "old":
        out += [
            "old = the FastAPI + JSON-file service this replaces, one uvicorn "
            "process, run beside oo_ml in the same sitting (A B A B);",
            f"the aim is {TARGET_RATIO}× its req/s at 16 connections with a lower "
            "p99 and no errors.",
        ]
    out += [
        f"Medians over runs; × {baseline} = the ratio of the medians, the runs "
        "interleaved in one sitting.",
        "CPU ms/req = CPU time of the server's processes (pg: the bench database's "
        "PostgreSQL backends) per request;",
        "other load = the most cores anything else used during a run; idle before = "
        "the least idle CPU share just before a run.",
    ]
    return "\n".join(out)


def _range(side: dict) -> str:
    if not side:
        return ""
    return f"({side['rps_min']:.0f}-{side['rps_max']:.0f})"


def verdicts(rows: list[dict], baseline: str) -> list[str]:
    notes = []
    for r in rows:
        name = f"{r['route']} at {r['connections']} connections"
        ours, old = r["ours"], r["old"]
        if ours and (ours["non_2xx"] or ours["socket_errors"]):
            notes.append(
                f"ERROR: {name}: {ours['non_2xx']} non-2xx answers and "
                f"{ours['socket_errors']} socket errors over {ours['runs']} run(s)"
            )
        for side in (s for s in (ours, old) if s):
            if side["idle_before_min"] is not None and side["idle_before_min"] < 90:
                notes.append(
                    f"WARNING: {name}: the machine was busy before a run "
                    f"({side['idle_before_min']}% idle); the figures are low"
                )
            if side["other_cores_max"] is not None and side["other_cores_max"] > 0.2:
                notes.append(
                    f"WARNING: {name}: other work used up to "
                    f"{side['other_cores_max']:.2f} cores during a run"
                )
        if r["ratio"] is None:
            continue
        if r["ratio"] < 1 or ours["p99_ms"] > old["p99_ms"]:
            notes.append(f"WARNING: {name}: not better than {baseline}")
        elif baseline == "old" and r["ratio"] < TARGET_RATIO:
            notes.append(f"note: {name}: below the {TARGET_RATIO}× aim")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="wrk output files")
    parser.add_argument("--title", default="Load benchmark")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--ours", help="the label of the runs judged (default: any)")
    parser.add_argument(
        "--baseline", default="old", help="the label compared against (default old)"
    )
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
    rows = summarise(runs, ours=args.ours, baseline=args.baseline)
    ours = args.ours or next(
        (r["side"] for r in runs if r["side"] != args.baseline), "oo_ml"
    )
    print(render(rows, args.title, ours, args.baseline))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))
    notes = verdicts(rows, args.baseline)
    for note in notes:
        print(note, file=sys.stderr if note.startswith("ERROR") else sys.stdout)
    return 1 if any(n.startswith("ERROR") for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
