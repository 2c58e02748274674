"""healthetl state / report: incremental state, the run ledger and data-quality history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import ConfigOption, DbOption, FormatOption, check_format, open_database
from healthetl.errors import UsageError

if TYPE_CHECKING:
    from healthetl.ledger import audit as ledger_audit
    from healthetl.ledger import dq, watermarks
    from healthetl.ledger import report as ledger_report
    from healthetl.ledger import runs as ledger_runs
else:
    ledger_audit, dq = lazy("healthetl.ledger.audit"), lazy("healthetl.ledger.dq")
    watermarks, ledger_report = lazy("healthetl.ledger.watermarks"), lazy("healthetl.ledger.report")
    ledger_runs = lazy("healthetl.ledger.runs")

app = typer.Typer(help="Pipeline state: watermarks and the run ledger.", no_args_is_help=True)

RUN_COLUMNS = [
    "run_id",
    "pipeline",
    "command",
    "mode",
    "source",
    "status",
    "started_at",
    "finished_at",
    "rows_read",
    "rows_skipped",
    "rows_in",
    "rows_loaded",
    "rows_quarantined",
    "duplicates_dropped",
    "rows_rolled_back",
    "error",
]
TABLE_COLUMNS = [
    "run_id",
    "pipeline",
    "status",
    "started_at",
    "rows_in",
    "rows_loaded",
    "rows_quarantined",
    "duplicates_dropped",
    "rows_rolled_back",
    "error",
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]


def _table(runs: list[dict[str, Any]], fmt: str) -> None:
    cols = TABLE_COLUMNS if fmt == "table" else RUN_COLUMNS
    render.rows(cols, [[r.get(c) for c in cols] for r in runs], fmt)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@app.command()
def show(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.", show_default=False)] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Each pipeline's watermark, lookback and last run (status and counts)."""
    check_format(fmt)
    session = open_database(db, config, must_exist=True, at_head=True)
    rows = ledger_report.overview(session.db, [p.name for p in session.project.pipelines], pipeline)
    cols = list(rows[0]) if rows else ["pipeline", "watermark", "lookback_hours", "last_status"]
    render.rows(cols, [[r[c] for c in cols] for r in rows], fmt)


