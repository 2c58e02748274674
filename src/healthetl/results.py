"""What the stages hand back: row counts, batch-level check results, statuses.

Plain data with no behaviour beyond arithmetic on itself, so every layer (the ledger that stores
it, the stages that fill it, the command line that renders it) can import it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from healthetl.failures import FailureSpool

#: a run in the ledger (``etl_runs.status``)
RunStatus = Literal["running", "succeeded", "failed", "abandoned"]
#: a load as it goes: ``running`` until its transaction commits or rolls back
LoadStatus = Literal["running", "succeeded", "failed"]
#: a batch-level check: an ``error`` blocks the load, a ``warning`` is recorded
Severity = Literal["error", "warning"]


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

    def add(self, batch: BatchResult) -> None:
        """A validated batch's rows: taken in (or skipped behind the watermark), rejected, warned."""
        self.rows_skipped += batch.rows_skipped
        self.rows_in += batch.rows_in
        self.rows_quarantined += batch.rows_quarantined
        self.rows_warned += batch.rows_warned

    def absorb(self, other: RunCounts) -> None:
        """Another part's counts of the same run (a batch's dataset, a partition's worker)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def roll_back(self) -> None:
        """After a rollback nothing was loaded: the rows that were not rejected were rolled back."""
        self.rows_loaded = 0
        self.rows_rolled_back = max(0, self.rows_in - self.rows_quarantined - self.duplicates_dropped)


@dataclass
class CheckResult:
    """One batch-level data-quality check of a run (stored in ``dq_results``)."""

    check: str
    severity: Severity
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
class BatchResult:
    clean: pd.DataFrame
    failures: pd.DataFrame
    rows_in: int
    rows_quarantined: int
    rows_warned: int
    #: rows older than the incremental window: not taken (not in rows_in)
    rows_skipped: int = 0
    #: column -> missing values among the rows taken
    nulls: dict[str, int] = field(default_factory=dict)
    #: (asked for by a distributed run) every row's key under each key set the run must not
    #: repeat: set number, key text, source row, whether the row is clean
    keys: pd.DataFrame | None = None


_DRIFT_TEXT = {
    "new_columns": "columns the dataset does not declare (not loaded)",
    "missing_columns": "declared optional columns missing (loaded as NULL)",
    "empty_paths": "declared JSON paths that matched no record (all NULL)",
}


@dataclass(frozen=True)
class Drift:
    """A difference between what a source sends and what its dataset declares."""

    kind: str  # new_columns | missing_columns | empty_paths
    source: str
    columns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.source}: {_DRIFT_TEXT[self.kind]}: {', '.join(self.columns)}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "columns": list(self.columns)}


@dataclass
class ValidationSummary:
    """Counts over every batch of one validation session (the DQ report's body)."""

    dataset: str
    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    rows_warned: int = 0
    by_rule: Counter[tuple[str | None, str, str]] = field(default_factory=Counter)
    skipped_checks: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)

    def note_drift(self, finding: Drift) -> bool:
        """Remember a finding; False when it was already known (same kind, source, columns)."""
        if finding in self.drift:
            return False
        self.drift.append(finding)
        return True

    def add_failures_from(self, other: ValidationSummary) -> None:
        self.rows_in += other.rows_in
        self.rows_valid += other.rows_valid
        self.rows_quarantined += other.rows_quarantined
        self.rows_warned += other.rows_warned
        self.by_rule.update(other.by_rule)
        self.skipped_checks += other.skipped_checks
        self.drift += [d for d in other.drift if d not in self.drift]

    def absorb(self, other: ValidationSummary) -> None:
        """Another session's counts over other rows of the same run (a partition's worker); its
        checks and skipped checks are this session's own."""
        self.rows_in += other.rows_in
        self.rows_valid += other.rows_valid
        self.rows_quarantined += other.rows_quarantined
        self.rows_warned += other.rows_warned
        self.by_rule.update(other.by_rule)
        for finding in other.drift:
            self.note_drift(finding)

    def add_failures(self, failures: pd.DataFrame) -> None:
        if not failures.empty:
            counts = failures.value_counts(["column_name", "rule", "severity"], sort=False, dropna=False)
            for (column, rule, severity), n in counts.items():
                self.by_rule[(None if pd.isna(column) else column, rule, severity)] += int(n)

    def add(self, batch: BatchResult) -> None:
        self.rows_in += batch.rows_in
        self.rows_valid += len(batch.clean)
        self.rows_quarantined += batch.rows_quarantined
        self.rows_warned += batch.rows_warned
        if not batch.failures.empty:
            counts = batch.failures.value_counts(["column_name", "rule", "severity"], sort=False)
            for (column, rule, severity), n in counts.items():
                self.by_rule[(column, rule, severity)] += int(n)

    @property
    def errors(self) -> int:
        return sum(n for (_, _, sev), n in self.by_rule.items() if sev == "error")

    @property
    def warnings(self) -> int:
        return sum(n for (_, _, sev), n in self.by_rule.items() if sev == "warning")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "rows_warned": self.rows_warned,
            "failures": {"error": self.errors, "warning": self.warnings},
            "checks": [
                {"column": col, "rule": rule, "severity": sev, "failed_rows": n}
                for (col, rule, sev), n in sorted(self.by_rule.items(), key=lambda kv: str(kv[0]))
            ],
            "skipped_checks": self.skipped_checks,
            "drift": [d.to_dict() for d in self.drift],
        }


