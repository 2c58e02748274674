"""extract, validate and load as library calls; ``run`` chains them for a project's pipelines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl import interrupts, state
from healthetl.catalog import Catalog, catalog_for
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import AMBIGUOUS, Dataset, LookupTable, Quality
from healthetl.db import bulk
from healthetl.db.engine import first_line
from healthetl.errors import (
    AccountingError,
    DatabaseError,
    HealthetlError,
    QualityGateError,
    SourceError,
    UsageError,
)
from healthetl.failures import FAILURE_COLUMNS, REJECTED, FailureSpool, mark_rejected
from healthetl.pipeline import layers
from healthetl.pipeline.validate import Drift, DriftError, ValidationSummary, Validator
from healthetl.sources import SOURCE_FILE, SOURCE_ROW, open_writer, read_frames

#: progress callback: (event, details); events are "start", "batch", "done"
Progress = Callable[[str, dict[str, Any]], None]


def quiet(_event: str, _info: dict[str, Any]) -> None:
    return None


def frames_from(sources: Iterable[str], options: PipelineOptions) -> Iterator[pd.DataFrame]:
    for source in sources:
        for frame in read_frames(
            source,
            chunk_size=options.chunk_size,
            sheet=options.sheet,
            encoding=options.encoding,
            delimiter=options.delimiter,
            quote=options.quote,
        ):
            interrupts.check()  # a signal whose interrupt was lost stops the run here
            yield frame


# --------------------------------------------------------------------------------------- extract


@dataclass
class ExtractResult:
    source: str
    output: str
    rows: int
    columns: list[str]


def extract(source: str, output: str, options: PipelineOptions, *, csv_safe: bool = False) -> ExtractResult:
    rows = 0
    columns: list[str] = []
    with open_writer(output, inputs=(source,), csv_safe=csv_safe) as writer:
        for frame in frames_from([source], options):
            columns = columns or [str(c) for c in frame.columns]
            writer.write(frame)
            rows += len(frame)
    return ExtractResult(source, output, rows, columns)


# -------------------------------------------------------------------------------------- validate


def lookup_tables(conn: sa.Connection, dataset: Dataset, catalog: Catalog) -> dict[str, LookupTable]:
    """For each lookup: the referenced rows by natural key (in this transaction, so rows an
    earlier dataset of the same batch wrote are found)."""
    from healthetl import checks

    out: dict[str, LookupTable] = {}
    for lk in dataset.lookups:
        target = catalog.dataset(lk.dataset)
        table = catalog.table(target)
        id_col = target.generated_id or target.primary_key[0]
        cols = [
            table.c[id_col],
            *[table.c[c] for c in lk.on.values()],
            *[table.c[c] for c in lk.fetch.values()],
        ]
        rows = conn.execute(sa.select(*cols)).all()
        if not rows:
            out[lk.column] = LookupTable(lk, {}, {k: {} for k in lk.fetch})
            continue
        frame = pd.DataFrame(
            rows,
            columns=["_id", *[f"k{i}" for i in range(len(lk.on))], *[f"f{i}" for i in range(len(lk.fetch))]],
        )
        keys = list(
            zip(
                *[checks.lookup_key(frame[f"k{i}"].astype(str)).tolist() for i in range(len(lk.on))],
                strict=True,
            )
        )
        ids: dict[tuple[str, ...], str] = {}
        fetched: dict[str, dict[tuple[str, ...], str | None]] = {k: {} for k in lk.fetch}
        for n, key in enumerate(keys):
            ids[key] = AMBIGUOUS if key in ids else str(frame["_id"].iat[n])
            for i, name in enumerate(lk.fetch):
                value = frame[f"f{i}"].iat[n]
                fetched[name][key] = None if pd.isna(value) else str(value)
        out[lk.column] = LookupTable(lk, ids, fetched)
    return out


def reference_keys(conn: sa.Connection, dataset: Dataset, catalog: Catalog) -> dict[str, pd.Index]:
    """Keys each reference may point to, read from the referenced tables."""
    known: dict[str, pd.Index] = {}
    for column, (target, target_col) in dataset.references.items():
        table = catalog.table(catalog.dataset(target))
        known[column] = bulk.known_keys(conn, table, target_col)
    return known


@dataclass
class ValidateResult:
    summary: ValidationSummary
    clean_output: str | None
    rejects_output: str | None


def validate(
    dataset: Dataset,
    source: str,
    options: PipelineOptions,
    *,
    clean_output: str | None = None,
    rejects_output: str | None = None,
    report_path: Path | None = None,
    engine: Engine | None = None,
    catalog: Catalog | None = None,
    csv_safe: bool = False,
) -> ValidateResult:
    catalog = catalog or catalog_for(None)
    known: dict[str, pd.Index] | None = None
    lookups: dict[str, LookupTable] | None = None
    if engine is not None:
        with engine.connect() as conn:
            known = reference_keys(conn, dataset, catalog)
            lookups = lookup_tables(conn, dataset, catalog)
    validator = Validator(dataset, options, known, lookups=lookups)
    writer = partial(open_writer, inputs=(source,), csv_safe=csv_safe)
    clean_writer = writer(clean_output) if clean_output else None
    rejects_writer = writer(rejects_output) if rejects_output else None
    # an Arrow stream is the format between stages: rejected rows travel in it, marked, so
    # the `load` at the end of a pipe quarantines and counts them
    carry = clean_writer is not None and clean_writer.kind == "arrow"
    failure: BaseException | None = None
    try:
        for frame in frames_from([source], options):
            batch = validator.validate(frame)
            if clean_writer is not None:
                clean_writer.write(with_rejected(batch.clean, batch.failures) if carry else batch.clean)
            if rejects_writer is not None and not batch.failures.empty:
                rejects_writer.write(batch.failures.astype({"source_row": "int64"}))
        if rejects_writer is not None and rejects_writer.rows == 0:
            empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in FAILURE_COLUMNS})
            rejects_writer.write(empty.astype({"source_row": "int64"}))
    except BaseException as exc:
        failure = exc
        raise
    finally:  # a failed validation ends its stream without the trailer: the next stage refuses it
        for w in (clean_writer, rejects_writer):
            if w is not None:
                w.__exit__(type(failure) if failure else None, failure, None)
    if report_path is not None:
        write_report(report_path, {"source": source, **validator.summary.to_dict()})
    return ValidateResult(validator.summary, clean_output, rejects_output)


def with_rejected(clean: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """Valid rows followed by the rejected ones, marked (see ``failures.REJECTED``)."""
    marked = mark_rejected(failures)
    out = clean.assign(**{REJECTED: pd.Series(pd.NA, index=clean.index, dtype="str")})
    if marked.empty:
        return out
    return pd.concat([out, marked], ignore_index=True).astype(
        {c: "str" for c in out.columns if c != SOURCE_ROW}
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise HealthetlError(f"{path}: cannot write report ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------ load


@dataclass
class LoadResult:
    run_id: str
    pipeline: str
    dataset: str
    mode: str
    status: str
    counts: state.RunCounts
    summary: ValidationSummary
    sources: list[str] = field(default_factory=list)
    error: str | None = None
    #: files skipped because the raw layer already holds them (same sha256)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    checks: list[layers.CheckResult] = field(default_factory=list)
    #: one entry per table the batch wrote (the etl_audit_log rows)
    audit: list[dict[str, Any]] = field(default_factory=list)
    #: files read in this run (path, sha256), for inbox bookkeeping and archiving
    files: list[tuple[str, str]] = field(default_factory=list)
    watermark: datetime | None = None
    analytics: dict[str, int] = field(default_factory=dict)
    #: a batch of several datasets: one result per dataset
    parts: list[LoadResult] = field(default_factory=list)
    #: nested loads: the snapshots replaced and the duplicate records dropped (file:line)
    snapshots: list[str] = field(default_factory=list)
    duplicate_records: list[str] = field(default_factory=list)
    #: the run's failure records, kept to be written again if its transaction rolls back
    spool: FailureSpool = field(default_factory=FailureSpool, repr=False, compare=False)

    def report(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "dataset": self.dataset,
            "status": self.status,
            "counts": asdict(self.counts),
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "skipped_files": [{"file": f, "loaded_by_run": r} for f, r in self.skipped_files],
            "snapshots": self.snapshots,
            "duplicate_records": self.duplicate_records,
            "tables": self.analytics,
            "checks": [c.to_dict() for c in self.checks],
            "tables_written": [
                {k: v for k, v in a.items() if k not in ("run_id", "started_at", "finished_at")}
                for a in self.audit
            ],
            "rules": self.summary.to_dict()["checks"],
        }


@dataclass(frozen=True)
class Source:
    """A file to load, the raw rows of an earlier run (``--from-raw``), or the rejects file an
    earlier ``validate --rejects`` wrote (its rows are quarantined and counted, not loaded)."""

    path: str | None = None
    raw_run_id: str | None = None
    rejects: str | None = None

    @property
    def label(self) -> str:
        if self.rejects is not None:
            return f"rejects:{self.rejects}"
        return self.path if self.path is not None else f"raw:{self.raw_run_id}"


def rejected_frames(path: str, options: PipelineOptions) -> Iterator[pd.DataFrame]:
    """A rejects file (``validate --rejects``) as marked rows: one per rejected source row."""
    for frame in frames_from([path], options):
        missing = [c for c in FAILURE_COLUMNS if c not in frame.columns]
        if missing:
            raise UsageError(
                f"{path}: not a rejects file of `healthetl validate --rejects` "
                f"(missing column(s) {', '.join(missing)})"
            )
        failures = frame[FAILURE_COLUMNS]
        rows = pd.to_numeric(failures["source_row"], errors="coerce")
        if rows.isna().any():
            line = int(frame.loc[rows.isna(), SOURCE_ROW].iloc[0])
            raise UsageError(f"{path}, row {line}: source_row is not a row number")
        yield mark_rejected(failures.assign(source_row=rows.astype("int64")))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def raw_frames(
    conn: sa.Connection, table: sa.Table, run_id: str, dataset: Dataset, chunk_size: int
) -> Iterator[pd.DataFrame]:
    """The rows a run extracted, from the raw layer, as the text frames a reader yields."""
    cols = [table.c[c] for c in dataset.column_names]
    query = (
        sa.select(table.c.source_file.label(SOURCE_FILE), table.c.source_row.label(SOURCE_ROW), *cols)
        .where(table.c.run_id == run_id)
        .order_by(table.c.raw_id)
    )
    rows = conn.execute(query).all()
    if not rows:
        raise UsageError(f"the raw layer of {dataset.name} has no rows of run {run_id}")
    frame = pd.DataFrame(rows, columns=[SOURCE_FILE, SOURCE_ROW, *dataset.column_names])
    for c in frame.columns:
        frame[c] = frame[c].astype("int64") if c == SOURCE_ROW else frame[c].astype("str")
    for start in range(0, len(frame), chunk_size):
        yield frame.iloc[start : start + chunk_size].reset_index(drop=True)


def load(
    engine: Engine,
    dataset: Dataset,
    sources: list[str] | list[Source],
    options: PipelineOptions,
    *,
    mode: str | None = None,
    pipeline: str | None = None,
    command: str = "load",
    progress: Progress = quiet,
    catalog: Catalog | None = None,
    force: bool = False,
    full_refresh: bool = False,
    report_path: Path | None = None,
    inbox: bool = False,
) -> LoadResult:
    """Validate and load ``sources`` into the dataset's tables in one transaction.

    In order: the raw layer receives every extracted row; rows older than the incremental
    window are skipped; the rest are validated (references against the database), invalid
    ones quarantined; duplicates of the key resolved by the declared order; rows merged into
    the table; analytics refreshed for the partitions the run touched; batch-level quality
    checks evaluated (an error rolls everything back); the watermark and the run ledger
    written. All of it commits together, or nothing does (the run is then recorded failed).
    """
    catalog = catalog or catalog_for(None)
    mode = mode or dataset.default_mode
    items = [s if isinstance(s, Source) else Source(path=s) for s in sources]
    result = _new_result(pipeline or dataset.name, dataset.name, mode, [i.label for i in items])

    def body(conn: sa.Connection) -> None:
        bulk.lock_related(conn, [catalog.table(dataset)])
        _load_into(
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
        )

    return _execute(
        engine, result, body, command=command, progress=progress, inbox=inbox, report_path=report_path
    )


def load_batch(
    engine: Engine,
    steps: list[tuple[Dataset, list[Source]]],
    options: PipelineOptions,
    *,
    pipeline: str,
    catalog: Catalog,
    command: str = "run",
    progress: Progress = quiet,
    force: bool = False,
    full_refresh: bool = False,
    inbox: bool = False,
    report_path: Path | None = None,
) -> LoadResult:
    """Several related datasets (dependencies first) in ONE transaction: a later dataset finds
    the rows an earlier one wrote by natural key, and a failure anywhere writes nothing."""
    labels = [i.label for _, items in steps for i in items]
    result = _new_result(pipeline, "+".join(ds.name for ds, _ in steps), "merge", labels)

    def body(conn: sa.Connection) -> None:
        bulk.lock_related(conn, [catalog.table(ds) for ds, _ in steps])
        for ds, items in steps:
            part = _new_result(pipeline, ds.name, ds.default_mode, [i.label for i in items])
            part.run_id, part.spool = result.run_id, result.spool
            try:
                _load_into(
                    conn,
                    ds,
                    catalog,
                    items,
                    options,
                    ds.default_mode,
                    part,
                    force=force,
                    full_refresh=full_refresh,
                    inbox=inbox,
                    progress=progress,
                )
            finally:  # a failed part still counts (its rejects are kept, its checks reported)
                result.parts.append(part)
                _absorb(result, part)

    return _execute(
        engine, result, body, command=command, progress=progress, inbox=inbox, report_path=report_path
    )


def _new_result(pipeline: str, dataset: str, mode: str, sources: list[str]) -> LoadResult:
    return LoadResult(
        state.new_run_id(),
        pipeline,
        dataset,
        mode,
        "running",
        state.RunCounts(),
        ValidationSummary(dataset),
        sources,
    )


def _absorb(batch: LoadResult, part: LoadResult) -> None:
    for key, value in asdict(part.counts).items():
        setattr(batch.counts, key, getattr(batch.counts, key) + value)
    batch.audit += part.audit
    batch.files += part.files
    batch.skipped_files += part.skipped_files
    batch.checks += part.checks
    batch.summary.add_failures_from(part.summary)


def _execute(
    engine: Engine,
    result: LoadResult,
    body: Callable[[sa.Connection], None],
    *,
    command: str,
    progress: Progress,
    inbox: bool,
    report_path: Path | None,
) -> LoadResult:
    """Run ``body`` in one transaction with the run ledger, the audit log and the inbox's
    bookkeeping; on failure roll back, record the run as failed, and say why."""
    name, run_id = result.pipeline, result.run_id
    started = state.start_run(
        engine,
        run_id,
        pipeline=name,
        dataset=result.dataset,
        command=command,
        mode=result.mode,
        source=", ".join(result.sources),
    )
    try:
        return _execute_body(engine, result, body, started, progress, inbox, report_path)
    finally:
        result.spool.close()


def _execute_body(
    engine: Engine,
    result: LoadResult,
    body: Callable[[sa.Connection], None],
    started: datetime,
    progress: Progress,
    inbox: bool,
    report_path: Path | None,
) -> LoadResult:
    name, run_id, counts = result.pipeline, result.run_id, result.counts
    raw: list[Any] = []  # the load's DBAPI connection, to be sure it let go after an interrupt
    try:
        progress("start", {"run_id": run_id, "pipeline": name, "sources": result.sources})
        with engine.begin() as conn:
            raw.append(conn.connection.dbapi_connection)
            layers.lock_pipeline(conn, name, run_id)  # one run of a pipeline at a time
            body(conn)
            _finish_audit(conn, result, started)
            if inbox:
                _remember_files(conn, result)
            state.finish_run(conn, run_id, counts)
    except DriftError as exc:
        _record_failure(engine, result, str(exc), drift_checks(exc.findings, "error"))
        progress("done", {"pipeline": name, "status": "failed"})
        _write_report(report_path, result)
        raise
    except QualityGateError as exc:
        _record_failure(engine, result, str(exc), result.checks or exc.checks)
        progress("done", {"pipeline": name, "status": "failed"})
        _write_report(report_path, result)
        raise
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        cause = _first_database_error(exc)
        orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
        text = first_line(orig or cause)
        message = f"{name}: load failed, nothing was written: {text}"
        if not _try_record_failure(engine, result, message):
            message += " (the database could not be reached to record the run as failed)"
        progress("done", {"pipeline": name, "status": "failed"})
        hint = None
        if "database is locked" in text:
            hint = (
                "another program kept this SQLite database locked longer than healthetl waits "
                "(HEALTHETL_SQLITE_BUSY_TIMEOUT, seconds; default 300)"
            )
        elif "duplicate key" in text or "UNIQUE constraint" in text:
            hint = "rows with these keys are already loaded: use --mode merge or replace"
        elif "foreign key" in text.lower():
            hint = "other tables still reference rows this load would remove"
        elif isinstance(orig, psycopg.OperationalError):
            hint = "the server ended the connection (restart, shutdown, network); run again when it is back"
        raise DatabaseError(message, hint=hint) from None
    except BaseException as exc:
        message = str(exc) if isinstance(exc, HealthetlError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            message = "terminated (SIGTERM)" if str(exc) == interrupts.TERMINATED else "interrupted"
            _release(engine, raw)
        try:
            _try_record_failure(engine, result, message)
        finally:
            progress("done", {"pipeline": name, "status": "failed"})
        raise
    result.status = "succeeded"
    progress("done", {"pipeline": name, "status": "succeeded", "counts": counts})
    _write_report(report_path, result)
    return result


def _load_into(  # noqa: C901 (over the limit before it was set; to split)
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    items: list[Source],
    options: PipelineOptions,
    mode: str,
    result: LoadResult,
    *,
    force: bool,
    full_refresh: bool,
    inbox: bool,
    progress: Progress,
) -> None:
    """Everything one dataset's load does inside the batch's transaction (see ``load``)."""
    name, run_id, counts = result.pipeline, result.run_id, result.counts
    raw_table = catalog.raw_table(dataset)
    if dataset.nested is not None:
        todo_files = _unseen(conn, items, None, force, result, name if inbox else None)
        _load_nested(conn, dataset, catalog, [i for i, _ in todo_files], options, result, progress)
        result.files = [(i.path, sha) for i, sha in todo_files if i.path is not None]
        return
    window = layers.incremental_window(conn, dataset, options, name)
    todo = [
        (item, sha, _frames(conn, item, dataset, catalog, options))
        for item, sha in _unseen(conn, items, raw_table, force, result, name if inbox else None)
    ]
    result.files = [(item.path, sha) for item, sha, _ in todo if item.path is not None]
    known = reference_keys(conn, dataset, catalog)
    lookups = lookup_tables(conn, dataset, catalog)
    cut = None
    if window is not None and window.start is not None and not full_refresh:
        cut = (window.cursor, layers.canonical(window.start))
    validator = Validator(dataset, options, known, window=cut, lookups=lookups)
    result.summary = validator.summary
    tracker = layers.QualityTracker(dataset, cursor=window.cursor if window else None)
    writer = table_writer(conn, dataset, catalog, mode, result)
    previous = _previous_loaded(conn, name, catalog.table(dataset).name)
    writer.prepare()
    raw_writer = (
        bulk.RawWriter(
            conn,
            raw_table,
            dataset.column_names,
            run_id,
            copy=writer.copy if writer.postgres else None,
        )
        if raw_table is not None
        else None
    )
    extracted_at = datetime.now(UTC).isoformat()
    try:
        for item, sha, frames in todo:
            for frame in frames:
                counts.rows_read += len(frame)
                if raw_writer is not None and item.path is not None:
                    raw_writer.write(_renamed(_unmarked(frame), dataset), sha, extracted_at)
                batch = validator.validate(frame)
                writer.write(batch.clean, batch.failures)
                tracker.add(batch)
                counts.rows_skipped += batch.rows_skipped
                counts.rows_in += batch.rows_in
                counts.rows_quarantined += batch.rows_quarantined
                counts.rows_warned += batch.rows_warned
                progress("batch", {"pipeline": name, "rows": counts.rows_read})
        writer.flush()
    except BaseException:
        writer.abort()
        raise
    touched = None
    if dataset.analytics and not full_refresh and mode != "replace":
        touched = layers.touched_partitions(conn, dataset, writer.incoming, run_id)
    writer.merge()
    writer.finish()
    counts.rows_loaded = writer.loaded
    counts.duplicates_dropped = writer.duplicates
    if not counts.balanced:
        raise AccountingError(
            f"{name}: rows_in {counts.rows_in} != loaded {counts.rows_loaded} + "
            f"quarantined {counts.rows_quarantined} + duplicates dropped "
            f"{counts.duplicates_dropped}; nothing was loaded"
        )
    if dataset.analytics:
        result.analytics = layers.refresh_analytics(conn, dataset, touched)
    all_skipped = bool(items) and not todo
    if not all_skipped:
        result.checks = tracker.evaluate(
            dataset.quality or Quality(), previous, options.quality, counts.rows_loaded
        )
        for check in result.checks:  # in a batch of several datasets, say which one
            check.detail = f"{dataset.name}: {check.detail}"
    result.checks += drift_checks(validator.summary.drift, "warning")
    blocking = [c for c in result.checks if c.severity == "error" and not c.passed]
    if blocking:
        raise QualityGateError(_gate_message(name, blocking, counts), result.checks)
    if window is not None:
        new = window.watermark
        if tracker.max_cursor is not None:
            top = layers.parse_canonical(tracker.max_cursor)
            new = top if new is None or top > new else new
        layers.write_state(conn, name, new, window.lookback.total_seconds() / 3600, run_id)
        result.watermark = new
    layers.record_checks(conn, run_id, name, result.checks)
    table = catalog.table(dataset).name
    result.audit.append(
        _audit_row(
            result,
            table,
            counts.rows_in,
            writer.inserted,
            writer.updated,
            writer.unchanged,
            counts.rows_quarantined,
        )
    )
    if raw_writer is not None:
        result.audit.append(
            _audit_row(result, raw_writer.table.name, counts.rows_read, raw_writer.rows, 0, 0, 0)
        )
    for analytic, written in result.analytics.items():
        result.audit.append(_audit_row(result, analytic, written, written, 0, 0, 0))


def table_writer(
    conn: sa.Connection, dataset: Dataset, catalog: Catalog, mode: str, result: LoadResult
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


def _load_nested(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    items: list[Source],
    options: PipelineOptions,
    result: LoadResult,
    progress: Progress,
) -> None:
    from healthetl.pipeline.nested import load_nested

    paths = [i.path for i in items if i.path is not None]
    if len(paths) != len(items):
        raise UsageError(f"dataset {dataset.name} keeps no raw layer; --from-raw needs one")
    nested, summary = load_nested(
        conn, dataset, catalog, paths, options, result.run_id, progress, result.pipeline, result.spool
    )
    c = result.counts
    c.rows_read = c.rows_in = nested.rows_in
    c.rows_loaded, c.rows_quarantined = nested.rows_loaded, nested.rows_quarantined
    c.duplicates_dropped = nested.duplicates_dropped
    result.summary = summary
    result.analytics = dict(nested.child_rows)
    result.audit.append(_audit_row(result, dataset.table, c.rows_in, c.rows_loaded, 0, 0, c.rows_quarantined))
    for table, rows in nested.child_rows.items():
        result.audit.append(_audit_row(result, table, rows, rows, 0, 0, 0))
    result.snapshots = sorted(nested.snapshots)
    result.duplicate_records = nested.duplicates
    result.checks = drift_checks(summary.drift, "warning")
    layers.record_checks(conn, result.run_id, result.pipeline, result.checks)
    if not c.balanced:
        raise AccountingError(
            f"{result.pipeline}: records in {c.rows_in} != loaded {c.rows_loaded} + "
            f"quarantined {c.rows_quarantined} + duplicates {c.duplicates_dropped}"
        )


def drift_checks(findings: list[Drift], severity: str) -> list[layers.CheckResult]:
    """Drift findings as the run's data-quality checks (stored, reported, shown)."""
    return [
        layers.CheckResult(
            f"drift_{f.kind}", severity, float(len(f.columns)), 0.0, False, detail=f.describe()
        )
        for f in findings
    ]


