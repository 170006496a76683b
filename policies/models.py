from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q

from oo_ml.fields import LogJSONField
from oo_ml.models import CreatedModel, TimeStampedModel, uuid7
from policies import bandits, stats


class Algorithm(models.TextChoices):
    LINUCB = bandits.LINUCB, "LinUCB"
    EGREEDY = bandits.EGREEDY, "ε-greedy"
    HYBRID = bandits.HYBRID, "Hybrid ε-greedy"


class Role(models.TextChoices):
    ACTIVE = "active", "Active"
    SHADOW = "shadow", "Shadow"
    RETIRED = "retired", "Retired"


class Policy(TimeStampedModel):
    """A named bandit: algorithm + feature set + parameters, with a role."""

    name = models.SlugField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices)
    dimension = models.PositiveSmallIntegerField(
        choices=[(d, f"D={d}") for d in bandits.DIMENSIONS]
    )
    params = models.JSONField(default=dict, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.SHADOW)
    enabled = models.BooleanField(
        default=False, help_text="A shadow scores every request while this is on."
    )
    learns_live = models.BooleanField(
        default=True,
        help_text="Trained by every reward its users' decisions receive, "
        "whichever policy made them.",
    )
    description = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["role"], condition=Q(role="active"), name="one_active_policy"
            ),
            models.CheckConstraint(
                condition=Q(dimension__in=bandits.DIMENSIONS),
                name="policy_dimension_known",
            ),
            models.CheckConstraint(
                condition=Q(algorithm__in=bandits.ALGORITHMS),
                name="policy_algorithm_known",
            ),
            models.CheckConstraint(
                condition=Q(role__in=Role.values), name="policy_role_known"
            ),
            # The shared model reads the profile features: D=12 only.
            models.CheckConstraint(
                condition=~Q(algorithm=bandits.HYBRID)
                | Q(dimension=bandits.PROFILE_DIMENSION),
                name="hybrid_policy_is_d12",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"

    @property
    def feature_labels(self) -> tuple[str, ...]:
        return bandits.feature_labels(self.dimension)


def array_to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f8").tobytes()


def array_from_bytes(raw: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """The array stored as ``raw``, read-only: a view of those bytes, not a copy
    (every use of a stored state makes new arrays from it)."""
    return np.frombuffer(raw, dtype="<f8").reshape(shape)


def state_from_bytes(
    a_bytes: bytes | memoryview | None,
    b_bytes: bytes | memoryview | None,
    dimension: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A and b from their stored bytes; a user with no row yet starts fresh."""
    if a_bytes is None:
        return bandits.initial_state(dimension)
    return (
        array_from_bytes(a_bytes, (dimension, dimension)),
        array_from_bytes(b_bytes, (dimension,)),
    )


class BanditState(TimeStampedModel):
    """One user's learned state under one policy: A (D x D), b (D) and counters.

    A and b are stored as little-endian float64 bytes: exact, compact and cheap to
    load on every decision. Pulls and explorations are counted from the decision
    log rather than kept twice.
    """

    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="states")
    user_id = models.CharField(max_length=128)
    a_bytes = models.BinaryField()
    b_bytes = models.BinaryField()
    reward_count = models.PositiveIntegerField(default=0)
    cumulative_reward = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "policy"], name="one_state_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} under {self.policy.name}"

    @property
    def a(self) -> np.ndarray:
        d = self.policy.dimension
        return array_from_bytes(self.a_bytes, (d, d))

    @property
    def b(self) -> np.ndarray:
        return array_from_bytes(self.b_bytes, (self.policy.dimension,))


class Decision(CreatedModel):
    """One policy's pick on one /score request: append-only, with what it saw."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    request_id = models.UUIDField(db_index=True)
    # No index of its own: the log is read per user, and every index is paid for
    # on every insert.
    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="decisions", db_index=False
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    user_id = models.CharField(max_length=128)
    candidates = LogJSONField()
    context = LogJSONField()
    profile = LogJSONField()
    features = LogJSONField(help_text="The encoded vector of every candidate.")
    estimates = LogJSONField(help_text="theta . x for every candidate.")
    bonuses = LogJSONField(
        null=True, help_text="LinUCB confidence bonus per candidate."
    )
    pick_index = models.PositiveSmallIntegerField()
    tip_id = models.CharField(max_length=200)
    score = models.FloatField()
    propensity = models.FloatField()
    exploring = models.BooleanField()
    # A hybrid policy: the shared model it used, and its part of each estimate.
    model_version = models.PositiveIntegerField(null=True, blank=True)
    shared_estimates = LogJSONField(
        null=True, blank=True, help_text="The shared model's part of each estimate."
    )

    class Meta:
        indexes = [
            models.Index(fields=["user_id", "created_at"], name="decision_user_time")
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} picked {self.tip_id} for {self.user_id}"

    def candidate_index(self, tip_id: str) -> int | None:
        for index, candidate in enumerate(self.candidates):
            if candidate["id"] == tip_id:
                return index
        return None


class Reward(CreatedModel):
    """One reward applied to one policy's state for one user: append-only."""

    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="rewards", db_index=False
    )
    user_id = models.CharField(max_length=128)
    tip_id = models.CharField(max_length=200)
    reward = models.FloatField()
    # No database constraint: the decision log is partitioned and retention
    # drops old days whole (docs/logs.md). The writer checks the decision
    # exists, and holds it, under the user's state locks.
    decision = models.ForeignKey(
        Decision,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rewards",
        db_constraint=False,
    )
    # NULL, not "", for "no event id": the unique constraint must skip those rows.
    event_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # Empty when the reward has no event id (since 2026-12-05; older rows keep
    # theirs): only a reward with one can be replayed.
    fingerprint = models.CharField(
        max_length=64, help_text="Digest of the request: a replay must match it."
    )
    features = LogJSONField(help_text="The vector the update used.")
    # The same numbers, for a hybrid policy's rows only: what its shared
    # model's refit reads, millions at a time, where decoding the JSON's
    # decimals (in PostgreSQL or in Python) cost most of a refit.
    vector = models.BinaryField(
        null=True,
        blank=True,
        help_text="A hybrid policy's row: the features as little-endian float64.",
    )
    learned = models.BooleanField(
        default=False,
        help_text="This policy learned from a reward applied to another policy: "
        "the same reward, on its own encoding of the rewarded candidate.",
    )

    class Meta:
        indexes = [
            models.Index(fields=["user_id", "created_at"], name="reward_user_time")
        ]
        constraints = [
            # Partial: most rewards carry no event id and need no index entry.
            models.UniqueConstraint(
                fields=["event_id"],
                condition=Q(event_id__isnull=False),
                name="one_reward_per_event",
            )
        ]

    def __str__(self) -> str:
        how = "learned by" if self.learned else "to"
        where = f"{self.user_id}/{self.tip_id}"
        return f"{self.reward:+g} {how} {self.policy.name} for {where}"


class SharedModel(CreatedModel):
    """One version of a hybrid policy's shared model, refit in batch from the
    reward log (``services.shared_model_refit``): never updated by a reward.

    The sums it was solved from are kept, so the next refit adds only the
    rewards logged since (``through_reward_id``) and gets the same weights as a
    refit of the whole log.
    """

    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="shared_models"
    )
    version = models.PositiveIntegerField()
    weights_bytes = models.BinaryField()
    gram_bytes = models.BinaryField()
    moment_bytes = models.BinaryField()
    rewards = models.PositiveBigIntegerField(help_text="Rewards it was fit on.")
    through_reward_id = models.BigIntegerField(
        help_text="The last reward log row it includes."
    )
    seconds = models.FloatField(help_text="How long the refit took.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "version"], name="one_shared_model_version"
            )
        ]
        ordering = ["policy", "-version"]

    def __str__(self) -> str:
        return f"shared model v{self.version} of {self.policy.name}"

    @property
    def weights(self) -> np.ndarray:
        return array_from_bytes(self.weights_bytes, (bandits.SHARED_DIMENSION,))


