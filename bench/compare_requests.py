"""Two or more versions of the code, one route, in process, interleaved.

Each side is a checkout (this one, or a ``git worktree`` of another commit) and
its own database, migrated by that checkout's code, and its own ``.venv``
(``make install`` there). Every round runs
``profile_requests.py --no-profile`` once per side, in the order given, in a
fresh process, and the table gives each side's median CPU ms per request (the
Django process's own), wall ms per request, and the statements one request
sends. Only ratios within one sitting mean anything on a shared machine.

    .venv/bin/python bench/compare_requests.py --route /events --rounds 4 \\
        --side before=/work/old@postgres://postgres@127.0.0.1:5432/oo_ml_before \\
        --side after=.@postgres://postgres@127.0.0.1:5432/oo_ml_after --migrate
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMING = re.compile(
    r"=== \S+: ([\d.]+) ms per request, of which ([\d.]+) ms CPU in this process "
    r"and ([\d.]+) ms in its PostgreSQL backend"
)
SENT = re.compile(r"(\d+) statements sent")


def side(text: str) -> tuple[str, Path, str]:
    name, rest = text.split("=", 1)
    code, url = rest.split("@", 1)
    return name, Path(code).resolve(), url


def python(code: Path) -> str:
    """The checkout's own virtualenv: an editable install maps the project's
    packages to its checkout, whatever the path says."""
    own = code / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def run(command: list[str], code: Path, url: str) -> str:
    env = os.environ | {"DATABASE_URL": url, "DJANGO_DEBUG": "false"}
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=side, action="append", required=True)
    parser.add_argument("--route", default="/events")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--migrate", action="store_true")
    parser.add_argument(
        "--decided", action="store_true", help="/reward names a decision"
    )
    args = parser.parse_args()

    env_key = {"DJANGO_SECRET_KEY": "bench-only-" + "x" * 50}
    os.environ.update(env_key)
    if args.migrate:
        for _, code, url in args.side:
            run([python(code), str(code / "manage.py"), "migrate", "-v0"], code, url)
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in args.side}
    pg: dict[str, list[float]] = {name: [] for name, _, _ in args.side}
    wall: dict[str, list[float]] = {name: [] for name, _, _ in args.side}
    sent: dict[str, int] = {}
    for round_ in range(1, args.rounds + 1):
        for name, code, url in args.side:
            out = run(
                [
                    python(code),
                    str(HERE / "profile_requests.py"),
                    "--no-profile",
                    "--routes",
                    args.route,
                    "--code",
                    str(code),
                    "--requests",
                    str(args.requests),
                    "--warmup",
                    str(args.warmup),
                    "--history",
                    str(args.history),
                    *(["--decided"] if args.decided else []),
                ],
                code,
                url,
            )
            wall_ms, cpu_ms, pg_ms = map(float, TIMING.search(out).groups())
            sent[name] = int(SENT.search(out).group(1))
            cpu[name].append(cpu_ms + pg_ms)
            pg[name].append(pg_ms)
            wall[name].append(wall_ms)
            print(
                f"round {round_} {name}: {cpu_ms:.2f} + {pg_ms:.2f} ms CPU "
                f"(process + PostgreSQL), {wall_ms:.2f} ms wall"
            )
    first = args.side[0][0]
    base = statistics.median(cpu[first])
    print(f"\n{args.route}, {args.requests} requests per run, medians:")
    # Also each round's ratio to the first side's run of the same round: the
    # spread says how far the machine's noise reaches.
    print(
        f"| side | CPU ms/req, process + PostgreSQL (each round's) | of which "
        f"PostgreSQL | wall ms/req | statements | CPU / {first} "
        f"| per round: median (range) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in args.side:
        median = statistics.median(cpu[name])
        rounds = [c / b for c, b in zip(cpu[name], cpu[first], strict=True)]
        print(
            f"| {name} | {median:.2f} ({', '.join(f'{c:.2f}' for c in cpu[name])}) "
            f"| {statistics.median(pg[name]):.2f} "
            f"| {statistics.median(wall[name]):.2f} | {sent[name]} "
            f"| {median / base:.2f} | {statistics.median(rounds):.2f} "
            f"({min(rounds):.2f}–{max(rounds):.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
