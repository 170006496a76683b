"""The decision log as JSON lines, for off-policy tools (docs/logs.md).

One line per decision, in id (time) order, with its own rewards joined: what
Vowpal Wabbit's contextual-bandit formats and Open Bandit Pipeline's logged
feedback (action, reward, pscore, context) are built from.

The database writes every line itself: one statement concatenates the
decision's columns (its JSON columns' stored text, copied: they are
PostgreSQL ``json``, oo_ml.fields) with its policy's name
and its rewards' sum, first time and count into the line, and Python only
passes the text on. On PostgreSQL the statement streams out through COPY, one
message per line as the server makes it (no cursor round trips, and a
parallel plan where the server has the cores); elsewhere through a cursor,
CHUNK lines at a time. Either way memory stays flat whatever the range, and
no line is parsed or formatted in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.db import connection

from oo_ml.partitions import uuid7_floor
from policies.models import Decision, Policy, Reward

# Lines handed on at once (as one block of text).
CHUNK = 2_000
# The export's version: bump it when a field changes meaning or goes.
SCHEMA = 1

_DECISION = Decision._meta.db_table
_REWARD = Reward._meta.db_table
_POLICY = Policy._meta.db_table
# Passed through as the database stores them (bonuses, nullable, apart).
_JSON = ("context", "profile", "candidates", "features", "estimates")


def _unless_unrewarded(value: str) -> str:
    return f"CASE WHEN r.n IS NULL THEN 'null' ELSE {value} END"


def _sql(vendor: str, with_policy: bool) -> str:
    """The statement whose one column is each decision's line. Parameters: the
    id bounds and the earliest time of its rewards, the id bounds again, and
    (``with_policy``) the policy's id."""
    if vendor == "postgresql":

        def text(x):
            return f"{x}::text"

        def string(x):
            return f"to_json({x})::text"

        def time(x):
            return (
                f"""'"' || to_char({x} AT TIME ZONE 'UTC', """
                """'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"'"""
            )

        number = text  # float8 prints the shortest text that reads back exact
        uuid = text
    else:  # SQLite: JSON and datetimes are stored as text, uuids as 32 hex digits

        def text(x):
            return x

        def string(x):
            return f"json_quote({x})"

        def time(x):
            return f"""'"' || replace({x}, ' ', 'T') || '+00:00"'"""

        def number(x):
            return f"printf('%!.17g', {x})"

        def uuid(x):
            parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
            return " || '-' || ".join(f"substr({x}, {a}, {n})" for a, n in parts)

    fields = [
        ("schema", str(SCHEMA)),
        ("decision_id", f"""'"' || {uuid("d.id")} || '"'"""),
        ("request_id", f"""'"' || {uuid("d.request_id")} || '"'"""),
        ("created_at", time("d.created_at")),
        ("user_id", string("d.user_id")),
        ("policy", string("p.name")),
        ("role", string("d.role")),
        *((name, text(f"d.{name}")) for name in _JSON),
        ("bonuses", f"COALESCE({text('d.bonuses')}, 'null')"),
        ("pick_index", "CAST(d.pick_index AS TEXT)"),
        ("tip_id", string("d.tip_id")),
        ("score", number("d.score")),
        ("propensity", number("d.propensity")),
        ("exploring", "CASE WHEN d.exploring THEN 'true' ELSE 'false' END"),
        ("reward", _unless_unrewarded(number("r.total"))),
        ("rewarded_at", _unless_unrewarded(time("r.first_at"))),
        ("rewards", "CAST(COALESCE(r.n, 0) AS TEXT)"),
    ]
    # Each field's key (after the brace or a comma) and its value, none NULL.
    pieces = []
    for i, (name, value) in enumerate(fields):
        before = "{" if i == 0 else ","
        pieces += [f"""'{before}"{name}":'""", value]
    pieces.append("'}'")
    # One concat() writes the line into one buffer; a chain of || copies the
    # growing line again at every piece (a tenth of PostgreSQL's time for the
    # statement). SQLite has concat() only from 3.44: it keeps the chain.
    if vendor == "postgresql":
        line = f"concat({', '.join(pieces)})"
    else:
        line = " || ".join(pieces)
    policy = " AND d.policy_id = %s" if with_policy else ""
    # The rewards' bounds: the decisions' ids, and a day before the range's
    # start (as reward_apply's check) for their time, which the reward log is
    # partitioned by.
    return f"""
        SELECT {line}
        FROM {_DECISION} d
        JOIN {_POLICY} p ON p.id = d.policy_id
        LEFT JOIN (
            SELECT decision_id, SUM(reward) AS total, MIN(created_at) AS first_at,
                   COUNT(*) AS n
            FROM {_REWARD}
            WHERE decision_id >= %s AND decision_id < %s AND NOT learned
              AND created_at >= %s
            GROUP BY decision_id
        ) r ON r.decision_id = d.id
        WHERE d.id >= %s AND d.id < %s{policy}
        ORDER BY d.id
    """


def log_export(
    *, since: dt.datetime, until: dt.datetime, policy: str | None = None
) -> Iterator[bytes]:
    """The decisions made in [since, until) (of ``policy`` alone if named),
    oldest first, with their rewards: JSON lines (UTF-8, each ending in a
    newline), in blocks of whole lines."""
    pk = Decision._meta.pk
    bounds = [pk.get_db_prep_value(uuid7_floor(t), connection) for t in (since, until)]
    rewards_from = connection.ops.adapt_datetimefield_value(since - dt.timedelta(1))
    params: list = [*bounds, rewards_from, *bounds]
    if policy is not None:
        policy_id = Policy.objects.filter(name=policy).values_list("id", flat=True)
        if not policy_id:
            return
        params.append(policy_id[0])
    sql = _sql(connection.vendor, policy is not None)
    if connection.vendor == "postgresql":
        yield from _copied(sql, params)
        return
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            yield "".join(f"{line}\n" for (line,) in rows).encode()


def _copied(sql: str, params: list) -> Iterator[bytes]:
    """The statement's lines through COPY. Its text format doubles every
    backslash (the only character of a JSON line it escapes: the JSON has
    escaped the rest), so a line with one is undone; one message is one line."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy,
    ):
        block: list[bytes] = []
        for message in copy:
            line = bytes(message)
            if b"\\" in line:
                line = line.replace(b"\\\\", b"\\")
            block.append(line)
            if len(block) == CHUNK:
                yield b"".join(block)
                block = []
        if block:
            yield b"".join(block)
