"""Analytics tables: the partitions a run touches are rebuilt in the load's transaction, so the
aggregates and the rows they summarise commit together."""

from __future__ import annotations

import sqlalchemy as sa

from healthetl.datasets.spec import Analytic, Dataset


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def touched_partitions(
    conn: sa.Connection, dataset: Dataset, incoming: str | None, run_id: str
) -> dict[str, str]:
    """Temporary tables of the partition values a run touches, per analytics partition column:
    the values of the incoming rows and, for keys that exist already, their current values
    (a late update that moves a visit to another day touches both days). Call before the
    incoming rows are merged."""
    table = _q(conn, dataset.table)
    source = incoming or f"(SELECT * FROM {table} WHERE run_id = '{run_id}')"
    key_match = " AND ".join(f"t.{_q(conn, k)} = i.{_q(conn, k)}" for k in dataset.primary_key)
    postgres = conn.dialect.name == "postgresql"
    out: dict[str, str] = {}
    for column in dict.fromkeys(a.partition for a in dataset.analytics):
        name = f"_healthetl_touched_{column}"
        col = _q(conn, column)
        select = f"SELECT {col} AS p FROM {source} i"
        if incoming is not None and dataset.primary_key:
            select += f" UNION SELECT t.{col} FROM {table} t JOIN {incoming} i ON {key_match}"
        if postgres:
            conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select}")
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
            conn.exec_driver_sql(f"CREATE TEMP TABLE {name} AS {select}")
        out[column] = name
    return out


def refresh_analytics(
    conn: sa.Connection, dataset: Dataset, touched: dict[str, str] | None
) -> dict[str, int]:
    """Rebuild the touched partitions of every analytics table (all of it when ``touched`` is
    None), in declaration order. Returns rows written per table."""
    written: dict[str, int] = {}
    for a in dataset.analytics:
        written[a.table] = _refresh(conn, a, None if touched is None else touched[a.partition])
    if touched is not None:
        prefix = "" if conn.dialect.name == "postgresql" else "temp."
        for name in touched.values():
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {prefix}{name}")
    return written


def _refresh(conn: sa.Connection, a: Analytic, touched: str | None) -> int:
    target = _q(conn, a.table)
    part = _q(conn, a.partition)
    cols = ", ".join(_q(conn, c.name) for c in a.columns)
    if touched is None:
        conn.exec_driver_sql(f"DELETE FROM {target}")
        where = ""
    else:
        conn.exec_driver_sql(f"DELETE FROM {target} WHERE {part} IN (SELECT p FROM {touched})")
        where = f"WHERE {part} IN (SELECT p FROM {touched})"
    result = conn.exec_driver_sql(f"INSERT INTO {target} ({cols}) {a.select.format(where=where)}")
    return int(result.rowcount or 0)
