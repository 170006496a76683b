"""python manage.py runsim: run a simulation in this process and print its results.

The results go to stdout and depend only on the arguments (same seed, same
output); the progress bar and the run's id and timings go to stderr.
"""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from oo_ml.errors import DomainError
from simulations import services
from simulations.judges import JUDGES
from simulations.models import Run, RunStatus

BAR_WIDTH = 30


class Command(BaseCommand):
    help = (
        "Simulate policies on synthetic users (SPEC section 8) in this process, "
        "store the events, and print the per-policy table and per-persona winners."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--policies", nargs="+", required=True, help="policy names, in order"
        )
        parser.add_argument("--judge", default="rule", choices=sorted(JUDGES))
        parser.add_argument("--n-users", type=int, default=1_000)
        parser.add_argument("--n-rounds", type=int, default=100)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--candidates", type=int, default=5, help="candidates per round"
        )
        parser.add_argument(
            "--chunk-users",
            type=int,
            default=services.DEFAULT_CHUNK_USERS,
            help="users per chunk",
        )

    def handle(self, *args, **options):
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
        run = self.execute_run(run)
        if run.status != RunStatus.FINISHED:
            raise CommandError(f"run {run.id} {run.status}: {run.error}")
        self.stderr.write(
            f"run {run.id} finished: {run.decisions:,} decisions; engine "
            f"{run.engine_seconds:.2f} s, storage {run.storage_seconds:.2f} s, "
            f"summary {run.summary_seconds:.2f} s"
        )
        self.stdout.write(report(run))

    def execute_run(self, run: Run) -> Run:
        """Runs every chunk here. The place a --workers option would hand the run
        to the Celery workers instead (not built yet, so there is no flag)."""
        return services.run_execute(run_id=run.id, on_progress=self.progress)

    def progress(self, done: int, total: int) -> None:
        filled = BAR_WIDTH * done // total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stderr.write(f"\r[{bar}] {done}/{total} chunks", ending="")
        if done == total:
            self.stderr.write("")


def report(run: Run) -> str:
    """The per-policy table and the per-persona winners, as plain text."""
    summary = run.summary
    width = max(len("policy"), *(len(p) for p in run.policies))
    lines = [
        f"policies {', '.join(run.policies)}; judge {run.judge}; "
        f"{run.n_users:,} users x {run.n_rounds:,} rounds x "
        f"{run.n_candidates} candidates; seed {run.seed}",
        "",
        f"{'policy':<{width}}  {'total reward':>12}  {'mean reward':>11}  {'pulls':>9}",
    ]
    for row in summary["policies"]:
        lines.append(
            f"{row['policy']:<{width}}  {row['total_reward']:>12.3f}  "
            f"{row['mean_reward']:>11.4f}  {row['pulls']:>9,}"
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
