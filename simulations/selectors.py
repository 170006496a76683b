"""Reads: runs, and a run's results aggregated from its stored events."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

import numpy as np
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
from policies import stats
from policies.models import Policy
from policies.services import Evidence
from simulations.models import JudgeAnswer, Run, RunEvent, RunStatus
from simulations.personas import PERSONA_NAMES

# What kinds of tasks a policy picked: task age in these buckets (days).
AGE_BUCKETS = ((0, 1, "< 1 day"), (1, 7, "1-6 days"), (7, 30, "7-29 days"))
AGE_OLDEST = "30+ days"
AGE_LABELS = [label for *_, label in AGE_BUCKETS] + [AGE_OLDEST]
DIGITS = 6  # summary figures are rounded
# Rewards are summed exactly, in whole millionths: a float sum depends on the
# order the rows are read in, which follows the order the chunks were written in
# (a chunk redone after its worker was killed comes last), and the same seed
# must give the same summary to the last digit. The reward table's values
# (docs/rewards.md) have one decimal, so millionths hold them exactly; and the summary
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
    """The latest finished run that ran ``shadow`` beside ``active``
    (docs/promotion.md), with the paired per-user difference shadow - active
    and its 95% interval.

    Only a run of both policies as they are now counts: one made before either's
    parameters changed says nothing about them. The latest such run is the
    evidence, whichever way it went, so an older, kinder run cannot be picked.
    The difference comes from the per-user moments the run's summary keeps, so
    it costs no query over the run's events, whichever two of its policies
    these are.
    """
    wanted = {shadow.name: policy_spec(shadow), active.name: policy_spec(active)}
    runs = (
        Run.objects.filter(status=RunStatus.FINISHED)
        .order_by("-finished_at")
        .only("id", "policies", "policy_specs", "seed", "finished_at")
    )
    for run in runs[:EVIDENCE_RUNS_SCANNED]:  # not their summaries
        specs = {spec["name"]: spec for spec in run.policy_specs}
        if any(specs.get(name) != spec for name, spec in wanted.items()):
            continue
        summary = Run.objects.values_list("summary", flat=True).get(pk=run.pk)
        means = {row["policy"]: row["mean_reward"] for row in summary["policies"]}
        moments = moments_from_summary(summary)
        if moments is None:  # summarised before per-user moments were kept
            difference = stats.Interval(
                means[shadow.name] - means[active.name], None, None, None, 0
            )
        else:
            order = {name: i for i, name in enumerate(run.policies)}
            difference = moments.difference(order[shadow.name], order[active.name])
        return Evidence(
            run_id=str(run.id),
            shadow=shadow.name,
            active=active.name,
            shadow_mean_reward=means[shadow.name],
            active_mean_reward=means[active.name],
            seed=run.seed,
            finished_at=run.finished_at.isoformat(),
            users=difference.n,
            difference=difference.mean,
            low=difference.low,
            high=difference.high,
            difference_sd=difference.sd,
        )
    return None


def _reward(units) -> float:
    """A sum of ``RewardUnits`` (an int, or a Decimal from PostgreSQL's sum)."""
    return int(units) / REWARD_UNIT


def _mean(total: float, count: int) -> float:
    return round(total / count, DIGITS) if count else 0.0


def _units_mean(units, count: int) -> float | None:
    """The mean of ``count`` values summed in ``RewardUnits``; None for no sum
    (a judge without expected rewards leaves them empty)."""
    return None if units is None or not count else _mean(_reward(units), count)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _interval(interval: stats.Interval) -> list[float] | None:
    if interval.low is None:
        return None
    return [_rounded(interval.low), _rounded(interval.high)]


def _per_user(run: Run, events: QuerySet) -> stats.UserMoments:
    """Each user's mean reward under each policy, as moments over users.

    The per-user totals are exact sums of whole millionths, so the moments do
    not depend on the order the rows come in (chunks redone after a killed
    worker are written last): the same seed gives the same figures to the bit.
    """
    order = {name: i for i, name in enumerate(run.policies)}
    totals = np.zeros((run.n_users, len(run.policies)), dtype=np.int64)
    rows = (
        events.values_list("user_index", "policy")
        .annotate(units=Sum(RewardUnits("reward")))
        .order_by()
    )
    for user, policy, units in rows:
        totals[user, order[policy]] = int(units)
    return stats.user_moments(totals, scale=1 / (REWARD_UNIT * run.n_rounds))


def moments_from_summary(summary: dict) -> stats.UserMoments | None:
    """The stored per-user moments of a run (None for a run summarised before
    they were kept)."""
    per_user = summary.get("per_user")
    if per_user is None:
        return None
    return stats.UserMoments(
        per_user["users"], per_user["means"], per_user["covariance"]
    )


def _difference(interval: stats.Interval) -> dict:
    return {
        "mean": _rounded(interval.mean),
        "low": _rounded(interval.low),
        "high": _rounded(interval.high),
    }


def run_summary_compute(*, run: Run) -> dict:
    """The results of docs/simulations.md from the run's events, in four grouped
    queries whatever the run's size: per policy (total, mean reward with its
    95% t interval over users, the paired difference from the first policy
    with its interval, pulls, explorations, and with a judge that knows them
    the expected reward of its picks and its regret against the oracle), per
    persona x policy mean and the winner of each persona, the reward and
    regret curves (per round per policy), and what kinds of tasks each policy
    picked and how users reacted. ``per_user`` keeps the moments of the
    per-user means, from which any two policies' paired difference follows."""
    events = RunEvent.objects.filter(run=run).order_by()
    order = {name: i for i, name in enumerate(run.policies)}

    # 1. Per policy x persona: counts and sums (per policy is their total).
    by_persona = (
        events.values("policy", "persona")
        .annotate(
            pulls=Count("id"),
            units=Sum(RewardUnits("reward")),
            explorations=Count("id", filter=Q(explored=True)),
            expected_units=Sum("expected_units"),
            oracle_units=Sum("oracle_units"),
        )
        .order_by("policy", "persona")
    )
    cells = {(row["policy"], row["persona"]): row for row in by_persona}
    moments = _per_user(run, events)
    policies, personas = [], []
    oracle_mean = None
    for i, name in enumerate(run.policies):
        rows = [cells[(name, p)] for p in PERSONA_NAMES if (name, p) in cells]
        pulls = sum(r["pulls"] for r in rows)
        total = _reward(sum(r["units"] for r in rows))
        expected = oracle = None
        if rows and all(r["expected_units"] is not None for r in rows):
            expected = sum(int(r["expected_units"]) for r in rows)
            oracle = sum(int(r["oracle_units"]) for r in rows)
            if oracle_mean is None:  # every policy faced the same rounds
                oracle_mean = _units_mean(oracle, pulls)
        policies.append(
            {
                "policy": name,
                "total_reward": round(total, DIGITS),
                "mean_reward": _mean(total, pulls),
                "mean_ci": _interval(moments.interval(i)),
                "diff_vs_first": None
                if i == 0
                else _difference(moments.difference(i, 0)),
                "pulls": pulls,
                "explorations": sum(r["explorations"] for r in rows),
                "expected_reward": _units_mean(expected, pulls),
                "regret": None
                if expected is None
                else _units_mean(oracle - expected, pulls),
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

    # 2. The reward curve: mean reward per round, per policy; and the regret's.
    curve = {name: [0.0] * run.n_rounds for name in run.policies}
    known = oracle_mean is not None
    regret_curve = {name: [0.0] * run.n_rounds for name in run.policies}
    oracle_curve = [0.0] * run.n_rounds
    for row in events.values("policy", "round").annotate(
        n=Count("id"),
        units=Sum(RewardUnits("reward")),
        expected_units=Sum("expected_units"),
        oracle_units=Sum("oracle_units"),
    ):
        curve[row["policy"]][row["round"]] = _mean(_reward(row["units"]), row["n"])
        if known:
            gap = int(row["oracle_units"]) - int(row["expected_units"])
            regret_curve[row["policy"]][row["round"]] = _units_mean(gap, row["n"])
            oracle_curve[row["round"]] = _units_mean(row["oracle_units"], row["n"])

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
        "oracle_mean": oracle_mean,
        "oracle_curve": oracle_curve if known else None,
        "regret_curve": regret_curve if known else None,
        "judge": judge_summary(run=run),
        # What the gate reads to pair any two of the run's policies by user.
        "per_user": {
            "users": moments.users,
            "means": moments.means,
            "covariance": moments.covariance,
        },
    }


JUDGE_COUNTS = ("reactions", "fallbacks_invalid", "fallbacks_unavailable")
JUDGE_CALLS = ("prompts", "cached", "asked")


def judge_summary(*, run: Run) -> dict:
    """The judge's name and, for the llm judge, its model, prompt version and
    counts summed over the chunks: reactions, and how many fell back to the
    rule judge's draw because the answer was unusable (invalid) or could not be
    had (unavailable); the distinct prompts looked up, how many the cache
    answered and how many were asked of the model."""
    summary: dict = {"name": run.judge}
    if not run.judge_model:
        return summary
    totals = dict.fromkeys(JUDGE_COUNTS + JUDGE_CALLS, 0)
    for stats_of_chunk in run.chunks.values_list("judge_stats", flat=True):
        for name, value in (stats_of_chunk or {}).items():
            if name in totals:
                totals[name] += value
    fallbacks = totals["fallbacks_invalid"] + totals["fallbacks_unavailable"]
    return {
        **summary,
        "model": run.judge_model,
        "prompt_version": run.judge_prompt_version,
        **totals,
        "fallbacks": fallbacks,
    }


def judge_answers_get(*, keys: Iterable[str]) -> dict[str, str]:
    """The llm judge's kept answers of those keys that have one."""
    return dict(
        JudgeAnswer.objects.filter(key__in=list(keys)).values_list("key", "answer")
    )


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
