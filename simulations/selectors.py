"""Reads: runs, and a run's results aggregated from its stored events."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from oo_ml.errors import NotFound
from policies.models import Policy
from policies.services import Evidence
from simulations.models import Run, RunEvent, RunStatus
from simulations.personas import PERSONA_NAMES

# What kinds of tasks a policy picked: task age in these buckets (days).
AGE_BUCKETS = ((0, 1, "< 1 day"), (1, 7, "1-6 days"), (7, 30, "7-29 days"))
AGE_OLDEST = "30+ days"
AGE_LABELS = [label for *_, label in AGE_BUCKETS] + [AGE_OLDEST]
DIGITS = 6  # summary figures are rounded
# Rewards are summed exactly, in whole millionths: a float sum depends on the
# order the rows are read in, which follows the order the chunks were written in
# (a chunk redone after its worker was killed comes last), and the same seed
# must give the same summary to the last digit. The reward table's values (SPEC
# section 6) have one decimal, so millionths hold them exactly; and the summary
# takes no longer than with a float sum (numeric took twice as long).
REWARD_UNIT = 1_000_000


class RewardUnits(Func):
    """A reward in whole millionths, rounded to the nearest: PostgreSQL rounds a
    float cast to an integer, SQLite truncates it."""

    template = f"CAST(%(expressions)s * {REWARD_UNIT} AS bigint)"
    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        template = f"CAST(ROUND(%(expressions)s * {REWARD_UNIT}) AS integer)"
        return self.as_sql(compiler, connection, template=template, **extra)


def run_get(*, run_id: uuid.UUID | str) -> Run:
    try:
        return Run.objects.get(pk=run_id)
    except (Run.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"No simulation run {run_id}.", field="id") from None


# How many recent finished runs to look through for promotion evidence.
EVIDENCE_RUNS_SCANNED = 200


def policy_spec(policy: Policy) -> dict:
    """What a run keeps of a policy (``Run.policy_specs``), and what evidence for
    promoting it must match."""
    return {
        "name": policy.name,
        "algorithm": policy.algorithm,
        "dimension": policy.dimension,
        "params": policy.params,
    }


def promotion_evidence(*, shadow: Policy, active: Policy) -> Evidence | None:
    """The latest finished run that ran ``shadow`` beside ``active`` (SPEC §7).

    Only a run of both policies as they are now counts: one made before either's
    parameters changed says nothing about them. The latest such run is the
    evidence, whichever way it went, so an older, kinder run cannot be picked.
    """
    wanted = {shadow.name: policy_spec(shadow), active.name: policy_spec(active)}
    runs = (
        Run.objects.filter(status=RunStatus.FINISHED)
        .order_by("-finished_at")
        .only("id", "policy_specs", "seed", "finished_at")  # not the summaries
    )
    for run in runs[:EVIDENCE_RUNS_SCANNED]:
        specs = {spec["name"]: spec for spec in run.policy_specs}
        if any(specs.get(name) != spec for name, spec in wanted.items()):
            continue
        summary = Run.objects.values_list("summary", flat=True).get(pk=run.pk)
        means = {row["policy"]: row["mean_reward"] for row in summary["policies"]}
        return Evidence(
            run_id=str(run.id),
            shadow=shadow.name,
            active=active.name,
            shadow_mean_reward=means[shadow.name],
            active_mean_reward=means[active.name],
            seed=run.seed,
            finished_at=run.finished_at.isoformat(),
        )
    return None


def _reward(units) -> float:
    """A sum of ``RewardUnits`` (an int, or a Decimal from PostgreSQL's sum)."""
    return int(units) / REWARD_UNIT


def _mean(total: float, count: int) -> float:
    return round(total / count, DIGITS) if count else 0.0


def run_summary_compute(*, run: Run) -> dict:
    """The results of SPEC section 8 from the run's events, in three grouped
    queries whatever the run's size: per policy (total, mean reward, pulls,
    explorations), per persona x policy mean and the winner of each persona, the
    reward curve (mean reward per round per policy), and what kinds of tasks each
    policy picked and how users reacted."""
    events = RunEvent.objects.filter(run=run).order_by()
    order = {name: i for i, name in enumerate(run.policies)}

    # 1. Per policy x persona: counts and sums (per policy is their total).
    by_persona = (
        events.values("policy", "persona")
        .annotate(
            pulls=Count("id"),
            units=Sum(RewardUnits("reward")),
            explorations=Count("id", filter=Q(explored=True)),
        )
        .order_by("policy", "persona")
    )
    cells = {(row["policy"], row["persona"]): row for row in by_persona}
    policies, personas = [], []
    for name in run.policies:
        rows = [cells[(name, p)] for p in PERSONA_NAMES if (name, p) in cells]
        pulls = sum(r["pulls"] for r in rows)
        total = _reward(sum(r["units"] for r in rows))
        policies.append(
            {
                "policy": name,
                "total_reward": round(total, DIGITS),
                "mean_reward": _mean(total, pulls),
                "pulls": pulls,
                "explorations": sum(r["explorations"] for r in rows),
            }
        )
    winners = []
    for persona in PERSONA_NAMES:
        means = []
        for name in run.policies:
            row = cells.get((name, persona))
            if row is None:
                continue
            mean = _mean(_reward(row["units"]), row["pulls"])
            means.append((name, mean))
            personas.append(
                {
                    "persona": persona,
                    "policy": name,
                    "mean_reward": mean,
                    "pulls": row["pulls"],
                }
            )
        if means:
            # The first policy in the run's order wins a tie.
            best = max(means, key=lambda m: (m[1], -order[m[0]]))
            winners.append(
                {"persona": persona, "policy": best[0], "mean_reward": best[1]}
            )

    # 2. The reward curve: mean reward per round, per policy.
    curve = {name: [0.0] * run.n_rounds for name in run.policies}
    for row in events.values("policy", "round").annotate(
        n=Count("id"), units=Sum(RewardUnits("reward"))
    ):
        curve[row["policy"]][row["round"]] = _mean(_reward(row["units"]), row["n"])

    # 3. What each policy picked and how users reacted, in one grouping.
    age_bucket = Case(
        *[
            When(task_age_days__gte=low, task_age_days__lt=high, then=Value(i))
            for i, (low, high, _) in enumerate(AGE_BUCKETS)
        ],
        default=Value(len(AGE_BUCKETS)),
        output_field=IntegerField(),
    )
    labels = AGE_LABELS
    picks = {
        name: {
            "priority": {str(p): 0 for p in range(1, 5)},
            "overdue": {"overdue": 0, "not overdue": 0},
            "age": dict.fromkeys(labels, 0),
            "reaction": defaultdict(int),
        }
        for name in run.policies
    }
    grouped = (
        events.annotate(age_bucket=age_bucket)
        .values("policy", "priority", "is_overdue", "age_bucket", "kind")
        .annotate(n=Count("id"))
    )
    for row in grouped:
        kinds = picks[row["policy"]]
        kinds["priority"][str(row["priority"])] += row["n"]
        kinds["overdue"]["overdue" if row["is_overdue"] else "not overdue"] += row["n"]
        kinds["age"][labels[row["age_bucket"]]] += row["n"]
        kinds["reaction"][row["kind"]] += row["n"]
    for kinds in picks.values():
        kinds["reaction"] = dict(sorted(kinds["reaction"].items()))

    return {
        "policies": policies,
        "personas": personas,
        "winners": winners,
        "curve": curve,
        "picks": picks,
    }


def run_list() -> QuerySet[Run]:
    """Runs, newest first, without their summaries (a curve per policy can be
    large); ``results`` holds the summary's per-policy table, or None."""
    return (
        Run.objects.defer("summary", "policy_specs")
        .annotate(results=KeyTransform("policies", "summary"))
        .order_by("-created_at")
    )


def runs_by_id(*, ids: Iterable[uuid.UUID]) -> list[Run]:
    """The runs of ``ids`` that exist, as ``run_list`` reads them."""
    return list(run_list().filter(pk__in=list(ids)))


def run_duration(run: Run, *, now: datetime | None = None) -> float | None:
    """Seconds from the first chunk starting to the run ending (or to now)."""
    if run.started_at is None:
        return None
    end = run.finished_at or now or timezone.now()
    return max((end - run.started_at).total_seconds(), 0.0)


def run_fraction(run: Run) -> float:
    """The share of the run done: its chunks, and 1 once finished."""
    if run.status == RunStatus.FINISHED:
        return 1.0
    return run.chunks_done / run.chunks_total if run.chunks_total else 0.0
