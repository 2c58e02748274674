"""What ``healthetl state`` and ``healthetl report`` show, assembled from the ledger's tables
(the command line only renders it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from healthetl.ledger import audit, dq, quarantine, runs, watermarks


def overview(engine: Engine, declared: list[str], pipeline: str | None = None) -> list[dict[str, Any]]:
    """One row per pipeline (declared in the project, or known to the database): its watermark,
    lookback and last run (status and counts)."""
    with engine.connect() as conn:
        states = {s.pipeline: s for s in watermarks.all_states(conn)}
    latest = {r["pipeline"]: r for r in runs.latest_per_pipeline(engine)}
    names = sorted(set(states) | set(latest) | set(declared))
    if pipeline:
        names = [n for n in names if n == pipeline]
    out = []
    for name in names:
        st, run = states.get(name), latest.get(name, {})
        out.append(
            {
                "pipeline": name,
                "watermark": st.watermark.isoformat() if st and st.watermark else None,
                "lookback_hours": st.lookback_hours if st else None,
                "last_run_id": run.get("run_id"),
                "last_status": run.get("status"),
                "last_started_at": run.get("started_at"),
                "rows_in": run.get("rows_in"),
                "rows_loaded": run.get("rows_loaded"),
                "rows_quarantined": run.get("rows_quarantined"),
            }
        )
    return out


@dataclass(frozen=True)
class RunReport:
    """Runs with what they wrote (audit log), the rules their rows failed (quarantine) and
    their batch-level checks (dq_results)."""

    runs: list[dict[str, Any]]
    tables: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    quality: list[dict[str, Any]]

    def to_json(self) -> list[dict[str, Any]]:
        """Each run with its tables, failed rules and checks nested."""
        out = []
        for r in self.runs:
            run_id = r["run_id"]
            out.append(
                {
                    **r,
                    "tables": [
                        {k: v for k, v in a.items() if k not in ("id", "run_id", "pipeline")}
                        for a in self.tables
                        if a["run_id"] == run_id
                    ],
                    "checks": [
                        {k: v for k, v in c.items() if k != "run_id"}
                        for c in self.rules
                        if c["run_id"] == run_id
                    ],
                    "quality": [q for q in self.quality if q["run_id"] == run_id],
                }
            )
        return out


def run_report(engine: Engine, *, run_id: str | None = None, pipeline: str | None = None) -> RunReport:
    """One run (``run_id``), or the latest run of every pipeline (of ``pipeline`` only)."""
    found = runs.runs(engine, run_id=run_id, limit=None) if run_id else runs.latest_per_pipeline(engine)
    if pipeline:
        found = [r for r in found if r["pipeline"] == pipeline]
    ids = [r["run_id"] for r in found]
    return RunReport(
        found,
        audit.entries(engine, run_ids=ids),
        quarantine.rule_counts(engine, ids),
        dq.history(engine, None, run_ids=ids),
    )
