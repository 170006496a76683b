"""Plain SQL for the few statements on the request hot path.

The ORM spends more time compiling a query than PostgreSQL spends running it
(about 0.5 ms against 0.1 ms for /score's read, docs/performance.md). These
helpers keep the ORM's field conversions, so values are stored exactly as the
ORM would store them, and skip only the compilation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.utils import CursorWrapper
from psycopg import _queries as psycopg_queries
from psycopg import errors as psycopg_errors
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.types.json import Json, Jsonb

from oo_ml.fields import LogJSONField

# psycopg turns a statement's %s placeholders into PostgreSQL's $n with a regular
# expression, and keeps the result per statement text, but only for statements
# of at most 50 parameters. /reward's one write (each learner's reward row, its
# roll-up and its state: 72 parameters for three learners) and /score's insert
# beside a shadow (54) were parsed again on every request, about a tenth of
# /reward's CPU (docs/performance.md). The hot path's statements are few, one
# per number of policies; the cache keeps its 128 entries and its cap on a
# statement's length (4,096 characters), so what it holds stays small.
psycopg_queries.MAX_CACHED_STATEMENT_PARAMS = max(
    psycopg_queries.MAX_CACHED_STATEMENT_PARAMS, 1_000
)


@functools.cache
def on_postgresql() -> bool:
    """Whether the database is PostgreSQL, asked once: ``connection.vendor``
    looks the connection up on every use (a few µs, several times a request on
    the hot path), and a process's database never changes engine."""
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def json_dumps(value) -> bytes | str:
    """JSON columns on the hot path: orjson writes a decision's candidates,
    vectors and estimates over ten times faster than json.dumps, the same JSON for
    what they hold (numbers, strings, lists, objects; numpy scalars as numbers).
    What orjson refuses (an integer past 64 bits, say) json.dumps writes as
    before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value)


@contextlib.contextmanager
def _cursor(cursor: CursorWrapper | None):
    """The caller's cursor, or a new one: statements in a row can share one."""
    if cursor is not None:
        yield cursor
    else:
        with connection.cursor() as new:
            yield new


_TIMESTAMPTZ = 1184  # its type's oid
# The statements a connection keeps prepared for direct_cursor: the hot path
# has a few (one per number of policies a request reads or writes).
_DIRECT_PREPARED_MAX = 64


