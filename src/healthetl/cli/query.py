"""healthetl query: named queries and ad-hoc read-only SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    DbOption,
    FormatOption,
    check_format,
    open_database,
    open_project,
)
from healthetl.config import resolve_min_cell_count, resolve_query_role
from healthetl.errors import UsageError
from healthetl.privacy import suppress

if TYPE_CHECKING:
    from healthetl.db.query import coerce_params, run_query
else:
    coerce_params = lazy("healthetl.db.query", "coerce_params")
    run_query = lazy("healthetl.db.query", "run_query")


def _parse_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param takes key=value, not {item!r}")
        out[key.strip()] = value
    return out


def query(
    name: Annotated[
        str | None, typer.Argument(help="A named query (see --list).", show_default=False)
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="key=value (repeatable).", show_default=False),
    ] = None,
    sql: Annotated[
        str | None,
        typer.Option(
            help="Run this SQL instead (read-only, one statement; bind :name parameters with --param).",
            show_default=False,
        ),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the named queries.")] = False,
    fmt: FormatOption = "table",
    min_cell_count: Annotated[
        int | None,
        typer.Option(
            help="Person counts below this are shown as <N (default 11, or [privacy] min_cell_count); "
            "0 shows them all.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Answer a question from the loaded tables. Queries are read-only; parameters are bound;
    a named query's person counts below the threshold are suppressed."""
    check_format(fmt)
    if list_:
        rows = []
        for ds in open_project(config).catalog.datasets.values():
            for q in ds.queries:
                params = " ".join(
                    f"{k}=<{p.type}>" + ("?" if p.optional else "") for k, p in q.params.items()
                )
                rows.append((q.name, ds.name, params, q.description))
        render.rows(["query", "dataset", "parameters", "description"], rows, fmt)
        return
    given = _parse_params(param or [])
    if (name is None) == (sql is None):
        raise UsageError("give a query NAME or --sql (not both); see `healthetl query --list`")
    if sql is not None:
        text, values, types = sql, dict(given), None
    else:
        assert name is not None
        _, q = open_project(config).catalog.find_query(name)
        values = coerce_params(q.params, given, query=name)
        types = {k: p.type for k, p in q.params.items()}
    session = open_database(db, config, must_exist=True, at_head=True)
    if sql is None:
        text = q.sql_for(session.db.dialect.name)
    result = run_query(session.db, text, values, types, role=resolve_query_role(session.project))
    rows = result.rows
    if sql is None and q.person_counts:
        threshold = resolve_min_cell_count(min_cell_count, session.project)
        if threshold == 0:
            render.warn(f"small-cell suppression is off: {', '.join(q.person_counts)} shown however small")
        rows = suppress(result.columns, rows, q.person_counts, threshold).rows
    render.rows(result.columns, rows, fmt)
