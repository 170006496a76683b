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
    """One user's event counts over the last 30 days, and the five features
    computed from them (``features.compute``, the same maths everywhere).

    Every accepted event adds itself to the counts in its own transaction
    (``profiles.services.event_record``). ``computed_at`` is when the counts
    were last recounted from the events: events leaving the window are taken out
    only by a recount, so a profile older than the TTL is recounted before use.
    """

    user_id = models.CharField(max_length=128, unique=True)
    tip_volume_30d = models.PositiveIntegerField(
        default=0, help_text="Served events (the tip_volume_30d feature)."
    )
    done_30d = models.PositiveIntegerField(default=0)
    dismissed_30d = models.PositiveIntegerField(default=0)
    done_dwell_sum_30d = models.PositiveBigIntegerField(
        default=0, help_text="Sum of the done events' dwell (ms), of those with one."
    )
    done_dwell_count_30d = models.PositiveIntegerField(
        default=0, help_text="How many done events carry a dwell."
    )
    computed_at = models.DateTimeField(
        help_text="When the counts were last recounted from the events."
    )

    def __str__(self) -> str:
        return f"profile of {self.user_id}"

    @property
    def counts(self) -> features.EventCounts:
        return counts_from_values(getattr(self, name) for name in COUNT_FIELDS)

    @property
    def features(self) -> dict[str, float | int | None]:
        return features.compute(self.counts)

    @property
    def completion_rate_30d(self) -> float | None:
        return self.features["completion_rate_30d"]

    @property
    def dismiss_rate_30d(self) -> float | None:
        return self.features["dismiss_rate_30d"]

    @property
    def mean_dwell_ms_30d(self) -> float | None:
        return self.features["mean_dwell_ms_30d"]

    @property
    def preferred_hour(self) -> int | None:
        return self.features["preferred_hour"]

    def is_stale(self, *, ttl_seconds: float, now=None) -> bool:
        now = now or timezone.now()
        return (now - self.computed_at).total_seconds() > ttl_seconds


# The done events per hour of day, one column each: an event adds 1 to one of
# them with plain arithmetic in its upsert.
HOUR_FIELDS = tuple(f"done_h{hour}" for hour in range(features.HOURS))
for _name in HOUR_FIELDS:
    Profile.add_to_class(_name, models.PositiveIntegerField(default=0))

# The stored counts, in the order of ``count_values``.
COUNT_FIELDS = (
    "tip_volume_30d",
    "done_30d",
    "dismissed_30d",
    "done_dwell_sum_30d",
    "done_dwell_count_30d",
    *HOUR_FIELDS,
)


def count_values(counts: features.EventCounts) -> tuple[int, ...]:
    """``counts`` as the values of ``COUNT_FIELDS``."""
    return (
        counts.served,
        counts.done,
        counts.dismissed,
        counts.done_dwell_sum,
        counts.done_dwell_count,
        *counts.done_by_hour,
    )


def counts_from_values(values) -> features.EventCounts:
    """The inverse of ``count_values``: counts from the columns' values."""
    served, done, dismissed, dwell_sum, dwell_count, *by_hour = values
    return features.EventCounts(
        served=served,
        done=done,
        dismissed=dismissed,
        done_dwell_sum=dwell_sum,
        done_dwell_count=dwell_count,
        done_by_hour=tuple(by_hour),
    )
