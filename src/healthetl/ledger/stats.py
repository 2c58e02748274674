"""Run statistics per pipeline, and the ledger page by page (``GET /stats``, ``GET /runs``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.db.schema import etl_runs as r
from healthetl.ledger.runs import as_row

STATUSES = ("running", "succeeded", "failed", "abandoned")


def _seconds(conn: sa.Connection) -> sa.ColumnElement[Any]:
    """A finished run's duration in seconds, in the database's own date arithmetic."""
    if conn.dialect.name == "postgresql":
        return sa.func.extract("epoch", r.c.finished_at - r.c.started_at)
    return (sa.func.julianday(r.c.finished_at) - sa.func.julianday(r.c.started_at)) * 86400.0


def per_pipeline(engine: Engine) -> list[dict[str, Any]]:
    """Per pipeline: runs, successes, failures (failed or abandoned), rows in, loaded and
    quarantined (all runs), total and mean duration of finished runs, last success, last
    failure and its reason."""

    def count(*statuses: str) -> sa.ColumnElement[Any]:
        return sa.func.sum(sa.case((r.c.status.in_(statuses), 1), else_=0))

    with engine.connect() as conn:
        seconds = _seconds(conn)
        totals = conn.execute(
            sa.select(
                r.c.pipeline,
                sa.func.count().label("runs"),
                count("succeeded").label("succeeded"),
                count("failed", "abandoned").label("failed"),
                count("running").label("running"),
                sa.func.sum(r.c.rows_in).label("rows_in"),
                sa.func.sum(r.c.rows_loaded).label("rows_loaded"),
                sa.func.sum(r.c.rows_quarantined).label("rows_quarantined"),
                sa.func.sum(seconds).label("total_seconds"),
                sa.func.avg(seconds).label("mean_seconds"),
                sa.func.max(sa.case((r.c.status == "succeeded", r.c.finished_at))).label("last_success_at"),
            )
            .group_by(r.c.pipeline)
            .order_by(r.c.pipeline)
        ).all()
        failures = _last_failures(conn)
    out = []
    for row in totals:
        item = as_row({**row._mapping, "last_success_at": None})
        item["last_success_at"] = _iso(row.last_success_at)
        for key in ("succeeded", "failed", "running", "rows_in", "rows_loaded", "rows_quarantined"):
            item[key] = int(item[key] or 0)
        for key in ("total_seconds", "mean_seconds"):
            item[key] = round(float(item[key]), 3) if item[key] is not None else None
        last = failures.get(row.pipeline)
        item["last_failure_at"] = last["finished_at"] if last else None
        item["last_failure_run_id"] = last["run_id"] if last else None
        item["last_failure_error"] = last["error"] if last else None
        out.append(item)
    return out


def _iso(value: Any) -> str | None:
    """A max() of timestamps: SQLite hands back text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return str(as_row({"at": value})["at"])


def _last_failures(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    failed = r.c.status.in_(("failed", "abandoned"))
    latest = (
        sa.select(r.c.pipeline, sa.func.max(r.c.started_at).label("started_at"))
        .where(failed)
        .group_by(r.c.pipeline)
        .subquery()
    )
    rows = conn.execute(
        sa.select(r.c.pipeline, r.c.run_id, r.c.finished_at, r.c.error)
        .join(latest, sa.and_(r.c.pipeline == latest.c.pipeline, r.c.started_at == latest.c.started_at))
        .where(failed)
    )
    return {row.pipeline: as_row(row._mapping) for row in rows}


def page(
    engine: Engine,
    *,
    page: int,
    page_size: int,
    pipeline: str | None = None,
    status: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(runs matching, one page of them), newest first."""
    where = []
    if pipeline:
        where.append(r.c.pipeline == pipeline)
    if status:
        where.append(r.c.status == status)
    q = (
        sa.select(r)
        .where(*where)
        .order_by(r.c.started_at.desc(), r.c.run_id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(r).where(*where)).scalar_one()
        return int(total), [as_row(row._mapping) for row in conn.execute(q)]
