"""Options shared by commands, and resolution of the project, database and pipeline options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from healthetl.results import LoadResult
    from healthetl.session import open_database, open_project, options_for
else:  # imported when a command first uses them: `--help` and `--version` stay instant
    open_database = lazy("healthetl.session", "open_database")
    open_project = lazy("healthetl.session", "open_project")
    options_for = lazy("healthetl.session", "options_for")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (overrides HEALTHETL_DATABASE_URL and healthetl.toml).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project file (default: ./healthetl.toml).", show_default=False),
]
PipelineOption = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        "-p",
        help="Take options (sheet, date window, severities) from this pipeline of the project file.",
        show_default=False,
    ),
]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table | csv | json")]


def check_format(fmt: str, allowed: tuple[str, ...] = ("table", "csv", "json")) -> str:
    if fmt not in allowed:
        raise UsageError(f"--format must be one of {', '.join(allowed)}, not {fmt!r}")
    return fmt


DelimiterOption = Annotated[
    str | None,
    typer.Option(
        help="CSV field separator, e.g. ';' or '\\t' (default: tab for .tsv, comma otherwise; "
        "a pipeline's `delimiter`).",
        show_default=False,
    ),
]
QuoteOption = Annotated[
    str | None,
    typer.Option(help="CSV quote character (default: a pipeline's `quote`, else \").", show_default=False),
]
CsvSafeOption = Annotated[
    bool,
    typer.Option(
        "--csv-safe",
        help="CSV outputs for spreadsheets: prefix values a spreadsheet would run as a formula "
        "(=, +, -, @) with '.",
    ),
]
SnapshotOption = Annotated[
    str | None,
    typer.Option(
        "--snapshot-date",
        help="Nested JSON: the snapshot date of records that carry none (no field, no date in the name).",
        show_default=False,
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(help="Write the data-quality report (JSON; - for stdout).", show_default=False),
]
ResultFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="text: a summary on stderr | json: the result object on stdout (logs stay on stderr).",
    ),
]


def check_stdout(fmt: str, report: Path | None, output: str | None = None) -> None:
    """One document on stdout at most: the result (--format json), the report (--report -) or an
    Arrow stream (-o -)."""
    check_format(fmt, ("text", "json"))
    claims = [
        name
        for name, used in (
            ("--format json", fmt == "json"),
            ("--report -", report is not None and str(report) == "-"),
            ("-o -", output == "-"),
        )
        if used
    ]
    if len(claims) > 1:
        raise UsageError(f"{' and '.join(claims)} would both write to stdout; send one of them to a file")


FAIL_ON = ("error", "warning", "never")


def check_fail_on(fail_on: str) -> str:
    """``--fail-on``, checked once, before any work."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
    return fail_on


def fail_code(errors: int, warnings: int, fail_on: str) -> int:
    """The exit code for failed checks under a (checked) ``--fail-on``."""
    if fail_on == "error" and errors:
        return ExitCode.DATA_FAILED
    if fail_on == "warning" and (errors or warnings):
        return ExitCode.DATA_FAILED
    return ExitCode.OK


def summarise(r: LoadResult) -> None:
    """A load's outcome in a few lines on stderr: counts, skipped files, failed checks, watermark."""
    c = r.counts
    skipped = f", {c.rows_skipped} behind the watermark" if c.rows_skipped else ""
    dupes = f", {c.duplicates_dropped} duplicates dropped" if c.duplicates_dropped else ""
    render.info(
        f"{r.pipeline}: {r.status}, run {r.run_id}: {c.rows_in} rows in{skipped}, "
        f"{c.rows_loaded} loaded, {c.rows_quarantined} quarantined{dupes}"
    )
    for path, run_id in r.skipped_files:
        render.info(f"{r.pipeline}: skipped {path}: already loaded by run {run_id} (--force loads it again)")
    for check in r.checks:
        if check.passed:
            continue
        if check.check.startswith("drift_"):
            render.warn(f"{r.pipeline}: drift: {check.detail}")
            continue
        what = check.check + (f"({check.column})" if check.column else "")
        render.warn(f"{r.pipeline}: {check.severity} {what}: {check.observed:g} > {check.threshold:g}")
    if r.watermark is not None:
        render.info(f"{r.pipeline}: watermark {r.watermark.isoformat()}")


# a project, its catalog and its database, resolved once per command (library: healthetl.session)
__all__ = ["open_database", "open_project", "options_for"]