@app.command()
def runs(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    tables: Annotated[
        bool, typer.Option("--tables", help="Per table: inserted, updated, unchanged, ...")
    ] = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """The run ledger: each run's id, pipeline, start/end, status and row counts; with --tables,
    what each batch did to each table (the audit log)."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    found = ledger_runs.runs(engine, pipeline=pipeline, limit=limit)
    if not tables:
        _table(found, fmt)
        return
    written = ledger_audit.entries(engine, run_ids=[r["run_id"] for r in found])
    render.rows(AUDIT_COLUMNS, [[a.get(c) for c in AUDIT_COLUMNS] for a in written], fmt)


def _change(change: watermarks.StateChange, fmt: str) -> None:
    if fmt == "json":
        render.document(change.to_dict())
        return
    verb = "would change" if change.dry_run else "changed"
    render.info(
        f"{change.pipeline}: watermark {verb} from {_iso(change.previous) or 'none'} to "
        f"{_iso(change.new) or 'none'} ({change.action})"
    )


@app.command("set")
def set_state(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    watermark: Annotated[str, typer.Option(help="New watermark, ISO 8601 (UTC if no offset).")],
    dry_run: DryRun = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Set a pipeline's watermark (audited with the previous value)."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    new = watermarks.parse_timestamp(watermark)
    _change(watermarks.change_watermark(engine, pipeline, new, action="set", dry_run=dry_run), fmt)


@app.command()
def reset(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    dry_run: DryRun = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Forget a pipeline's watermark: the next run takes every row (audited)."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    _change(watermarks.change_watermark(engine, pipeline, None, action="reset", dry_run=dry_run), fmt)


@app.command("import")
def import_state(
    file: Annotated[str, typer.Argument(help="JSON state file with watermark_last_updated.")],
    pipeline: Annotated[str, typer.Option(help="The pipeline it belongs to.")],
    dry_run: DryRun = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Import the original pipeline's state file (watermark_last_updated), audited."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    _change(watermarks.import_state_file(engine, file, pipeline, dry_run=dry_run), fmt)


@app.command()
def audit(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.", show_default=False)] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Every manual change of state (set, reset, import) with the previous value."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    rows = watermarks.changes(engine, pipeline)
    cols = ["at", "pipeline", "action", "previous_watermark", "new_watermark", "detail"]
    render.rows(cols, [[r[c] for c in cols] for r in rows], fmt)


def report(
    last: Annotated[bool, typer.Option("--last", help="The latest run of every pipeline.")] = False,
    run_id: Annotated[str | None, typer.Option(help="One run.", show_default=False)] = None,
    checks: Annotated[
        bool, typer.Option("--checks", help="The history of every data-quality check.")
    ] = False,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.", show_default=False)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write a self-contained HTML data-quality report (charts, check history, freshness, drift).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Every run started on or after this date (YYYY-MM-DD).", show_default=False),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Row accounting and failed rules of runs (default: --last), or --checks history."""
    check_format(fmt, ("table", "json"))
    if sum((run_id is not None, since is not None, last)) > 1:
        raise UsageError("give one of --last, --run-id and --since")
    session = open_database(db, config, must_exist=True, at_head=True)
    engine = session.db
    if html is not None:
        from healthetl import htmlreport

        started = _since(since)
        page = htmlreport.collect(engine, session.catalog, pipeline=pipeline, run_id=run_id, since=started)
        if run_id is not None and not page.runs:
            raise UsageError(f"no run {run_id!r} in the ledger", hint="see `healthetl state runs`")
        size = htmlreport.write(html, page)
        render.info(f"wrote {html} ({size / 1024:,.0f} KiB, {len(page.runs)} run(s))")
        return
    if checks:
        _checks_history(dq.history(engine, pipeline), fmt)
        return
    del last  # --last is the default view; the flag documents intent in scripts
    if since is not None:
        raise UsageError("--since goes with --html (the terminal report shows --last or --run-id)")
    found = ledger_report.run_report(engine, run_id=run_id, pipeline=pipeline)
    if fmt == "json":
        render.document(found.to_json())
        return
    _table(found.runs, fmt)
    for title, cols, rows in (
        ("tables written", TABLES_WRITTEN, found.tables),
        ("failed rules (quarantine)", FAILED_RULES, found.rules),
        ("data-quality checks", QUALITY_CHECKS, found.quality),
    ):
        if rows:
            render.rows(cols, [[r[c] for c in cols] for r in rows], fmt, title=title)


def _checks_history(history: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        render.document(history)
        return
    render.rows(CHECK_HISTORY, [[h.get(c) for c in CHECK_HISTORY] for h in history], fmt)


CHECK_HISTORY = [
    "started_at",
    "pipeline",
    "run_id",
    "check_name",
    "column_name",
    "severity",
    "observed",
    "threshold",
    "passed",
    "detail",
]
AUDIT_COLUMNS = [
    "run_id",
    "pipeline",
    "table_name",
    "rows_processed",
    "inserted",
    "updated",
    "unchanged",
    "quarantined",
    "started_at",
    "finished_at",
    "error",
]
#: `report`: what each run did to each table (the run and its times are shown above it)
TABLES_WRITTEN = [c for c in AUDIT_COLUMNS if c not in ("pipeline", "started_at", "finished_at")]
FAILED_RULES = ["run_id", "column_name", "rule", "severity", "failures"]
QUALITY_CHECKS = ["run_id", "check_name", "column_name", "severity", "observed", "threshold", "passed"]


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"--since must be a date YYYY-MM-DD, not {value!r}") from None
