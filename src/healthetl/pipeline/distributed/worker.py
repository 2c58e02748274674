"""What a worker does with one partition: read it, validate it with the dataset's own
:class:`Validator` (the same compiled rules as a local load, all but the key checks, which the
coordinator decides for the whole run), and COPY its valid rows, its failure records and every
row's keys into the run's staging tables, in one transaction of its own.

The transaction first deletes whatever this partition put there before, so a partition run
twice (Dask retries it after its worker died) replaces its rows instead of adding them again.
Nothing here imports Dask: the coordinator hands :func:`load_partition` to whatever schedules it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from healthetl import pseudonym
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.datasets.standardise import LookupTable
from healthetl.db.bulk import csv_bytes, text_table
from healthetl.errors import SourceError
from healthetl.failures import FAILURE_COLUMNS
from healthetl.pipeline.distributed.staging import PART, ROW, Staging
from healthetl.pipeline.extract import checked
from healthetl.pipeline.inputs import shaped
from healthetl.pipeline.quality import QualityTracker
from healthetl.pipeline.validator import Validator
from healthetl.results import BatchResult, RunCounts, ValidationSummary
from healthetl.sources import SOURCE_ROW
from healthetl.sources.partitions import Partition


@dataclass(frozen=True)
class Job:
    """What every partition of one dataset's run shares (sent to each worker once)."""

    dataset: Dataset
    options: PipelineOptions
    run_id: str
    staging: Staging
    #: a libpq connection string; it may hold a password, so it is never logged or shown
    database: str = field(repr=False)
    known: dict[str, pd.Index] | None = None
    lookups: dict[str, LookupTable] | None = None
    #: (cursor column, first accepted value): the incremental window
    window: tuple[str, str] | None = None
    cursor: str | None = None
    #: columns stored as pseudonyms (the key is read from the worker's own environment)
    pseudonymised: frozenset[str] = frozenset()


@dataclass
class PartitionResult:
    index: int
    counts: RunCounts
    summary: ValidationSummary
    tracker: QualityTracker


def load_partition(part: Partition, job: Job) -> PartitionResult:
    """Validate one partition and stage its rows and failures (see the module's docstring)."""
    validator = Validator(job.dataset, job.options, job.known, window=job.window, lookups=job.lookups)
    validator.defer_keys = True  # its keys are handed back: the coordinator decides for the whole run
    tracker = QualityTracker(job.dataset, cursor=job.cursor)
    counts = RunCounts()
    secret = pseudonym.key() if job.pseudonymised else None
    stage = job.staging
    with psycopg.connect(job.database) as conn, conn.cursor() as cur:
        for table in (stage.rows, stage.failures, stage.keys):  # what an earlier try of it staged
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(PART)),
                (part.index,),
            )
        for frame in _frames(part, job.options):
            counts.rows_read += len(frame)
            batch = validator.validate(frame)
            clean = batch.clean
            if secret is not None:
                clean = pseudonym.frame(clean, job.pseudonymised, secret)
            _stage(cur, stage, batch, clean, job, part.index)
            tracker.add(batch)
            counts.add(batch)
        conn.commit()
    return PartitionResult(part.index, counts, validator.summary, tracker)


def _frames(part: Partition, options: PipelineOptions) -> Iterator[pd.DataFrame]:
    """The partition's frames; a path this worker cannot see is said to be that."""
    if part.fs is None and not os.path.exists(part.path):
        raise SourceError(
            f"{part.path}: not found on the Dask worker on {socket.gethostname()}: every worker "
            "must read the sources (a path on storage all of them mount, or an s3:// URL)"
        )
    return shaped(checked(part.frames(options)), options)


def _copy(
    cur: psycopg.Cursor[Any], table: str, frame: pd.DataFrame, names: list[str], constants: dict[str, str]
) -> None:
    """Text rows (and constant columns) into a staging table by COPY."""
    if frame.empty:
        return
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(table), columns)
    with cur.copy(statement) as copy:
        copy.write(csv_bytes(text_table(frame, names, constants)))


def _stage(
    cur: psycopg.Cursor[Any], stage: Staging, batch: BatchResult, clean: pd.DataFrame, job: Job, index: int
) -> None:
    """A validated chunk's valid rows, failure records and keys into the staging tables."""
    part = {PART: str(index)}
    rows = clean.assign(**{ROW: clean[SOURCE_ROW].astype("int64").astype("str")})
    _copy(cur, stage.rows, rows, [*stage.columns, PART, ROW], {"run_id": job.run_id, **part})
    failures = batch.failures
    failures = failures.assign(source_row=failures["source_row"].astype("int64").astype("str"))
    _copy(cur, stage.failures, failures, [*FAILURE_COLUMNS, PART], part)
    keys = batch.keys
    if keys is not None and not keys.empty:  # a dataset without key sets has none
        keys = keys.assign(
            key_set=keys["key_set"].astype("str"),
            source_row=keys["source_row"].astype("int64").astype("str"),
            clean=keys["clean"].map({True: "t", False: "f"}),
        ).rename(columns={"source_row": ROW})
        _copy(cur, stage.keys, keys, [PART, ROW, "key_set", "key", "clean"], part)
