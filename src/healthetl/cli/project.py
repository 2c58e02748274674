"""healthetl init, healthetl dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthetl._lazy import lazy
from healthetl.cli import render
from healthetl.cli.common import ConfigOption, FormatOption, check_format, open_project
from healthetl.config import parse_delimiter, write_starter
from healthetl.errors import UsageError

if TYPE_CHECKING:
    from healthetl.datasets import infer as inferring
    from healthetl.datasets import rules
else:
    inferring, rules = lazy("healthetl.datasets.infer"), lazy("healthetl.datasets.rules")

dataset_app = typer.Typer(
    help="The datasets healthetl can load (built in and declared).", no_args_is_help=True
)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder for healthetl.toml.")] = Path("."),
) -> None:
    """Write a commented starter healthetl.toml."""
    target = write_starter(directory)
    render.info(f"wrote {target}")


@dataset_app.command("list")
def list_datasets(fmt: FormatOption = "table", config: ConfigOption = None) -> None:
    """Every dataset with its table, key, references and where it is declared."""
    check_format(fmt)
    catalog = open_project(config).catalog
    render.rows(
        ["dataset", "table", "primary_key", "references", "declared_in", "description"],
        [
            (
                d.name,
                d.table,
                ",".join(d.primary_key),
                ", ".join(f"{c}->{t}.{tc}" for c, (t, tc) in d.references.items()),
                d.origin,
                d.description,
            )
            for d in catalog.datasets.values()
        ],
        fmt,
    )


@dataset_app.command("show")
def show_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    fmt: FormatOption = "table",
    config: ConfigOption = None,
) -> None:
    """Columns, types, checks, keys and table of one dataset."""
    check_format(fmt)
    ds = open_project(config).catalog.dataset(name)
    rows = rules.describe(ds)
    render.rows(
        ["column", "type", "key", "identifying", "checks", "description"],
        rows,
        fmt,
        title=f"{ds.name} -> table {ds.table}",
    )


@dataset_app.command("infer")
def infer_dataset(
    file: Annotated[
        str, typer.Argument(help="A sample file (csv, tsv, csv.gz, xlsx, parquet, ndjson, json).")
    ],
    name: Annotated[
        str | None, typer.Option(help="Dataset name (default: from the file name).", show_default=False)
    ] = None,
    sample: Annotated[int, typer.Option(help="Rows to sample from the start of the file.")] = 50_000,
    sheet: Annotated[str | None, typer.Option(help="Excel sheet.", show_default=False)] = None,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the draft here.", show_default=False)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="toml (a draft) | json (the profile)")] = "toml",
    encoding: Annotated[str, typer.Option(help="Text encoding of a CSV file.")] = "utf-8",
    delimiter: Annotated[
        str | None,
        typer.Option(
            help="CSV field separator (default: tab for .tsv, comma otherwise).", show_default=False
        ),
    ] = None,
) -> None:
    """Draft a declaration from a sample file, with a profile of nulls, ranges and values."""
    check_format(fmt, ("toml", "json"))
    if sample < 1:
        raise UsageError("--sample must be at least 1")
    sep = parse_delimiter(delimiter, "--delimiter") if delimiter is not None else None
    profile = inferring.infer(file, name=name, sample=sample, sheet=sheet, encoding=encoding, delimiter=sep)
    text = inferring.to_toml(profile) if fmt == "toml" else profile.to_json() + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        render.info(
            f"wrote {out}: review it, paste it into healthetl.toml, then run "
            f'`healthetl db revision -m "add {profile.name}"`'
        )
