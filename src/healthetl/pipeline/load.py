"""``load``: sources validated and written into a dataset's tables in one transaction.

One dataset's load reads top to bottom (:func:`load_dataset`): open the sources, validate each
chunk, write the clean rows and the rejects, resolve duplicates, account for every row, evaluate
the batch-level checks, advance the watermark, and hand the audit entries to the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl import pseudonym
from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset, Quality
from healthetl.db import bulk, locks
from healthetl.db.raw import RawWriter
from healthetl.errors import AccountingError, ConfigError, QualityGateError, UsageError
from healthetl.ledger import audit, dq, watermarks
from healthetl.pipeline import analytics
from healthetl.pipeline.inputs import ApiReplay, Reading, fetched, frames_of, renamed, unmarked, unseen
from healthetl.pipeline.nested import load_nested
from healthetl.pipeline.quality import QualityTracker, drift_checks
from healthetl.pipeline.readahead import read_ahead
from healthetl.pipeline.references import lookup_tables, reference_keys
from healthetl.pipeline.transaction import execute, new_result
from healthetl.pipeline.validator import Validator
from healthetl.results import CheckResult, LoadResult, LoadRun, Progress, RunCounts, quiet
from healthetl.sources.base import RecordSource, Source, source_for
from healthetl.sources.http import ApiSource

if TYPE_CHECKING:
    from healthetl.pipeline.distributed.cluster import DaskCluster

#: one source to read: what it is, its sha256 (or a marker), its frames
Opened = tuple[Source, str, Iterable[pd.DataFrame]]


def load(
    engine: Engine,
    dataset: Dataset,
    sources: Sequence[str | Source],
    options: PipelineOptions,
    *,
    catalog: Catalog,
    mode: str | None = None,
    pipeline: str | None = None,
    command: str = "load",
    progress: Progress = quiet,
    force: bool = False,
    full_refresh: bool = False,
    report_path: Path | None = None,
    inbox: bool = False,
    cluster: DaskCluster | None = None,
) -> LoadResult:
    """Validate and load ``sources`` into the dataset's tables in one transaction.

    In order: the raw layer receives every extracted row; rows older than the incremental
    window are skipped; the rest are validated (references against the database), invalid
    ones quarantined; duplicates of the key resolved by the declared order; rows merged into
    the table; analytics refreshed for the partitions the run touched; batch-level quality
    checks evaluated (an error rolls everything back); the watermark and the run ledger
    written. All of it commits together, or nothing does (the run is then recorded failed).
    """
    mode = mode or dataset.default_mode
    items: list[Source] = [source_for(s) if isinstance(s, str) else s for s in sources]
    result = new_result(pipeline or dataset.name, dataset.name, mode, [i.label for i in items])

    def body(conn: sa.Connection) -> None:
        locks.lock_related(conn, [catalog.table(dataset)])
        load_dataset(
            conn,
            dataset,
            catalog,
            items,
            options,
            mode,
            result,
            force=force,
            full_refresh=full_refresh,
            inbox=inbox,
            progress=progress,
            cluster=cluster,
        )

    try:
        return execute(
            engine, result, body, command=command, progress=progress, inbox=inbox, report_path=report_path
        )
    finally:
        if cluster is not None:
            cluster.cleanup(engine)


def load_dataset(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    items: list[Source],
    options: PipelineOptions,
    mode: str,
    result: LoadRun,
    *,
    force: bool,
    full_refresh: bool,
    inbox: bool,
    progress: Progress,
    cluster: DaskCluster | None = None,
) -> None:
    """Everything one dataset's load does inside the batch's transaction (see ``load``).
    ``cluster``: the rows are validated and staged by its workers (flat files; other datasets
    load here, and say so)."""
    if cluster is not None:
        refusal = cluster.refusal(dataset, catalog, items)
        if refusal is not None:
            progress("engine", {"pipeline": result.pipeline, "detail": f"loaded on this process: {refusal}"})
            cluster = None
    if dataset.nested is not None:
        _load_nested(conn, dataset, catalog, items, options, result, progress, force=force, inbox=inbox)
        return
    hidden = pseudonymised_columns(dataset, catalog, options)
    window = watermarks.incremental_window(conn, dataset, options, result.pipeline)
    since = window.start if window is not None and not full_refresh else None
    todo = _open(conn, dataset, catalog, items, options, result, force=force, inbox=inbox, since=since)
    cut = _window_cut(window, full_refresh)
    known = reference_keys(conn, dataset, catalog)
    lookups = lookup_tables(conn, dataset, catalog)
    validator = Validator(dataset, options, known, window=cut, lookups=lookups)
    result.summary = validator.summary
    tracker = QualityTracker(dataset, cursor=window.cursor if window else None)
    writer = table_writer(conn, dataset, catalog, mode, result)
    previous = audit.previous_loaded(conn, result.pipeline, catalog.table(dataset).name)
    writer.prepare()
    raw_writer = _raw_writer(conn, dataset, catalog, writer, result.run_id)
    if cluster is not None:
        try:
            cluster.stream(
                conn,
                dataset,
                [item for item, _, _ in todo],
                options,
                validator,
                tracker,
                writer,
                result,
                progress,
                known=known,
                lookups=lookups,
                pseudonymised=frozenset(hidden),
            )
        except BaseException:
            writer.abort()
            raise
    else:
        _stream(todo, dataset, validator, writer, raw_writer, tracker, result, progress, _hider(hidden))
    touched = None
    if dataset.analytics and not full_refresh and mode != "replace":
        touched = analytics.touched_partitions(conn, dataset, writer.incoming, result.run_id)
    writer.merge()
    writer.finish()
    result.counts.rows_loaded = writer.loaded
    result.counts.duplicates_dropped = writer.duplicates
    check_balanced(result.pipeline, result.counts)
    if dataset.analytics:
        result.analytics = analytics.refresh_analytics(conn, dataset, touched)
    all_skipped = bool(items) and not todo
    _gate(dataset, options, result, tracker, previous, validator, evaluate=not all_skipped)
    if window is not None:
        result.watermark = _advance(conn, result, window, tracker)
    dq.record(conn, result.run_id, result.pipeline, result.checks)
    _audit(result, catalog.table(dataset).name, writer, raw_writer)


def _open(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    items: list[Source],
    options: PipelineOptions,
    result: LoadRun,
    *,
    force: bool,
    inbox: bool,
    since: datetime | None = None,
) -> list[Opened]:
    """The sources not loaded before, each with its frames (files stream lazily; raw rows are
    read and API pages fetched now, before the COPY thread owns the connection)."""
    fresh = unseen(
        conn,
        items,
        catalog.raw_table(dataset),
        force,
        result.skipped_files,
        result.pipeline if inbox else None,
    )
    reading = Reading(result.run_id, result.pipeline, since)
    todo = [(item, sha, frames_of(conn, item, dataset, catalog, options, reading)) for item, sha in fresh]
    result.files = [(item.path, sha) for item, sha, _ in todo if item.path is not None]
    return todo


def _window_cut(window: watermarks.Window | None, full_refresh: bool) -> tuple[str, str] | None:
    """The incremental window's cut as validation applies it: (cursor column, first accepted
    value as canonical text), or None (no window, or ``full_refresh``)."""
    if window is not None and window.start is not None and not full_refresh:
        return (window.cursor, watermarks.canonical(window.start))
    return None


def table_writer(
    conn: sa.Connection, dataset: Dataset, catalog: Catalog, mode: str, result: LoadRun
) -> bulk.TableWriter:
    """The writer of one dataset's table for this run (its rejects also go to the run's spool)."""
    return bulk.TableWriter(
        conn,
        catalog.table(dataset),
        dataset.stored_names,
        mode=mode,
        run_id=result.run_id,
        dataset=dataset.name,
        key=dataset.primary_key,
        dedupe_order=dataset.dedupe_order,
        spool=result.spool,
    )


def pseudonymised_columns(dataset: Dataset, catalog: Catalog, options: PipelineOptions) -> set[str]:
    """The dataset's columns stored as pseudonyms (maybe none). Asks for the key before anything
    is read; refuses a raw layer, which keeps values as received."""
    columns = dataset.pseudonymised(options.pseudonymise) & set(dataset.stored_names)
    if not columns:
        return set()
    if catalog.raw_table(dataset) is not None:
        raise ConfigError(
            f"dataset {dataset.name} keeps a raw layer of the rows as received: its pseudonymised "
            f"columns ({', '.join(sorted(columns))}) would be kept there in clear; turn one of them off"
        )
    pseudonym.key()
    return columns


def pseudonymiser(
    dataset: Dataset, catalog: Catalog, options: PipelineOptions
) -> Callable[[pd.DataFrame], pd.DataFrame] | None:
    """What stores the dataset's pseudonymised columns as pseudonyms (None: it has none)."""
    return _hider(pseudonymised_columns(dataset, catalog, options))