class ChangeAction(models.TextChoices):
    TOGGLE = "toggle", "Shadow toggled"
    RESET = "reset", "User reset"
    PROMOTE = "promote", "Promoted"
    ROLLBACK = "rollback", "Rolled back"
    LEARNING = "learning", "Live learning switched"


class PolicyChange(CreatedModel):
    """One change an operator made to a policy: append-only, the admin's history.

    A reset clears a user's state under every policy; it is recorded once per
    policy it touched, so each policy's history is complete on its own.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    action = models.CharField(max_length=16, choices=ChangeAction.choices)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="changes")
    user_id = models.CharField(
        max_length=128, blank=True, help_text="The end user a reset was for."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policy_changes",
    )
    # Kept apart from the account, which may be renamed or deleted later.
    actor_name = models.CharField(max_length=150)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["policy", "-created_at"], name="change_policy_time")
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.policy.name} by {self.actor_name}"

    @property
    def summary(self) -> str:
        """What changed, in words, for the history lists."""
        if self.action == ChangeAction.TOGGLE:
            return "shadow turned " + ("on" if self.after.get("enabled") else "off")
        if self.action == ChangeAction.RESET:
            learned = self.before.get("reward_count", 0)
            return (
                f"user {self.user_id} reset: state of {learned} rewards and "
                f"{self.before.get('decisions', 0)} decisions cleared"
            )
        if self.action == ChangeAction.LEARNING:
            state = "on" if self.after.get("learns_live") else "off"
            return f"learning from live rewards turned {state}"
        if self.action == ChangeAction.PROMOTE:
            return f"promoted to active; {self.before.get('active')} became a shadow"
        return f"active again (rollback); {self.before.get('active')} became a shadow"


class ActivityHour(models.Model):
    """One policy's activity over one hour: the control room's roll-up.

    Kept current in the statement (or transaction) that writes the rows it
    counts, so it never misses or double-counts one. ``shard`` spreads
    concurrent writers over a few rows per hour (PostgreSQL: the connection's
    process id modulo ACTIVITY_SHARDS), so they do not queue on one row lock;
    a read sums the shards. Never dropped by retention: "all time" stays all
    time.
    """

    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="activity", db_index=False
    )
    hour = models.DateTimeField()
    shard = models.PositiveSmallIntegerField(default=0)
    decisions = models.BigIntegerField(default=0)
    # Shadows: decisions on requests the active policy answered too, and of
    # those, how many picked the active policy's tip.
    compared = models.BigIntegerField(default=0)
    agreed = models.BigIntegerField(default=0)
    rewards = models.BigIntegerField(default=0)  # learned=False reward rows
    reward_sum = models.FloatField(default=0.0)
    learned = models.BigIntegerField(default=0)  # learned=True reward rows

    class Meta:
        verbose_name_plural = "activity hours"
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "hour", "shard"], name="one_activity_row"
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} at {self.hour:%Y-%m-%d %H}:00 ({self.shard})"


class ShadowValue(models.Model):
    """A shadow's off-policy value, as the control room shows it: computed by
    beat (``services.shadow_values_refresh``) from the active policy's
    rewarded decisions since ``since``, and stored, so the page reads it
    instead of bootstrapping a day of samples per view. One row per shadow,
    replaced at each refresh; ``samples`` 0 (and no estimates) when there was
    nothing to estimate from."""

    policy = models.OneToOneField(
        Policy, on_delete=models.CASCADE, related_name="shadow_value"
    )
    computed_at = models.DateTimeField()
    since = models.DateTimeField(help_text="The window's start: a day before.")
    seconds = models.FloatField(help_text="How long the refresh took.")
    samples = models.PositiveIntegerField()
    effective_samples = models.FloatField(default=0.0)
    matched = models.PositiveIntegerField(default=0)
    logged_mean = models.FloatField(null=True)
    snips = models.FloatField(null=True)
    snips_low = models.FloatField(null=True)
    snips_high = models.FloatField(null=True)
    dr = models.FloatField(null=True)
    dr_low = models.FloatField(null=True)
    dr_high = models.FloatField(null=True)
    enough = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"value of {self.policy.name} at {self.computed_at:%Y-%m-%d %H:%M}"

    @property
    def evidence(self) -> stats.OffPolicyEvidence | None:
        """As ``stats.off_policy_evidence`` computed it; None without samples."""
        if not self.samples:
            return None
        return stats.OffPolicyEvidence(
            samples=self.samples,
            effective_samples=self.effective_samples,
            snips=stats.Estimate(self.snips, self.snips_low, self.snips_high),
            dr=stats.Estimate(self.dr, self.dr_low, self.dr_high),
            logged_mean=self.logged_mean,
            matched=self.matched,
            enough=self.enough,
        )
