"""Rows of a dataset's table for ``GET /datasets/{name}/rows``: filters, ranges, ordering and
search taken from query parameters, each column and operator checked against the dataset's
declaration and each value converted to the column's type and bound, never written into SQL.

Values of identifying columns come back masked unless the caller may see them (``phi``), and
without ``phi`` they cannot be filtered, ordered or searched on either: a filter that matches a
patient's name or birth date tells who is in the table as surely as showing it would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.datasets.spec import Column, Dataset
from healthetl.db.query import read_only
from healthetl.errors import HealthetlError, UsageError
from healthetl.ledger.watermarks import canonical

MASK = "***"
MAX_PAGE_SIZE = 1000
#: query parameters of the rows endpoint that are not column filters
RESERVED = frozenset({"page", "page_size", "order_by", "search"})
#: ``column.op=value``: the operators, and the column types they apply to
RANGE_OPS = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
ORDERED = frozenset({"integer", "float", "decimal", "date", "timestamp"})
_SEARCHED = frozenset({"text", "phone"})


class BadParameter(UsageError):
    """A query parameter that cannot be used: the response names it (422)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class NeedsScope(HealthetlError):
    """The request would use values of identifying columns without the ``phi`` scope (403)."""

    def __init__(self, scope: str, message: str) -> None:
        super().__init__(message)
        self.scope = scope


