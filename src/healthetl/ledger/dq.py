"""Batch-level data-quality results (``dq_results``): one row per check per run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.db.schema import dq_results, etl_runs
from healthetl.ledger.runs import as_row
from healthetl.results import CheckResult


def record(conn: sa.Connection, run_id: str, pipeline: str, results: list[CheckResult]) -> None:
    if results:
        conn.execute(
            dq_results.insert(),
            [
                {
                    "run_id": run_id,
                    "pipeline": pipeline,
                    "check_name": r.check,
                    "column_name": r.column,
                    "severity": r.severity,
                    "observed": r.observed,
                    "threshold": r.threshold,
                    "passed": r.passed,
                    "detail": r.detail,
                }
                for r in results
            ],
        )


def history(
    engine: Engine, pipeline: str | None, *, run_ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Batch-level data-quality checks of runs, oldest first, with the run's start time."""
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
            row = as_row(r._mapping)
            row["passed"] = bool(row["passed"])
            out.append(row)
        return out
