"""Template filters for the admin: ``{% load oo_format %}``, then
``{{ score|sig }}`` and ``{{ when|ago }}`` (oo_ml.formatting)."""

from __future__ import annotations

from django import template

from oo_ml import formatting

register = template.Library()


@register.filter
def sig(value) -> str:
    return formatting.significant(None if value in (None, "") else float(value))


@register.filter
def ago(moment) -> str:
    return formatting.ago(moment)
