"""Bulk writes inside the caller's transaction.

PostgreSQL: ``COPY ... FROM STDIN`` (psycopg 3), rows serialised to CSV by pyarrow, written by
a background thread so the database ingests one chunk while the next is being validated.
``replace`` truncates and, for the duration of the load, drops the table's own primary and
foreign keys and adds them back (the PostgreSQL manual's advice for bulk loads: one index
build and one set-based check instead of work per row); the re-added constraints check every
row, and all of it is one transaction. ``merge`` copies into a temporary staging table and
upserts from it with ``INSERT ... ON CONFLICT DO UPDATE``. SQLite: one ``executemany`` per chunk.
Nothing here commits: the caller's transaction decides whether any of it happened.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from healthetl.db.engine import is_postgres
from healthetl.db.schema import quarantine

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")
QUARANTINE_COLUMNS = [
    "run_id",
    "dataset",
    "source_file",
    "source_row",
    "column_name",
    "rule",
    "severity",
    "reason",
    "original",
]


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def is_referenced(table: sa.Table) -> bool:
    return any(
        fk.column.table.name == table.name
        for other in table.metadata.tables.values()
        if other is not table
        for fk in other.foreign_keys
    )


def to_csv_bytes(frame: pd.DataFrame, columns: Sequence[str], constants: dict[str, str]) -> bytes:
    """Frame columns (text) plus constant columns as CSV, NULL as an unquoted empty field."""
    n = len(frame)
    arrays = []
    names = []
    for c in columns:
        if c in constants:
            arrays.append(pa.array([constants[c]] * n, type=pa.string()))
        else:
            arrays.append(pa.array(frame[c], type=pa.string(), from_pandas=True))
        names.append(c)
    buf = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(arrays, names=names), buf, _CSV_OPTIONS)
    return buf.getvalue()


class _CopyThread:
    """Runs the COPY statements on the connection, in order, off the validating thread."""

    def __init__(self, raw_conn: Any) -> None:
        self._raw = raw_conn
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="healthetl-copy", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the load has already failed
            statement, data = item
            try:
                with self._raw.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(data)
            except BaseException as exc:  # re-raised on the loading thread
                self._error = exc

    def submit(self, statement: str, data: bytes) -> None:
        self._raise()
        self._queue.put((statement, data))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class TableWriter:
    """Writes validated chunks (and their quarantine records) of one dataset's table."""

    def __init__(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        *,
        mode: str,
        run_id: str,
        dataset: str,
        key: Sequence[str],
    ) -> None:
        self.conn = conn
        self.table = table
        self.columns = [*columns, "run_id"]
        self.mode = mode
        self.run_id = run_id
        self.dataset = dataset
        self.key = list(key)
        self.postgres = is_postgres(conn)
        self.rows = 0
        self._target = _quote(conn, table.name)
        self._dropped_fks: list[tuple[str, str]] = []
        self._copier: _CopyThread | None = None

    def prepare(self) -> None:
        q = _quote(self.conn, self.table.name)
        if self.mode == "replace":
            if self.postgres and not is_referenced(self.table):
                self.conn.exec_driver_sql(f"TRUNCATE TABLE {q}")
                self._drop_foreign_keys()
            else:  # rows others reference are re-checked at commit (deferred foreign keys)
                self.conn.exec_driver_sql(f"DELETE FROM {q}")
        if self.mode == "merge" and self.postgres:
            self._target = "_healthetl_stage"
            self.conn.exec_driver_sql(
                f"CREATE TEMP TABLE {self._target} (LIKE {q} INCLUDING DEFAULTS) ON COMMIT DROP"
            )
        if self.postgres:
            self._copier = _CopyThread(self.conn.connection.driver_connection)

    def write(self, frame: pd.DataFrame, failures: pd.DataFrame | None = None) -> None:
        if not frame.empty:
            if self._copier is not None:
                cols = ", ".join(_quote(self.conn, c) for c in self.columns)
                data = to_csv_bytes(frame, self.columns, {"run_id": self.run_id})
                self._copier.submit(f"COPY {self._target} ({cols}) FROM STDIN (FORMAT csv)", data)
            else:
                self._executemany(frame)
            self.rows += len(frame)
        if failures is not None and not failures.empty:
            self._quarantine(failures)

    def finish(self) -> None:
        if self._copier is not None:
            copier, self._copier = self._copier, None
            copier.close()
        if self.mode == "merge" and self.postgres and self.rows:
            cols = ", ".join(_quote(self.conn, c) for c in self.columns)
            self.conn.exec_driver_sql(
                f"INSERT INTO {_quote(self.conn, self.table.name)} ({cols}) "
                f"SELECT {cols} FROM {self._target} {self._on_conflict()}"
            )
        self._restore_foreign_keys()

    def abort(self) -> None:
        """Stop the copy thread after a failure (the transaction is rolled back by the caller)."""
        if self._copier is not None:
            copier, self._copier = self._copier, None
            try:
                copier.close()
            except BaseException:
                pass

    def _drop_foreign_keys(self) -> None:
        # foreign keys and the primary key of this (empty, exclusively locked) table; the
        # primary key is rebuilt by one sort instead of one btree insertion per row
        rows = self.conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %(t)s::regclass AND contype IN ('f', 'p') "
            "ORDER BY contype = 'f', conname",
            {"t": self._target},
        ).all()
        for name, definition in rows:
            self.conn.exec_driver_sql(f"ALTER TABLE {self._target} DROP CONSTRAINT {_quote(self.conn, name)}")
            self._dropped_fks.append((name, definition))

    def _restore_foreign_keys(self) -> None:
        for name, definition in self._dropped_fks:
            self.conn.exec_driver_sql(
                f"ALTER TABLE {_quote(self.conn, self.table.name)} "
                f"ADD CONSTRAINT {_quote(self.conn, name)} {definition}"
            )
        self._dropped_fks = []

    def _on_conflict(self) -> str:
        keys = ", ".join(_quote(self.conn, k) for k in self.key)
        updates = ", ".join(
            f"{_quote(self.conn, c)} = EXCLUDED.{_quote(self.conn, c)}"
            for c in self.columns
            if c not in self.key
        )
        return f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"

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

    def _quarantine(self, failures: pd.DataFrame) -> None:
        frame = failures.assign(
            source_row=failures["source_row"].astype("int64").astype("str"),
        )
        if self._copier is not None:
            cols = ", ".join(QUARANTINE_COLUMNS)
            data = to_csv_bytes(frame, QUARANTINE_COLUMNS, {"run_id": self.run_id, "dataset": self.dataset})
            self._copier.submit(f"COPY quarantine ({cols}) FROM STDIN (FORMAT csv)", data)
            return
        write_quarantine(self.conn, failures, run_id=self.run_id, dataset=self.dataset)


def write_quarantine(conn: sa.Connection, failures: pd.DataFrame, *, run_id: str, dataset: str) -> None:
    if failures.empty:
        return
    records: list[dict[str, Any]] = failures.astype(object).where(failures.notna(), None).to_dict("records")
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


__all__: list[str] = ["TableWriter", "known_keys", "write_quarantine", "to_csv_bytes"]
