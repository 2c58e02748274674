"""The quarantine's lifecycle: list and show rejected rows, resolve them by hand.

A quarantine row is ``open`` until a replay loads it (``replayed``, with the replay's run id in
``resolved_by``), a replay re-validates it and it fails again (``superseded``: the replay run
holds its current failure records), or someone deals with it (``resolved``, with a note).
Replaying lives in :mod:`healthetl.pipeline.replay`; the statements it runs on this table are
here (``candidates``, ``settle``). The rows are written by the bulk writer
(:func:`healthetl.db.bulk.write_quarantine`), by COPY on PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.db.schema import quarantine as q
from healthetl.errors import UsageError

STATUSES = ("open", "replayed", "superseded", "resolved")
MASK = "***"


@dataclass(frozen=True)
class Filter:
    """Which quarantine rows a command works on; unset fields match everything."""

    dataset: str | None = None
    run_id: str | None = None
    rule: str | None = None
    status: str | None = "open"
    ids: tuple[int, ...] = ()

    def where(self) -> list[sa.ColumnElement[bool]]:
        if self.status is not None and self.status not in STATUSES:
            raise UsageError(f"--status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        out: list[sa.ColumnElement[bool]] = []
        if self.dataset:
            out.append(q.c.dataset == self.dataset)
        if self.run_id:
            out.append(q.c.run_id == self.run_id)
        if self.rule:
            out.append(q.c.rule == self.rule)
        if self.status:
            out.append(q.c.status == self.status)
        if self.ids:
            out.append(q.c.id.in_(self.ids))
        return out

    @property
    def narrowed(self) -> bool:
        return bool(self.dataset or self.run_id or self.rule or self.ids)


LIST_COLUMNS = (
    "id",
    "run_id",
    "dataset",
    "source_file",
    "source_row",
    "column_name",
    "rule",
    "severity",
    "reason",
    "status",
)


def rows(
    engine: Engine,
    which: Filter,
    *,
    limit: int | None = 100,
    offset: int = 0,
    original: bool = False,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, ``limit`` of them from ``offset``) without the rows' values unless
    ``original`` (then parsed, as received: mask them with :func:`masked` before showing)."""
    cols = [q.c[c] for c in LIST_COLUMNS] + ([q.c.original] if original else [])
    query = sa.select(*cols).where(*which.where()).order_by(q.c.id).offset(offset or None)
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(q).where(*which.where())).scalar_one()
        found = [dict(r._mapping) for r in conn.execute(query)]
    if original:
        for row in found:
            row["original"] = json.loads(row["original"]) if row.get("original") else None
    return int(total), found


def masked(original: Any, visible: set[str]) -> Any:
    """A row as received with every field but ``visible`` ones (declared, non-identifying)
    masked."""
    if not isinstance(original, dict):
        return MASK if original is not None else None
    return {k: (v if k in visible or v is None or k == MASKED_MARK else MASK) for k, v in original.items()}


#: in a row as received: it was written masked (a rejects file), so it cannot be replayed
MASKED_MARK = "_healthetl_masked"


def masked_json(original: str | None, visible: set[str]) -> str | None:
    """A row as received (JSON) with its identifying and undeclared fields masked and marked
    so: what a rejects file holds."""
    if not original:
        return original
    try:
        row = json.loads(original)
    except json.JSONDecodeError:
        return json.dumps({MASKED_MARK: True})
    if not isinstance(row, dict):
        return json.dumps({MASKED_MARK: True})
    hidden = dict(masked(row, visible))
    if hidden != row:
        hidden[MASKED_MARK] = True
    return json.dumps(hidden, ensure_ascii=False)


def is_masked(original: str | None) -> bool:
    return bool(original) and MASKED_MARK in str(original)


