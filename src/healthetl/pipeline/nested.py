"""Loading nested JSON records into a parent table and its child tables.

Every record read is counted once: loaded (its parent row and child rows committed),
quarantined (invalid JSON, or any row of it failed an error-severity check; its children go
with it), or a dropped duplicate of (snapshot, key) (the first occurrence in the run wins).
A dataset of snapshots (facilities) has a load replace exactly the snapshots it contains; one
without (FHIR resources) has its records upserted on the key, each record's child rows
replaced by the ones it carries now. All in one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from healthetl import interrupts
from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.keys import KeyTracker
from healthetl.datasets.nesting import (
    RECORD,
    all_children,
    child_dataset,
    flatten,
    looked_up,
    snapshot_from_path,
)
from healthetl.datasets.paths import getter
from healthetl.datasets.spec import Dataset
from healthetl.db import bulk
from healthetl.errors import UsageError
from healthetl.failures import FAILURE_COLUMNS, FailureSpool
from healthetl.pipeline.references import lookup_tables, reference_keys
from healthetl.pipeline.validator import Validator
from healthetl.results import Drift, Progress, ValidationSummary
from healthetl.sources.base import RecordSource
from healthetl.sources.json_records import Record
from healthetl.sources.storage import file_name

BATCH = 5_000


@dataclass
class NestedCounts:
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    duplicates_dropped: int = 0
    child_rows: dict[str, int] = field(default_factory=dict)
    snapshots: set[str] = field(default_factory=set)
    duplicates: list[str] = field(default_factory=list)
    #: (table, column) -> rows with a value; table -> rows (to find paths that matched nothing)
    filled: Counter[tuple[str, str]] = field(default_factory=Counter)
    table_rows: Counter[str] = field(default_factory=Counter)


def records(sources: list[RecordSource], options: PipelineOptions) -> Iterator[tuple[Record, str | None]]:
    """Every record with its snapshot date: the record's own field, else a YYYY-MM-DD in its
    file or folder name, else the pipeline's ``snapshot_date``."""
    for source in sources:
        for rec in source.records():
            snap = None
            if rec.value is not None and rec.value.get("snapshot_date"):
                snap = str(rec.value["snapshot_date"])
            snap = snap or snapshot_from_path(rec.path) or options.snapshot_date
            yield rec, snap


def load_nested(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    sources: list[RecordSource],
    options: PipelineOptions,
    run_id: str,
    progress: Progress,
    pipeline: str,
    spool: FailureSpool | None = None,
) -> tuple[NestedCounts, ValidationSummary]:
    counts = NestedCounts()
    known, lookups = reference_keys(conn, dataset, catalog), lookup_tables(conn, dataset, catalog)
    validator = Validator(dataset, options, known, lookups=lookups)
    summary = validator.summary
    children = [
        (c, a, Validator(child_dataset(dataset, c, a), options)) for c, a in all_children(dataset.nested)
    ]
    # (snapshot, key) of the records loaded so far: compact, and spilled to disk past a bound
    seen = KeyTracker()
    snapshots = dataset.nested.snapshot_column is not None
    #: a record's identity: every key column but the snapshot date (which is the snapshot itself)
    key_reads = [
        getter(dataset.nested.paths.get(k, k))
        for k in dataset.primary_key
        if k != dataset.nested.snapshot_column
    ]
    batch: list[tuple[str, int, dict[str, Any], str]] = []
    idents: list[str | None] = []  # per record of the batch: its (snapshot, key), None if incomplete
    bad: list[dict[str, Any]] = []

    def flush() -> None:
        interrupts.check()  # a signal whose interrupt was lost stops the run here
        if not batch and not bad:
            return
        if batch:
            fresh = _drop_duplicates(batch, idents, seen, counts)
            if fresh:
                _load_batch(
                    conn, dataset, catalog, fresh, validator, children, run_id, counts, summary, spool
                )
            batch.clear()
            idents.clear()
        if bad:
            failures = pd.DataFrame(bad, columns=FAILURE_COLUMNS)
            bulk.write_quarantine(conn, failures, run_id=run_id, dataset=dataset.name, spool=spool)
            summary.add_failures(failures)
            bad.clear()
        progress("batch", {"pipeline": pipeline, "rows": counts.rows_in})

    try:
        for rec, snapshot in records(sources, options):
            counts.rows_in += 1
            if rec.value is None:
                bad.append(_failure(rec, "json", rec.error or "unreadable record"))
                counts.rows_quarantined += 1
                continue
            snapshot = _snapshot_of(rec, snapshot) if snapshots else ""
            values = [read(rec.value) for read in key_reads]
            if snapshots and snapshot not in counts.snapshots:
                flush()
                _clear_snapshot(conn, dataset, catalog, snapshot)
                counts.snapshots.add(snapshot)
            batch.append((rec.source_file, rec.source_row, rec.value, snapshot))
            idents.append(None if None in values else "\x1f".join([snapshot, *map(str, values)]))
            if len(batch) >= BATCH:
                flush()
        flush()
    finally:
        seen.close()  # its scratch file, if the run spilled, goes whatever happened
    empty = _empty_paths(dataset, counts)
    if empty:
        files = ", ".join(sorted({file_name(s.label) for s in sources}))
        validator.report_drift([Drift("empty_paths", files, tuple(empty))])
    return counts, summary