@dataclass
class RowQuery:
    filters: list[tuple[Column, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    search: str | None = None
    page: int = 1
    page_size: int = 50


@dataclass
class Page:
    total: int
    rows: list[dict[str, Any]]
    #: identifying columns whose values the rows carry (empty when masked or none were returned)
    identifying: list[str]


def identifying_columns(dataset: Dataset) -> set[str]:
    return {c.name for c in dataset.columns if c.identifying and c.stored}


def convert(column: Column, raw: str, param: str) -> Any:
    """A query parameter's text as a value of ``column``'s type (422 naming ``param`` if not)."""
    kind = column.type
    try:
        if kind == "integer":
            number = int(raw)
            if not -(2**63) <= number < 2**63:
                raise ValueError(raw)
            return number
        if kind == "float":
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
            return value
        if kind == "decimal":
            amount = Decimal(raw)
            if not amount.is_finite():
                raise ValueError(raw)
            return amount
        if kind == "boolean":
            lowered = raw.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(raw)
        if kind == "date":
            return date.fromisoformat(raw)
        if kind == "timestamp":
            moment = datetime.fromisoformat(raw)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # stored in UTC
    except (ValueError, InvalidOperation):
        expected = {
            "integer": "an integer",
            "float": "a number",
            "decimal": "a number",
            "boolean": "true or false",
            "date": "a date YYYY-MM-DD",
            "timestamp": "an ISO 8601 timestamp",
        }[kind]
        raise BadParameter(param, f"{param} must be {expected}") from None
    if "\x00" in raw:
        raise BadParameter(param, f"{param} must not contain NUL characters")
    return raw


def parse(dataset: Dataset, params: Iterable[tuple[str, str]], *, phi: bool) -> RowQuery:
    """The row query the parameters ask for (``page`` and ``page_size`` are checked by the
    caller). Unknown columns and operators, operators a column's type does not take and values
    that are not of its type are :class:`BadParameter`; identifying columns without ``phi``
    are :class:`NeedsScope`."""
    stored = filterable(dataset)
    out = RowQuery()
    for param, raw in params:
        if param in ("page", "page_size"):
            continue
        if param == "order_by":
            out.order.extend(_order(stored, raw, phi=phi))
            continue
        if param == "search":
            if out.search is not None:
                raise BadParameter("search", "search may be given once")
            if "\x00" in raw:
                raise BadParameter("search", "search must not contain NUL characters")
            if not searchable(dataset):
                raise BadParameter("search", f"dataset {dataset.name} has no text columns to search")
            out.search = raw
            continue
        name, _, op = param.partition(".")
        column = stored.get(name)
        if column is None:
            known = ", ".join(stored)
            raise BadParameter(param, f"{param}: {dataset.name} has no column {name!r} (columns: {known})")
        if op and op not in RANGE_OPS:
            raise BadParameter(param, f"{param}: unknown operator {op!r} (use {', '.join(RANGE_OPS)})")
        if op and column.type not in ORDERED:
            raise BadParameter(param, f"{param}: {name} is {column.type}; ranges apply to numbers and dates")
        if column.identifying and not phi:
            raise NeedsScope("phi", f"filtering on {name} (identifying) needs the 'phi' scope")
        out.filters.append((column, op, convert(column, raw, param)))
    return out


def _order(stored: Mapping[str, Column], raw: str, *, phi: bool) -> list[tuple[str, bool]]:
    out = []
    for part in raw.split(","):
        part = part.strip()
        descending = part.startswith("-")
        name = part.lstrip("-")
        if name not in stored:
            raise BadParameter("order_by", f"order_by: no column {name!r} (columns: {', '.join(stored)})")
        if stored[name].identifying and not phi:
            raise NeedsScope("phi", f"ordering by {name} (identifying) needs the 'phi' scope")
        out.append((name, descending))
    return out


def filterable(dataset: Dataset) -> dict[str, Column]:
    """The table's columns a request may filter and order by: the generated id, if any, and the
    stored declared columns."""
    out = {dataset.generated_id: Column(dataset.generated_id, "integer")} if dataset.generated_id else {}
    return out | {c.name: c for c in dataset.columns if c.stored}


def searchable(dataset: Dataset) -> list[str]:
    """The columns ``search`` looks in: declared text columns that identify no one."""
    return [c.name for c in dataset.columns if c.stored and c.type in _SEARCHED and not c.identifying]


def key_columns(dataset: Dataset) -> list[str]:
    """What ``/rows/{key}`` is: the generated id, else the primary key (values joined by ``,``)."""
    return [dataset.generated_id] if dataset.generated_id else list(dataset.primary_key)


def _where(table: sa.Table, dataset: Dataset, q: RowQuery, dialect: str) -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    for column, op, value in q.filters:
        out.append(_compare(table, column, op, value, dialect))
    if q.search is not None:
        needle = q.search.lower()
        out.append(
            sa.or_(
                *[sa.func.lower(table.c[c]).contains(needle, autoescape=True) for c in searchable(dataset)]
            )
        )
    return out


def _compare(table: sa.Table, column: Column, op: str, value: Any, dialect: str) -> sa.ColumnElement[bool]:
    col: sa.ColumnElement[Any] = table.c[column.name]
    if dialect == "sqlite" and column.type == "timestamp":
        # SQLite keeps timestamps as text in one canonical UTC form: compare in that form
        col, value = sa.type_coerce(col, sa.Text), canonical(value)
    return getattr(col, RANGE_OPS[op])(value) if op else col == value  # type: ignore[no-any-return]


def fetch(engine: Engine, table: sa.Table, dataset: Dataset, q: RowQuery, *, phi: bool) -> Page:
    """One page of rows and the total the filters match, read in one read-only transaction."""
    where = _where(table, dataset, q, engine.dialect.name)
    order = [table.c[name].desc() if desc else table.c[name].asc() for name, desc in q.order]
    order += [table.c[name].asc() for name in key_columns(dataset) if name not in {n for n, _ in q.order}]
    stmt = sa.select(table).where(*where).order_by(*order)
    stmt = stmt.limit(q.page_size).offset((q.page - 1) * q.page_size)
    with read_only(engine) as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return _page(int(total), rows, dataset, phi=phi)


def one(engine: Engine, table: sa.Table, dataset: Dataset, key: str, *, phi: bool) -> Page:
    """The row whose key is ``key`` (empty page if none)."""
    names = key_columns(dataset)
    if not names:
        raise BadParameter("key", f"dataset {dataset.name} has no key; filter its rows instead")
    parts = key.split(",", len(names) - 1)
    if len(parts) != len(names):
        raise BadParameter("key", f"key: give {len(names)} values joined by ',' ({', '.join(names)})")
    columns = [filterable(dataset)[n] for n in names]
    if any(c.identifying for c in columns) and not phi:
        raise NeedsScope("phi", f"finding rows by {', '.join(names)} (identifying) needs the 'phi' scope")
    dialect = engine.dialect.name
    where = [
        _compare(table, c, "", convert(c, part, "key"), dialect)
        for c, part in zip(columns, parts, strict=True)
    ]
    with read_only(engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).limit(1))]
    return _page(len(rows), rows, dataset, phi=phi)


def _page(total: int, rows: list[dict[str, Any]], dataset: Dataset, *, phi: bool) -> Page:
    identifying = sorted(identifying_columns(dataset))
    if not phi:
        for row in rows:
            for name in identifying:
                if row.get(name) is not None:
                    row[name] = MASK
        return Page(total, rows, [])
    shown = [n for n in identifying if any(r.get(n) is not None for r in rows)]
    return Page(total, rows, shown)
