"""Incremental state: each pipeline's watermark (``pipeline_state``) and every manual change
of it (``state_audit``).

The watermark is written inside the load's transaction: it advances only if the data commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.db.schema import pipeline_state, state_audit
from healthetl.errors import SourceError, UsageError


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


def record_change(
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


def incremental_window(
    conn: sa.Connection, dataset: Dataset, options: PipelineOptions, pipeline: str
) -> Window | None:
    cursor = options.cursor or dataset.cursor
    if not cursor:
        return None
    lookback = options.lookback_hours if options.lookback_hours is not None else dataset.lookback_hours
    state = read_state(conn, pipeline)
    return Window(cursor, timedelta(hours=lookback), state.watermark if state else None)


def parse_timestamp(text: str, where: str = "--watermark") -> datetime:
    """An ISO 8601 timestamp; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
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
    engine: Engine,
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
        record_change(conn, pipeline, action, previous, new, detail)
    return change


def import_state_file(engine: Engine, path: str, pipeline: str, *, dry_run: bool) -> StateChange:
    """The original pipeline's JSON state file: {"watermark_last_updated": "..."}."""
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


def changes(engine: Engine, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Manual changes of pipeline state (set, reset, import), newest first, times in UTC."""
    q = sa.select(state_audit).order_by(state_audit.c.id.desc())
    if pipeline:
        q = q.where(state_audit.c.pipeline == pipeline)
    with engine.connect() as conn:
        return [
            {
                k: (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat() if isinstance(v, datetime) else v
                for k, v in r._mapping.items()
            }
            for r in conn.execute(q)
        ]
