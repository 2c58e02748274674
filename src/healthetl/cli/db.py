"""healthetl db: Alembic migrations, in process."""

from __future__ import annotations

from typing import Annotated

import typer

from healthetl.cli import render
from healthetl.cli.common import ConfigOption, DbOption, FormatOption, check_format, open_database
from healthetl.db import migrate
from healthetl.db.engine import mask_url

app = typer.Typer(help="Database migrations (Alembic, shipped inside healthetl).", no_args_is_help=True)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Migrate the database up to REVISION (default: head)."""
    engine, _ = open_database(db, config)
    before, after = migrate.upgrade(engine, revision)
    render.info(f"{mask_url(engine.url)}: {', '.join(before) or 'empty'} -> {', '.join(after) or 'empty'}")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Migrate the database down to REVISION (``base`` drops every healthetl table)."""
    engine, _ = open_database(db, config, must_exist=True)
    before, after = migrate.downgrade(engine, revision)
    render.info(f"{mask_url(engine.url)}: {', '.join(before) or 'empty'} -> {', '.join(after) or 'empty'}")


@app.command()
def current(db: DbOption = None, config: ConfigOption = None) -> None:
    """Show the database's revision and whether it is at head."""
    engine, _ = open_database(db, config, must_exist=True)
    with engine.connect() as conn:
        revs = migrate.current_revisions(conn)
    heads = migrate.head_revisions()
    state = "at head" if set(revs) == set(heads) else f"head is {', '.join(heads)}"
    typer.echo(f"{', '.join(revs) or 'empty (never migrated)'} ({state})")


@app.command()
def history(db: DbOption = None, config: ConfigOption = None, fmt: FormatOption = "table") -> None:
    """List the migrations, newest first; with a database, mark the current one."""
    check_format(fmt)
    engine = None
    if db or config:
        engine, _ = open_database(db, config, must_exist=True)
    revs = migrate.history(engine)
    render.rows(
        ["revision", "down_revision", "head", "current", "message"],
        [(r.revision, r.down_revision, r.is_head, r.is_current, r.message) for r in revs],
        fmt,
    )
