"""Incremental state, batch-level data-quality checks and analytics maintenance.

Everything here runs inside the load's transaction: the watermark, the analytics and the data
commit together, or none of them does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Analytic, Dataset, Quality
from healthetl.db.schema import dq_results, etl_runs, pipeline_state, state_audit
from healthetl.pipeline.validate import BatchResult

# ---------------------------------------------------------------------------------- state


def canonical(ts: datetime) -> str:
    """A datetime as the canonical text timestamps are compared in (UTC, like the checks)."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    text = ts.strftime("%Y-%m-%d %H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}"
    return text + "+00:00"


def parse_canonical(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T"))


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; they are stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


@dataclass
class PipelineState:
    pipeline: str
    watermark: datetime | None
    lookback_hours: float | None
    last_run_id: str | None
    updated_at: datetime | None


def read_state(conn: sa.Connection, pipeline: str) -> PipelineState | None:
    row = conn.execute(sa.select(pipeline_state).where(pipeline_state.c.pipeline == pipeline)).first()
    if row is None:
        return None
    return PipelineState(
        row.pipeline, _aware(row.watermark), row.lookback_hours, row.last_run_id, _aware(row.updated_at)
    )


def all_states(conn: sa.Connection) -> list[PipelineState]:
    rows = conn.execute(sa.select(pipeline_state).order_by(pipeline_state.c.pipeline)).all()
    return [
        PipelineState(r.pipeline, _aware(r.watermark), r.lookback_hours, r.last_run_id, _aware(r.updated_at))
        for r in rows
    ]


def write_state(
    conn: sa.Connection,
    pipeline: str,
    watermark: datetime | None,
    lookback_hours: float | None,
    run_id: str | None,
) -> None:
    now = datetime.now(UTC)
    values = {
        "watermark": watermark,
        "lookback_hours": lookback_hours,
        "last_run_id": run_id,
        "updated_at": now,
    }
    updated = conn.execute(
        pipeline_state.update().where(pipeline_state.c.pipeline == pipeline).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(pipeline_state.insert().values(pipeline=pipeline, **values))


def audit(
    conn: sa.Connection,
    pipeline: str,
    action: str,
    previous: datetime | None,
    new: datetime | None,
    detail: str | None = None,
) -> None:
    conn.execute(
        state_audit.insert().values(
            pipeline=pipeline,
            action=action,
            previous_watermark=previous,
            new_watermark=new,
            detail=detail,
            at=datetime.now(UTC),
        )
    )


@dataclass
class Window:
    cursor: str
    lookback: timedelta
    watermark: datetime | None

    @property
    def start(self) -> datetime | None:
        return None if self.watermark is None else self.watermark - self.lookback


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


def incremental_window(
    conn: sa.Connection, dataset: Dataset, options: PipelineOptions, pipeline: str
) -> Window | None:
    cursor = options.cursor or dataset.cursor
    if not cursor:
        return None
    lookback = options.lookback_hours if options.lookback_hours is not None else dataset.lookback_hours
    state = read_state(conn, pipeline)
    return Window(cursor, timedelta(hours=lookback), state.watermark if state else None)


# -------------------------------------------------------------------------------- quality


@dataclass
class CheckResult:
    check: str
    severity: str
    observed: float | None
    threshold: float | None
    passed: bool
    column: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "column": self.column,
            "severity": self.severity,
            "observed": self.observed,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class QualityTracker:
    """Accumulates what the batch-level checks need while batches stream by."""

    dataset: Dataset
    rows_taken: int = 0
    rows_accepted: int = 0
    date_failures: int = 0
    nulls: Counter[str] = field(default_factory=Counter)
    accepted_required_nulls: int = 0
    max_cursor: str | None = None
    cursor: str | None = None

    def add(self, batch: BatchResult) -> None:
        self.rows_taken += batch.rows_in
        self.rows_accepted += len(batch.clean)
        self.nulls.update(batch.nulls)
        if not batch.failures.empty:
            dated = batch.failures[batch.failures["rule"].isin(["date", "timestamp"])]
            self.date_failures += int(dated["source_row"].nunique())
        required = [c.name for c in self.dataset.columns if c.required and c.name in batch.clean]
        if required and len(batch.clean):
            self.accepted_required_nulls += int(batch.clean[required].isna().any(axis=1).sum())
        if self.cursor and len(batch.clean):
            top = batch.clean[self.cursor].dropna().max()
            if isinstance(top, str) and (self.max_cursor is None or top > self.max_cursor):
                self.max_cursor = top

    def evaluate(
        self, quality: Quality, previous_rows: int | None, overrides: dict[str, Any], loaded: int
    ) -> list[CheckResult]:
        """``loaded``: rows that reached the table (after duplicates were resolved)."""
        q = _merge_quality(quality, overrides)
        out: list[CheckResult] = []
        taken = self.rows_taken
        accepted = self.rows_accepted
        rate = self.accepted_required_nulls / accepted if accepted else 0.0
        out.append(
            CheckResult(
                "required_null_rate",
                "error",
                rate,
                q.required_null_rate,
                rate <= q.required_null_rate,
                detail="accepted rows with a missing required field",
            )
        )
        rate = self.date_failures / taken if taken else 0.0
        out.append(
            CheckResult(
                "invalid_date_rate",
                "error",
                rate,
                q.invalid_date_rate,
                rate <= q.invalid_date_rate,
                detail="rows whose date or timestamp could not be read",
            )
        )
        out.append(
            CheckResult(
                "row_count",
                "error",
                float(loaded),
                1.0,
                loaded >= 1 or q.allow_empty,
                detail="rows to load" + (" (allow_empty)" if q.allow_empty else ""),
            )
        )
        for column, threshold in sorted(q.null_rate.items()):
            rate = self.nulls.get(column, 0) / taken if taken else 0.0
            out.append(
                CheckResult(
                    "null_rate",
                    "warning",
                    rate,
                    threshold,
                    rate <= threshold,
                    column=column,
                    detail="missing values among the rows taken",
                )
            )
        if previous_rows:
            drop = max(0.0, (previous_rows - loaded) / previous_rows)
            out.append(
                CheckResult(
                    "row_count_drop",
                    "warning",
                    drop,
                    q.row_count_drop,
                    drop <= q.row_count_drop,
                    detail=f"against {previous_rows} rows of the last successful run",
                )
            )
        if q.freshness_hours is not None and self.max_cursor is not None:
            age = (datetime.now(UTC) - parse_canonical(self.max_cursor)).total_seconds() / 3600
            out.append(
                CheckResult(
                    "freshness_hours",
                    "warning",
                    round(age, 3),
                    q.freshness_hours,
                    age <= q.freshness_hours,
                    column=self.cursor,
                    detail=f"newest {self.cursor} {self.max_cursor}",
                )
            )
        return out


def _merge_quality(quality: Quality, overrides: dict[str, Any]) -> Quality:
    if not overrides:
        return quality
    from dataclasses import replace

    values = dict(overrides)
    if "null_rate" in values:
        values["null_rate"] = {**quality.null_rate, **values["null_rate"]}
    return replace(quality, **values)


def record_checks(conn: sa.Connection, run_id: str, pipeline: str, results: list[CheckResult]) -> None:
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


# ------------------------------------------------------------------------------ analytics


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def touched_partitions(
    conn: sa.Connection, dataset: Dataset, incoming: str | None, run_id: str
) -> dict[str, str]:
    """Temporary tables of the partition values a run touches, per analytics partition column:
    the values of the incoming rows and, for keys that exist already, their current values
    (a late update that moves a visit to another day touches both days). Call before the
    incoming rows are merged."""
    table = _q(conn, dataset.table)
    source = incoming or f"(SELECT * FROM {table} WHERE run_id = '{run_id}')"
    key_match = " AND ".join(f"t.{_q(conn, k)} = i.{_q(conn, k)}" for k in dataset.primary_key)
    postgres = conn.dialect.name == "postgresql"
    out: dict[str, str] = {}
    for column in dict.fromkeys(a.partition for a in dataset.analytics):
        name = f"_healthetl_touched_{column}"
        col = _q(conn, column)
        select = f"SELECT {col} AS p FROM {source} i"
        if incoming is not None and dataset.primary_key:
            select += f" UNION SELECT t.{col} FROM {table} t JOIN {incoming} i ON {key_match}"
        if postgres:
            conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select}")
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
            conn.exec_driver_sql(f"CREATE TEMP TABLE {name} AS {select}")
        out[column] = name
    return out


def refresh_analytics(
    conn: sa.Connection, dataset: Dataset, touched: dict[str, str] | None
) -> dict[str, int]:
    """Rebuild the touched partitions of every analytics table (all of it when ``touched`` is
    None), in declaration order. Returns rows written per table."""
    written: dict[str, int] = {}
    for a in dataset.analytics:
        written[a.table] = _refresh(conn, a, None if touched is None else touched[a.partition])
    if touched is not None:
        prefix = "" if conn.dialect.name == "postgresql" else "temp."
        for name in touched.values():
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {prefix}{name}")
    return written


def _refresh(conn: sa.Connection, a: Analytic, touched: str | None) -> int:
    target = _q(conn, a.table)
    part = _q(conn, a.partition)
    cols = ", ".join(_q(conn, c.name) for c in a.columns)
    if touched is None:
        conn.exec_driver_sql(f"DELETE FROM {target}")
        where = ""
    else:
        conn.exec_driver_sql(f"DELETE FROM {target} WHERE {part} IN (SELECT p FROM {touched})")
        where = f"WHERE {part} IN (SELECT p FROM {touched})"
    result = conn.exec_driver_sql(f"INSERT INTO {target} ({cols}) {a.select.format(where=where)}")
    return int(result.rowcount or 0)


# ------------------------------------------------------------------ managing state by hand


def parse_timestamp(text: str, where: str = "--watermark") -> datetime:
    """An ISO 8601 timestamp; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        from healthetl.errors import UsageError

        raise UsageError(
            f"{where}: {text!r} is not an ISO 8601 timestamp (e.g. 2025-12-06T10:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class StateChange:
    pipeline: str
    action: str
    previous: datetime | None
    new: datetime | None
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "action": self.action,
            "previous_watermark": self.previous.isoformat() if self.previous else None,
            "new_watermark": self.new.isoformat() if self.new else None,
            "dry_run": self.dry_run,
        }


def change_watermark(
    engine: sa.Engine,
    pipeline: str,
    new: datetime | None,
    *,
    action: str,
    dry_run: bool,
    detail: str | None = None,
    lookback_hours: float | None = None,
) -> StateChange:
    """Set (or, with ``new=None``, reset) a pipeline's watermark, audited with the previous
    value; ``dry_run`` only says what would change."""
    with engine.begin() as conn:
        current = read_state(conn, pipeline)
        previous = current.watermark if current else None
        change = StateChange(pipeline, action, previous, new, dry_run)
        if dry_run:
            return change
        lookback = (
            lookback_hours if lookback_hours is not None else (current.lookback_hours if current else None)
        )
        write_state(conn, pipeline, new, lookback, current.last_run_id if current else None)
        audit(conn, pipeline, action, previous, new, detail)
    return change


def import_state_file(engine: sa.Engine, path: str, pipeline: str, *, dry_run: bool) -> StateChange:
    """The original pipeline's JSON state file: {"watermark_last_updated": "..."}."""
    import json
    from pathlib import Path

    from healthetl.errors import SourceError, UsageError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a readable JSON state file ({exc})") from None
    value = data.get("watermark_last_updated") if isinstance(data, dict) else None
    if not value:
        raise UsageError(f"{path}: no watermark_last_updated in the state file")
    new = parse_timestamp(str(value), where=path)
    return change_watermark(
        engine, pipeline, new, action="import", dry_run=dry_run, detail=f"imported from {Path(path).name}"
    )
