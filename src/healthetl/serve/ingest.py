"""``POST /ingest/{pipeline}``: a request body loaded the way ``healthetl run`` loads a file of
that pipeline: its dataset's rules, the pipeline's options and load mode, quarantine, audit log,
run ledger and accounting, in one transaction.

One ingest per pipeline at a time: a second request while one runs is told so at once (409),
rather than waiting on the pipeline lock the loads themselves take (which still serialises an
ingest with a ``healthetl run`` of the same pipeline in another process).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import Project
from healthetl.db import migrate
from healthetl.errors import HealthetlError, UsageError
from healthetl.ledger.report import run_report
from healthetl.pipeline.load import load
from healthetl.results import LoadResult, ProgressEvent
from healthetl.sources.base import FileSource

#: Content-Type (without parameters) -> the file suffix the readers know it by
FORMATS = {
    "text/csv": ".csv",
    "application/csv": ".csv",
    "application/x-ndjson": ".ndjson",
    "application/ndjson": ".ndjson",
    "application/jsonl": ".ndjson",
    "application/x-jsonlines": ".ndjson",
}


class Busy(HealthetlError):
    """An ingest of this pipeline is running (409)."""


@dataclass
class Ingested:
    """What a finished (or failed) ingest reports."""

    run_id: str | None
    result: LoadResult | None
    error: HealthetlError | None = None
    report: list[dict[str, Any]] = field(default_factory=list)


class Ingestor:
    def __init__(self, engine: Engine, project: Project, catalog: Catalog) -> None:
        self.engine, self.project, self.catalog = engine, project, catalog
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def plan(self, pipeline: str, dataset: str | None, mode: str | None) -> tuple[str, str]:
        """(dataset, load mode) of an ingest: the pipeline's own dataset or, for a pipeline of
        several, the one named by ``?dataset=``; the pipeline's mode unless ``?mode=`` says
        otherwise. A mode that replaces the table must be asked for: a request body would
        otherwise become the whole table."""
        p = self.project.pipeline(pipeline)
        if not p.datasets:
            if dataset is not None and dataset != p.dataset:
                raise UsageError(f"pipeline {pipeline} loads dataset {p.dataset}, not {dataset}")
            chosen = p.dataset
        elif dataset is None or dataset not in p.datasets:
            raise UsageError(
                f"pipeline {pipeline} loads several datasets: say which with ?dataset= "
                f"({', '.join(p.datasets)})"
            )
        else:
            chosen = dataset
        ds = self.catalog.dataset(chosen)
        default = (p.mode if not p.datasets else None) or ds.default_mode
        if mode is None and default == "replace":
            raise UsageError(
                f"pipeline {pipeline} replaces {ds.table} on every load, so this body would become the "
                "whole table: send ?mode=merge (or append) to add rows, or ?mode=replace to confirm"
            )
        if mode in ("merge",) and not ds.primary_key:
            raise UsageError(f"dataset {ds.name} has no primary key to merge on: use ?mode=append")
        return chosen, mode or default

    def ingest(self, pipeline: str, dataset: str, mode: str, body: Path) -> Ingested:
        """Load the body file; the run's report (from the ledger) whether it loaded or not."""
        with self._guard:
            lock = self._locks.setdefault(pipeline, threading.Lock())
        if not lock.acquire(blocking=False):
            raise Busy(f"pipeline {pipeline} is loading another request; try again when it is done")
        run_ids: list[str] = []

        def progress(event: ProgressEvent, info: dict[str, Any]) -> None:
            if event == "start":
                run_ids.append(str(info["run_id"]))

        try:
            p = self.project.pipeline(pipeline)
            try:
                migrate.ensure_at_head(self.engine, self.catalog)
                result = load(
                    self.engine,
                    self.catalog.dataset(dataset),
                    [FileSource(str(body))],
                    p.options,
                    catalog=self.catalog,
                    mode=mode,
                    pipeline=p.name,
                    command="ingest",
                    progress=progress,
                )
            except HealthetlError as exc:
                run_id = run_ids[0] if run_ids else None
                return Ingested(run_id, None, exc, self._report(run_id))
            return Ingested(result.run_id, result, None, self._report(result.run_id))
        finally:
            lock.release()

    def _report(self, run_id: str | None) -> list[dict[str, Any]]:
        return run_report(self.engine, run_id=run_id).to_json() if run_id else []


class BodyFile:
    """The request body spooled to a file the readers open like any other, named for the
    ledger (``ingest-<pipeline>-<time>.csv``) and removed afterwards."""

    def __init__(self, pipeline: str, suffix: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="healthetl-ingest-"))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.path = self._dir / f"ingest-{pipeline}-{stamp}{suffix}"
        self._file = self.path.open("wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._file.write(chunk)

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self._file.close()
        shutil.rmtree(self._dir, ignore_errors=True)