def direct_cursor():
    """A cursor for the hot path's statements (``execute``, ``fetchone``,
    ``fetchall``), each sent to PostgreSQL as a prepared statement in one call
    to libpq.

    psycopg's cursor and Django's wrapper around it cost about 60 µs of Python
    a statement on top of libpq's own 25 (docs/performance.md). This one keeps
    the parts that matter: psycopg converts the parameters and the rows (its
    ``PostgresQuery`` and ``Transformer``, as its cursor does), Django maps a
    failure to its errors and marks the connection for its end-of-request check.

    Only where that is all a statement needs: PostgreSQL in autocommit (each
    statement its own transaction, so nothing of psycopg's transaction handling
    is skipped), with prepared statements allowed, and Django neither recording
    queries nor running execute wrappers. Anywhere else, Django's own cursor.
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each use of the proxy looks it up
    db.close_if_health_check_failed()  # as Django's cursor() does
    db.ensure_connection()
    db.validate_thread_sharing()
    raw = db.connection
    if (
        db.vendor != "postgresql"
        or not raw.autocommit
        or raw.prepare_threshold is None
        or raw.pgconn.transaction_status != pq.TransactionStatus.IDLE
        or db.queries_logged
        or db.execute_wrappers
        # Django's cursor would read timestamps in another time zone than
        # the connection's (a database TIME_ZONE that differs from it).
        or db.timezone != raw.adapters.get_loader(_TIMESTAMPTZ, pq.Format.TEXT).timezone
    ):
        return db.cursor()
    return _DirectCursor(db, raw)


class _Kept:
    """What a psycopg connection keeps for ``direct_cursor``: a Transformer, and
    the statements it prepared, by text and parameter types. PostgreSQL forgets
    them with the connection, and on a ``DEALLOCATE ALL``, which psycopg sends
    after a rollback once it has prepared statements of its own: then they are
    prepared again. Names only grow, so a new one never meets an old one."""

    __slots__ = ("tx", "names", "count")

    def __init__(self, raw) -> None:
        self.tx = Transformer(raw)
        self.names: dict[tuple[bytes, tuple], bytes] = {}
        self.count = itertools.count()


class _DirectCursor:
    """``direct_cursor``'s: the named prepared statements of one connection."""

    def __init__(self, db, raw) -> None:
        self._db, self._raw = db, raw
        self._rows: list[tuple] = []
        self.rowcount = -1
        kept = raw.__dict__.get("_oo_ml_direct")
        if kept is None:
            kept = raw.__dict__["_oo_ml_direct"] = _Kept(raw)
        self._kept = kept

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._rows = []

    def execute(self, sql: str, params: Sequence | Mapping) -> None:
        with self._db.wrap_database_errors:
            query = psycopg_queries.PostgresQuery(self._kept.tx)
            query.convert(sql, params)
            result = self._run(query)
            if _forgotten(result):
                self._kept.names.clear()  # nothing ran: again
                result = self._run(query)
            self._check(result)
            nrows = result.command_tuples
            self.rowcount = -1 if nrows is None else nrows
            if result.status == pq.ExecStatus.TUPLES_OK:
                self._kept.tx.set_pgresult(result)
                self._rows = self._kept.tx.load_rows(0, result.ntuples, tuple)
            else:
                self._rows = []

    def _run(self, query):
        pgconn, names = self._raw.pgconn, self._kept.names
        key = (query.query, query.types)
        name = names.get(key)
        if name is None and len(names) < _DIRECT_PREPARED_MAX:
            name = f"oo_ml_{next(self._kept.count)}".encode()
            self._check(pgconn.prepare(name, query.query, query.types))
            names[key] = name
        if name is None:  # one of too many statements: not kept
            return pgconn.exec_params(
                query.query, query.params, query.types, query.formats
            )
        return pgconn.exec_prepared(name, query.params, query.formats)

    def _check(self, result) -> None:
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise psycopg_errors.error_from_result(
                result, encoding=self._raw.info.encoding
            )

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None


_UNKNOWN_STATEMENT = b"26000"  # invalid_sql_statement_name


def _forgotten(result) -> bool:
    """Whether the statement failed because the server forgot it (its SQLSTATE,
    another call to libpq, asked only of a failure)."""
    return (
        result.status == pq.ExecStatus.FATAL_ERROR
        and result.error_field(pq.DiagnosticField.SQLSTATE) == _UNKNOWN_STATEMENT
    )


def recoverable():
    """A block whose database error the caller handles and goes on from.

    Inside a transaction, a savepoint: a failed statement would otherwise abort
    the rest of it. Outside one (autocommit), nothing: the failed statement
    ended alone, and a savepoint's BEGIN and COMMIT would cost two round trips.
    """
    if connection.in_atomic_block:
        return transaction.atomic()
    return contextlib.nullcontext()


def rows_insert(
    objs: Sequence[models.Model], cursor: CursorWrapper | None = None
) -> None:
    """INSERT ``objs`` (all of one model) in one statement, as bulk_create would."""
    sql, params = rows_insert_sql(objs)
    with _cursor(cursor) as c:
        c.execute(sql, params)


def rows_insert_sql(
    objs: Sequence, model: type[models.Model] | None = None
) -> tuple[str, list]:
    """The statement ``rows_insert`` runs, and its parameters. ``objs``: instances
    of one model, or, with ``model`` given, rows that only carry its fields'
    values by attribute name (a ``SimpleNamespace`` costs a microsecond, where a
    model instance costs over ten: the hot path's log rows). Such a row gets no
    field defaults: it names every field, ``id`` (None) included, so a field
    added to the model must be added where those rows are made."""
    model = model or type(objs[0])
    plan = _insert_plan(model, getattr(objs[0], model._meta.pk.attname) is not None)
    sql = plan.head + ", ".join([plan.row] * len(objs))
    return sql, [prep(value(obj)) for obj in objs for value, prep in plan.columns]


@dataclass(frozen=True, slots=True)
class _InsertPlan:
    head: str  # INSERT INTO table (columns) VALUES
    row: str  # one row's placeholders
    columns: tuple[tuple[Callable, Callable], ...]  # how to read and store each


