"""healthetl run: every stage of the project's pipelines, dependencies first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    DbOption,
    ResultFormatOption,
    SnapshotOption,
    check_fail_on,
    check_stdout,
    fail_code,
    summarise,
)

if TYPE_CHECKING:
    from healthetl import api
else:
    api = lazy("healthetl.api")

LogFileOption = Annotated[
    str | None, typer.Option(help="Also write plain log lines here.", show_default=False)
]
FailOnOption = Annotated[
    str,
    typer.Option(
        help="Exit 1 when rows were quarantined for checks of this severity: error | warning | never."
    ),
]
RunReportOption = Annotated[
    Path | None,
    typer.Option(help="Write the data-quality report of every pipeline (JSON).", show_default=False),
]
FullRefreshOption = Annotated[
    bool,
    typer.Option(
        "--full-refresh",
        help="Take every row regardless of the watermark and rebuild analytics tables completely.",
    ),
]
FromRawOption = Annotated[
    str | None,
    typer.Option(
        "--from-raw",
        help="Reprocess the rows run RUN_ID extracted, from the raw layer (no source file needed).",
        show_default=False,
    ),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Load files the raw layer already holds (same sha256) again.")
]
EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where rows are validated: local (this process) or dask (Dask workers; PostgreSQL only).",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="--engine dask: the address of a running Dask scheduler (tcp://host:8786).",
        show_default=False,
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="--engine dask without --scheduler: processes of the local cluster [default: one per core].",
        show_default=False,
    ),
]
PartitionSizeOption = Annotated[
    str | None,
    typer.Option(
        "--partition-size",
        help="--engine dask: bytes of source per partition (64MB, 256MB) [default: 64MB].",
        show_default=False,
    ),
]
PipelinesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--pipeline",
        "-p",
        help="Run only this pipeline (repeatable); dependencies are not added.",
        show_default=False,
    ),
]


def run(
    pipeline: PipelinesOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    log_file: LogFileOption = None,
    fail_on: FailOnOption = "never",
    report: RunReportOption = None,
    full_refresh: FullRefreshOption = False,
    from_raw: FromRawOption = None,
    force: ForceOption = False,
    snapshot_date: SnapshotOption = None,
    fmt: ResultFormatOption = "text",
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    partition_size: PartitionSizeOption = None,
) -> None:
    """Run every stage of the project's pipelines, dependencies first (migrates if needed)."""
    check_fail_on(fail_on)
    check_stdout(fmt, report)
    render.configure_logging(log_file)
    with render.RunDisplay() as display:
        result = api.run(
            config,
            db=db,
            pipelines=pipeline,
            force=force,
            full_refresh=full_refresh,
            report=report,
            from_raw=from_raw,
            snapshot_date=snapshot_date,
            progress=display,
            engine=engine,
            scheduler=scheduler,
            workers=workers,
            partition_size=partition_size,
        )
    for name in result.idle:
        render.info(f"{name}: the inbox is empty, nothing to do")
    if fmt == "json":
        render.document(
            {
                "pipelines": [r.report() for r in result.results],
                "idle": result.idle,
                "archived": result.archived,
                "upgraded_from": result.upgraded_from,
            },
            one_line=True,
        )
    errors = warnings = 0
    for r in result.results:
        summarise(r)
        errors += r.summary.errors
        warnings += r.summary.warnings
    raise typer.Exit(fail_code(errors, warnings, fail_on))
