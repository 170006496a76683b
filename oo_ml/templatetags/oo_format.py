"""Template filters for the admin: ``{% load oo_format %}``, then
``{{ score|sig }}`` and ``{{ when|ago }}`` (oo_ml.formatting)."""

from __future__ import annotations

from django import template
from django.utils.dateparse import parse_datetime

from oo_ml import formatting

register = template.Library()


@register.filter
def sig(value) -> str:
    return formatting.significant(None if value in (None, "") else float(value))


@register.filter
def ago(moment) -> str:
    return formatting.ago(moment)


@register.filter
def as_datetime(value):
    """An ISO 8601 text (as stored in JSON) as a datetime, so that it is shown
    like every other time; other values pass through."""
    if isinstance(value, str):
        return parse_datetime(value) or value
    return value