@functools.lru_cache(maxsize=64)
def _insert_plan(model: type[models.Model], with_pk: bool) -> _InsertPlan:
    """Once per model: its columns, and for each how the ORM reads the value
    from an instance and converts it for the database (half a row's cost, were
    it looked up for every row)."""
    fields = [f for f in model._meta.concrete_fields if with_pk or not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    return _InsertPlan(
        head=f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ",
        row="(" + ", ".join(["%s"] * len(fields)) + ")",
        columns=tuple((_reader(f), _preparer(f)) for f in fields),
    )


def _reader(field: models.Field) -> Callable:
    """``field.pre_save``: the attribute, unless the field sets it on save."""
    if type(field).pre_save is models.Field.pre_save or (
        isinstance(field, models.DateField)
        and not field.auto_now
        and not field.auto_now_add
    ):
        return operator.attrgetter(field.attname)
    return functools.partial(field.pre_save, add=True)


def _preparer(field: models.Field) -> Callable:
    """A value as the ORM would store it in ``field``."""
    if (
        isinstance(field, models.JSONField)
        and field.encoder is None
        and on_postgresql()
    ):
        # The log's fields take ``json`` (oo_ml.fields), the others ``jsonb``.
        wrap = Json if isinstance(field, LogJSONField) else Jsonb
        return lambda value: None if value is None else wrap(value, dumps=json_dumps)
    prep = functools.partial(field.get_db_prep_save, connection=connection)
    base = type(field.target_field if field.is_relation else field)
    if on_postgresql() and base in _AS_IS_ON_POSTGRESQL:
        kept = _AS_IS_ON_POSTGRESQL[base]
        return lambda value: value if value is None or kept(value) else prep(value)
    kind = _AS_IS.get(base)
    if kind is None:
        return prep
    return lambda value: value if value is None or type(value) is kind else prep(value)


# Fields whose conversion gives a value of exactly this type back unchanged (a
# text, a float, a whole number): most of a log row, skipped at no risk.
_AS_IS = {
    models.CharField: str,
    models.TextField: str,
    models.FloatField: float,
    models.BooleanField: bool,
    **dict.fromkeys(
        (
            models.AutoField,
            models.BigAutoField,
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveSmallIntegerField,
        ),
        int,
    ),
}


# And on PostgreSQL, whose adapter takes them as they are: an aware datetime
# (a naive one is made aware, with Django's warning), a UUID (SQLite's is
# stored as text) and bytes (psycopg sends them as bytea, as Django's wrapper
# for them asks).
_AS_IS_ON_POSTGRESQL = {
    models.DateTimeField: lambda value: (
        type(value) is datetime and value.tzinfo is not None
    ),
    models.UUIDField: lambda value: type(value) is uuid.UUID,
    models.BinaryField: lambda value: type(value) is bytes,
}


def aware(at: datetime | str) -> datetime:
    """A datetime from a raw cursor: SQLite hands back text."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def fetch_one(
    sql: str, params: Sequence | Mapping, cursor: CursorWrapper | None = None
) -> tuple | None:
    with _cursor(cursor) as c:
        c.execute(sql, params)
        return c.fetchone()


def fetch_all(
    sql: str, params: Sequence | Mapping, cursor: CursorWrapper | None = None
) -> list[tuple]:
    with _cursor(cursor) as c:
        c.execute(sql, params)
        return c.fetchall()


def for_update(of: str) -> str:
    """The clause locking the rows of table alias ``of``, where the database has
    row locks (SQLite locks the whole file for a write transaction instead)."""
    return f" FOR UPDATE OF {of}" if connection.features.has_select_for_update else ""


def _lock_key(name: str) -> int:
    """A signed 64-bit key for ``name``: PostgreSQL's advisory locks take one."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def names_lock(names: Iterable[str], cursor: CursorWrapper | None = None) -> None:
    """Hold a lock on each of ``names`` until the transaction ends.

    PostgreSQL advisory locks, taken in one order so that two holders of
    overlapping sets cannot deadlock. For what has no row to lock yet (a
    user's profile before it is first stored). SQLite needs none: a write
    transaction holds the whole file.
    """
    if not on_postgresql():
        return
    keys = sorted({_lock_key(name) for name in names})
    if keys:
        with _cursor(cursor) as c:
            c.execute(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
                [keys],
            )
