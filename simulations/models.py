from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from oo_ml.models import TimeStampedModel, uuid7
from profiles.models import Kind


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"


class Run(TimeStampedModel):
    """One simulation: policies x users x rounds with a seed (docs/simulations.md).

    Split into chunks of users (``RunChunk``), each executed on its own and
    recorded when done; the summary is computed from the stored events once every
    chunk is in.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    policies = models.JSONField(help_text="The policies' names, in order.")
    policy_specs = models.JSONField(
        help_text="Each policy's algorithm, dimension and parameters when the run "
        "was created: the run replays the same policies whatever changes later."
    )
    judge = models.CharField(max_length=32)
    # The llm judge's model and prompt version, fixed when the run is created
    # (every chunk asks that model); empty for other judges.
    judge_model = models.CharField(max_length=200, blank=True)
    judge_prompt_version = models.CharField(max_length=32, blank=True)
    n_users = models.PositiveIntegerField()
    n_rounds = models.PositiveIntegerField()
    n_candidates = models.PositiveSmallIntegerField(default=5)
    seed = models.PositiveBigIntegerField()
    chunk_users = models.PositiveIntegerField(help_text="Users per chunk.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="simulation_runs",
    )
    # Kept apart from the account, which may be renamed or deleted later.
    created_by_name = models.CharField(max_length=150)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    chunks_total = models.PositiveIntegerField()
    chunks_done = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_seconds = models.FloatField(
        default=0.0, help_text="Time in the engine, summed over chunks."
    )
    storage_seconds = models.FloatField(
        default=0.0, help_text="Time writing events, summed over chunks."
    )
    summary_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    summary = models.JSONField(null=True, blank=True)
    # POST /api/simulations's Idempotency-Key: a retry answers this run.
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    idempotency_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="Digest of the request that made it."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="one_run_per_idempotency_key",
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_known"
            ),
            models.CheckConstraint(
                condition=Q(chunks_done__lte=F("chunks_total")),
                name="run_chunks_done_within_total",
            ),
            models.CheckConstraint(
                condition=Q(n_users__gt=0, n_rounds__gt=0, n_candidates__gt=0),
                name="run_sizes_positive",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{' vs '.join(self.policies)}: {self.n_users} users x "
            f"{self.n_rounds} rounds, seed {self.seed} ({self.status})"
        )

    @property
    def decisions(self) -> int:
        return self.n_users * self.n_rounds * len(self.policies)


class RunChunk(models.Model):
    """Users [user_start, user_stop) of a run: written all at once, or not at all."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    user_start = models.PositiveIntegerField()
    user_stop = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=ChunkStatus.choices, default=ChunkStatus.PENDING
    )
    events = models.PositiveIntegerField(default=0)
    engine_seconds = models.FloatField(null=True, blank=True)
    storage_seconds = models.FloatField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its task was last sent to the Celery workers; empty if "
        "it never was (runsim in process).",
    )
    judge_stats = models.JSONField(
        null=True,
        blank=True,
        help_text="The llm judge's counts in this chunk: reactions, fallbacks "
        "(invalid, unavailable), prompts, cached, asked.",
    )

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "index"], name="one_chunk_per_index"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ChunkStatus.values), name="chunk_status_known"
            ),
            models.CheckConstraint(
                condition=Q(user_start__lt=F("user_stop")), name="chunk_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"chunk {self.index} (users {self.user_start}-{self.user_stop - 1}) "
            f"of run {self.run_id}: {self.status}"
        )


class RunEvent(models.Model):
    """One simulated decision and the reaction to it: append-only, written in bulk
    by ``services.events_write``. (run, policy, user_index, round) is unique: a
    chunk written twice would fail rather than count twice."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique key starts with run.
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    policy = models.CharField(max_length=64)
    user_index = models.PositiveIntegerField()
    round = models.PositiveIntegerField()
    persona = models.CharField(max_length=32)
    hour = models.PositiveSmallIntegerField()
    # The picked candidate: its position and the features that say what kind of
    # task the policy chose.
    pick = models.PositiveSmallIntegerField()
    priority = models.PositiveSmallIntegerField()
    is_overdue = models.BooleanField()
    task_age_days = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    dwell_ms = models.PositiveIntegerField(null=True, blank=True)
    reward = models.FloatField()
    explored = models.BooleanField()
    # With a judge that knows expected rewards (the rule judge does), else empty: the
    # pick's expected reward and the best candidate's (the oracle's), in whole
    # millionths of a reward: exact to sum, and an integer is half the cost of a
    # float to write.
    expected_units = models.IntegerField(null=True, blank=True)
    oracle_units = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "policy", "user_index", "round"],
                name="one_event_per_decision",
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.policy} user {self.user_index} round {self.round}: "
            f"{self.kind} {self.reward:+g}"
        )


class JudgeAnswer(models.Model):
    """The llm judge's cache: a model's answer to one prompt, kept by a digest of
    the model, the prompt's version and the messages, so a rerun reads it
    instead of asking. Written once (the first writer wins), never changed."""

    key = models.CharField(max_length=64, unique=True)
    model = models.CharField(max_length=200)
    prompt_version = models.CharField(max_length=32)
    messages = models.JSONField()
    answer = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.model} {self.prompt_version} {self.key[:12]}"
