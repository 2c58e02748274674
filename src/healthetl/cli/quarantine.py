"""healthetl quarantine list | show | replay | resolve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import (
    ConfigOption,
    DbOption,
    FormatOption,
    check_format,
    open_database,
    options_for,
)
from healthetl.errors import ExitCode

if TYPE_CHECKING:
    from healthetl.ledger import access
    from healthetl.ledger import quarantine as lib
    from healthetl.pipeline import replay as replaying
else:
    access, lib = lazy("healthetl.ledger.access"), lazy("healthetl.ledger.quarantine")
    replaying = lazy("healthetl.pipeline.replay")

app = typer.Typer(
    help="Rows rejected by validation: list, show, replay after a fix, resolve by hand.",
    no_args_is_help=True,
)

DatasetOption = Annotated[str | None, typer.Option(help="Only this dataset.", show_default=False)]
RunOption = Annotated[str | None, typer.Option("--run-id", help="Only rows of this run.", show_default=False)]
RuleOption = Annotated[str | None, typer.Option(help="Only rows that failed this rule.", show_default=False)]
IdOption = Annotated[list[int] | None, typer.Option("--id", help="Only this quarantine row (repeatable).")]


@app.command("list")
def list_rows(
    dataset: DatasetOption = None,
    run_id: RunOption = None,
    rule: RuleOption = None,
    status: Annotated[str, typer.Option(help="open | replayed | superseded | resolved | all")] = "open",
    limit: Annotated[int, typer.Option(help="At most this many rows (0: all).")] = 100,
    by_rule: Annotated[
        bool, typer.Option("--by-rule", help="Counts per dataset, column, rule and status instead.")
    ] = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Quarantined failure records (no row values: see `show`), filtered; newest runs last."""
    check_format(fmt)
    engine = open_database(db, config, must_exist=True, at_head=True).db
    which = lib.Filter(dataset, run_id, rule, None if status == "all" else status)
    if by_rule:
        counts = lib.summary(engine, which)
        cols = ["dataset", "column_name", "rule", "status", "failures"]
        render.rows(cols, [[c[k] for k in cols] for c in counts], fmt, title="quarantine by rule")
        return
    total, found = lib.rows(engine, which, limit=limit or None)
    render.rows(list(lib.LIST_COLUMNS), [[r[c] for c in lib.LIST_COLUMNS] for r in found], fmt)
    if total > len(found):
        render.info(f"{len(found)} of {total} rows shown (--limit 0 shows all)")


@app.command("show")
def show(
    row_id: Annotated[int, typer.Argument(help="The quarantine row's id (see `quarantine list`).")],
    show_identifying: Annotated[
        bool,
        typer.Option(
            "--show-identifying",
            "--unmask",
            help="Show identifying and undeclared fields of the row too (masked otherwise); the access "
            "is recorded in api_access_log and logged.",
        ),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """One quarantine record with the row as received; identifying fields, and fields the dataset
    does not declare, masked by default."""
    session = open_database(db, config, must_exist=True, at_head=True)
    record = lib.show(session.db, row_id, session.catalog, unmask=show_identifying)
    if show_identifying:
        who = access.cli_user()
        access.record(
            session.db,
            who=who,
            endpoint="quarantine show --show-identifying",
            dataset=str(record["dataset"]),
            rows=1,
            columns=["original"],
        )
        render.warn(
            f"quarantine row {row_id}: identifying values shown to {who} (recorded in api_access_log)"
        )
    render.document(record)


@app.command("replay")
def replay(
    dataset: Annotated[str, typer.Argument(help="Dataset whose quarantined rows to replay.")],
    run_id: RunOption = None,
    rule: RuleOption = None,
    ids: IdOption = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the replay run's report (JSON).", show_default=False)
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Re-validate open quarantined rows against today's rules and reference data; load the ones
    that pass (one transaction, a run of its own) and mark them replayed."""
    session = open_database(db, config, at_head=True)
    ds = session.catalog.dataset(dataset)
    options, _ = options_for(session.project, ds, None)
    which = lib.Filter(dataset, run_id, rule, "open", tuple(ids or ()))
    result, skipped = replaying.replay(session.db, ds, session.catalog, options, which, report_path=report)
    c = result.counts
    render.info(
        f"replay {dataset}: run {result.run_id}: {c.rows_in} rows re-validated, {c.rows_loaded} loaded "
        f"(marked replayed), {c.rows_quarantined} failed again (marked superseded; this run's "
        f"quarantine has their current reasons)"
        + (f", {c.duplicates_dropped} duplicates dropped" if c.duplicates_dropped else "")
    )
    if skipped:
        render.warn(f"replay {dataset}: {skipped} rejected rows have no stored row (invalid JSON) to replay")
    raise typer.Exit(ExitCode.OK)


@app.command("resolve")
def resolve(
    note: Annotated[str, typer.Option(help="How the rows were dealt with (required).")],
    dataset: DatasetOption = None,
    run_id: RunOption = None,
    rule: RuleOption = None,
    ids: IdOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Mark open quarantined rows as dealt with, with a note (they are not loaded)."""
    engine = open_database(db, config, must_exist=True, at_head=True).db
    changed = lib.resolve(engine, lib.Filter(dataset, run_id, rule, "open", tuple(ids or ())), note)
    render.info(f"resolved {changed} quarantine rows")
