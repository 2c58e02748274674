"""The run ledger (``etl_runs``): one row per pipeline execution.

A run is recorded as ``running`` in its own committed transaction before any data moves, so a
crash leaves a trace. Its final counts are written in the *same* transaction as the data, so
the ledger never claims a load that did not commit. A failed load is marked ``failed`` in a
separate transaction after the rollback.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.db.schema import etl_runs, quarantine


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


@dataclass
class RunCounts:
    rows_read: int = 0
    rows_skipped: int = 0
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    duplicates_dropped: int = 0
    rows_warned: int = 0
    #: a failed run: the valid rows its rolled-back transaction did not load
    rows_rolled_back: int = 0

    @property
    def balanced(self) -> bool:
        return self.rows_in == (
            self.rows_loaded + self.rows_quarantined + self.duplicates_dropped + self.rows_rolled_back
        )

    def roll_back(self) -> None:
        """After a rollback nothing was loaded: the rows that were not rejected were rolled back."""
        self.rows_loaded = 0
        self.rows_rolled_back = max(0, self.rows_in - self.rows_quarantined - self.duplicates_dropped)


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


def runs(
    engine: Engine,
    *,
    pipeline: str | None = None,
    limit: int | None = 50,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    q = sa.select(etl_runs).order_by(etl_runs.c.started_at.desc(), etl_runs.c.run_id.desc())
    if pipeline:
        q = q.where(etl_runs.c.pipeline == pipeline)
    if run_id:
        q = q.where(etl_runs.c.run_id == run_id)
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(q)]


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
        return [_row(r._mapping) for r in conn.execute(q)]


def rule_counts(engine: Engine, run_ids: list[str]) -> list[dict[str, Any]]:
    """Failed checks per run, column, rule and severity (from the quarantine table)."""
    if not run_ids:
        return []
    q = (
        sa.select(
            quarantine.c.run_id,
            quarantine.c.column_name,
            quarantine.c.rule,
            quarantine.c.severity,
            sa.func.count().label("failures"),
        )
        .where(quarantine.c.run_id.in_(run_ids))
        .group_by(quarantine.c.run_id, quarantine.c.column_name, quarantine.c.rule, quarantine.c.severity)
        .order_by(quarantine.c.run_id, sa.func.count().desc(), quarantine.c.rule)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("started_at", "finished_at", "at", "loaded_at"):
        value = row.get(key)
        if isinstance(value, datetime):
            if value.tzinfo is None:  # SQLite hands back naive UTC
                value = value.replace(tzinfo=UTC)
            row[key] = value.isoformat(timespec="seconds")
    return row


def check_history(
    engine: Engine, pipeline: str | None, *, run_ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Batch-level data-quality checks of runs, oldest first, with the run's start time."""
    from healthetl.db.schema import dq_results

    q = (
        sa.select(
            etl_runs.c.started_at,
            dq_results.c.run_id,
            dq_results.c.pipeline,
            dq_results.c.check_name,
            dq_results.c.column_name,
            dq_results.c.severity,
            dq_results.c.observed,
            dq_results.c.threshold,
            dq_results.c.passed,
            dq_results.c.detail,
        )
        .join(etl_runs, etl_runs.c.run_id == dq_results.c.run_id)
        .order_by(etl_runs.c.started_at, dq_results.c.id)
    )
    if pipeline:
        q = q.where(dq_results.c.pipeline == pipeline)
    if run_ids is not None:
        if not run_ids:
            return []
        q = q.where(dq_results.c.run_id.in_(run_ids))
    with engine.connect() as conn:
        out = []
        for r in conn.execute(q):
            row = _row(r._mapping)
            row["passed"] = bool(row["passed"])
            out.append(row)
        return out


def audit_log(
    engine: Engine, run_ids: list[str] | None = None, pipeline: str | None = None
) -> list[dict[str, Any]]:
    """What each batch did to each table (etl_audit_log), oldest first."""
    from healthetl.db.schema import etl_audit_log as t

    q = sa.select(t).order_by(t.c.id)
    if run_ids is not None:
        if not run_ids:
            return []
        q = q.where(t.c.run_id.in_(run_ids))
    if pipeline:
        q = q.where(t.c.pipeline == pipeline)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(q)]


def state_changes(engine: Engine, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Manual changes of pipeline state (set, reset, import), newest first, times in UTC."""
    from healthetl.db.schema import state_audit as t

    q = sa.select(t).order_by(t.c.id.desc())
    if pipeline:
        q = q.where(t.c.pipeline == pipeline)
    with engine.connect() as conn:
        return [
            {
                k: (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat() if isinstance(v, datetime) else v
                for k, v in r._mapping.items()
            }
            for r in conn.execute(q)
        ]
