"""python manage.py runsim: run a simulation and print its results.

In this process, or with ``--workers`` on the Celery workers, followed here by
polling the run. The results go to stdout and depend only on the arguments (same
seed, same output); the progress bar and the run's id and timings go to stderr.
"""

from __future__ import annotations

import getpass
import time

from django.core.management.base import BaseCommand, CommandError

from oo_ml.errors import DomainError
from simulations import services
from simulations.models import Run, RunStatus
from simulations.selectors import run_get

BAR_WIDTH = 30
POLL_SECONDS = 0.5  # how often --workers reads the run's progress


# How a policy starts: a new user's first tips (every round has as many users).
EARLY_ROUNDS = 10


class Command(BaseCommand):
    help = (
        "Simulate policies on synthetic users (docs/simulations.md) in this process or "
        "on the Celery workers (--workers), store the events, and print the "
        "per-policy table with 95% intervals, the paired differences from the "
        "first policy, the regrets against the oracle and per-persona winners."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--policies", nargs="+", required=True, help="policy names, in order"
        )
        parser.add_argument(
            "--judge",
            default="rule",
            choices=services.judge_names(),
            help="how simulated users react: rule, or llm (a model plays the "
            "persona; needs OO_ML_LLM_BASE_URL)",
        )
        parser.add_argument("--n-users", type=int, default=1_000)
        parser.add_argument("--n-rounds", type=int, default=100)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--candidates", type=int, default=5, help="candidates per round"
        )
        parser.add_argument(
            "--chunk-users",
            type=int,
            help="users per chunk (default: chosen from the run's size, a second "
            "or two of work each, at most 2,000; with the rule judge the results do "
            "not depend on it)",
        )
        parser.add_argument(
            "--workers",
            action="store_true",
            help="hand the run to the Celery workers (celery -A oo_ml worker), one "
            "task per chunk, and follow it here",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            help="with --workers: stop waiting after this many seconds (the run "
            "goes on on the workers)",
        )

    def handle(self, *args, **options):
        timeout = options["timeout"]
        if timeout is not None and (not options["workers"] or timeout <= 0):
            raise CommandError(
                "--timeout is a positive number of seconds, with --workers."
            )
        try:
            run = services.run_create(
                policies=options["policies"],
                judge=options["judge"],
                n_users=options["n_users"],
                n_rounds=options["n_rounds"],
                seed=options["seed"],
                n_candidates=options["candidates"],
                chunk_users=options["chunk_users"],
                actor=None,
                actor_name=f"runsim ({getpass.getuser()})",
            )
        except DomainError as error:
            raise CommandError(error.detail) from error
        self.stderr.write(f"run {run.id}: {run.chunks_total} chunk(s)")
        if options["workers"]:
            run = self.follow_on_workers(run, timeout=timeout)
        else:
            run = services.run_execute(run_id=run.id, on_progress=self.progress)
        if run.status != RunStatus.FINISHED:
            raise CommandError(f"run {run.id} {run.status}: {run.error}")
        self.stderr.write(
            f"run {run.id} finished: {run.decisions:,} decisions; engine "
            f"{run.engine_seconds:.2f} s, storage {run.storage_seconds:.2f} s, "
            f"summary {run.summary_seconds:.2f} s"
        )
        judge = run.summary.get("judge") or {}
        if "asked" in judge:
            self.stderr.write(
                f"llm judge: {judge['prompts']:,} prompts looked up, "
                f"{judge['cached']:,} answered from the cache, "
                f"{judge['asked']:,} asked of {judge['model']}"
            )
        self.stdout.write(report(run))

    def follow_on_workers(self, run: Run, *, timeout: float | None) -> Run:
        """Send the run's chunks to the workers, then show its progress until it
        finishes or fails (or ``timeout`` seconds pass: a CommandError)."""
        services.run_start(run_id=run.id)
        self.stderr.write(
            "sent to the Celery workers; Ctrl-C stops following it, not the run"
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = None
        while True:
            run = run_get(run_id=run.id)
            if run.chunks_done != shown:
                self.progress(run.chunks_done, run.chunks_total)
                shown = run.chunks_done
            if run.status in (RunStatus.FINISHED, RunStatus.FAILED):
                break
            if deadline is not None and time.monotonic() > deadline:
                self.stderr.write("")
                raise CommandError(
                    f"run {run.id} is still {run.status} after {timeout:g} s "
                    f"({run.chunks_done}/{run.chunks_total} chunks done): are the "
                    "workers running? It goes on on them."
                )
            time.sleep(POLL_SECONDS)
        if run.chunks_done < run.chunks_total:
            self.stderr.write("")  # end the progress bar's line
        return run

    def progress(self, done: int, total: int) -> None:
        filled = BAR_WIDTH * done // total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stderr.write(f"\r[{bar}] {done}/{total} chunks", ending="")
        if done == total:
            self.stderr.write("")


def _ci(low: float | None, high: float | None) -> str:
    return "—" if low is None else f"[{low:+.4f}, {high:+.4f}]"


def _judge_lines(judge: dict) -> list[str]:
    """The llm judge's model, prompt version and fallbacks: what the cache keeps
    the same on a rerun (the calls it saved go to stderr)."""
    if "fallbacks" not in judge:
        return []
    return [
        f"llm judge: model {judge['model']}, prompt {judge['prompt_version']}; "
        f"{judge['fallbacks']:,} of {judge['reactions']:,} reactions fell back to "
        f"the rule judge's draw ({judge['fallbacks_invalid']:,} unusable answers, "
        f"{judge['fallbacks_unavailable']:,} without an answer)"
    ]


def report(run: Run) -> str:
    """The per-policy table with 95% intervals, the paired differences from the
    first policy, the oracle and the regrets, and the per-persona winners, as
    plain text."""
    summary = run.summary
    width = max(len("policy"), *(len(p) for p in run.policies))
    ci_width = len("[+0.0000, +0.0000]")
    lines = [
        f"policies {', '.join(run.policies)}; judge {run.judge}; "
        f"{run.n_users:,} users x {run.n_rounds:,} rounds x "
        f"{run.n_candidates} candidates; seed {run.seed}",
        *_judge_lines(summary.get("judge") or {}),
        "",
        f"{'policy':<{width}}  {'total reward':>12}  {'mean reward':>11}  "
        f"{'95% interval':<{ci_width}}  {'pulls':>9}",
    ]
    for row in summary["policies"]:
        ci = row.get("mean_ci") or (None, None)
        lines.append(
            f"{row['policy']:<{width}}  {row['total_reward']:>12.3f}  "
            f"{row['mean_reward']:>11.4f}  {_ci(*ci):<{ci_width}}  "
            f"{row['pulls']:>9,}"
        )
    first = run.policies[0]
    lines += [
        "",
        f"paired by user, each policy minus {first} (95% t interval over "
        f"{run.n_users:,} users)",
    ]
    for row in summary["policies"][1:]:
        diff = row.get("diff_vs_first")
        if diff is None:
            continue
        lines.append(
            f"{row['policy']:<{width}}  {diff['mean']:>+11.4f}  "
            f"{_ci(diff['low'], diff['high'])}"
        )
    if summary.get("oracle_mean") is not None:
        lines += [
            "",
            f"oracle (the best candidate every round): expected mean reward "
            f"{summary['oracle_mean']:.4f}",
            f"{'policy':<{width}}  {'expected reward':>15}  {'regret':>8}  "
            f"{'regret, first 10 rounds':>23}",
        ]
        curves = summary["regret_curve"]
        for row in summary["policies"]:
            early = curves[row["policy"]][:EARLY_ROUNDS]
            lines.append(
                f"{row['policy']:<{width}}  {row['expected_reward']:>15.4f}  "
                f"{row['regret']:>8.4f}  {sum(early) / len(early):>23.4f}"
            )
    means = {(r["persona"], r["policy"]): r["mean_reward"] for r in summary["personas"]}
    persona_width = max(
        len("persona"), *(len(w["persona"]) for w in summary["winners"])
    )
    lines += [
        "",
        "per persona: the winner and each policy's mean reward",
        f"{'persona':<{persona_width}}  {'winner':<{width}}  "
        + "  ".join(f"{name:>{max(len(name), 8)}}" for name in run.policies),
    ]
    for winner in summary["winners"]:
        cells = "  ".join(
            f"{means[(winner['persona'], name)]:>{max(len(name), 8)}.4f}"
            for name in run.policies
        )
        lines.append(
            f"{winner['persona']:<{persona_width}}  {winner['policy']:<{width}}  "
            + cells
        )
    return "\n".join(lines)