def _gate_message(name: str, failed: list[layers.CheckResult], counts: state.RunCounts) -> str:
    parts = []
    for c in failed:
        what = f"{c.check}" + (f" of {c.column}" if c.column else "")
        parts.append(
            f"{what} {c.observed:g} > {c.threshold:g}" if c.check != "row_count" else "no rows to load"
        )
    kept = f"{counts.rows_quarantined} of {counts.rows_in} rows quarantined"
    return f"{name}: data-quality checks failed ({'; '.join(parts)}); nothing was loaded ({kept})"


def _audit_row(
    result: LoadResult,
    table: str,
    processed: int,
    inserted: int,
    updated: int,
    unchanged: int,
    quarantined: int,
) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "table_name": table,
        "rows_processed": processed,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "quarantined": quarantined,
        "error": None,
    }


def _finish_audit(conn: sa.Connection, result: LoadResult, started: datetime) -> None:
    """The batch's etl_audit_log rows, in the load's transaction."""
    from healthetl.db.schema import etl_audit_log

    now = datetime.now(UTC)
    for row in result.audit:
        row.setdefault("started_at", started)
        row["finished_at"] = now
    if result.audit:
        conn.execute(etl_audit_log.insert(), result.audit)


def _remember_files(conn: sa.Connection, result: LoadResult) -> None:
    """Inbox pipelines remember the files they loaded, by content."""
    from healthetl.db.schema import loaded_files

    rows = [
        {
            "pipeline": result.pipeline,
            "file_sha256": sha,
            "file_name": Path(path).name,
            "run_id": result.run_id,
            "loaded_at": datetime.now(UTC),
        }
        for path, sha in dict(result.files).items()
        if sha and sha != "stdin"
    ]
    existing = set(
        conn.execute(
            sa.select(loaded_files.c.file_sha256).where(loaded_files.c.pipeline == result.pipeline)
        ).scalars()
    )
    fresh = {r["file_sha256"]: r for r in rows if r["file_sha256"] not in existing}
    if fresh:
        conn.execute(loaded_files.insert(), list(fresh.values()))