def _drop_duplicates(
    batch: list[tuple[str, int, dict[str, Any], str]],
    idents: list[str | None],
    seen: KeyTracker,
    counts: NestedCounts,
) -> list[tuple[str, int, dict[str, Any], str]]:
    """The batch's records whose (snapshot, key) the run has not loaded yet (the first occurrence
    wins, in this batch or an earlier one); the others are counted as dropped duplicates. A record
    missing part of its key is never a duplicate (validation rejects it)."""
    keys = pd.Series(idents, dtype="str")
    dup = (seen.duplicated(keys) & keys.notna()).to_numpy()
    seen.add(keys[~dup])
    if not dup.any():
        return list(batch)
    kept = []
    for record, duplicate in zip(batch, dup, strict=True):
        if duplicate:
            counts.duplicates_dropped += 1
            counts.duplicates.append(f"{record[0]}:{record[1]}")
        else:
            kept.append(record)
    return kept


def _snapshot_of(rec: Record, snapshot: str | None) -> str:
    if snapshot is None:
        raise UsageError(
            f"{rec.source_file}: no snapshot date (no snapshot_date field, no YYYY-MM-DD in "
            "the file or folder name)",
            hint="give --snapshot-date YYYY-MM-DD",
        )
    return snapshot


def _empty_paths(dataset: Dataset, counts: NestedCounts) -> list[str]:
    """Declared paths that gave no value in any record of the run (a typo such as
    ``serviceProvider.refrence``, or an array the records do not have)."""
    nested = dataset.nested
    assert nested is not None
    if not counts.table_rows[dataset.table]:
        return []
    out = []
    filled_otherwise = looked_up(dataset) | {nested.snapshot_column}
    for column in dataset.column_names:
        if column not in filled_otherwise and not counts.filled[(dataset.table, column)]:
            out.append(f"{column} ({nested.paths.get(column, column)})")
    for child, _ancestors in all_children(nested):
        if not counts.table_rows[child.table]:
            out.append(f"{child.table} ({child.path}[])")
            continue
        for col in child.columns:
            if not counts.filled[(child.table, col.name)]:
                out.append(f"{child.table}.{col.name} ({child.path}[].{child.paths.get(col.name, col.name)})")
    return out


def _failure(rec: Record, rule: str, reason: str) -> dict[str, Any]:
    return {
        "source_file": rec.source_file,
        "source_row": rec.source_row,
        "column_name": None,
        "rule": rule,
        "severity": "error",
        "reason": reason,
        "original": None,
    }


def _clear_snapshot(conn: sa.Connection, dataset: Dataset, catalog: Catalog, snapshot: str) -> None:
    """Delete one snapshot's rows, children first (a load replaces exactly its snapshots)."""
    column = dataset.nested.snapshot_column
    tables = [c.table for c, _ in all_children(dataset.nested)][::-1] + [dataset.table]
    for name in tables:
        table = catalog.metadata.tables[name]
        conn.execute(table.delete().where(table.c[column] == _date(snapshot)))


