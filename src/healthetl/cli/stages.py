"""extract, validate, load, run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    DbOption,
    PipelineOption,
    open_database,
    open_project,
    options_for,
)
from healthetl.config import LOAD_MODES, PipelineOptions, parse_delimiter
from healthetl.errors import ExitCode, UsageError
from healthetl.pipeline import run as run_mod
from healthetl.pipeline.extract import extract as extract_file
from healthetl.pipeline.inputs import RejectsFile
from healthetl.pipeline.load import load as load_files
from healthetl.pipeline.validate import validate as validate_file
from healthetl.results import LoadResult

FAIL_ON = ("error", "warning", "never")
DelimiterOption = Annotated[
    str | None,
    typer.Option(
        help="CSV field separator, e.g. ';' or '\\t' (default: tab for .tsv, comma otherwise; "
        "a pipeline's `delimiter`).",
        show_default=False,
    ),
]
CsvSafeOption = Annotated[
    bool,
    typer.Option(
        "--csv-safe",
        help="CSV outputs for spreadsheets: prefix values a spreadsheet would run as a formula "
        "(=, +, -, @) with '.",
    ),
]
QuoteOption = Annotated[
    str | None,
    typer.Option(help="CSV quote character (default: a pipeline's `quote`, else \").", show_default=False),
]


def _reading(options: PipelineOptions, delimiter: str | None, quote: str | None) -> PipelineOptions:
    """Command-line CSV settings over the pipeline's."""
    if delimiter is not None:
        options = replace(options, delimiter=parse_delimiter(delimiter, "--delimiter"))
    if quote is not None:
        if len(quote) != 1:
            raise UsageError(f"--quote must be one character, not {quote!r}")
        options = replace(options, quote=quote)
    return options


SnapshotOption = Annotated[
    str | None,
    typer.Option(
        "--snapshot-date",
        help="Nested JSON: the snapshot date of records that carry none (no field, no date in the name).",
        show_default=False,
    ),
]


def _snapshot(value: str | None) -> str | None:
    if value is not None:
        from datetime import date

        try:
            date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"--snapshot-date must be YYYY-MM-DD, not {value!r}") from None
    return value


def _output(out: str | None) -> str:
    if out is not None:
        return out
    if sys.stdout.isatty():
        raise UsageError("give an output with -o FILE (.parquet, .csv, .ndjson) or -o - for a pipe")
    return "-"


def _fail_code(errors: int, warnings: int, fail_on: str) -> int:
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
    if fail_on == "error" and errors:
        return ExitCode.DATA_FAILED
    if fail_on == "warning" and (errors or warnings):
        return ExitCode.DATA_FAILED
    return ExitCode.OK


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
    if encoding is not None:
        options = replace(options, encoding=encoding)
    options = _reading(options, delimiter, quote)
    result = extract_file(source, _output(out), options, csv_safe=csv_safe)
    render.info(
        f"extract {dataset}: {result.rows} rows, {len(result.columns) - 2} columns "
        f"from {source} -> {'stdout' if result.output == '-' else result.output}"
    )


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
    report: Annotated[
        Path | None, typer.Option(help="Write the data-quality report (JSON).", show_default=False)
    ] = None,
    fail_on: Annotated[
        str, typer.Option(help="Exit 1 when checks of this severity fail: error | warning | never.")
    ] = "error",
    db: DbOption = None,
    config: ConfigOption = None,
    pipeline: PipelineOption = None,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    csv_safe: CsvSafeOption = False,
) -> None:
    """Standardise and validate rows with the dataset's pandera rules. Exit 1 if data fails."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
    session = open_database(db, config, must_exist=True, at_head=True) if db else open_project(config)
    ds = session.catalog.dataset(dataset)
    options, _ = options_for(session.project, ds, pipeline)
    options = _reading(options, delimiter, quote)
    result = validate_file(
        ds,
        input,
        options,
        clean_output=out,
        rejects_output=rejects,
        report_path=report,
        engine=session.engine,
        catalog=session.catalog,
        csv_safe=csv_safe,
    )
    s = result.summary
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
    raise typer.Exit(_fail_code(s.errors, s.warnings, fail_on))


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
    report: Annotated[
        Path | None, typer.Option(help="Write the data-quality report (JSON).", show_default=False)
    ] = None,
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
) -> None:
    """Validate (incl. references, against the database) and load rows in one transaction."""
    if mode is not None and mode not in LOAD_MODES:
        raise UsageError(f"--mode must be one of {', '.join(LOAD_MODES)}")
    session = open_project(config)
    ds = session.catalog.dataset(dataset)
    session = open_database(db, config, at_head=True)
    options, name = options_for(session.project, ds, pipeline)
    options = _reading(options, delimiter, quote)
    if _snapshot(snapshot_date):
        options = replace(options, snapshot_date=snapshot_date)
    sources: list[str | RejectsFile] = [input]
    if rejects is not None:
        sources.append(RejectsFile(rejects))
    result = load_files(
        session.db,
        ds,
        sources,
        options,
        mode=mode,
        pipeline=name,
        catalog=session.catalog,
        force=force,
        report_path=report,
    )
    _summarise(result)


def run(
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            "-p",
            help="Run only this pipeline (repeatable); dependencies are not added.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    log_file: Annotated[
        str | None, typer.Option(help="Also write plain log lines here.", show_default=False)
    ] = None,
    fail_on: Annotated[
        str,
        typer.Option(
            help="Exit 1 when rows were quarantined for checks of this severity: error | warning | never."
        ),
    ] = "never",
    report: Annotated[
        Path | None,
        typer.Option(help="Write the data-quality report of every pipeline (JSON).", show_default=False),
    ] = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Take every row regardless of the watermark and rebuild analytics tables completely.",
        ),
    ] = False,
    from_raw: Annotated[
        str | None,
        typer.Option(
            "--from-raw",
            help="Reprocess the rows run RUN_ID extracted, from the raw layer (no source file needed).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Load files the raw layer already holds (same sha256) again.")
    ] = False,
    snapshot_date: SnapshotOption = None,
) -> None:
    """Run every stage of the project's pipelines, dependencies first (migrates if needed)."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
    render.configure_logging(log_file)
    session = open_database(db, config)
    with render.RunDisplay() as display:
        result = run_mod.run(
            session.db,
            session.project,
            pipeline or None,
            catalog=session.catalog,
            progress=display,
            force=force,
            full_refresh=full_refresh,
            from_raw=from_raw,
            report_path=report,
            snapshot_date=_snapshot(snapshot_date),
        )
    for name in result.idle:
        render.info(f"{name}: the inbox is empty, nothing to do")
    errors = warnings = 0
    for r in result.results:
        _summarise(r)
        errors += r.summary.errors
        warnings += r.summary.warnings
    raise typer.Exit(_fail_code(errors, warnings, fail_on))


def _summarise(r: LoadResult) -> None:
    c = r.counts
    skipped = f", {c.rows_skipped} behind the watermark" if c.rows_skipped else ""
    dupes = f", {c.duplicates_dropped} older duplicates dropped" if c.duplicates_dropped else ""
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