def _first_database_error(exc: BaseException) -> BaseException:
    """The database error that started it: when the server ends a session (a restart), the
    rollback that follows fails too ("the connection is lost") and hides the cause
    ("terminating connection due to administrator command") in its ``__context__``."""
    first, seen = exc, {id(exc)}
    context = exc.__context__
    while context is not None and id(context) not in seen:
        seen.add(id(context))
        if isinstance(context, sa.exc.DBAPIError | psycopg.Error):
            first = context
        context = context.__context__
    return first


def _release(engine: Engine, raw: list[Any]) -> None:
    """Roll the interrupted load's own connection back. An interrupt can leave it invalidated
    but still open (SQLAlchemy 2.0 does not roll back on an exit exception): on SQLite it would
    keep the write lock, and recording the failure would wait for it."""
    for dbapi in raw:
        try:
            dbapi.rollback()
            held = bool(getattr(dbapi, "in_transaction", False))  # a statement still in flight
        except Exception:  # closed already (SQLAlchemy invalidates on an interrupt): nothing held
            continue
        if held:
            try:
                dbapi.close()  # closing ends the transaction and lets go of its locks
            except Exception:
                pass
            engine.dispose()  # and the pool starts afresh instead of handing the closed one out


def _try_record_failure(engine: Engine, result: LoadResult, message: str) -> bool:
    """Record the failure if the database can still be reached (it may be what failed: a
    restart, a lost connection); the original error is what the user is told either way."""
    try:
        _record_failure(engine, result, message)
        return True
    except (sa.exc.DBAPIError, psycopg.Error):
        return False


