"""How a project's declared tables differ from the database: Alembic's comparison, limited to
the project's tables, plus the primary keys Alembic does not compare. Loads refuse to run on a
difference (an index only warns); ``healthetl db revision`` writes the migration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from healthetl.errors import DatabaseError

if TYPE_CHECKING:
    from healthetl.catalog import Catalog


def declaration_drift(engine: Engine, catalog: Catalog | None, *, indexes: bool = True) -> list[str]:
    """How the project's declared tables differ from the database (empty: they match).
    ``indexes=False`` leaves out indexes added or removed: they change speed, not what loads."""
    return [text for text, index_only in differences(engine, catalog) if indexes or not index_only]


def differences(engine: Engine, catalog: Catalog | None) -> list[tuple[str, bool]]:
    """(description, whether it is only an index) for each difference."""
    if catalog is None or not catalog.project_tables:
        return []
    include = catalog.project_tables
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"compare_type": True, **include_filters(include)},
        )
        diffs = compare_metadata(ctx, catalog.metadata)
        keys = primary_key_changes(conn, catalog.metadata, include)
    index_ops = ("add_index", "remove_index")
    return [(describe(d), isinstance(d, tuple) and d[0] in index_ops) for d in diffs] + [
        (f"primary key of {table} changed ({', '.join(old) or 'none'} -> {', '.join(new) or 'none'})", False)
        for table, old, new, _ in keys
    ]


def primary_key_changes(
    conn: sa.Connection, metadata: sa.MetaData, include: set[str]
) -> list[tuple[str, list[str], list[str], str | None]]:
    """(table, columns in the database, declared columns, the database's constraint name) where
    a table's primary key differs:
    Alembic's autogenerate does not compare primary keys, so healthetl does."""
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    out = []
    for name in sorted(include & existing):
        declared = [c.name for c in metadata.tables[name].primary_key.columns]
        pk = inspector.get_pk_constraint(name)
        found = list(pk.get("constrained_columns") or [])
        if declared != found:
            out.append((name, found, declared, pk.get("name")))
    return out


def ensure_declarations_match(engine: Engine, catalog: Catalog | None) -> None:
    """Refuse to load into tables that differ from their declarations. A missing or extra index
    does not block (`db current` lists it, `db revision` writes it)."""
    found = differences(engine, catalog)
    for text, _ in (f for f in found if f[1]):
        logging.getLogger("healthetl").warning(
            f"declared datasets differ from the database: {text} "
            '(`healthetl db revision -m "indexes"` writes the migration)'
        )
    drift = [text for text, index_only in found if not index_only]
    if drift:
        shown = "; ".join(drift[:4]) + (f"; and {len(drift) - 4} more" if len(drift) > 4 else "")
        raise DatabaseError(
            f"the declared datasets differ from the database: {shown}",
            hint='generate a migration with `healthetl db revision -m "describe the change"`, '
            "review it, then run `healthetl db upgrade`",
        )


def include_filters(include: set[str] | None) -> dict[str, Callable[..., bool]]:
    """Alembic's include_name / include_object limiting comparison to ``include`` (None: all).
    Used by env.py for revisions, and by ``declaration_drift``."""

    def include_name(name: Any, type_: str, parent_names: Any) -> bool:
        return include is None or type_ != "table" or name in include

    def include_object(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        if include is None:
            return True
        if type_ == "table":
            return name in include
        table = getattr(obj, "table", None)
        return table is None or table.name in include

    return {"include_name": include_name, "include_object": include_object}


def describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return describe(diff[0])
    kind = diff[0]
    if kind == "add_table":
        return f"table {diff[1].name} does not exist yet"
    if kind == "remove_table":
        return f"table {diff[1].name} is no longer declared"
    if kind == "add_column":
        return f"column {diff[2]}.{diff[3].name} is new"
    if kind == "remove_column":
        return f"column {diff[2]}.{diff[3].name} is no longer declared"
    if kind.startswith("modify_"):
        return f"column {diff[2]}.{diff[3]} changed ({kind[7:]})"
    obj = diff[1]
    table = getattr(getattr(obj, "table", None), "name", "?")
    cols = ", ".join(c.name for c in getattr(obj, "columns", []))
    what = {
        "add_fk": "new reference",
        "remove_fk": "reference removed",
        "add_constraint": "new unique constraint",
        "remove_constraint": "unique constraint removed",
        "add_index": "new index",
        "remove_index": "index removed",
    }.get(kind, str(kind).replace("_", " "))
    return f"{what} on {table} ({cols})" if cols else f"{what} on {table}"
