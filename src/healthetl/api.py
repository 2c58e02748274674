"""The Python API: the command line's main stages as functions.

    import healthetl
    result = healthetl.run("examples/vip-healthtech/healthetl.toml", db="sqlite:///clinic.db")
    for loaded in result.results:
        print(loaded.pipeline, loaded.status, loaded.counts.rows_loaded)

Each call resolves the project and the database as the command line does (``db`` argument,
``HEALTHETL_DATABASE_URL``, ``healthetl.toml``, the SQLite default), returns the result object
the command line renders, and raises a :class:`healthetl.errors.HealthetlError` subclass where
the command line would exit non-zero (``QualityGateError`` for a failed gate, ``SourceError``,
``DatabaseError``, ...). Nothing is printed: progress goes to the ``healthetl`` logger (INFO).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthetl.config import LOAD_MODES
from healthetl.errors import UsageError
from healthetl.pipeline.inputs import RejectsFile
from healthetl.pipeline.load import load as load_files
from healthetl.pipeline.run import RunResult
from healthetl.pipeline.run import run as run_pipelines
from healthetl.pipeline.validate import validate as validate_file
from healthetl.results import LoadResult, Progress, ValidateResult
from healthetl.session import (
    attach_database,
    check_snapshot_date,
    open_database,
    open_project,
    options_for,
    reading,
)
from healthetl.sources.base import Source

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from healthetl.pipeline.distributed.cluster import DaskCluster

log = logging.getLogger("healthetl")


def _log_progress(event: str, info: dict[str, Any]) -> None:
    """Progress events as log records (the command line renders the same events itself)."""
    pipeline = info.get("pipeline", "")
    if event == "start":
        log.info("%s: run %s started", pipeline, info.get("run_id"))
    elif event == "batch":
        log.info("%s: %s rows processed", pipeline, info.get("rows"))
    elif event == "done":
        log.info("%s: %s", pipeline, info.get("status"))
    elif event == "upgraded":
        log.info("database upgraded from %s to %s", info.get("from") or "empty", info.get("to"))
    elif event == "engine":
        log.info("%s", f"{pipeline}: {info['detail']}" if pipeline else info["detail"])
    elif event == "idle":
        log.info("%s: inbox empty, nothing to do", pipeline)
    elif event == "left_out":
        log.info(
            "%s: not loaded, no dataset of the pipeline takes them: %s", pipeline, ", ".join(info["files"])
        )


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def run(
    config: str | Path | None = None,
    *,
    db: str | None = None,
    pipelines: Sequence[str] | None = None,
    force: bool = False,
    full_refresh: bool = False,
    report: str | Path | None = None,
    from_raw: str | None = None,
    snapshot_date: str | None = None,
    progress: Progress | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    partition_size: int | str | None = None,
) -> RunResult:
    """Every pipeline of the project file (or those named), dependencies first, migrating the
    database first if needed: ``healthetl run``. ``from_raw`` reprocesses the raw rows of one
    earlier run; ``progress`` receives the run's events (default: log records).

    ``engine="dask"``: flat datasets are validated and staged by Dask workers, on the scheduler
    at ``scheduler`` or on a local cluster of ``workers`` processes (default: one per core), in
    partitions of about ``partition_size`` bytes (``"64MB"``); PostgreSQL only."""
    check_snapshot_date(snapshot_date)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    if engine == "local" and (scheduler is not None or workers is not None or partition_size is not None):
        raise UsageError("--scheduler, --workers and --partition-size go with --engine dask")
    session = open_database(db, _path(config))
    try:
        with ExitStack() as stack:
            cluster = None
            if engine == "dask":
                cluster = stack.enter_context(_dask_cluster(session.db, scheduler, workers, partition_size))
                (progress or _log_progress)("engine", {"detail": f"--engine dask: {cluster.description}"})
            return run_pipelines(
                session.db,
                session.project,
                list(pipelines) if pipelines else None,
                catalog=session.catalog,
                progress=progress or _log_progress,
                force=force,
                full_refresh=full_refresh,
                from_raw=from_raw,
                report_path=_path(report),
                snapshot_date=snapshot_date,
                cluster=cluster,
            )
    finally:
        session.db.dispose()


#: where a run's per-partition work runs: this process, or a Dask cluster
ENGINES = ("local", "dask")


def _dask_cluster(
    db: Engine, scheduler: str | None, workers: int | None, partition_size: int | str | None
) -> DaskCluster:
    """The cluster of ``--engine dask``, refused before it starts on a SQLite database."""
    from healthetl.db.engine import is_postgres
    from healthetl.pipeline.distributed.cluster import DaskCluster, refuse_sqlite
    from healthetl.sources.partitions import DEFAULT_SIZE, parse_size

    if not is_postgres(db):
        raise UsageError(refuse_sqlite())
    size = DEFAULT_SIZE if partition_size is None else parse_size(partition_size)
    return DaskCluster(scheduler, workers, size)


def validate(
    dataset: str,
    source: str | Path,
    *,
    config: str | Path | None = None,
    db: str | None = None,
    pipeline: str | None = None,
    output: str | Path | None = None,
    rejects: str | Path | None = None,
    report: str | Path | None = None,
    delimiter: str | None = None,
    quote: str | None = None,
    csv_safe: bool = False,
) -> ValidateResult:
    """Standardise and validate a file with the dataset's rules: ``healthetl validate``. With
    ``db``, references are checked against the loaded tables. The summary counts the rows; a
    file whose rows fail is a result, not an error."""
    session = (
        open_database(db, _path(config), must_exist=True, at_head=True) if db else open_project(_path(config))
    )
    try:
        ds = session.catalog.dataset(dataset)
        options, _ = options_for(session.project, ds, pipeline)
        return validate_file(
            ds,
            str(source),
            reading(options, delimiter=delimiter, quote=quote),
            catalog=session.catalog,
            clean_output=str(output) if output is not None else None,
            rejects_output=str(rejects) if rejects is not None else None,
            report_path=_path(report),
            engine=session.engine,
            csv_safe=csv_safe,
        )
    finally:
        if session.engine is not None:
            session.engine.dispose()


def load(
    dataset: str,
    source: str | Path | Sequence[str | Path],
    *,
    config: str | Path | None = None,
    db: str | None = None,
    pipeline: str | None = None,
    mode: str | None = None,
    force: bool = False,
    snapshot_date: str | None = None,
    rejects: str | Path | None = None,
    report: str | Path | None = None,
    delimiter: str | None = None,
    quote: str | None = None,
    progress: Progress | None = None,
) -> LoadResult:
    """Validate and load one or more files of a dataset in one transaction: ``healthetl load``.
    ``rejects`` is the rejects file ``validate`` wrote for these files (its rows are quarantined
    and counted). The database must be migrated (``healthetl db upgrade``, or :func:`run`)."""
    if mode is not None and mode not in LOAD_MODES:
        raise UsageError(f"--mode must be one of {', '.join(LOAD_MODES)}")
    session = open_project(_path(config))
    ds = session.catalog.dataset(dataset)
    attach_database(session, db, at_head=True)
    try:
        options, name = options_for(session.project, ds, pipeline)
        options = reading(options, delimiter=delimiter, quote=quote, snapshot_date=snapshot_date)
        paths = [source] if isinstance(source, str | Path) else list(source)
        sources: list[str | Source] = [str(p) for p in paths]
        if rejects is not None:
            sources.append(RejectsFile(str(rejects)))
        return load_files(
            session.db,
            ds,
            sources,
            options,
            catalog=session.catalog,
            mode=mode,
            pipeline=name,
            force=force,
            report_path=_path(report),
            progress=progress or _log_progress,
        )
    finally:
        session.db.dispose()
