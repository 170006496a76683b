"""Shapes of the simulations API.

The start body is only checked for its shape here (an object with the required
keys, the judge a name): the values are checked once, by ``services.run_create``,
whose errors name the field.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from oo_ml.errors import InvalidInput
from simulations.models import Run
from simulations.selectors import run_duration, run_fraction

REQUIRED = ("policies", "judge", "n_users", "n_rounds", "seed")
OPTIONAL = ("n_candidates", "chunk_users")

# Documents the body; run_input reads it.
RUN_INPUT_SCHEMA = inline_serializer(
    "SimulationInput",
    {
        "policies": serializers.ListField(
            child=serializers.CharField(),
            help_text="The policies' names, in order (1 to 10).",
        ),
        "judge": serializers.CharField(
            help_text='How users react: "rule", or "llm" (a model plays the '
            "persona; 400 when no LLM is configured)."
        ),
        "n_users": serializers.IntegerField(min_value=1),
        "n_rounds": serializers.IntegerField(min_value=1),
        "seed": serializers.IntegerField(min_value=0),
        "n_candidates": serializers.IntegerField(
            min_value=1, required=False, help_text="Candidates per round (5)."
        ),
        "chunk_users": serializers.IntegerField(
            min_value=1,
            required=False,
            help_text="Users per chunk; left out, chosen from the run's size so that "
            "a chunk takes a second or two (at most 2,000).",
        ),
    },
)


def run_input(data) -> dict:
    """The keyword arguments of ``run_create`` found in a start body."""
    if not isinstance(data, dict):
        raise InvalidInput("A JSON object is required.")
    for name in REQUIRED:
        if name not in data:
            raise InvalidInput("This field is required.", field=name, code="required")
    if not isinstance(data["judge"], str):
        raise InvalidInput("judge must be a judge's name.", field="judge")
    for name in OPTIONAL:  # left out, it has a default; null is not one
        if name in data and data[name] is None:
            raise InvalidInput(f"{name} must be a whole number.", field=name)
    return {name: data[name] for name in REQUIRED + OPTIONAL if name in data}


class ProgressSerializer(serializers.Serializer):
    chunks_done = serializers.IntegerField()
    chunks_total = serializers.IntegerField()
    fraction = serializers.SerializerMethodField(help_text="0 to 1.")

    def get_fraction(self, run: Run) -> float:
        return round(run_fraction(run), 4)


class TimingsSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(
        allow_null=True, help_text="When a worker began its first chunk."
    )
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.SerializerMethodField(
        help_text="From started to finished (or to now while it runs)."
    )
    engine_seconds = serializers.FloatField(help_text="Summed over chunks.")
    storage_seconds = serializers.FloatField(help_text="Summed over chunks.")
    summary_seconds = serializers.FloatField(allow_null=True)

    def get_duration_seconds(self, run: Run) -> float | None:
        seconds = run_duration(run)
        return None if seconds is None else round(seconds, 3)


class DifferenceSerializer(serializers.Serializer):
    mean = serializers.FloatField()
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)


class PolicyResultSerializer(serializers.Serializer):
    policy = serializers.CharField()
    total_reward = serializers.FloatField()
    mean_reward = serializers.FloatField()
    mean_ci = serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        help_text="[low, high]: the 95% Student t interval of the mean reward "
        "over users (each user's mean over the rounds); null under 2 users.",
    )
    diff_vs_first = DifferenceSerializer(
        allow_null=True,
        help_text="This policy minus the run's first, paired by user, with its "
        "95% t interval; null for the first policy.",
    )
    pulls = serializers.IntegerField()
    explorations = serializers.IntegerField()
    expected_reward = serializers.FloatField(
        allow_null=True,
        help_text="The mean expected reward of its picks, for a judge that knows "
        "it (rule); else null.",
    )
    regret = serializers.FloatField(
        allow_null=True, help_text="oracle_mean - expected_reward; null likewise."
    )


class PersonaResultSerializer(serializers.Serializer):
    persona = serializers.CharField()
    policy = serializers.CharField()
    mean_reward = serializers.FloatField()
    pulls = serializers.IntegerField()


class WinnerSerializer(serializers.Serializer):
    persona = serializers.CharField()
    policy = serializers.CharField()
    mean_reward = serializers.FloatField()


class ResultsSerializer(serializers.Serializer):
    policies = PolicyResultSerializer(many=True)
    personas = PersonaResultSerializer(many=True)
    winners = WinnerSerializer(many=True)
    curve = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="Per policy, the mean reward of each round.",
    )
    picks = serializers.DictField(
        help_text="Per policy, what it picked: counts by priority, overdue, "
        "task age, and the users' reactions."
    )
    oracle_mean = serializers.FloatField(
        allow_null=True,
        help_text="The mean expected reward of the best candidate every round, "
        "for a judge that knows expected rewards; else null.",
    )
    oracle_curve = serializers.ListField(
        child=serializers.FloatField(),
        allow_null=True,
        help_text="The oracle's expected reward per round.",
    )
    regret_curve = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField()),
        allow_null=True,
        help_text="Per policy, its regret in each round.",
    )
    judge = serializers.DictField(
        help_text="{name}; for the llm judge also model, prompt_version, "
        "reactions, fallbacks (to the rule judge's draw: fallbacks_invalid for "
        "unusable answers, fallbacks_unavailable for none), prompts, cached, "
        "asked.",
        required=False,
    )
    per_user = serializers.DictField(
        help_text="{users, means, covariance}: the moments of the per-user mean "
        "rewards, in the run's policy order; any two policies' paired difference "
        "follows from them (the promotion gate reads it)."
    )


class LinksSerializer(serializers.Serializer):
    self = serializers.CharField()
    admin = serializers.CharField()


class RunSerializer(serializers.Serializer):
    """A run as listed: everything but its results."""

    id = serializers.UUIDField()
    status = serializers.CharField()
    policies = serializers.ListField(child=serializers.CharField())
    judge = serializers.CharField()
    judge_model = serializers.CharField(
        help_text='The llm judge\'s model, fixed when the run was created; "" for '
        "other judges."
    )
    judge_prompt_version = serializers.CharField(
        help_text='The llm judge\'s prompt version; "" for other judges.'
    )
    n_users = serializers.IntegerField()
    n_rounds = serializers.IntegerField()
    n_candidates = serializers.IntegerField()
    seed = serializers.IntegerField()
    chunk_users = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by_name")
    progress = ProgressSerializer(source="*")
    timings = TimingsSerializer(source="*")
    error = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    def get_error(self, run: Run) -> str | None:
        return run.error or None

    @extend_schema_field(LinksSerializer)
    def get_links(self, run: Run) -> dict:
        return {
            "self": reverse("simulation", args=[run.pk]),
            "admin": reverse("admin:simulations_run_change", args=[run.pk]),
        }


class RunDetailSerializer(RunSerializer):
    """A run with its results once finished (null until then)."""

    results = serializers.SerializerMethodField()

    @extend_schema_field(ResultsSerializer(allow_null=True))
    def get_results(self, run: Run) -> dict | None:
        return run.summary
