"""Input and output shapes of the decision API.

JSON numbers are taken strictly: a string, a boolean, NaN or an infinity is bad
input wherever a number is expected, so ``"nan"`` or ``1e999`` never reach the maths.

A /score body holds some fifty values, so the fields take a short path through
DRF's validation for the common case and leave every other case, and every error,
to DRF's own code (``PlainField``, ``TextField``).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import empty

from oo_ml.idempotency import RESERVED_EVENT_ID_PREFIXES
from policies import bandits
from profiles import features as profile_features

# DRF's ProhibitSurrogateCharactersValidator's range, searched for at C speed.
SURROGATE = re.compile(r"[\ud800-\udfff]")


class PlainField(serializers.Field):
    """A field whose present, non-null value is only converted.

    DRF's ``run_validation`` first sorts out absent, null and read-only values,
    then runs the field's validators; for a value that is present and not null,
    on a field without validators, neither step does anything.
    """

    def run_validation(self, data=empty):
        if data is empty or data is None or self.read_only or self.validators:
            return super().run_validation(data)
        return self.to_internal_value(data)


class TextField(serializers.CharField):
    """DRF's CharField, its validators' checks done at C speed when they pass.

    DRF runs a length, a NUL and a surrogate validator on every string, the last
    a Python loop over its characters. A non-blank string that passes the same
    checks made with ``str``'s methods is returned as DRF would return it; any
    other value, and any string that fails one, takes DRF's own path, so its
    errors are DRF's, messages, codes and order.
    """

    def __init__(self, **kwargs):
        # The checks below stand for DRF's validators only: one given here
        # would be skipped.
        if kwargs.get("validators"):
            raise TypeError("TextField takes no validators; use a CharField.")
        super().__init__(**kwargs)

    def run_validation(self, data=empty):
        if (
            not isinstance(data, str)
            # Blank: CharField's run_validation answers it before anything else.
            or not (data.strip() if self.trim_whitespace else data)
            or self.read_only
        ):
            return super().run_validation(data)
        value = self.to_internal_value(data)
        if not self.passes_validators(value):
            self.run_validators(value)
        return value

    def passes_validators(self, value: str) -> bool:
        return (
            (self.max_length is None or len(value) <= self.max_length)
            and (self.min_length is None or len(value) >= self.min_length)
            and "\x00" not in value
            and (value.isascii() or not SURROGATE.search(value))
        )


@extend_schema_field(OpenApiTypes.NUMBER)
class FiniteFloatField(PlainField):
    default_error_messages = {
        "invalid": "A finite JSON number is required.",
        "min_value": "Must be at least {min_value}.",
        "max_value": "Must be at most {max_value}.",
    }

    def __init__(self, *, min_value=None, max_value=None, **kwargs):
        self.min_value = min_value
        self.max_value = max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:  # an integer literal hundreds of digits long
            self.fail("invalid")
        if not math.isfinite(value):
            self.fail("invalid")
        if self.min_value is not None and value < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        if self.max_value is not None and value > self.max_value:
            self.fail("max_value", max_value=self.max_value)
        return value

    def to_representation(self, value):
        return value


@extend_schema_field(OpenApiTypes.INT)
class StrictIntegerField(FiniteFloatField):
    default_error_messages = {"invalid": "A whole JSON number is required."}

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.is_integer():
            self.fail("invalid")
        return int(value)


@extend_schema_field(OpenApiTypes.NUMBER)
class RewardValueField(FiniteFloatField):
    """A reward within [OO_ML_REWARD_MIN, OO_ML_REWARD_MAX] (default [-1, 1]),
    the settings read when a value is checked."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value < settings.REWARD_MIN:
            self.fail("min_value", min_value=settings.REWARD_MIN)
        if value > settings.REWARD_MAX:
            self.fail("max_value", max_value=settings.REWARD_MAX)
        return value


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanField(PlainField):
    default_error_messages = {"invalid": "true or false is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        if type(data) is int and data in (0, 1):
            return bool(data)
        self.fail("invalid")

    def to_representation(self, value):
        return value


def hour_field(**kwargs):
    return StrictIntegerField(min_value=0, max_value=23, **kwargs)


def day_field(**kwargs):
    return StrictIntegerField(min_value=0, max_value=6, **kwargs)


class IdField(TextField):
    """A task or user id: a non-empty string (JSON integers are taken as text)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 200)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid")
        return super().to_internal_value(data)


class CallerEventIdField(IdField):
    """A caller's event id: not in a namespace the platform keeps for its own."""

    default_error_messages = {
        "reserved": "Event ids starting with {prefix!r} are reserved for the "
        "platform's own use.",
    }

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        for prefix in RESERVED_EVENT_ID_PREFIXES:
            if value.startswith(prefix):
                self.fail("reserved", prefix=prefix)
        return value


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as text; DRF alone would also take a JSON integer."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class RecordField(PlainField):
    """A flat JSON object checked against a table of fields, in one pass.

    It does what a nested Serializer does for a flat record, without deep-copying
    every field on every request: that copy was the largest single cost of
    /score (docs/performance.md). Missing optional keys take ``defaults``.
    """

    items: ClassVar[dict[str, serializers.Field]] = {}
    required_items: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}
    default_error_messages = {"invalid": "A JSON object is required."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        values = dict(self.defaults)
        errors = {}
        for name, field in self.items.items():
            if name in data:
                try:
                    values[name] = field.run_validation(data[name])
                except serializers.ValidationError as error:
                    errors[name] = error.detail
            elif name in self.required_items:
                errors[name] = [ErrorDetail("This field is required.", code="required")]
        if errors:
            raise serializers.ValidationError(errors)
        return values

    def to_representation(self, value):
        return value


class CandidateFeaturesField(RecordField):
    items = {
        "hour_of_day": hour_field(),
        "is_overdue": StrictBooleanField(),
        "task_age_days": FiniteFloatField(min_value=0),
        "priority": StrictIntegerField(min_value=1, max_value=4),
    }
    defaults = bandits.CANDIDATE_DEFAULTS


class CandidateField(RecordField):
    items = {
        "id": IdField(),
        "content": TextField(allow_blank=True),
        "source": TextField(allow_blank=True),
        "source_id": TextField(allow_blank=True, allow_null=True),
        "features": CandidateFeaturesField(allow_null=True),
    }
    required_items = frozenset({"id"})
    defaults = {"content": "", "source": "", "source_id": None, "features": None}

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if values["features"] is None:
            values["features"] = dict(bandits.CANDIDATE_DEFAULTS)
        return values


class ContextField(RecordField):
    items = {"hour_of_day": hour_field(), "day_of_week": day_field()}
    defaults = bandits.CONTEXT_DEFAULTS


def profile_feature_field(feature: profile_features.Feature, **kwargs):
    """The field of one registered profile feature: its type, range and help."""
    kind = StrictIntegerField if feature.type is int else FiniteFloatField
    return kind(
        min_value=feature.minimum,
        max_value=feature.maximum,
        help_text=feature.description,
        **kwargs,
    )


class ProfileFeaturesField(RecordField):
    """The five profile features; each may be null, unknown names are ignored."""

    items = {
        feature.name: profile_feature_field(feature, allow_null=True)
        for feature in profile_features.FEATURES
    }


def record_serializer(name: str, record: type[RecordField]) -> serializers.Serializer:
    """A serializer of ``record``'s items, to document a body in OpenAPI.

    Built on a copy: DRF's serializer metaclass pops the fields it is given.
    """
    return inline_serializer(name, dict(record.items))


def _invalid(field: str, message: str, *, code: str) -> serializers.ValidationError:
    return serializers.ValidationError({field: [ErrorDetail(message, code=code)]})


def _required(items: dict[str, serializers.Field]) -> frozenset[str]:
    return frozenset(name for name, field in items.items() if field.required)


class ScoreInput(RecordField):
    """The body of /score. Its items also document it (``apis.ScoreApi``)."""

    items = {
        "user_id": IdField(max_length=128),
        "candidates": serializers.ListField(child=CandidateField(), allow_empty=False),
        "context": ContextField(required=False),
        "profile_features": ProfileFeaturesField(required=False, allow_null=True),
    }
    required_items = _required(items)
    defaults = {"context": bandits.CONTEXT_DEFAULTS, "profile_features": None}

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        candidates = values["candidates"]
        limit = settings.MAX_CANDIDATES
        if len(candidates) > limit:
            raise _invalid(
                "candidates",
                f"At most {limit} are allowed, not {len(candidates)}.",
                code="too_many",
            )
        seen = set()
        for candidate in candidates:
            if candidate["id"] in seen:
                raise _invalid(
                    "candidates",
                    f"Candidate id {candidate['id']!r} appears twice.",
                    code="duplicate",
                )
            seen.add(candidate["id"])
        values["context"] = dict(values["context"])
        values["profile_features"] = values["profile_features"] or {}
        return values


class RewardInput(RecordField):
    """The body of /reward. Its items also document it (``apis.RewardApi``)."""

    items = {
        "user_id": IdField(max_length=128),
        "tip_id": IdField(),
        "reward": RewardValueField(),
        "features": CandidateFeaturesField(required=False, allow_null=True),
        "day_of_week": day_field(required=False),
        "profile_features": ProfileFeaturesField(required=False, allow_null=True),
        "decision_id": StrictUUIDField(required=False, allow_null=True),
        "event_id": CallerEventIdField(required=False, allow_null=True),
    }
    required_items = _required(items)
    defaults = {
        "features": None,
        "day_of_week": 0,
        "profile_features": None,
        "decision_id": None,
        "event_id": None,
    }

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        values["features"] = values["features"] or dict(bandits.CANDIDATE_DEFAULTS)
        values["profile_features"] = values["profile_features"] or {}
        return values


class ToggleInput(RecordField):
    """The body of a toggle: empty to flip the switch, or the state wanted."""

    items = {"enabled": StrictBooleanField(required=False, allow_null=True)}
    defaults = {"enabled": None}


class LearningInput(RecordField):
    """The body of a learning switch: empty to flip it, or the state wanted."""

    items = {"learns_live": StrictBooleanField(required=False, allow_null=True)}
    defaults = {"learns_live": None}


class PolicyOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    algorithm = serializers.CharField()
    dimension = serializers.IntegerField()
    params = serializers.DictField()
    role = serializers.CharField()
    enabled = serializers.BooleanField(help_text="A shadow's on/off switch.")
    learns_live = serializers.BooleanField(
        help_text="Trained by every reward its users' decisions receive, "
        "whichever policy made them."
    )
    description = serializers.CharField()
    feature_labels = serializers.ListField(child=serializers.CharField())
    updated_at = serializers.DateTimeField()


class DecisionOutputSerializer(serializers.Serializer):
    tip_id = serializers.CharField()
    score = serializers.FloatField()
    policy = serializers.CharField(source="policy.name")
    decision_id = serializers.UUIDField(source="id")
    propensity = serializers.FloatField()
    exploring = serializers.BooleanField()


class RewardOutputSerializer(serializers.Serializer):
    applied = serializers.BooleanField()
    replayed = serializers.BooleanField()
    policy = serializers.CharField()
    user_id = serializers.CharField()
    tip_id = serializers.CharField()
    reward = serializers.FloatField()
    decision_id = serializers.UUIDField(allow_null=True)
    event_id = serializers.CharField(allow_null=True)
    reward_count = serializers.IntegerField()
    cumulative_reward = serializers.FloatField()
    learned_by = serializers.ListField(
        child=serializers.CharField(),
        help_text="The other policies this reward trained: those that learn "
        "from live rewards.",
    )


class StatsOutputSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    policy = serializers.CharField()
    pulls = serializers.IntegerField()
    reward_count = serializers.IntegerField(
        help_text="Rewards this policy learned from, for this user."
    )
    learned_count = serializers.IntegerField(
        help_text="Of those, the rewards of other policies' decisions (it learns "
        "from live rewards)."
    )
    cumulative_reward = serializers.FloatField()
    estimated_mean_reward = serializers.FloatField()
    exploration_rate = serializers.FloatField()
    theta = serializers.ListField(child=serializers.FloatField())
    feature_labels = serializers.ListField(child=serializers.CharField())
    last_updated = serializers.DateTimeField(allow_null=True)


class RecordFieldSchema(OpenApiSerializerFieldExtension):
    """Document a RecordField as the object its table of fields describes."""

    target_class = RecordField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        record = self.target
        schema = {
            "type": "object",
            "properties": {
                name: auto_schema._map_serializer_field(field, direction)
                for name, field in record.items.items()
            },
        }
        if record.required_items:
            schema["required"] = sorted(record.required_items)
        return schema
