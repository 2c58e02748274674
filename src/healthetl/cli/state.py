"""healthetl state / report: the run ledger."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from healthetl import state as ledger
from healthetl.cli import render
from healthetl.cli.common import ConfigOption, DbOption, FormatOption, check_format, open_database

app = typer.Typer(help="Pipeline state: the run ledger.", no_args_is_help=True)

RUN_COLUMNS = [
    "run_id",
    "pipeline",
    "command",
    "mode",
    "status",
    "started_at",
    "finished_at",
    "rows_in",
    "rows_loaded",
    "rows_quarantined",
    "duplicates_dropped",
    "error",
]


TABLE_COLUMNS = [
    "run_id",
    "pipeline",
    "status",
    "started_at",
    "finished_at",
    "rows_in",
    "rows_loaded",
    "rows_quarantined",
    "error",
]


def _table(runs: list[dict[str, Any]], fmt: str) -> None:
    cols = TABLE_COLUMNS if fmt == "table" else RUN_COLUMNS
    render.rows(cols, [[r.get(c) for c in cols] for r in runs], fmt)


@app.command()
def show(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """The run ledger: each run's id, pipeline, start/end, status and row counts."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    _table(ledger.runs(engine, pipeline=pipeline, limit=limit), fmt)


def report(
    last: Annotated[bool, typer.Option("--last", help="The latest run of every pipeline.")] = False,
    run_id: Annotated[str | None, typer.Option(help="One run.", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Row accounting and failed checks per rule of runs (default: --last)."""
    check_format(fmt, ("table", "json"))
    engine = open_database(db, config, must_exist=True, at_head=True).db
    runs = ledger.runs(engine, run_id=run_id, limit=None) if run_id else (ledger.latest_per_pipeline(engine))
    del last  # --last is the default view; the flag documents intent in scripts
    rules = ledger.rule_counts(engine, [r["run_id"] for r in runs])
    if fmt == "json":
        for r in runs:
            r["checks"] = [
                {k: v for k, v in c.items() if k != "run_id"} for c in rules if c["run_id"] == r["run_id"]
            ]
        render.document(runs)
        return
    _table(runs, fmt)
    if rules:
        render.rows(
            ["run_id", "column_name", "rule", "severity", "failures"],
            [[c["run_id"], c["column_name"], c["rule"], c["severity"], c["failures"]] for c in rules],
            fmt,
            title="failed checks",
        )
