"""The shapes of /generate, on the decision API's fields (a task is a /score
candidate)."""

from __future__ import annotations

from rest_framework import serializers

from policies.serializers import CandidateField, IdField, RecordField, StrictUUIDField


class GenerateInput(RecordField):
    items = {
        "user_id": IdField(max_length=128),
        "task": CandidateField(),
        "prompt_version": serializers.CharField(
            max_length=32,
            required=False,
            allow_null=True,
            help_text="A registered prompt version; else OO_ML_PROMPT_VERSION, "
            'else "v1".',
        ),
        "decision_id": StrictUUIDField(
            required=False,
            allow_null=True,
            help_text="The /score decision that picked this task, for this user: "
            "its rewards then count towards the prompt version.",
        ),
    }
    required_items = frozenset({"user_id", "task"})
    defaults = {"prompt_version": None, "decision_id": None}


class GenerateOutputSerializer(serializers.Serializer):
    text = serializers.CharField(help_text="The tip to show.")
    prompt_version = serializers.CharField()
    model = serializers.CharField(help_text="The model that wrote it.")
    generation_id = serializers.UUIDField()
