"""healthetl validate: a file checked against its dataset's rules; the exit code is the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    CsvSafeOption,
    DbOption,
    DelimiterOption,
    PipelineOption,
    QuoteOption,
    ReportOption,
    ResultFormatOption,
    check_fail_on,
    check_stdout,
    fail_code,
)

if TYPE_CHECKING:
    from healthetl import api
else:
    api = lazy("healthetl.api")


def validate(
    dataset: Annotated[str, typer.Argument(help="Dataset whose rules apply.")],
    input: Annotated[str, typer.Argument(help="File to validate, or - for an Arrow stream.")],
    out: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write valid rows here (- for an Arrow stream on stdout).",
            show_default=False,
        ),
    ] = None,
    rejects: Annotated[
        str | None,
        typer.Option(
            help="Write every failed check of every invalid row here (.csv, .parquet, .ndjson).",
            show_default=False,
        ),
    ] = None,
    report: ReportOption = None,
    fail_on: Annotated[
        str, typer.Option(help="Exit 1 when checks of this severity fail: error | warning | never.")
    ] = "error",
    db: DbOption = None,
    config: ConfigOption = None,
    pipeline: PipelineOption = None,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    csv_safe: CsvSafeOption = False,
    fmt: ResultFormatOption = "text",
) -> None:
    """Standardise and validate rows with the dataset's pandera rules. Exit 1 if data fails."""
    check_fail_on(fail_on)
    check_stdout(fmt, report, out)
    result = api.validate(
        dataset,
        input,
        config=config,
        db=db,
        pipeline=pipeline,
        output=out,
        rejects=rejects,
        report=report,
        delimiter=delimiter,
        quote=quote,
        csv_safe=csv_safe,
    )
    s = result.summary
    if fmt == "json":
        render.document(
            {"source": input, "output": out, "rejects": rejects, "fail_on": fail_on, **s.to_dict()},
            one_line=True,
        )
    render.info(
        f"validate {dataset}: {s.rows_in} rows in, {s.rows_valid} valid, "
        f"{s.rows_quarantined} rejected, {s.rows_warned} with warnings"
    )
    for check in s.to_dict()["checks"]:
        render.info(
            f"  {check['severity']:<7} {check['column']}.{check['rule']}: {check['failed_rows']} rows"
        )
    for skipped in s.skipped_checks:
        render.info(f"  skipped reference check {skipped} (give --db to check it)")
    for drift in s.drift:
        render.warn(f"  drift: {drift.describe()}")
    raise typer.Exit(fail_code(s.errors, s.warnings, fail_on))
