"""Table locks a load takes before it writes (PostgreSQL; SQLite has one writer anyway)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from healthetl.db.engine import is_postgres


def lock_related(conn: sa.Connection, tables: Sequence[sa.Table]) -> None:
    """PostgreSQL: before touching anything, lock the tables a load writes and every table
    related to them by a foreign key, all at once and in one global order (advisory locks by
    name), so loads of related datasets queue instead of deadlocking (a parent's commit checking
    its children while a child's load alters its keys). SQLite has one writer anyway."""
    if not is_postgres(conn):
        return
    names = set()
    for table in tables:
        names.add(table.name)
        names |= {fk.column.table.name for fk in table.foreign_keys}
        names |= {
            other.name
            for other in table.metadata.tables.values()
            if any(fk.column.table.name == table.name for fk in other.foreign_keys)
        }
    for name in sorted(names):
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext(%(t)s))", {"t": f"healthetl-table:{name}"}
        )


def is_referenced(table: sa.Table) -> bool:
    return any(
        fk.column.table.name == table.name
        for other in table.metadata.tables.values()
        if other is not table
        for fk in other.foreign_keys
    )
