"""Bulk writes inside the caller's transaction.

PostgreSQL: ``COPY ... FROM STDIN`` (psycopg 3), one COPY per chunk, rows serialised to CSV by
pyarrow. ``merge`` copies into a temporary staging table and upserts from it with
``INSERT ... ON CONFLICT DO UPDATE``. SQLite: one ``executemany`` per chunk.
Nothing here commits: the caller's transaction decides whether any of it happened.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from healthetl.db.engine import is_postgres
from healthetl.db.schema import quarantine

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def is_referenced(conn: sa.Connection, table: sa.Table) -> bool:
    return any(
        fk.column.table.name == table.name
        for other in table.metadata.tables.values()
        if other is not table
        for fk in other.foreign_keys
    )


class TableWriter:
    """Writes validated chunks of one dataset's table with a load mode."""

    def __init__(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        *,
        mode: str,
        run_id: str,
        key: Sequence[str],
    ) -> None:
        self.conn = conn
        self.table = table
        self.columns = [*columns, "run_id"]
        self.mode = mode
        self.run_id = run_id
        self.key = list(key)
        self.postgres = is_postgres(conn)
        self.rows = 0
        self._target = table.name

    def prepare(self) -> None:
        q = _quote(self.conn, self.table.name)
        if self.mode == "replace":
            if self.postgres and not is_referenced(self.conn, self.table):
                self.conn.exec_driver_sql(f"TRUNCATE TABLE {q}")
            else:  # referenced rows are re-checked at commit (deferred foreign keys)
                self.conn.exec_driver_sql(f"DELETE FROM {q}")
        if self.mode == "merge" and self.postgres:
            self._target = "_healthetl_stage"
            self.conn.exec_driver_sql(
                f"CREATE TEMP TABLE {self._target} (LIKE {q} INCLUDING DEFAULTS) ON COMMIT DROP"
            )

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        if self.postgres:
            self._copy(frame)
        else:
            self._executemany(frame)
        self.rows += len(frame)

    def finish(self) -> None:
        if self.mode == "merge" and self.postgres and self.rows:
            cols = ", ".join(_quote(self.conn, c) for c in self.columns)
            self.conn.exec_driver_sql(
                f"INSERT INTO {_quote(self.conn, self.table.name)} ({cols}) "
                f"SELECT {cols} FROM {self._target} {self._on_conflict()}"
            )

    def _on_conflict(self) -> str:
        keys = ", ".join(_quote(self.conn, k) for k in self.key)
        updates = ", ".join(
            f"{_quote(self.conn, c)} = EXCLUDED.{_quote(self.conn, c)}"
            for c in self.columns
            if c not in self.key
        )
        return f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"

    def _copy(self, frame: pd.DataFrame) -> None:
        arrays = [pa.array(frame[c], type=pa.string(), from_pandas=True) for c in self.columns[:-1]]
        arrays.append(pa.array([self.run_id] * len(frame), type=pa.string()))
        buf = io.BytesIO()
        pacsv.write_csv(pa.Table.from_arrays(arrays, names=self.columns), buf, _CSV_OPTIONS)
        cols = ", ".join(_quote(self.conn, c) for c in self.columns)
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(f"COPY {self._target} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buf.getbuffer())

    def _executemany(self, frame: pd.DataFrame) -> None:
        cols = ", ".join(_quote(self.conn, c) for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        sql = f"INSERT INTO {_quote(self.conn, self.table.name)} ({cols}) VALUES ({marks})"
        if self.mode == "merge" and self.key:
            sql += " " + self._on_conflict().replace("EXCLUDED.", "excluded.")
        data = frame[self.columns[:-1]].astype(object)
        data = data.where(data.notna(), None)
        data["run_id"] = self.run_id
        self.conn.exec_driver_sql(sql, list(data.itertuples(index=False, name=None)))


def write_quarantine(
    conn: sa.Connection, failures: pd.DataFrame, *, run_id: str, dataset: str
) -> None:
    if failures.empty:
        return
    records: list[dict[str, Any]] = (
        failures.astype(object).where(failures.notna(), None).to_dict("records")
    )
    for rec in records:
        rec["run_id"] = run_id
        rec["dataset"] = dataset
        if rec.get("source_row") is not None:
            rec["source_row"] = int(rec["source_row"])
    conn.execute(quarantine.insert(), records)


def known_keys(conn: sa.Connection, table: sa.Table, column: str) -> pd.Index:
    """The values of a referenced column, as the canonical text validation compares with."""
    rows = conn.execute(sa.select(table.c[column]).distinct()).scalars().all()
    return pd.Index([str(v) for v in rows], dtype="str")
