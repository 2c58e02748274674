"""Bulk writes inside the caller's transaction.

PostgreSQL: ``COPY ... FROM STDIN`` (psycopg 3), rows serialised to CSV by pyarrow. SQLite has
no COPY: a chunk's rows go as one JSON array (written by Arrow's string kernels,
:mod:`healthetl.jsontext`) into one ``INSERT ... SELECT ... FROM json_each(?)``, so SQLite parses
and inserts them in C, instead of Python binding each row's parameters (``executemany``). Either
way a background thread serialises and runs the writes, in code that releases the GIL, so the
database ingests one chunk while the next is read and validated, on the second core.
``replace`` truncates and, for the duration of the load, drops the table's own primary and
foreign keys and adds them back (the PostgreSQL manual's advice for bulk loads: one index
build and one set-based check instead of work per row); the re-added constraints check every
row, and all of it is one transaction. ``merge`` copies into a temporary staging table and
upserts from it with ``INSERT ... ON CONFLICT DO UPDATE``.
Nothing here commits: the caller's transaction decides whether any of it happened.
"""

from __future__ import annotations

import io
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from healthetl import cleaning
from healthetl.db.engine import is_postgres
from healthetl.db.locks import is_referenced
from healthetl.failures import FAILURE_COLUMNS, FailureSpool
from healthetl.jsontext import json_rows

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def quote_name(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def text_table(frame: pd.DataFrame, columns: Sequence[str], constants: dict[str, str]) -> pa.Table:
    """Frame columns (text) plus constant columns, as an Arrow table (immutable: another thread
    may serialise it while the frame's owner goes on)."""
    n = len(frame)
    arrays = []
    for c in columns:
        if c in constants:
            arrays.append(pa.array([constants[c]] * n, type=pa.string()))
        else:
            arrays.append(cleaning.as_arrow(frame[c]))  # anything not text as its text, as COPY reads it
    return pa.Table.from_arrays(arrays, names=list(columns))


def csv_bytes(table: pa.Table) -> bytes:
    """An Arrow table as CSV for ``COPY``, NULL as an unquoted empty field."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, _CSV_OPTIONS)
    return buf.getvalue()


def to_csv_bytes(frame: pd.DataFrame, columns: Sequence[str], constants: dict[str, str]) -> bytes:
    """Frame columns (text) plus constant columns as CSV, NULL as an unquoted empty field."""
    return csv_bytes(text_table(frame, columns, constants))


#: rows per JSON array of a SQLite insert (bounds the text held at once)
_JSON_ROWS = 50_000
#: ``value ->> i`` needs SQLite 3.38; ``json_extract`` is the older spelling of the same
_PICK = "value ->> {i}" if sqlite3.sqlite_version_info >= (3, 38) else "json_extract(value, '$[{i}]')"


def json_insert(target: str, columns: Sequence[str], constants: Sequence[str], tail: str = "") -> str:
    """SQLite's bulk insert: the rows of one JSON array parameter (each an array of the
    ``columns``' values in order), then one parameter per constant column. ``target`` and the
    names are quoted by the caller; ``tail``: an ``ON CONFLICT`` clause."""
    picks = [_PICK.format(i=i) for i in range(len(columns))] + ["?" for _ in constants]
    return (
        f"INSERT INTO {target} ({', '.join([*columns, *constants])}) "
        f"SELECT {', '.join(picks)} FROM json_each(?) WHERE true {tail}"
    ).rstrip()


def json_batches(rows: pa.Table) -> Iterator[str]:
    """The table's rows as JSON arrays (null for a missing value), a slice at a time."""
    for start in range(0, rows.num_rows, _JSON_ROWS):
        yield json_rows(rows.slice(start, _JSON_ROWS))


def insert_frame(
    conn: sa.Connection, table: str, frame: pd.DataFrame, columns: Sequence[str], constants: dict[str, str]
) -> None:
    """Insert text rows now, in the caller's transaction: COPY on PostgreSQL, a JSON batch on
    SQLite. ``constants`` fill columns that are the same on every row (run id, ...)."""
    if frame.empty:
        return
    quote = conn.dialect.identifier_preparer.quote
    names = [*columns, *constants]
    cols = ", ".join(quote(c) for c in names)
    if is_postgres(conn):
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur, cur.copy(f"COPY {quote(table)} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(to_csv_bytes(frame, names, constants))
        return
    _insert_rows(conn, table, frame, columns, constants)


def _insert_rows(
    conn: sa.Connection,
    table: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    constants: dict[str, str],
    conflict: str = "",
) -> None:
    """Rows into a SQLite table by JSON batches, nulls as NULL, then ``conflict``."""
    quote = conn.dialect.identifier_preparer.quote
    statement = json_insert(
        quote(table), [quote(c) for c in columns], [quote(c) for c in constants], conflict
    )
    raw = conn.connection.driver_connection
    assert raw is not None
    insert_json(raw, statement, tuple(constants.values()), text_table(frame, columns, {}))


def insert_json(raw: Any, statement: str, constants: tuple[str, ...], rows: pa.Table) -> None:
    """Run SQLite's bulk insert (:func:`json_insert`) of a table on a driver connection, a JSON
    batch at a time (the constants' values first)."""
    for batch in json_batches(rows):
        raw.execute(statement, (*constants, batch))


def upsert_frame(
    conn: sa.Connection,
    table: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    constants: dict[str, str],
    key: Sequence[str],
) -> None:
    """Insert text rows now, updating the row of a key already there: on PostgreSQL COPY into a
    temporary table and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; on SQLite
    JSON batches with ``ON CONFLICT``."""
    if frame.empty:
        return
    quote = conn.dialect.identifier_preparer.quote
    names = [*columns, *constants]
    cols = ", ".join(quote(c) for c in names)
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in names if c not in key)
    conflict = f"ON CONFLICT ({', '.join(quote(k) for k in key)}) " + (
        f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    )
    if is_postgres(conn):
        stage = quote(f"_upsert_{table}")
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {quote(table)} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        conn.exec_driver_sql(f"TRUNCATE {stage}")
        insert_frame(conn, f"_upsert_{table}", frame, columns, constants)
        conn.exec_driver_sql(f"INSERT INTO {quote(table)} ({cols}) SELECT {cols} FROM {stage} {conflict}")
        return
    _insert_rows(conn, table, frame, columns, constants, conflict)


class _WriteThread:
    """Runs a load's writes on its connection, in order, off the validating thread: COPY
    statements serialising their own Arrow tables (PostgreSQL), JSON-batch inserts (SQLite).
    At most two writes wait, so memory stays bounded when the database is the slower side."""

    def __init__(self, raw_conn: Any) -> None:
        self._raw = raw_conn
        self._queue: queue.Queue[Callable[[Any], None] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="healthetl-write", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the load has already failed
            try:
                job(self._raw)
            except BaseException as exc:  # re-raised on the loading thread
                self._error = exc

    def submit(self, job: Callable[[Any], None]) -> None:
        self._raise()
        self._queue.put(job)

    def copy(self, statement: str, rows: pa.Table) -> None:
        """``COPY ... FROM STDIN (FORMAT csv)`` of a table, serialised to CSV here (Arrow's
        writer releases the GIL)."""

        def job(raw: Any) -> None:
            with raw.cursor() as cur, cur.copy(statement) as copy:
                copy.write(csv_bytes(rows))

        self.submit(job)

    def insert(self, statement: str, constants: tuple[str, ...], rows: pa.Table) -> None:
        """SQLite's bulk insert (:func:`json_insert`) of a table, its JSON made here (Arrow's
        kernels release the GIL)."""

        self.submit(lambda raw: insert_json(raw, statement, constants, rows))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


STAGE = "_healthetl_stage"
DEDUP = "_healthetl_dedup"


class TableWriter:
    """Writes validated chunks (and their quarantine records) of one dataset's table.

    Lifecycle: ``prepare()``, ``write()`` per chunk, ``flush()`` (every row is in the
    database), ``merge()`` (staged rows into the table), ``finish()`` (constraints back).
    Rows are staged in a temporary table when the mode needs it: ``merge`` on PostgreSQL,
    and any dataset whose duplicates are resolved by an order (``dedupe_order``).
    """

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
        dedupe_order: Sequence[str] = (),
        spool: FailureSpool | None = None,
    ) -> None:
        self.conn = conn
        self.spool = spool
        self.table = table
        self.columns = [*columns, "run_id"]
        self.mode = mode
        self.run_id = run_id
        self.dataset = dataset
        self.key = list(key)
        self.dedupe_order = list(dedupe_order)
        self.postgres = is_postgres(conn)
        self.rows = 0  # rows written (staged or direct)
        self.loaded = 0  # rows that reached the table after deduplication
        self.duplicates = 0
        #: what the merge did: new keys, changed rows, rows identical to (or older than) the table's
        self.inserted = 0
        self.updated = 0
        self.unchanged = 0
        self.staged = bool(self.dedupe_order) or mode == "merge"
        self._name = quote_name(conn, table.name)
        self._target = STAGE if self.staged else self._name
        self._dropped_fks: list[tuple[str, str]] = []
        self._copier: _WriteThread | None = None

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        q = self._name
        if self.mode == "replace":
            if self.postgres and not is_referenced(self.table):
                self.conn.exec_driver_sql(f"TRUNCATE TABLE {q}")
                if not self.staged:
                    self._drop_foreign_keys()
            else:  # rows others reference are re-checked at commit (deferred foreign keys)
                self.conn.exec_driver_sql(f"DELETE FROM {q}")
        if self.staged:
            self._temp_like(STAGE, q)
        self._copier = _WriteThread(self.conn.connection.driver_connection)

    def write(self, frame: pd.DataFrame, failures: pd.DataFrame | None = None) -> None:
        if not frame.empty:
            self.append(self._target, frame, self.columns[:-1], {"run_id": self.run_id})
            self.rows += len(frame)
        if failures is not None and not failures.empty:
            self._quarantine(failures)

    def append(
        self, target: str, frame: pd.DataFrame, columns: Sequence[str], constants: dict[str, str]
    ) -> None:
        """Text rows into ``target`` (quoted by the caller) on the write thread, in order with
        this load's other writes: COPY on PostgreSQL, JSON batches on SQLite."""
        if self._copier is None:
            raise RuntimeError("the writer is not prepared")
        names = [quote_name(self.conn, c) for c in columns]
        consts = [quote_name(self.conn, c) for c in constants]
        if self.postgres:
            rows = text_table(frame, [*columns, *constants], constants)
            self._copier.copy(f"COPY {target} ({', '.join([*names, *consts])}) FROM STDIN (FORMAT csv)", rows)
            return
        rows = text_table(frame, columns, {})
        self._copier.insert(json_insert(target, names, consts), tuple(constants.values()), rows)

    def insert_from(self, relation: str, order: Sequence[str] = ()) -> None:
        """Rows already in the database (a distributed run's staging table, holding this
        table's columns) into the table or its stage, in order with this load's other writes;
        ``order``: the columns that give the rows' order in the files."""
        if self._copier is None:
            raise RuntimeError("the writer is not prepared")
        cols = ", ".join(quote_name(self.conn, c) for c in self.columns)
        statement = (
            f"INSERT INTO {self._target} ({cols}) SELECT {cols} FROM {quote_name(self.conn, relation)}"
        )
        if order:
            statement += " ORDER BY " + ", ".join(quote_name(self.conn, c) for c in order)

        def job(raw: Any) -> None:
            self.rows += raw.execute(statement).rowcount

        self._copier.submit(job)

    def flush(self) -> None:
        """Wait until every written row is in the database (stage or table)."""
        if self._copier is not None:
            copier, self._copier = self._copier, None
            copier.close()
        if self.staged and self.dedupe_order:
            self._dedupe()

    @property
    def incoming(self) -> str | None:
        """The relation holding this run's rows before they are merged, if staged."""
        if not self.staged:
            return None
        return DEDUP if self.dedupe_order else STAGE

    def merge(self) -> None:
        """Move staged rows into the table (upsert on the key; newer versions win)."""
        if not self.staged:
            self.loaded = self.inserted = self.rows
            return
        cols = ", ".join(quote_name(self.conn, c) for c in self.columns)
        source = DEDUP if self.dedupe_order else STAGE
        self.loaded = int(self.conn.exec_driver_sql(f"SELECT COUNT(*) FROM {source}").scalar_one())
        if self.loaded:
            self._count_changes(source)
            self.conn.exec_driver_sql(
                f"INSERT INTO {self._name} ({cols}) SELECT {cols} FROM {source} WHERE true "
                f"{self._on_conflict()}"
            )

    def _count_changes(self, source: str) -> None:
        """Classify incoming rows before the upsert: new key, changed (and applied), unchanged
        (one pass over the join)."""
        q = self.conn.dialect.identifier_preparer.quote
        match = " AND ".join(f"t.{q(k)} = i.{q(k)}" for k in self.key)
        applies = " AND ".join(f"i.{q(c)} >= t.{q(c)}" for c in self.dedupe_order) or "1 = 1"
        existing, updated = self.conn.exec_driver_sql(
            f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN ({self._differs('i', 't')}) AND ({applies}) "
            f"THEN 1 ELSE 0 END), 0) FROM {source} i JOIN {self._name} t ON {match}"
        ).one()
        self.updated = int(updated)
        self.inserted = self.loaded - int(existing)
        self.unchanged = int(existing) - self.updated

    def _differs(self, new: str, old: str) -> str:
        """SQL that is true when row ``new`` holds other data than row ``old`` (two nulls are the
        same; the run id is not data)."""
        q = self.conn.dialect.identifier_preparer.quote
        distinct = "IS DISTINCT FROM" if self.postgres else "IS NOT"
        data = [c for c in self.columns if c not in self.key and c != "run_id"]
        return " OR ".join(f"{new}.{q(c)} {distinct} {old}.{q(c)}" for c in data) or "1 = 0"

    def finish(self) -> None:
        self._restore_foreign_keys()
        if self.staged:  # the next dataset of the same batch stages under the same names
            for name in (STAGE, DEDUP):
                self.conn.exec_driver_sql(
                    f"DROP TABLE IF EXISTS {name}" if self.postgres else f"DROP TABLE IF EXISTS temp.{name}"
                )

    def abort(self) -> None:
        """Stop the copy thread after a failure (the transaction is rolled back by the caller)."""
        if self._copier is not None:
            copier, self._copier = self._copier, None
            try:
                copier.close()
            except BaseException:
                pass

    # ------------------------------------------------------------------ helpers
    def _temp_like(self, name: str, table: str) -> None:
        if self.postgres:
            self.conn.exec_driver_sql(
                f"CREATE TEMP TABLE {name} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            for column in self.table.columns:  # e.g. a generated id: the table fills it, not us
                if column.name not in self.columns:
                    self.conn.exec_driver_sql(
                        f"ALTER TABLE {name} ALTER COLUMN {quote_name(self.conn, column.name)} DROP NOT NULL"
                    )
        else:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {name} AS SELECT * FROM main.{table} WHERE 0")

    def _dedupe(self) -> None:
        """Keep one row per key, the one with the greatest ``dedupe_order`` values."""
        cols = ", ".join(quote_name(self.conn, c) for c in self.columns)
        keys = ", ".join(quote_name(self.conn, k) for k in self.key)
        order = ", ".join(f"{quote_name(self.conn, c)} DESC" for c in self.dedupe_order)
        # a tie: the row staged last (the later one in the files) wins, the same every time
        order += ", ctid DESC" if self.postgres else ", rowid DESC"
        ranked = (
            f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {keys} "
            f"ORDER BY {order}) AS _healthetl_rank FROM {STAGE}) ranked WHERE _healthetl_rank = 1"
        )
        if self.postgres:
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {DEDUP} ON COMMIT DROP AS {ranked}")
        else:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{DEDUP}")
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {DEDUP} AS {ranked}")
        kept = int(self.conn.exec_driver_sql(f"SELECT COUNT(*) FROM {DEDUP}").scalar_one())
        self.duplicates = self.rows - kept

    def _drop_foreign_keys(self) -> None:
        # foreign keys and the primary key of this (empty, exclusively locked) table; the
        # primary key is rebuilt by one sort instead of one btree insertion per row
        rows = self.conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %(t)s::regclass AND contype IN ('f', 'p') "
            "ORDER BY contype = 'f', conname",
            {"t": self._name},
        ).all()
        for name, definition in rows:
            self.conn.exec_driver_sql(
                f"ALTER TABLE {self._name} DROP CONSTRAINT {quote_name(self.conn, name)}"
            )
            self._dropped_fks.append((name, definition))

    def _restore_foreign_keys(self) -> None:
        for name, definition in self._dropped_fks:
            self.conn.exec_driver_sql(
                f"ALTER TABLE {self._name} ADD CONSTRAINT {quote_name(self.conn, name)} {definition}"
            )
        self._dropped_fks = []

    def _on_conflict(self) -> str:
        keys = ", ".join(quote_name(self.conn, k) for k in self.key)
        updates = ", ".join(
            f"{quote_name(self.conn, c)} = excluded.{quote_name(self.conn, c)}"
            for c in self.columns
            if c not in self.key
        )
        # a row whose data is as stored is not rewritten (no new row version, no index churn: most
        # rows of a daily full extract are unchanged); it keeps the run id of the run that changed it
        clause = (
            f"ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE ({self._differs('excluded', self._name)})"
        )
        if self.dedupe_order:  # an older version never overwrites a newer one
            newer = " AND ".join(
                f"excluded.{quote_name(self.conn, c)} >= {self._name}.{quote_name(self.conn, c)}"
                for c in self.dedupe_order
            )
            clause += f" AND {newer}"
        return clause

    def _quarantine(self, failures: pd.DataFrame) -> None:
        if self.spool is not None:
            self.spool.add(self.dataset, failures)
        frame = failures.assign(source_row=failures["source_row"].astype("int64").astype("str"))
        self.append("quarantine", frame, FAILURE_COLUMNS, {"run_id": self.run_id, "dataset": self.dataset})


def write_quarantine(
    conn: sa.Connection,
    failures: pd.DataFrame,
    *,
    run_id: str,
    dataset: str,
    spool: FailureSpool | None = None,
) -> None:
    """Failure records into the quarantine table now, in the caller's transaction."""
    if failures.empty:
        return
    if spool is not None:
        spool.add(dataset, failures)
    frame = failures.assign(source_row=failures["source_row"].astype("int64").astype("str"))
    insert_frame(conn, "quarantine", frame, FAILURE_COLUMNS, {"run_id": run_id, "dataset": dataset})


def known_keys(conn: sa.Connection, table: sa.Table, column: str) -> pd.Index:
    """The values of a referenced column, as the canonical text validation compares with."""
    rows = conn.execute(sa.select(table.c[column]).distinct()).scalars().all()
    return pd.Index([str(v) for v in rows], dtype="str")


__all__: list[str] = ["TableWriter", "known_keys", "write_quarantine", "to_csv_bytes", "text_table"]