def summary(engine: Engine, which: Filter) -> list[dict[str, Any]]:
    """Counts per dataset, column, rule and status: what is waiting, and why."""
    query = (
        sa.select(
            q.c.dataset,
            q.c.column_name,
            q.c.rule,
            q.c.status,
            sa.func.count().label("failures"),
        )
        .where(*which.where())
        .group_by(q.c.dataset, q.c.column_name, q.c.rule, q.c.status)
        .order_by(q.c.dataset, sa.func.count().desc())
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def show(engine: Engine, row_id: int, catalog: Catalog, *, unmask: bool = False) -> dict[str, Any]:
    """One quarantine row with the row as received. Unless asked, only the dataset's declared,
    non-identifying fields are shown: identifying ones are masked, and so is every field the
    dataset does not declare (an SSN column left unused is still a patient's)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(q).where(q.c.id == row_id)).first()
    if row is None:
        raise UsageError(f"no quarantine row with id {row_id}", hint="see `healthetl quarantine list`")
    out = dict(row._mapping)
    for key in ("resolved_at",):
        if isinstance(out.get(key), datetime):
            out[key] = out[key].isoformat(timespec="seconds")
    original = json.loads(out["original"]) if out.get("original") else None
    if isinstance(original, dict) and not unmask:
        original = masked(original, visible_fields(catalog, str(out["dataset"])))
    out["original"] = original
    return out


def visible_fields(catalog: Catalog, dataset: str) -> set[str]:
    """Field names (as received, before renames) of the dataset's non-identifying columns."""
    return catalog.datasets[dataset].visible_fields if dataset in catalog.datasets else set()


def resolve(engine: Engine, which: Filter, note: str) -> int:
    """Mark the matching open rows ``resolved`` with ``note``; returns how many changed."""
    if not note.strip():
        raise UsageError("--note must say how the rows were dealt with")
    if not which.narrowed:
        raise UsageError("say which rows: --id, --run-id, --dataset or --rule")
    which = Filter(which.dataset, which.run_id, which.rule, "open", which.ids)
    with engine.begin() as conn:
        done = conn.execute(
            q.update()
            .where(*which.where())
            .values(status="resolved", note=note.strip(), resolved_at=datetime.now(UTC))
        )
    return int(done.rowcount or 0)


def rule_counts(engine: Engine, run_ids: list[str]) -> list[dict[str, Any]]:
    """Failed checks per run, column, rule and severity."""
    if not run_ids:
        return []
    query = (
        sa.select(q.c.run_id, q.c.column_name, q.c.rule, q.c.severity, sa.func.count().label("failures"))
        .where(q.c.run_id.in_(run_ids))
        .group_by(q.c.run_id, q.c.column_name, q.c.rule, q.c.severity)
        .order_by(q.c.run_id, sa.func.count().desc(), q.c.rule)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


@dataclass
class Candidate:
    """One rejected source row: its lineage, the row as received, its open record ids."""

    run_id: str
    source_file: str | None
    source_row: int | None
    original: str | None
    ids: list[int] = field(default_factory=list)
    errors: bool = False
    matches: bool = False


def candidates(conn: sa.Connection, dataset: str, which: Filter) -> list[Candidate]:
    """Open rejected rows of ``dataset`` (every open record of each), in the filter's scope: a
    rule filter picks the rows that failed that rule. Rows with warnings only are not rejects."""
    scope = Filter(dataset=dataset, run_id=which.run_id, status="open", ids=which.ids)
    query = (
        sa.select(q.c.id, q.c.run_id, q.c.source_file, q.c.source_row, q.c.rule, q.c.severity, q.c.original)
        .where(*scope.where())
        .order_by(q.c.run_id, q.c.source_file, q.c.source_row, q.c.id)
    )
    found: dict[tuple[str, str | None, int | None], Candidate] = {}
    for r in conn.execute(query):
        key = (r.run_id, r.source_file, r.source_row)
        c = found.get(key)
        if c is None:
            c = found[key] = Candidate(r.run_id, r.source_file, r.source_row, r.original)
        c.ids.append(int(r.id))
        c.errors = c.errors or r.severity == "error"
        c.matches = c.matches or which.rule is None or r.rule == which.rule
        c.original = c.original or r.original
    return [c for c in found.values() if c.errors and c.matches]


def settle(conn: sa.Connection, run_id: str, passed: list[int], failed: list[int]) -> None:
    """After a replay, in its transaction: records of rows it loaded are ``replayed``, records of
    rows that failed again ``superseded`` (the replay run holds their current failures)."""
    now = datetime.now(UTC)
    for ids, status in ((passed, "replayed"), (failed, "superseded")):
        for start in range(0, len(ids), 1000):
            conn.execute(
                q.update()
                .where(q.c.id.in_(ids[start : start + 1000]))
                .values(status=status, resolved_by=run_id, resolved_at=now)
            )


def examples(engine: Engine, run_ids: list[str], per_rule: int = 3) -> list[dict[str, Any]]:
    """The first ``per_rule`` rejected rows of each run, column and rule (row as received,
    parsed: mask it with :func:`masked` before showing)."""
    if not run_ids:
        return []
    n = (
        sa.func.row_number()
        .over(partition_by=(q.c.run_id, q.c.column_name, q.c.rule), order_by=q.c.id)
        .label("n")
    )
    ranked = (
        sa.select(
            q.c.id,
            q.c.run_id,
            q.c.dataset,
            q.c.source_file,
            q.c.source_row,
            q.c.column_name,
            q.c.rule,
            q.c.reason,
            q.c.original,
            n,
        )
        .where(q.c.run_id.in_(run_ids))
        .subquery()
    )
    query = sa.select(ranked).where(ranked.c.n <= per_rule).order_by(ranked.c.id)
    with engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(query)]
    for row in found:
        row["original"] = json.loads(row["original"]) if row.get("original") else None
    return found
