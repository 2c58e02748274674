"""healthetl init, healthetl dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthetl.cli import render
from healthetl.cli.common import FormatOption, check_format
from healthetl.config import write_starter
from healthetl.datasets import get_dataset, registry

dataset_app = typer.Typer(help="The datasets healthetl can load.", no_args_is_help=True)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder for healthetl.toml.")] = Path("."),
) -> None:
    """Write a commented starter healthetl.toml."""
    target = write_starter(directory)
    render.info(f"wrote {target}")


@dataset_app.command("list")
def list_datasets(fmt: FormatOption = "table") -> None:
    """Every dataset with its table, key and description."""
    check_format(fmt)
    render.rows(
        ["dataset", "table", "primary_key", "references", "description"],
        [
            (
                d.name,
                d.table,
                ",".join(d.primary_key),
                ", ".join(f"{c}->{t}.{tc}" for c, (t, tc) in d.references.items()),
                d.description,
            )
            for d in registry().values()
        ],
        fmt,
    )


@dataset_app.command("show")
def show_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name.")], fmt: FormatOption = "table"
) -> None:
    """Columns, types, checks, keys and table of one dataset."""
    check_format(fmt)
    ds = get_dataset(name)
    rows = []
    for c in ds.columns:
        rules = ["required"] if c.required else []
        rules += {"integer": ["integer"], "date": ["date"]}.get(c.type, [])
        if c.date_window:
            rules.append(f"date_window {c.date_window[0]}..{c.date_window[1]}")
        if c.vocabulary:
            rules.append("vocabulary " + "|".join(c.vocabulary))
        if c.references:
            rules.append(f"foreign_key {c.references}")
        if c.name in ds.primary_key:
            rules.append("duplicate_key")
        rows.append(
            (
                c.name,
                c.type,
                "yes" if c.name in ds.primary_key else "",
                "yes" if c.identifying else "",
                ", ".join(rules),
                c.description,
            )
        )
    render.rows(
        ["column", "type", "key", "identifying", "checks", "description"],
        rows,
        fmt,
        title=f"{ds.name} -> table {ds.table}",
    )
