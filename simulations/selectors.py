"""Reads: runs, and a run's results aggregated from its stored events."""

from __future__ import annotations

import uuid
from collections import defaultdict

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Func,
    IntegerField,
    Q,
    Sum,
    Value,
    When,
)

from oo_ml.errors import NotFound
from simulations.models import Run, RunEvent
from simulations.personas import PERSONA_NAMES

# What kinds of tasks a policy picked: task age in these buckets (days).
AGE_BUCKETS = ((0, 1, "< 1 day"), (1, 7, "1-6 days"), (7, 30, "7-29 days"))
AGE_OLDEST = "30+ days"
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
    labels = [label for *_, label in AGE_BUCKETS] + [AGE_OLDEST]
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
