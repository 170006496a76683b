from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from oo_ml.models import CreatedModel, TimeStampedModel, uuid7
from profiles import features, inference

# Thirty days in milliseconds: a longer dwell is a client's clock bug, not a user.
MAX_DWELL_MS = features.WINDOW_DAYS * 24 * 60 * 60 * 1000


class Kind(models.TextChoices):
    SERVED = inference.SERVED, "Served"
    VIEWED = inference.VIEWED, "Viewed"
    DONE = inference.DONE, "Done"
    DISMISSED = inference.DISMISSED, "Dismissed"
    SNOOZED = inference.SNOOZED, "Snoozed"


class Event(CreatedModel):
    """One user's reaction to one tip: append-only, written by ``event_record``."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user_id = models.CharField(max_length=128)
    tip_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    dwell_ms = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Time from the tip being shown to this."
    )
    # Indexed: resetting a user deletes their decisions, which nulls this. No
    # database constraint: the decision log is partitioned (docs/logs.md).
    decision = models.ForeignKey(
        "policies.Decision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        db_constraint=False,
    )
    # NULL, not "", for "no event id": the unique constraint must skip those rows.
    event_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    fingerprint = models.CharField(
        max_length=64, help_text="Digest of the request: a replay must match it."
    )
    occurred_at = models.DateTimeField(default=timezone.now)
    # Always set: the caller's, else the hour of occurred_at as the caller wrote it.
    hour_of_day = models.PositiveSmallIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["user_id", "occurred_at"], name="event_user_time")
        ]
        constraints = [
            # Partial: most events carry no event id and need no index entry.
            models.UniqueConstraint(
                fields=["event_id"],
                condition=Q(event_id__isnull=False),
                name="one_event_per_event_id",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=Kind.values), name="event_kind_known"
            ),
            models.CheckConstraint(
                condition=Q(dwell_ms__isnull=True)
                | Q(dwell_ms__gte=0, dwell_ms__lte=MAX_DWELL_MS),
                name="event_dwell_in_range",
            ),
            models.CheckConstraint(
                condition=Q(hour_of_day__gte=0, hour_of_day__lte=23),
                name="event_hour_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.tip_id}"


class Profile(TimeStampedModel):
    """One user's five profile features, as computed at ``computed_at``.

    Two of the counts they came from are kept beside them, to explain the rates
    (tip_volume_30d is the third).
    """

    user_id = models.CharField(max_length=128, unique=True)
    completion_rate_30d = models.FloatField(null=True, blank=True)
    dismiss_rate_30d = models.FloatField(null=True, blank=True)
    mean_dwell_ms_30d = models.FloatField(null=True, blank=True)
    preferred_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    tip_volume_30d = models.PositiveIntegerField(default=0)
    done_30d = models.PositiveIntegerField(default=0)
    dismissed_30d = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(preferred_hour__isnull=True)
                | Q(preferred_hour__gte=0, preferred_hour__lte=23),
                name="profile_hour_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"profile of {self.user_id}"

    @property
    def features(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in features.NAMES}

    def is_stale(self, *, ttl_seconds: float, now=None) -> bool:
        now = now or timezone.now()
        return (now - self.computed_at).total_seconds() > ttl_seconds
