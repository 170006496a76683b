"""The fields' short paths answer exactly what DRF's own validation answers.

``TextField`` is compared with a DRF ``CharField`` of the same options, and every
field with DRF's ``run_validation`` on the same instance: the value returned, or
the errors raised with their messages, codes and order. No database.
"""

from __future__ import annotations

import pytest
from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from policies.serializers import (
    CallerEventIdField,
    CandidateField,
    FiniteFloatField,
    IdField,
    ProfileFeaturesField,
    StrictBooleanField,
    StrictIntegerField,
    TextField,
)

TEXTS = [
    "task-1",
    "  padded\t",
    "é, ü and 日本",
    "",
    " ",
    " \t\n ",
    "\u00a0",  # whitespace to str.strip(), so blank
    "\ud800",
    "a\udfffb",
    "é\udbff",  # not ASCII, a surrogate after other text
    " \ud800 ",
    "\x00",
    "a\x00b",
    " \x00 ",
    "x",
    "x" * 3,
    "x" * 4,
    " xxx ",  # too long until trimmed
    "x" * 201,
    "\x00\ud800" + "x" * 300,  # three errors at once, in DRF's order
    None,
    empty,
    5,
    -1.5,
    True,
    [],
    {},
]

OPTIONS = [
    {},
    {"allow_blank": True},
    {"allow_null": True},
    {"allow_blank": True, "allow_null": True},
    {"trim_whitespace": False},
    {"trim_whitespace": False, "allow_blank": True},
    {"max_length": 3},
    {"min_length": 2, "max_length": 3},
    {"max_length": 200, "trim_whitespace": False},
    {"required": False},
    {"required": False, "default": "d"},
    {"read_only": True},
]


def outcome(run, data):
    """What a run_validation does with ``data``: its value or its errors."""
    try:
        return "value", run(data)
    except serializers.ValidationError as error:
        return "errors", error.get_full_details()
    except SkipField:
        return "skipped", None


@pytest.mark.parametrize("options", OPTIONS, ids=repr)
@pytest.mark.parametrize("data", TEXTS, ids=repr)
def test_text_field_answers_as_drf_char_field(options, data):
    drf = serializers.CharField(**options)
    assert outcome(TextField(**options).run_validation, data) == outcome(
        drf.run_validation, data
    )


def test_the_cases_reach_each_of_drf_char_field_errors():
    """The table above stays a test of the unhappy paths: each error is met."""
    codes = set()
    for options in OPTIONS:
        for data in TEXTS:
            drf = serializers.CharField(**options)
            kind, answer = outcome(drf.run_validation, data)
            if kind == "errors":
                codes.update(error["code"] for error in answer)
    assert codes >= {
        "blank",
        "null",
        "required",
        "invalid",
        "max_length",
        "min_length",
        "null_characters_not_allowed",
        "surrogate_characters_not_allowed",
    }


def test_text_field_refuses_validators_it_would_skip():
    with pytest.raises(TypeError):
        TextField(validators=[lambda value: None])


@pytest.mark.parametrize(
    "field",
    [IdField(), IdField(max_length=128), CallerEventIdField(allow_null=True)],
    ids=repr,
)
@pytest.mark.parametrize(
    "data", [*TEXTS, "x" * 128, "x" * 129, 12, "event:1"], ids=repr
)
def test_id_fields_answer_as_drf_validation(field, data):
    assert outcome(field.run_validation, data) == outcome(
        lambda value: serializers.CharField.run_validation(field, value), data
    )


def no_sevens(value):
    if value == 7:
        raise serializers.ValidationError("No sevens.", code="seven")


NUMBERS = [0, 1, 2, 7, -3, 0.5, 1e308, 10**400, float("nan"), float("inf")]
VALUES = [*NUMBERS, True, False, "1", "", None, empty, [], {}]


@pytest.mark.parametrize(
    "field",
    [
        FiniteFloatField(min_value=0),
        StrictIntegerField(min_value=1, max_value=4),
        StrictIntegerField(allow_null=True, required=False),
        StrictBooleanField(),
        StrictBooleanField(required=False, allow_null=True),
        StrictIntegerField(read_only=True),
        FiniteFloatField(validators=[no_sevens]),
        ProfileFeaturesField(required=False, allow_null=True),
        CandidateField(),
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    "data",
    [*VALUES, {"id": "t1"}, {"id": "\ud800", "content": "a\x00"}, {"id": " "}],
    ids=repr,
)
def test_plain_fields_answer_as_drf_validation(field, data):
    assert outcome(field.run_validation, data) == outcome(
        lambda value: serializers.Field.run_validation(field, value), data
    )
