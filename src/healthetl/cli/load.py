"""healthetl load: a file validated and loaded in one transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    DbOption,
    DelimiterOption,
    PipelineOption,
    QuoteOption,
    ReportOption,
    ResultFormatOption,
    SnapshotOption,
    check_stdout,
    summarise,
)

if TYPE_CHECKING:
    from healthetl import api
    from healthetl.results import quiet
else:
    api, quiet = lazy("healthetl.api"), lazy("healthetl.results", "quiet")


def load(
    dataset: Annotated[str, typer.Argument(help="Dataset to load.")],
    input: Annotated[str, typer.Argument(help="File to load, or - for an Arrow stream.")],
    mode: Annotated[
        str | None,
        typer.Option(
            help="replace | append | merge (upsert on the primary key). Default: the dataset's (replace).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    pipeline: PipelineOption = None,
    report: ReportOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Load a file the raw layer already holds (same sha256) again.")
    ] = False,
    snapshot_date: SnapshotOption = None,
    rejects: Annotated[
        str | None,
        typer.Option(
            help="The rejects file `validate --rejects` wrote for this input: its rows are "
            "quarantined and counted by this run, so rows_in equals the source file's rows.",
            show_default=False,
        ),
    ] = None,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    fmt: ResultFormatOption = "text",
) -> None:
    """Validate (incl. references, against the database) and load rows in one transaction."""
    check_stdout(fmt, report)
    result = api.load(
        dataset,
        input,
        config=config,
        db=db,
        pipeline=pipeline,
        mode=mode,
        force=force,
        snapshot_date=snapshot_date,
        rejects=rejects,
        report=report,
        delimiter=delimiter,
        quote=quote,
        progress=quiet,
    )
    if fmt == "json":
        render.document(result.report(), one_line=True)
    summarise(result)