def _record_failure(
    engine: Engine, result: LoadResult, message: str, checks: list[layers.CheckResult] | None = None
) -> None:
    """After a rollback, in a transaction of its own: the run failed, with its counts (nothing
    loaded, the valid rows rolled back), its quarantine rows (from the spool: a failed run still
    says which rows failed which rule), its checks, and one audit row carrying the error."""
    from healthetl.db.schema import etl_audit_log

    result.status, result.error = "failed", message
    result.counts.roll_back()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        state.fail_run(conn, result.run_id, message, result.counts)
        for dataset, failures in result.spool.frames():
            bulk.write_quarantine(conn, failures, run_id=result.run_id, dataset=dataset)
        if checks:
            layers.record_checks(conn, result.run_id, result.pipeline, checks)
        conn.execute(
            etl_audit_log.insert().values(
                run_id=result.run_id,
                pipeline=result.pipeline,
                table_name=result.dataset,
                rows_processed=result.counts.rows_in,
                inserted=0,
                updated=0,
                unchanged=0,
                quarantined=result.counts.rows_quarantined,
                started_at=now,
                finished_at=now,
                error=message,
            )
        )


def _write_report(path: Path | None, result: LoadResult) -> None:
    if path is not None:
        write_report(path, result.report())


def _unseen(
    conn: sa.Connection,
    items: list[Source],
    raw_table: sa.Table | None,
    force: bool,
    result: LoadResult,
    inbox: str | None = None,
) -> list[tuple[Source, str]]:
    """Files to read (with their sha256); a file the raw layer already holds, or that this
    inbox pipeline already loaded, is skipped (unless ``force``)."""
    from healthetl.db.schema import loaded_files

    todo: list[tuple[Source, str]] = []
    for item in items:
        if item.path is None:
            todo.append((item, ""))
            continue
        if item.path == "-":  # a stream cannot be fingerprinted before it is read
            todo.append((item, "stdin"))
            continue
        if not Path(item.path).exists():
            raise SourceError(f"{item.path}: file not found")
        sha = file_sha256(item.path) if raw_table is not None or inbox else ""
        seen = None
        if raw_table is not None and not force:
            seen = conn.execute(
                sa.select(raw_table.c.run_id).where(raw_table.c.file_sha256 == sha).limit(1)
            ).scalar()
        if seen is None and inbox and not force:
            seen = conn.execute(
                sa.select(loaded_files.c.run_id).where(
                    loaded_files.c.pipeline == inbox, loaded_files.c.file_sha256 == sha
                )
            ).scalar()
        if seen is not None:
            result.skipped_files.append((item.path, str(seen)))
            continue
        todo.append((item, sha))
    return todo


