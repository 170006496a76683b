"""Input and output shapes of /events and /profiles, on the decision API's fields."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from policies.serializers import (
    IdField,
    ProfileFeaturesField,
    RecordField,
    StrictIntegerField,
    StrictUUIDField,
    hour_field,
    record_serializer,
)
from profiles.models import MAX_DWELL_MS, Kind

# Clocks drift: an event a little ahead of ours is real, one far ahead is a bug.
MAX_FUTURE = dt.timedelta(minutes=5)


@extend_schema_field(OpenApiTypes.DATETIME)
class StrictDateTimeField(serializers.Field):
    """An ISO-8601 date and time as text; without an offset it is UTC.

    The offset the caller wrote is kept: the event's default hour_of_day is
    the hour as they wrote it.
    """

    default_error_messages = {
        "invalid": "An ISO-8601 date and time is required.",
        "future": "Must not be more than {minutes} minutes in the future.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            value = parse_datetime(data)
            if value is not None and timezone.is_naive(value):
                value = value.replace(tzinfo=dt.UTC)
            # Out of range once in UTC (year 1 at +01:00, say) is invalid too.
            in_utc = value.astimezone(dt.UTC) if value is not None else None
        except (ValueError, OverflowError):
            self.fail("invalid")
        if in_utc is None:
            self.fail("invalid")
        if in_utc > timezone.now() + MAX_FUTURE:
            self.fail("future", minutes=int(MAX_FUTURE.total_seconds() // 60))
        return value

    def to_representation(self, value):
        return value.isoformat()


class EventInput(RecordField):
    """The body of /events. Its items also document it (``apis.EventApi``)."""

    items = {
        "user_id": IdField(max_length=128),
        "tip_id": IdField(),
        "kind": serializers.ChoiceField(choices=Kind.choices),
        "dwell_ms": StrictIntegerField(
            min_value=0,
            max_value=MAX_DWELL_MS,
            allow_null=True,
            required=False,
            help_text="Milliseconds from the tip being shown to this reaction.",
        ),
        "decision_id": StrictUUIDField(required=False, allow_null=True),
        "event_id": IdField(
            required=False,
            allow_null=True,
            help_text="Makes the post idempotent: a replay changes nothing.",
        ),
        "occurred_at": StrictDateTimeField(
            required=False,
            allow_null=True,
            help_text="Default: now. At most a few minutes in the future.",
        ),
        "hour_of_day": hour_field(
            required=False,
            allow_null=True,
            help_text="The user's local hour; default: the hour of occurred_at.",
        ),
    }
    required_items = frozenset({"user_id", "tip_id", "kind"})
    defaults = {
        "dwell_ms": None,
        "decision_id": None,
        "event_id": None,
        "occurred_at": None,
        "hour_of_day": None,
    }


class EventOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.CharField(allow_null=True)
    kind = serializers.ChoiceField(choices=Kind.choices)
    decision_id = serializers.UUIDField(allow_null=True)
    stored = serializers.BooleanField()
    replayed = serializers.BooleanField()
    reward = serializers.FloatField(allow_null=True)
    trained = serializers.CharField(
        allow_null=True,
        help_text="The policy whose decision its reward trained, if it trained one.",
    )
    reason = serializers.CharField()
    learned_by = serializers.ListField(
        child=serializers.CharField(),
        help_text="The other policies that learned from its reward (those that "
        "learn from live rewards).",
    )


PROFILE_FEATURES = record_serializer("ProfileFeatures", ProfileFeaturesField)


class ProfileOutputSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    features = PROFILE_FEATURES
    computed_at = serializers.DateTimeField()
