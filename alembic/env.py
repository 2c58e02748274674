"""Alembic environment for healthetl.

In process (``healthetl db upgrade``, ``healthetl run``) the CLI hands over an open connection
in ``config.attributes["connection"]``. From the command line (``alembic upgrade head`` with the
repository's alembic.ini) the URL is resolved exactly as the CLI resolves it.
"""

from __future__ import annotations

from alembic import context

from healthetl.catalog import catalog_for
from healthetl.config import load_project, resolve_database_url
from healthetl.db import engine as db_engine
from healthetl.db.drift import include_filters

config = context.config


# a project's catalog hands over its metadata (healthetl's tables plus its declared datasets)
# and, when generating the project's revisions, the tables that branch owns
target_metadata = config.attributes.get("metadata") or catalog_for(None).metadata
include_tables = config.attributes.get("include_tables")


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **include_filters(include_tables),
        render_as_batch=connection.dialect.name == "sqlite",
        process_revision_directives=config.attributes.get("process_revision_directives"),
        compare_type=True,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or resolve_database_url(None, load_project())
    context.configure(
        url=str(db_engine.normalise_url(url)),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or resolve_database_url(None, load_project())
    engine = db_engine.create(url)
    with engine.begin() as conn:
        _configure(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
