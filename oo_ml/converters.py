"""Path converters for ids in URLs."""

from __future__ import annotations

from django.urls.converters import StringConverter


class IdConverter(StringConverter):
    """A user id or policy name in a path: 1 to 128 characters, no slash and no
    NUL (the database cannot store one: it would be a 500, not a 404)."""

    regex = r"[^/\x00]{1,128}"
