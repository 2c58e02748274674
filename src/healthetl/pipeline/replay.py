"""``healthetl quarantine replay``: re-validate quarantined rows against today's rules and
reference data, and load the ones that pass, in one transaction.

A replay is a run of its own (command ``replay``, pipeline ``replay:<dataset>``) with the usual
ledger, audit row, spool and rollback. Each rejected source row (all its open failure records,
rebuilt from ``original``, the row as received) is validated again: rows that pass are merged
into the table (appended when the dataset has no primary key) and their records marked
``replayed``; rows that fail again get this run's failure records (the current reasons) and
their old records are marked ``superseded``. Rows whose records are warnings only were loaded
when they arrived and are left alone; records without a stored row (invalid JSON) cannot be
replayed and are counted as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.errors import UsageError
from healthetl.ledger import audit, quarantine
from healthetl.ledger.quarantine import Candidate, Filter
from healthetl.pipeline.load import check_balanced, pseudonymiser, table_writer
from healthetl.pipeline.references import lookup_tables, reference_keys
from healthetl.pipeline.transaction import execute, new_result
from healthetl.pipeline.validator import Validator
from healthetl.results import LoadResult, LoadRun, Progress, quiet
from healthetl.sources import SOURCE_FILE, SOURCE_ROW


def replay(
    engine: Engine,
    dataset: Dataset,
    catalog: Catalog,
    options: PipelineOptions,
    which: Filter,
    *,
    progress: Progress = quiet,
    report_path: Path | None = None,
) -> tuple[LoadResult, int]:
    """Returns the replay run and how many rejected rows had no stored row to replay."""
    if dataset.nested is not None:
        raise UsageError(
            f"dataset {dataset.name} is nested JSON: a record and its children cannot be replayed "
            "row by row; load the corrected file again"
        )
    mode = "merge" if dataset.primary_key else "append"
    result = new_result(f"replay:{dataset.name}", dataset.name, mode, ["quarantine"])
    unreplayable = 0

    def body(conn: sa.Connection) -> None:
        nonlocal unreplayable
        chosen = quarantine.candidates(conn, dataset.name, which)
        # a row quarantined from a rejects file was stored masked: its source must be loaded again
        todo = [c for c in chosen if c.original is not None and not quarantine.is_masked(c.original)]
        unreplayable = len(chosen) - len(todo)
        if not todo:
            raise UsageError(
                f"no open quarantined rows of {dataset.name} to replay"
                + (f" ({unreplayable} without a stored row, or stored masked)" if unreplayable else "")
            )
        _replay_into(conn, dataset, catalog, options, todo, result, mode, progress)

    return execute(
        engine,
        result,
        body,
        command="replay",
        progress=progress,
        inbox=False,
        report_path=report_path,
    ), unreplayable


def _replay_into(
    conn: sa.Connection,
    dataset: Dataset,
    catalog: Catalog,
    options: PipelineOptions,
    todo: list[Candidate],
    result: LoadRun,
    mode: str,
    progress: Progress,
) -> None:
    counts, run_id = result.counts, result.run_id
    validator = Validator(
        dataset,
        options,
        reference_keys(conn, dataset, catalog),
        lookups=lookup_tables(conn, dataset, catalog),
    )
    result.summary = validator.summary
    hide = pseudonymiser(dataset, catalog, options)
    writer = table_writer(conn, dataset, catalog, mode, result)
    writer.prepare()
    passed: list[int] = []
    failed: list[int] = []
    try:
        for chunk in _chunks(todo, options.chunk_size):
            batch = validator.validate(_frame(chunk))
            writer.write(hide(batch.clean) if hide is not None else batch.clean, batch.failures)
            errors = batch.failures.loc[batch.failures["severity"] == "error"]
            bad = set(zip(errors["source_file"], errors["source_row"].astype("int64"), strict=True))
            for c in chunk:
                (failed if (c.source_file, c.source_row) in bad else passed).extend(c.ids)
            counts.rows_read += len(chunk)
            counts.add(batch)
            progress("batch", {"pipeline": result.pipeline, "rows": counts.rows_read})
        writer.flush()
    except BaseException:
        writer.abort()
        raise
    writer.merge()
    writer.finish()
    counts.rows_loaded, counts.duplicates_dropped = writer.loaded, writer.duplicates
    check_balanced(result.pipeline, counts)
    quarantine.settle(conn, run_id, passed, failed)
    result.audit.append(
        audit.entry(
            run_id,
            result.pipeline,
            catalog.table(dataset).name,
            counts.rows_in,
            writer.inserted,
            writer.updated,
            writer.unchanged,
            counts.rows_quarantined,
        )
    )


def _chunks(todo: list[Candidate], size: int) -> Iterator[list[Candidate]]:
    """Batches of one original run each, so (source file, source row) names one row in a batch."""
    chunk: list[Candidate] = []
    for c in todo:
        if chunk and (len(chunk) >= size or chunk[-1].run_id != c.run_id):
            yield chunk
            chunk = []
        chunk.append(c)
    if chunk:
        yield chunk


def _frame(chunk: list[Candidate]) -> pd.DataFrame:
    """The rows as received, with their original lineage, as the text frame a reader yields."""
    values = [json.loads(c.original) if c.original else {} for c in chunk]
    frame = pd.DataFrame.from_records(values).astype("str")
    frame.insert(0, SOURCE_ROW, pd.array([c.source_row or 0 for c in chunk], dtype="int64"))
    frame.insert(0, SOURCE_FILE, pd.Series([c.source_file or "" for c in chunk], dtype="str"))
    return frame