def _frames(
    conn: sa.Connection, item: Source, dataset: Dataset, catalog: Catalog, options: PipelineOptions
) -> Iterable[pd.DataFrame]:
    """Files stream lazily; raw rows are read now, before the COPY thread owns the connection."""
    if item.rejects is not None:
        return rejected_frames(item.rejects, options)
    if item.path is not None:
        return frames_from([item.path], options)
    table = catalog.raw_table(dataset)
    if table is None:
        raise UsageError(f"dataset {dataset.name} keeps no raw layer; --from-raw needs one")
    assert item.raw_run_id is not None
    return list(raw_frames(conn, table, item.raw_run_id, dataset, options.chunk_size))


def _unmarked(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry values: a rejected row in a stream carries only its failures."""
    return frame.loc[frame[REJECTED].isna()] if REJECTED in frame.columns else frame


def _renamed(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    renames = {k: v for k, v in dataset.renames.items() if k in frame.columns and v not in frame.columns}
    return frame.rename(columns=renames) if renames else frame


def _previous_loaded(conn: sa.Connection, pipeline: str, table: str) -> int | None:
    """Rows the last successful run of this pipeline that read anything loaded into ``table``
    (one dataset of a batch is compared with itself, not with the batch's total)."""
    from healthetl.db.schema import etl_audit_log as log
    from healthetl.db.schema import etl_runs

    row = conn.execute(
        sa.select(log.c.inserted + log.c.updated + log.c.unchanged)
        .join(etl_runs, etl_runs.c.run_id == log.c.run_id)
        .where(
            log.c.pipeline == pipeline,
            log.c.table_name == table,
            log.c.rows_processed > 0,
            etl_runs.c.status == "succeeded",
        )
        .order_by(etl_runs.c.started_at.desc(), log.c.id.desc())
        .limit(1)
    ).scalar()
    return int(row) if row is not None else None