def _clear_children(conn: sa.Connection, dataset: Dataset, catalog: Catalog, keys: pd.DataFrame) -> None:
    """Delete the child rows of the records being upserted, deepest first (a record's children
    are the ones it carries now). Keys of several columns are matched as row values."""
    if keys.empty:
        return
    names = list(keys.columns)
    for child, _ancestors in reversed(all_children(dataset.nested)):
        table = catalog.metadata.tables[child.table]
        columns = [table.c[n] for n in names]
        rows = [
            tuple(_typed(v, c) for v, c in zip(row, columns, strict=True)) for row in keys.itertuples(False)
        ]
        target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
        step = 900 // len(columns)  # SQLite binds at most 999 values
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            conn.execute(
                table.delete().where(target.in_([r[0] for r in chunk] if len(columns) == 1 else chunk))
            )


def _typed(value: Any, column: sa.Column[Any]) -> Any:
    """A key's text as the column's Python type (PostgreSQL compares a bigint with an int)."""
    kind = column.type.python_type
    if value is None or isinstance(value, kind):
        return value
    if kind in (date, datetime):
        return kind.fromisoformat(str(value))
    return kind(value)


def _date(text: str) -> Any:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"snapshot date {text!r} is not YYYY-MM-DD") from None


def _load_batch(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    batch: list[tuple[str, int, dict[str, Any], str]],
    validator: Validator,
    children: list[Any],
    run_id: str,
    counts: NestedCounts,
    summary: ValidationSummary,
    spool: FailureSpool | None = None,
) -> None:
    parent, child_frames = flatten(dataset, batch)
    counts.table_rows[dataset.table] += len(parent)
    for column in dataset.column_names:
        counts.filled[(dataset.table, column)] += int(parent[column].notna().sum())
    for child, _ancestors in all_children(dataset.nested):
        frame = child_frames[child.table]
        counts.table_rows[child.table] += len(frame)
        for col in child.columns:
            counts.filled[(child.table, col.name)] += int(frame[col.name].notna().sum())
    result = validator.validate(parent.drop(columns=RECORD))
    failures = [result.failures]
    rejected = set(parent.loc[~parent.index.isin(result.clean.index), RECORD])
    child_clean: dict[str, pd.DataFrame] = {}
    for child, _ancestors, child_validator in children:
        frame = child_frames[child.table]
        if frame.empty:
            child_clean[child.table] = frame
            continue
        checked = child_validator.validate(frame.drop(columns=RECORD))
        if not checked.failures.empty:
            f = checked.failures.copy()
            f["column_name"] = child.path + "." + f["column_name"].astype("str")
            failures.append(f)
        rejected |= set(frame.loc[~frame.index.isin(checked.clean.index), RECORD])
        child_clean[child.table] = checked.clean.assign(**{RECORD: frame.loc[checked.clean.index, RECORD]})
    keep = ~parent[RECORD].isin(rejected)
    clean_parent = result.clean.loc[result.clean.index.isin(parent.index[keep])]
    all_failures = (
        pd.concat([f for f in failures if not f.empty], ignore_index=True)
        if any(not f.empty for f in failures)
        else pd.DataFrame(columns=FAILURE_COLUMNS)
    )
    counts.rows_quarantined += len(rejected)
    counts.rows_loaded += len(clean_parent)
    if dataset.nested.snapshot_column is None:  # upserted: the record's children are replaced
        keys = dataset.primary_key
        bulk.upsert_frame(conn, dataset.table, clean_parent, dataset.stored_names, {"run_id": run_id}, keys)
        _clear_children(conn, dataset, catalog, clean_parent[list(keys)])
    else:
        bulk.insert_frame(conn, dataset.table, clean_parent, dataset.stored_names, {"run_id": run_id})
    for child, _ancestors, child_validator in children:
        rows = child_clean[child.table]
        if rows.empty:
            continue
        rows = rows[~rows[RECORD].isin(rejected)]
        cols = child_validator.dataset.column_names
        bulk.insert_frame(conn, child.table, rows, cols, {"run_id": run_id})
        counts.child_rows[child.table] = counts.child_rows.get(child.table, 0) + len(rows)
    if not all_failures.empty:
        bulk.write_quarantine(conn, all_failures, run_id=run_id, dataset=dataset.name, spool=spool)
    for extra in failures[1:]:  # the parent's own failures are already in its summary
        summary.add_failures(extra)
