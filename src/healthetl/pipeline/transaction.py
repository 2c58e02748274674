"""One load's transaction: the run recorded before, the body run inside one transaction with
its bookkeeping, and on any failure a rollback, the run recorded failed (with its quarantine
rows and checks) and an error that says why."""

from __future__ import annotations

import gc
import sqlite3
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl import interrupts
from healthetl.db import bulk
from healthetl.errors import DatabaseError, DriftError, HealthetlError, QualityGateError, first_line
from healthetl.ledger import audit, dq, files, runs
from healthetl.pipeline.quality import drift_checks
from healthetl.pipeline.validate import write_report
from healthetl.results import CheckResult, LoadResult, LoadRun, Progress, RunCounts, ValidationSummary

#: a failed statement: through SQLAlchemy, or straight from a driver (COPY, SQLite's bulk inserts)
_DATABASE_ERRORS = (sa.exc.DBAPIError, psycopg.Error, sqlite3.Error)


def new_result(pipeline: str, dataset: str, mode: str, sources: list[str]) -> LoadRun:
    return LoadRun(
        runs.new_run_id(),
        pipeline,
        dataset,
        mode,
        "running",
        RunCounts(),
        ValidationSummary(dataset),
        sources,
    )


def absorb(batch: LoadRun, part: LoadRun) -> None:
    batch.counts.absorb(part.counts)
    batch.audit += part.audit
    batch.files += part.files
    batch.skipped_files += part.skipped_files
    batch.checks += part.checks
    batch.summary.add_failures_from(part.summary)


def execute(
    engine: Engine,
    result: LoadRun,
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
    started = runs.start_run(
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
    result: LoadRun,
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
            runs.lock_pipeline(conn, name, run_id)  # one run of a pipeline at a time
            body(conn)
            audit.write(conn, result.audit, started)
            if inbox:
                files.remember(conn, result.pipeline, result.run_id, result.files)
            runs.finish_run(conn, run_id, counts)
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
    except _DATABASE_ERRORS as exc:
        error = _database_error(engine, result, exc)
        progress("done", {"pipeline": name, "status": "failed"})
        raise error from None
    except BaseException as exc:
        message = str(exc) if isinstance(exc, HealthetlError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            message = "terminated (SIGTERM)" if str(exc) == interrupts.TERMINATED else "interrupted"
            _release(engine, raw, exc)
        try:
            _try_record_failure(engine, result, message)
        finally:
            progress("done", {"pipeline": name, "status": "failed"})
        raise
    result.status = "succeeded"
    progress("done", {"pipeline": name, "status": "succeeded", "counts": counts})
    done = result.freeze()
    if report_path is not None:
        write_report(report_path, done.report())
    return done


def _database_error(
    engine: Engine, result: LoadRun, exc: sa.exc.DBAPIError | psycopg.Error | sqlite3.Error
) -> DatabaseError:
    """The error to raise for a failed statement: its first line, whether the failure could be
    recorded, and what to do about the usual causes."""
    cause = _first_database_error(exc)
    orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
    text = first_line(orig or cause)
    message = f"{result.pipeline}: load failed, nothing was written: {text}"
    if not _try_record_failure(engine, result, message):
        message += " (the database could not be reached to record the run as failed)"
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
    return DatabaseError(message, hint=hint)


def _first_database_error(exc: BaseException) -> BaseException:
    """The database error that started it: when the server ends a session (a restart), the
    rollback that follows fails too ("the connection is lost") and hides the cause
    ("terminating connection due to administrator command") in its ``__context__``."""
    first, seen = exc, {id(exc)}
    context = exc.__context__
    while context is not None and id(context) not in seen:
        seen.add(id(context))
        if isinstance(context, _DATABASE_ERRORS):
            first = context
        context = context.__context__
    return first


def _release(engine: Engine, raw: list[Any], exc: BaseException) -> None:
    """Roll the interrupted load's own connection back. An interrupt can leave it invalidated
    but still open (SQLAlchemy 2.0 does not roll back on an exit exception): on SQLite it would
    keep the write lock, and recording the failure would wait for it.

    An interrupt inside the driver's call makes SQLAlchemy close the connection, but SQLite
    closes it for real only once its statements are finalised: the cursor of the interrupted
    statement, still referenced by the traceback's finished frames, keeps it open and the write
    lock held. Clearing those frames lets it go."""
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    for dbapi in raw:
        try:
            dbapi.rollback()
            held = bool(getattr(dbapi, "in_transaction", False))  # a statement still in flight
        except Exception:  # closed already (SQLAlchemy invalidates on an interrupt): see below
            continue
        if held:
            try:
                dbapi.close()  # closing ends the transaction and lets go of its locks
            except Exception:
                pass
            engine.dispose()  # and the pool starts afresh instead of handing the closed one out


def _try_record_failure(engine: Engine, result: LoadRun, message: str) -> bool:
    """Record the failure if the database can still be reached (it may be what failed: a
    restart, a lost connection); the original error is what the user is told either way."""
    try:
        _record_failure(engine, result, message)
        return True
    except (sa.exc.DBAPIError, psycopg.Error):
        return False


def _record_failure(
    engine: Engine, result: LoadRun, message: str, checks: list[CheckResult] | None = None
) -> None:
    """After a rollback, in a transaction of its own: the run failed, with its counts (nothing
    loaded, the valid rows rolled back), its quarantine rows (from the spool: a failed run still
    says which rows failed which rule), its checks, and one audit row carrying the error."""
    result.status, result.error = "failed", message
    result.counts.roll_back()
    with engine.begin() as conn:
        runs.fail_run(conn, result.run_id, message, result.counts)
        for dataset, failures in result.spool.frames():
            bulk.write_quarantine(conn, failures, run_id=result.run_id, dataset=dataset)
        for write_again in result.requarantine:
            write_again(conn)
        if checks:
            dq.record(conn, result.run_id, result.pipeline, checks)
        audit.write_failure(
            conn,
            result.run_id,
            result.pipeline,
            result.dataset,
            result.counts.rows_in,
            result.counts.rows_quarantined,
            message,
        )


def _write_report(path: Path | None, result: LoadRun) -> None:
    if path is not None:
        write_report(path, result.report())
