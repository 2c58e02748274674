"""extract, validate and load as library calls; ``run`` chains them for a project's pipelines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl import state
from healthetl.catalog import Catalog, catalog_for
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.db import bulk
from healthetl.db.engine import first_line
from healthetl.errors import AccountingError, DatabaseError, HealthetlError
from healthetl.pipeline.validate import ValidationSummary, Validator
from healthetl.sources import open_writer, read_frames

#: progress callback: (event, details); events are "start", "batch", "done"
Progress = Callable[[str, dict[str, Any]], None]


def _quiet(_event: str, _info: dict[str, Any]) -> None:
    return None


def frames_from(sources: Iterable[str], options: PipelineOptions) -> Iterator[pd.DataFrame]:
    for source in sources:
        yield from read_frames(
            source, chunk_size=options.chunk_size, sheet=options.sheet, encoding=options.encoding
        )


# --------------------------------------------------------------------------------------- extract


@dataclass
class ExtractResult:
    source: str
    output: str
    rows: int
    columns: list[str]


def extract(source: str, output: str, options: PipelineOptions) -> ExtractResult:
    rows = 0
    columns: list[str] = []
    with open_writer(output) as writer:
        for frame in frames_from([source], options):
            columns = columns or [str(c) for c in frame.columns]
            writer.write(frame)
            rows += len(frame)
    return ExtractResult(source, output, rows, columns)


# -------------------------------------------------------------------------------------- validate


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
) -> ValidateResult:
    catalog = catalog or catalog_for(None)
    known: dict[str, pd.Index] | None = None
    if engine is not None:
        with engine.connect() as conn:
            known = reference_keys(conn, dataset, catalog)
    validator = Validator(dataset, options, known)
    clean_writer = open_writer(clean_output) if clean_output else None
    rejects_writer = open_writer(rejects_output) if rejects_output else None
    try:
        for frame in frames_from([source], options):
            batch = validator.validate(frame)
            if clean_writer is not None:
                clean_writer.write(batch.clean)
            if rejects_writer is not None and not batch.failures.empty:
                rejects_writer.write(batch.failures.astype({"source_row": "int64"}))
        if rejects_writer is not None and rejects_writer.rows == 0:
            from healthetl.pipeline.validate import FAILURE_COLUMNS

            empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in FAILURE_COLUMNS})
            rejects_writer.write(empty.astype({"source_row": "int64"}))
    finally:
        for w in (clean_writer, rejects_writer):
            if w is not None:
                w.__exit__(None, None, None)
    if report_path is not None:
        write_report(report_path, {"source": source, **validator.summary.to_dict()})
    return ValidateResult(validator.summary, clean_output, rejects_output)


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


def load(
    engine: Engine,
    dataset: Dataset,
    sources: list[str],
    options: PipelineOptions,
    *,
    mode: str | None = None,
    pipeline: str | None = None,
    command: str = "load",
    progress: Progress = _quiet,
    catalog: Catalog | None = None,
) -> LoadResult:
    """Validate and load ``sources`` into the dataset's table in one transaction.

    Reference checks run against the database before any row is written. The run ledger
    row is committed with the data; on any failure the data is rolled back and the run is
    recorded as failed.
    """
    catalog = catalog or catalog_for(None)
    mode = mode or dataset.default_mode
    name = pipeline or dataset.name
    run_id = state.new_run_id()
    counts = state.RunCounts()
    source_text = ", ".join(sources)
    state.start_run(
        engine,
        run_id,
        pipeline=name,
        dataset=dataset.name,
        command=command,
        mode=mode,
        source=source_text,
    )
    progress("start", {"run_id": run_id, "pipeline": name, "sources": sources})
    summary = ValidationSummary(dataset.name)
    try:
        with engine.begin() as conn:
            validator = Validator(dataset, options, reference_keys(conn, dataset, catalog))
            summary = validator.summary
            writer = bulk.TableWriter(
                conn,
                catalog.table(dataset),
                dataset.column_names,
                mode=mode,
                run_id=run_id,
                dataset=dataset.name,
                key=dataset.primary_key,
            )
            writer.prepare()
            try:
                for frame in frames_from(sources, options):
                    batch = validator.validate(frame)
                    writer.write(batch.clean, batch.failures)
                    counts.rows_in += batch.rows_in
                    counts.rows_quarantined += batch.rows_quarantined
                    counts.rows_warned += batch.rows_warned
                    progress("batch", {"pipeline": name, "rows": counts.rows_in})
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            counts.rows_loaded = writer.rows
            if not counts.balanced:
                raise AccountingError(
                    f"{name}: rows_in {counts.rows_in} != loaded {counts.rows_loaded} + "
                    f"quarantined {counts.rows_quarantined} + duplicates dropped "
                    f"{counts.duplicates_dropped}; nothing was loaded"
                )
            state.finish_run(conn, run_id, counts)
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        text = first_line(orig or exc)
        message = f"{name}: load failed, nothing was written: {text}"
        state.fail_run(engine, run_id, message, counts)
        progress("done", {"pipeline": name, "status": "failed"})
        hint = None
        if "duplicate key" in text or "UNIQUE constraint" in text:
            hint = "rows with these keys are already loaded: use --mode merge or replace"
        elif "foreign key" in text.lower():
            hint = "other tables still reference rows this load would remove"
        raise DatabaseError(message, hint=hint) from None
    except BaseException as exc:
        message = str(exc) if isinstance(exc, HealthetlError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        try:
            state.fail_run(engine, run_id, message, counts)
        finally:
            progress("done", {"pipeline": name, "status": "failed"})
        raise
    progress("done", {"pipeline": name, "status": "succeeded", "counts": counts})
    return LoadResult(run_id, name, dataset.name, mode, "succeeded", counts, summary, sources)
