"""Read-only queries with bound parameters.

Defence in depth: the statement is judged first (:mod:`healthetl.db.sqlguard`: one query, no
writes, no functions with side effects); it then runs in a read-only transaction (``SET
TRANSACTION READ ONLY`` on PostgreSQL, optionally under a SELECT-only role; ``PRAGMA
query_only`` and an authorizer on SQLite) as a single prepared statement. Parameters are bound,
never formatted into SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.datasets.spec import Param
from healthetl.db.engine import is_postgres
from healthetl.db.sqlguard import check_read_only, sqlite_authorizer
from healthetl.errors import DatabaseError, UsageError, first_line

_PARAM_TYPES: dict[str, Any] = {"integer": sa.BigInteger, "text": sa.Text, "date": sa.Date}


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def coerce_params(declared: Mapping[str, Param], given: Mapping[str, str], *, query: str) -> dict[str, Any]:
    unknown = set(given) - set(declared)
    if unknown:
        allowed = ", ".join(declared) or "none"
        raise UsageError(
            f"query {query}: unknown parameter(s) {', '.join(sorted(unknown))} (parameters: {allowed})"
        )
    values: dict[str, Any] = {}
    for name, param in declared.items():
        raw = given.get(name, param.default)
        if raw is None and param.optional:
            values[name] = None
            continue
        if raw is None:
            raise UsageError(f"query {query}: missing --param {name}=... ({param.help})")
        values[name] = _convert(name, param.type, raw, query)
    return values


def _convert(name: str, kind: str, raw: str, query: str) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "date":
            return date.today() if raw == "today" else date.fromisoformat(raw)
    except ValueError:
        expected = "an integer" if kind == "integer" else "a date YYYY-MM-DD"
        raise UsageError(f"query {query}: --param {name} must be {expected}") from None
    return raw


def run_query(
    engine: Engine,
    sql: str,
    params: Mapping[str, Any] | None = None,
    types: Mapping[str, str] | None = None,
    *,
    role: str | None = None,
) -> QueryResult:
    """``role``: PostgreSQL role to switch to for the query (one that may only SELECT)."""
    check_read_only(sql, "postgres" if is_postgres(engine) else "sqlite")
    params = dict(params or {})
    stmt = sa.text(sql)
    if params and types:  # declared types; ad-hoc SQL leaves typing to the database
        stmt = stmt.bindparams(*[sa.bindparam(k, type_=_PARAM_TYPES[types.get(k, "text")]()) for k in params])
    try:
        with read_only(engine, role=role) as conn:
            if is_postgres(conn):
                columns, rows = _postgres_single_statement(conn, stmt, params)
            else:
                result = conn.execute(stmt, params)
                columns = list(result.keys()) if result.returns_rows else []
                rows = [tuple(r) for r in result] if result.returns_rows else []
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        text = first_line(orig or exc)
        lowered = text.lower()
        if "not authorized" in lowered:
            raise UsageError(f"query refused: queries may only read ({text})") from None
        if "read-only" in lowered or "readonly" in lowered or "query_only" in lowered:
            raise UsageError(f"query refused: queries are read-only ({text})") from None
        if "one statement at a time" in lowered or "multiple commands" in lowered:
            raise UsageError("query refused: give exactly one SQL statement") from None
        if isinstance(exc, sa.exc.OperationalError) and "connect" in lowered:
            raise DatabaseError(text) from None
        raise UsageError(f"query failed: {text}") from None
    except sa.exc.ArgumentError as exc:
        raise UsageError(f"query failed: {exc}") from None
    return QueryResult(columns, rows)


@contextmanager
def read_only(engine: Engine, *, role: str | None = None) -> Iterator[sa.Connection]:
    """A connection that may only read, for as long as the block runs: a read-only transaction
    (optionally under ``role``) on PostgreSQL; ``PRAGMA query_only`` and an authorizer that
    denies anything but reading on SQLite. Always rolled back at the end."""
    with engine.connect() as conn:
        try:
            if is_postgres(conn):
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                if role:
                    quoted = conn.dialect.identifier_preparer.quote(role)
                    conn.exec_driver_sql(f"SET LOCAL ROLE {quoted}")
                yield conn
            else:
                conn.exec_driver_sql("PRAGMA query_only = ON")
                raw = conn.connection.driver_connection
                raw.set_authorizer(sqlite_authorizer)  # type: ignore[union-attr]
                try:
                    yield conn
                finally:
                    raw.set_authorizer(None)  # type: ignore[union-attr]
        finally:
            conn.rollback()
            if not is_postgres(conn):
                conn.exec_driver_sql("PRAGMA query_only = OFF")


def _postgres_single_statement(
    conn: sa.Connection, stmt: sa.TextClause, params: Mapping[str, Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run as a prepared statement: PostgreSQL refuses several commands in one, so
    ``COMMIT; DELETE ...`` cannot step out of the read-only transaction."""
    compiled = stmt.compile(dialect=conn.dialect)
    values = compiled.construct_params(dict(params))
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(compiled.string, values, prepare=True)
        if cur.description is None:
            return [], []
        return [d.name for d in cur.description], [tuple(r) for r in cur.fetchall()]
