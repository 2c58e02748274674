"""Batch-level data-quality checks: what they need is gathered while batches stream by, and
evaluated once the batch is written (an ``error`` that fails rolls the load back)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from healthetl.datasets.spec import Dataset, Quality
from healthetl.ledger.watermarks import parse_canonical
from healthetl.results import BatchResult, CheckResult, Drift, Severity


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

    def absorb(self, other: QualityTracker) -> None:
        """What another tracker saw of other rows of the same run (a partition's worker)."""
        self.rows_taken += other.rows_taken
        self.rows_accepted += other.rows_accepted
        self.date_failures += other.date_failures
        self.nulls.update(other.nulls)
        self.accepted_required_nulls += other.accepted_required_nulls
        if other.max_cursor is not None and (self.max_cursor is None or other.max_cursor > self.max_cursor):
            self.max_cursor = other.max_cursor

    def evaluate(
        self, quality: Quality, previous_rows: int | None, overrides: dict[str, Any], loaded: int
    ) -> list[CheckResult]:
        """``loaded``: rows that reached the table (after duplicates were resolved)."""
        q = _merge_quality(quality, overrides)
        taken, accepted = self.rows_taken, self.rows_accepted
        required = self.accepted_required_nulls / accepted if accepted else 0.0
        dates = self.date_failures / taken if taken else 0.0
        out = [
            _at_most(
                "required_null_rate",
                "error",
                required,
                q.required_null_rate,
                "accepted rows with a missing required field",
            ),
            _at_most(
                "invalid_date_rate",
                "error",
                dates,
                q.invalid_date_rate,
                "rows whose date or timestamp could not be read",
            ),
            CheckResult(
                "row_count",
                "error",
                float(loaded),
                1.0,
                loaded >= 1 or q.allow_empty,
                detail="rows to load" + (" (allow_empty)" if q.allow_empty else ""),
            ),
        ]
        for column, threshold in sorted(q.null_rate.items()):
            rate = self.nulls.get(column, 0) / taken if taken else 0.0
            out.append(
                _at_most(
                    "null_rate", "warning", rate, threshold, "missing values among the rows taken", column
                )
            )
        if previous_rows:
            drop = max(0.0, (previous_rows - loaded) / previous_rows)
            detail = f"against {previous_rows} rows of the last successful run"
            out.append(_at_most("row_count_drop", "warning", drop, q.row_count_drop, detail))
        if q.freshness_hours is not None and self.max_cursor is not None:
            age = (datetime.now(UTC) - parse_canonical(self.max_cursor)).total_seconds() / 3600
            detail = f"newest {self.cursor} {self.max_cursor}"
            check = _at_most("freshness_hours", "warning", age, q.freshness_hours, detail, self.cursor)
            out.append(replace(check, observed=round(age, 3)))
        return out


def _at_most(
    name: str, severity: Severity, observed: float, limit: float, detail: str, column: str | None = None
) -> CheckResult:
    """A check that passes while ``observed`` stays at or below ``limit``."""
    return CheckResult(name, severity, observed, limit, observed <= limit, column=column, detail=detail)


def _merge_quality(quality: Quality, overrides: dict[str, Any]) -> Quality:
    if not overrides:
        return quality
    values = dict(overrides)
    if "null_rate" in values:
        values["null_rate"] = {**quality.null_rate, **values["null_rate"]}
    return replace(quality, **values)


def drift_checks(findings: list[Drift], severity: Severity) -> list[CheckResult]:
    """Drift findings as the run's data-quality checks (stored, reported, shown)."""
    return [
        CheckResult(f"drift_{f.kind}", severity, float(len(f.columns)), 0.0, False, detail=f.describe())
        for f in findings
    ]
