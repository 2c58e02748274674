"""Alembic owns the schema: upgrade/downgrade round trips, no drift, in-process and ini entry points."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa
from alembic import command

from healthetl.db import migrate
from tests.conftest import REPO

HEALTHETL_TABLES = {"doctors", "appointments", "quarantine", "etl_runs"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_upgrade_downgrade_round_trip(cli, db_url: str) -> None:
    assert cli("db", "current", "--db", db_url).exit_code in (0, 3)
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert HEALTHETL_TABLES <= _tables(db_url)
    current = cli("db", "current", "--db", db_url)
    assert "(at head)" in current.stdout
    assert cli("db", "downgrade", "base", "--db", db_url).exit_code == 0
    assert not (HEALTHETL_TABLES & _tables(db_url))
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert HEALTHETL_TABLES <= _tables(db_url)


def test_every_foreign_key_column_is_indexed(cli, db_url: str) -> None:
    """A parent's delete or key change checks its children by index, not by scanning them."""
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    engine = sa.create_engine(db_url)
    inspector = sa.inspect(engine)
    unindexed = []
    for table in inspector.get_table_names():
        leading = {tuple(i["column_names"][:1]) for i in inspector.get_indexes(table)}
        leading |= {tuple(u["column_names"][:1]) for u in inspector.get_unique_constraints(table)}
        leading.add(tuple(inspector.get_pk_constraint(table)["constrained_columns"][:1]))
        for fk in inspector.get_foreign_keys(table):
            if tuple(fk["constrained_columns"][:1]) not in leading:
                unindexed.append(f"{table}.{fk['constrained_columns'][0]}")
    tables = set(inspector.get_table_names())
    engine.dispose()
    assert {"appointments", "synthea_encounters"} <= tables
    assert unindexed == []


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    """`alembic check`: autogenerate against a migrated database finds nothing to do."""
    from healthetl.db import engine as db_engine

    engine = db_engine.create(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.check(migrate.alembic_config(conn))
    engine.dispose()


def test_developer_alembic_ini_entry_point(sqlite_url: str) -> None:
    env = {**os.environ, "HEALTHETL_DATABASE_URL": sqlite_url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert HEALTHETL_TABLES <= _tables(sqlite_url)


def test_history_lists_the_migrations(cli, sqlite_url: str) -> None:
    cli("db", "upgrade", "--db", sqlite_url)
    out = cli("db", "history", "--format", "json", "--db", sqlite_url)
    assert out.exit_code == 0
    import json

    revs = json.loads(out.stdout)
    assert revs[-1]["down_revision"] is None
    assert sum(r["head"] for r in revs) == 1 and sum(r["current"] for r in revs) == 1


def test_bad_revision_is_a_usage_error(cli, sqlite_url: str) -> None:
    result = cli("db", "upgrade", "nonexistent", "--db", sqlite_url)
    assert result.exit_code == 2 and "Traceback" not in result.output
