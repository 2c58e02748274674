"""healthetl db: Alembic migrations, in process."""

from __future__ import annotations

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
    open_project,
)

if TYPE_CHECKING:
    from healthetl.db import drift, migrate
    from healthetl.db.engine import mask_url
else:
    drift, migrate = lazy("healthetl.db.drift"), lazy("healthetl.db.migrate")
    mask_url = lazy("healthetl.db.engine", "mask_url")

app = typer.Typer(help="Database migrations (Alembic, shipped inside healthetl).", no_args_is_help=True)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Migrate the database up to REVISION (default: every head, healthetl's and the project's)."""
    session = open_database(db, config)
    before, after = migrate.upgrade(session.db, revision, session.catalog)
    render.info(
        f"{mask_url(session.db.url)}: {', '.join(before) or 'empty'} -> {', '.join(after) or 'empty'}"
    )


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1, project@-1 or base.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Migrate the database down to REVISION (``base`` drops every healthetl-managed table)."""
    session = open_database(db, config, must_exist=True)
    before, after = migrate.downgrade(session.db, revision, session.catalog)
    render.info(
        f"{mask_url(session.db.url)}: {', '.join(before) or 'empty'} -> {', '.join(after) or 'empty'}"
    )


@app.command()
def current(db: DbOption = None, config: ConfigOption = None) -> None:
    """Show the database's revisions and whether they are at head."""
    session = open_database(db, config, must_exist=True)
    with session.db.connect() as conn:
        revs = migrate.current_revisions(conn)
        ok = migrate.at_head(conn, session.catalog)
    heads = migrate.head_revisions(session.catalog)
    state = "at head" if ok else f"head is {', '.join(heads)}"
    typer.echo(f"{', '.join(revs) or 'empty (never migrated)'} ({state})")
    differences = drift.declaration_drift(session.db, session.catalog) if ok else []
    for line in differences:
        render.warn(f"declared datasets differ from the database: {line}")


@app.command()
def history(db: DbOption = None, config: ConfigOption = None, fmt: FormatOption = "table") -> None:
    """List the migrations, newest first; with a database, mark the current ones."""
    check_format(fmt)
    session = open_database(db, config, must_exist=True) if db else open_project(config)
    revs = migrate.history(session.engine, session.catalog)
    render.rows(
        ["revision", "down_revision", "branch", "head", "current", "message"],
        [(r.revision, r.down_revision, r.branch, r.is_head, r.is_current, r.message) for r in revs],
        fmt,
    )


@app.command()
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Generate a migration for the project's new or changed datasets into its migrations/ folder.

    The database must be at head; the new file is compared against it (Alembic autogenerate).
    Review the file, then run `healthetl db upgrade`.
    """
    session = open_database(db, config)
    path = migrate.revision(session.db, session.catalog, message)
    render.info(f"wrote {path}: review it, then run `healthetl db upgrade`")