def _hider(columns: set[str]) -> Callable[[pd.DataFrame], pd.DataFrame] | None:
    """What stores these columns as pseudonyms (None: there are none)."""
    if not columns:
        return None
    secret = pseudonym.key()
    return lambda clean: pseudonym.frame(clean, columns, secret)


def _raw_writer(
    conn: sa.Connection, dataset: Dataset, catalog: Catalog, writer: bulk.TableWriter, run_id: str
) -> RawWriter | None:
    """The raw layer's writer (it shares the table writer's write thread)."""
    raw_table = catalog.raw_table(dataset)
    if raw_table is None:
        return None
    return RawWriter(conn, raw_table, dataset.column_names, run_id, append=writer.append)


def _stream(
    todo: list[Opened],
    dataset: Dataset,
    validator: Validator,
    writer: bulk.TableWriter,
    raw_writer: RawWriter | None,
    tracker: QualityTracker,
    result: LoadRun,
    progress: Progress,
    hide: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> None:
    """Every chunk of every source: kept raw, validated, written (clean rows and rejects), counted.
    ``hide``: the clean rows' pseudonymised columns replaced by their pseudonyms."""
    counts = result.counts
    extracted_at = datetime.now(UTC).isoformat()
    try:
        for item, sha, frames in todo:
            with closing(read_ahead(frames)) as ahead:  # the reader thread ends here, whatever happens
                for frame in ahead:
                    counts.rows_read += len(frame)
                    if raw_writer is not None and item.path is not None:
                        raw_writer.write(renamed(unmarked(frame), dataset), sha, extracted_at)
                    batch = validator.validate(frame)
                    writer.write(hide(batch.clean) if hide is not None else batch.clean, batch.failures)
                    tracker.add(batch)
                    counts.add(batch)
                    progress("batch", {"pipeline": result.pipeline, "rows": counts.rows_read})
        writer.flush()
    except BaseException:
        writer.abort()
        raise


def check_balanced(pipeline: str, counts: RunCounts) -> None:
    """Every row taken in is loaded, quarantined, dropped as an older duplicate or rolled back."""
    if not counts.balanced:
        raise AccountingError(
            f"{pipeline}: rows_in {counts.rows_in} != loaded {counts.rows_loaded} + "
            f"quarantined {counts.rows_quarantined} + duplicates dropped "
            f"{counts.duplicates_dropped}; nothing was loaded"
        )


def _gate(
    dataset: Dataset,
    options: PipelineOptions,
    result: LoadRun,
    tracker: QualityTracker,
    previous: int | None,
    validator: Validator,
    *,
    evaluate: bool,
) -> None:
    """The batch-level checks (skipped when every file was loaded before) and drift findings;
    a failed ``error`` check raises, and the transaction rolls back."""
    counts = result.counts
    if evaluate:
        result.checks = tracker.evaluate(
            dataset.quality or Quality(), previous, options.quality, counts.rows_loaded
        )
        for check in result.checks:  # in a batch of several datasets, say which one
            check.detail = f"{dataset.name}: {check.detail}"
    result.checks += drift_checks(validator.summary.drift, "warning")
    blocking = [c for c in result.checks if c.severity == "error" and not c.passed]
    if blocking:
        raise QualityGateError(_gate_message(result.pipeline, blocking, counts), result.checks)


def _gate_message(name: str, failed: list[CheckResult], counts: RunCounts) -> str:
    parts = []
    for c in failed:
        what = f"{c.check}" + (f" of {c.column}" if c.column else "")
        parts.append(
            f"{what} {c.observed:g} > {c.threshold:g}" if c.check != "row_count" else "no rows to load"
        )
    kept = f"{counts.rows_quarantined} of {counts.rows_in} rows quarantined"
    return f"{name}: data-quality checks failed ({'; '.join(parts)}); nothing was loaded ({kept})"


def _advance(
    conn: sa.Connection, result: LoadRun, window: watermarks.Window, tracker: QualityTracker
) -> datetime | None:
    """The watermark moves to the newest cursor value loaded (never back), in this transaction."""
    new = window.watermark
    if tracker.max_cursor is not None:
        top = watermarks.parse_canonical(tracker.max_cursor)
        new = top if new is None or top > new else new
    watermarks.write_state(conn, result.pipeline, new, window.lookback.total_seconds() / 3600, result.run_id)
    return new


def _audit(result: LoadRun, table: str, writer: bulk.TableWriter, raw_writer: RawWriter | None) -> None:
    """The audit entries of this dataset: its table, its raw layer, its analytics tables."""
    c, run_id, name = result.counts, result.run_id, result.pipeline
    result.audit.append(
        audit.entry(
            run_id,
            name,
            table,
            c.rows_in,
            writer.inserted,
            writer.updated,
            writer.unchanged,
            c.rows_quarantined,
        )
    )
    if raw_writer is not None:
        result.audit.append(
            audit.entry(run_id, name, raw_writer.table.name, c.rows_read, raw_writer.rows, 0, 0, 0)
        )
    for analytic, written in result.analytics.items():
        result.audit.append(audit.entry(run_id, name, analytic, written, written, 0, 0, 0))


def _load_nested(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    items: list[Source],
    options: PipelineOptions,
    result: LoadRun,
    progress: Progress,
    *,
    force: bool,
    inbox: bool,
) -> None:
    """A nested JSON dataset: records and their child tables (see :mod:`healthetl.pipeline.nested`)."""
    fresh = unseen(conn, items, None, force, result.skipped_files, result.pipeline if inbox else None)
    reading = Reading(result.run_id, result.pipeline)
    fresh = [
        (fetched(conn, item, reading) if isinstance(item, ApiSource | ApiReplay) else item, sha)
        for item, sha in fresh
    ]
    readable: list[RecordSource] = [i for i, _ in fresh if isinstance(i, RecordSource)]
    if len(readable) != len(fresh):
        raise UsageError(f"dataset {dataset.name} keeps no raw layer; --from-raw needs one")
    nested, summary = load_nested(
        conn, dataset, catalog, readable, options, result.run_id, progress, result.pipeline, result.spool
    )
    result.files = [(i.path, sha) for i, sha in fresh if i.path is not None]
    c, run_id, name = result.counts, result.run_id, result.pipeline
    c.rows_read = c.rows_in = nested.rows_in
    c.rows_loaded, c.rows_quarantined = nested.rows_loaded, nested.rows_quarantined
    c.duplicates_dropped = nested.duplicates_dropped
    c.rows_warned = summary.rows_warned
    result.summary = summary
    result.analytics = dict(nested.child_rows)
    result.audit.append(
        audit.entry(run_id, name, dataset.table, c.rows_in, c.rows_loaded, 0, 0, c.rows_quarantined)
    )
    for table, rows in nested.child_rows.items():
        result.audit.append(audit.entry(run_id, name, table, rows, rows, 0, 0, 0))
    result.snapshots = sorted(nested.snapshots)
    result.duplicate_records = nested.duplicates
    result.checks = drift_checks(summary.drift, "warning")
    dq.record(conn, run_id, name, result.checks)
    if not c.balanced:
        raise AccountingError(
            f"{name}: records in {c.rows_in} != loaded {c.rows_loaded} + "
            f"quarantined {c.rows_quarantined} + duplicates {c.duplicates_dropped}"
        )
