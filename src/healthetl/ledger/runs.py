"""The run ledger (``etl_runs``): one row per pipeline execution.

A run is recorded as ``running`` in its own committed transaction before any data moves, so a
crash leaves a trace. Its final counts are written in the *same* transaction as the data, so
the ledger never claims a load that did not commit. A failed load is marked ``failed`` in a
separate transaction after the rollback.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.db.schema import etl_runs
from healthetl.results import RunCounts


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def start_run(
    engine: Engine,
    run_id: str,
    *,
    pipeline: str,
    dataset: str,
    command: str,
    mode: str | None,
    source: str | None,
) -> datetime:
    started = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            etl_runs.insert().values(
                run_id=run_id,
                pipeline=pipeline,
                dataset=dataset,
                command=command,
                mode=mode,
                source=source,
                status="running",
                started_at=started,
            )
        )
    return started


def lock_pipeline(conn: sa.Connection, pipeline: str, run_id: str) -> None:
    """Serialise runs of one pipeline: a second run waits until the first commits, then reads
    the watermark the first one wrote. PostgreSQL: an advisory lock. SQLite: the database's write
    lock, taken now (a no-op write to this run's ledger row) rather than at the first real write,
    so a second run waits here for the whole of the first."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(p)s))", {"p": f"healthetl:{pipeline}"})
    # SQLite: this write takes the lock. Both: a run that waited here while the previous holder
    # took it for dead is running again.
    conn.execute(etl_runs.update().where(etl_runs.c.run_id == run_id).values(status="running"))
    # holding the lock, no other run of this pipeline is loading: one still `running` was
    # killed (kill -9, a crash, a power cut) before it could record its end
    conn.execute(
        etl_runs.update()
        .where(
            etl_runs.c.pipeline == pipeline,
            etl_runs.c.status == "running",
            etl_runs.c.run_id != run_id,
        )
        .values(
            status="abandoned",
            finished_at=datetime.now(UTC),
            error="the process ended before recording its end (killed or crashed); "
            "nothing it did was committed",
        )
    )


def finish_run(conn: sa.Connection, run_id: str, counts: RunCounts) -> None:
    """Inside the load's transaction: the ledger commits together with the data."""
    conn.execute(
        etl_runs.update()
        .where(etl_runs.c.run_id == run_id)
        .values(status="succeeded", finished_at=datetime.now(UTC), **asdict(counts))
    )


def fail_run(conn: sa.Connection, run_id: str, error: str, counts: RunCounts | None = None) -> None:
    """After the load's rollback, in a transaction of its own: the run failed, with what it
    counted (nothing loaded; quarantined rows kept; the rest rolled back)."""
    values: dict[str, Any] = {"status": "failed", "finished_at": datetime.now(UTC), "error": error}
    if counts is not None:
        values.update(asdict(counts))
    conn.execute(etl_runs.update().where(etl_runs.c.run_id == run_id).values(**values))


def pipeline_of(engine: Engine, run_id: str) -> str | None:
    """The pipeline a run belongs to (None: no such run)."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(etl_runs.c.pipeline).where(etl_runs.c.run_id == run_id)).scalar()
    return None if found is None else str(found)


def runs(
    engine: Engine,
    *,
    pipeline: str | None = None,
    limit: int | None = 50,
    run_id: str | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    q = sa.select(etl_runs).order_by(etl_runs.c.started_at.desc(), etl_runs.c.run_id.desc())
    if since is not None:
        q = q.where(etl_runs.c.started_at >= since)
    if pipeline:
        q = q.where(etl_runs.c.pipeline == pipeline)
    if run_id:
        q = q.where(etl_runs.c.run_id == run_id)
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [as_row(r._mapping) for r in conn.execute(q)]


def latest_per_pipeline(engine: Engine) -> list[dict[str, Any]]:
    latest = (
        sa.select(etl_runs.c.pipeline, sa.func.max(etl_runs.c.started_at).label("started_at"))
        .group_by(etl_runs.c.pipeline)
        .subquery()
    )
    q = (
        sa.select(etl_runs)
        .join(
            latest,
            sa.and_(
                etl_runs.c.pipeline == latest.c.pipeline,
                etl_runs.c.started_at == latest.c.started_at,
            ),
        )
        .order_by(etl_runs.c.started_at)
    )
    with engine.connect() as conn:
        return [as_row(r._mapping) for r in conn.execute(q)]


def as_row(mapping: Any) -> dict[str, Any]:
    """A ledger row as a plain dict, times as ISO 8601 in UTC."""
    row = dict(mapping)
    for key in ("started_at", "finished_at", "at", "loaded_at"):
        value = row.get(key)
        if isinstance(value, datetime):
            if value.tzinfo is None:  # SQLite hands back naive UTC
                value = value.replace(tzinfo=UTC)
            row[key] = value.isoformat(timespec="seconds")
    return row
