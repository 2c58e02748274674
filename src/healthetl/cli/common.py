"""Options shared by commands, and resolution of the project, database and pipeline options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthetl.errors import UsageError
from healthetl.session import Session, open_database, open_project, options_for

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


# a project, its catalog and its database, resolved once per command (library: healthetl.session)
__all__ = ["Session", "open_database", "open_project", "options_for"]