@dataclass(frozen=True)
class ExtractResult:
    source: str
    output: str
    rows: int
    columns: list[str]


@dataclass(frozen=True)
class ValidateResult:
    summary: ValidationSummary
    clean_output: str | None
    rejects_output: str | None


@dataclass(frozen=True)
class LoadResult:
    """A finished load: what ``load``, ``run`` and ``replay`` return (and ``--report`` writes)."""

    run_id: str
    pipeline: str
    dataset: str
    mode: str
    status: LoadStatus
    counts: RunCounts
    summary: ValidationSummary
    sources: tuple[str, ...] = ()
    error: str | None = None
    #: files skipped because the raw layer already holds them (same sha256)
    skipped_files: tuple[tuple[str, str], ...] = ()
    checks: tuple[CheckResult, ...] = ()
    #: one entry per table the batch wrote (the etl_audit_log rows)
    audit: tuple[dict[str, Any], ...] = ()
    #: files read in this run (path, sha256), for inbox bookkeeping and archiving
    files: tuple[tuple[str, str], ...] = ()
    watermark: datetime | None = None
    analytics: dict[str, int] = field(default_factory=dict)
    #: a batch of several datasets: one result per dataset
    parts: tuple[LoadResult, ...] = ()
    #: nested loads: the snapshots replaced and the duplicate records dropped (file:line)
    snapshots: tuple[str, ...] = ()
    duplicate_records: tuple[str, ...] = ()

    def report(self) -> dict[str, Any]:
        """The run's JSON report (``--report``)."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "dataset": self.dataset,
            "status": self.status,
            "counts": asdict(self.counts),
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "skipped_files": [{"file": f, "loaded_by_run": r} for f, r in self.skipped_files],
            "snapshots": list(self.snapshots),
            "duplicate_records": list(self.duplicate_records),
            "tables": self.analytics,
            "checks": [c.to_dict() for c in self.checks],
            "tables_written": [
                {k: v for k, v in a.items() if k not in ("run_id", "started_at", "finished_at")}
                for a in self.audit
            ],
            "rules": self.summary.to_dict()["checks"],
        }


@dataclass
class LoadRun:
    """A load while it runs: the stages fill it in; :meth:`freeze` hands out the result."""

    run_id: str
    pipeline: str
    dataset: str
    mode: str
    status: LoadStatus
    counts: RunCounts
    summary: ValidationSummary
    sources: list[str] = field(default_factory=list)
    error: str | None = None
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    watermark: datetime | None = None
    analytics: dict[str, int] = field(default_factory=dict)
    parts: list[LoadRun] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    duplicate_records: list[str] = field(default_factory=list)
    #: the run's failure records, kept to be written again if its transaction rolls back
    spool: FailureSpool = field(default_factory=FailureSpool, repr=False, compare=False)
    #: failure records kept elsewhere (a distributed run's staging): each writes them to the
    #: quarantine again, given a connection, if the run's transaction rolls back
    requarantine: list[Callable[[Any], None]] = field(default_factory=list, repr=False, compare=False)

    def freeze(self) -> LoadResult:
        """The finished load: lists become tuples; counts, checks and audit rows are copies."""
        values: dict[str, Any] = {}
        for f in fields(LoadResult):
            value = getattr(self, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        values["counts"] = replace(self.counts)
        values["checks"] = tuple(replace(c) for c in self.checks)
        values["audit"] = tuple(dict(a) for a in self.audit)
        values["analytics"] = dict(self.analytics)
        values["parts"] = tuple(p.freeze() for p in self.parts)
        return LoadResult(**values)

    def report(self) -> dict[str, Any]:
        return self.freeze().report()


#: what a run reports while it works, with its details:
#: ``start`` (run_id, pipeline, sources), ``batch`` (pipeline, rows read so far),
#: ``done`` (pipeline, status, counts when it succeeded), ``upgraded`` (from, to: migration
#: revisions), ``idle`` (pipeline: an inbox with nothing in it), ``left_out`` (pipeline, files: what a
#: multi-dataset pipeline's source holds that no dataset takes)
ProgressEvent = Literal["start", "batch", "done", "upgraded", "idle", "left_out", "engine"]
#: a progress callback: the command line draws a progress display, the API logs
Progress = Callable[[ProgressEvent, dict[str, Any]], None]


def quiet(_event: ProgressEvent, _info: dict[str, Any]) -> None:
    """The progress callback that reports nothing."""
    return None
