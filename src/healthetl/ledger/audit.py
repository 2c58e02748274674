"""The audit log (``etl_audit_log``): one row per table a batch wrote, or one carrying the
error of a batch that failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.db.schema import etl_audit_log as log
from healthetl.db.schema import etl_runs
from healthetl.ledger.runs import as_row


def entry(
    run_id: str,
    pipeline: str,
    table: str,
    processed: int,
    inserted: int,
    updated: int,
    unchanged: int,
    quarantined: int,
) -> dict[str, Any]:
    """What one batch did to one table (written by ``write`` when the batch commits)."""
    return {
        "run_id": run_id,
        "pipeline": pipeline,
        "table_name": table,
        "rows_processed": processed,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "quarantined": quarantined,
        "error": None,
    }


def write(conn: sa.Connection, entries: list[dict[str, Any]], started: datetime) -> None:
    """The batch's rows, in the load's transaction."""
    now = datetime.now(UTC)
    for row in entries:
        row.setdefault("started_at", started)
        row["finished_at"] = now
    if entries:
        conn.execute(log.insert(), entries)


def write_failure(
    conn: sa.Connection, run_id: str, pipeline: str, table: str, processed: int, quarantined: int, error: str
) -> None:
    """One row carrying the error of a batch that rolled back (nothing inserted or updated)."""
    now = datetime.now(UTC)
    conn.execute(
        log.insert().values(
            run_id=run_id,
            pipeline=pipeline,
            table_name=table,
            rows_processed=processed,
            inserted=0,
            updated=0,
            unchanged=0,
            quarantined=quarantined,
            started_at=now,
            finished_at=now,
            error=error,
        )
    )


def previous_loaded(conn: sa.Connection, pipeline: str, table: str) -> int | None:
    """Rows the last successful run of this pipeline that read anything loaded into ``table``
    (one dataset of a batch is compared with itself, not with the batch's total)."""
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


def entries(
    engine: Engine, run_ids: list[str] | None = None, pipeline: str | None = None
) -> list[dict[str, Any]]:
    """What each batch did to each table, oldest first."""
    q = sa.select(log).order_by(log.c.id)
    if run_ids is not None:
        if not run_ids:
            return []
        q = q.where(log.c.run_id.in_(run_ids))
    if pipeline:
        q = q.where(log.c.pipeline == pipeline)
    with engine.connect() as conn:
        return [as_row(r._mapping) for r in conn.execute(q)]
