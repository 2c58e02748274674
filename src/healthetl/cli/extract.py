"""healthetl extract: a source's rows as read, to a file or an Arrow stream."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    CsvSafeOption,
    DelimiterOption,
    PipelineOption,
    QuoteOption,
    open_project,
    options_for,
)
from healthetl.errors import UsageError

if TYPE_CHECKING:
    from healthetl.pipeline.extract import extract as extract_file
    from healthetl.session import reading
else:
    extract_file = lazy("healthetl.pipeline.extract", "extract")
    reading = lazy("healthetl.session", "reading")


def extract(
    dataset: Annotated[str, typer.Argument(help="Dataset the file belongs to.")],
    source: Annotated[str, typer.Argument(help="csv, csv.gz, xlsx, parquet or ndjson file.")],
    out: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Output by extension: .parquet, .csv, .ndjson; - for an Arrow stream "
            "(default when stdout is a pipe).",
            show_default=False,
        ),
    ] = None,
    sheet: Annotated[str | None, typer.Option(help="Excel sheet (default: the first).")] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="Text encoding of a CSV file (default: the pipeline's, else utf-8).", show_default=False
        ),
    ] = None,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    config: ConfigOption = None,
    pipeline: PipelineOption = None,
    csv_safe: CsvSafeOption = False,
) -> None:
    """Read a source file as text, normalise column names, add source file and row number."""
    session = open_project(config)
    ds = session.catalog.dataset(dataset)
    options, _ = options_for(session.project, ds, pipeline, sheet)
    options = reading(options, encoding=encoding, delimiter=delimiter, quote=quote)
    result = extract_file(source, _output(out), options, csv_safe=csv_safe)
    render.info(
        f"extract {dataset}: {result.rows} rows, {len(result.columns) - 2} columns "
        f"from {source} -> {'stdout' if result.output == '-' else result.output}"
    )


def _output(out: str | None) -> str:
    if out is not None:
        return out
    if sys.stdout.isatty():
        raise UsageError("give an output with -o FILE (.parquet, .csv, .ndjson) or -o - for a pipe")
    return "-"
