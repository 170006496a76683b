"""A JSON column kept as the text it was written (docs/logs.md, "Storage").

The decision log's JSON columns are written once and read back whole: by the
export, which passes them on as they are, and by the control room's values,
which decode them. PostgreSQL's ``jsonb`` parses every value into its binary
form on the way in and prints every number again on the way out, which was
most of the export's time (docs/performance.md, "Logs at scale"); ``json``
checks the text on the way in and hands it back unchanged. What ``json`` lacks
is what the log never asks of these columns: equality (no DISTINCT, GROUP BY or
UNIQUE over them) and the containment and key operators (``@>``, ``?``). So the
ORM filters on these fields only with ``isnull``, and reads keys only in
``values()``; in raw SQL ``->`` and ``->>`` work on both types.
"""

from __future__ import annotations

from django.db import models
from psycopg.adapt import AdaptersMap
from psycopg.types.json import Json, Jsonb
from psycopg.types.string import TextLoader


class LogJSONField(models.JSONField):
    """A JSONField stored as PostgreSQL ``json`` (elsewhere as JSONField is:
    SQLite keeps text anyway). Values go in as ``json`` (a ``jsonb`` parameter
    would be parsed and printed again by the cast) and come back as text that
    the field decodes, as Django has it for ``jsonb`` (``json_as_text``)."""

    def db_type(self, connection):
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_db_prep_value(self, value, connection, prepared=False):
        return as_json(super().get_db_prep_value(value, connection, prepared))


def as_json(value):
    """A ``jsonb`` parameter as a ``json`` one, with the same writer; anything
    else as it is."""
    if isinstance(value, Jsonb):
        return Json(value.obj, dumps=value.dumps)
    return value


def json_as_text(adapters: AdaptersMap) -> None:
    """Load ``json`` columns as text, as Django loads ``jsonb``: the field
    decodes it (with its decoder), and raw statements get the same text from
    either type."""
    adapters.register_loader("json", TextLoader)
