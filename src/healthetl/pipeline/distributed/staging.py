"""A distributed run's staging tables: where workers put their partitions' rows and failures.

Three UNLOGGED tables per dataset of a run (no write-ahead log: they are scratch, rebuilt by a
rerun), named after the run: ``healthetl_stage_<run>_<n>_rows`` (the dataset's stored columns,
typed like its table, plus the partition and the row within it), ``..._fail`` (failure
records, the quarantine's shape, plus the partition) and ``..._keys`` (each row's key text per
key set, clean or not, for the coordinator to decide the run's duplicates). They are created
and dropped on a connection of their own, outside the run's transaction: workers commit into
them while the run's transaction is open, and the run reads them before it commits. Columns
are declared from the table's metadata, never ``LIKE`` the table, which would wait for the
run's lock on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

PREFIX = "healthetl_stage_"
PART = "_healthetl_part"
ROW = "_healthetl_row"


def run_tag(run_id: str) -> str:
    """A run id as it appears in staging table names (lower case, letters, digits, ``_``)."""
    return re.sub(r"[^0-9a-z]", "_", run_id.lower())


@dataclass(frozen=True)
class Staging:
    rows: str
    failures: str
    #: every row's key text under each key set the run must not repeat (clean or not)
    keys: str
    #: the stored columns the workers write, in order (``run_id`` last)
    columns: tuple[str, ...]


def create(engine: Engine, run_id: str, number: int, table: sa.Table, columns: list[str]) -> Staging:
    """The staging tables of dataset ``number`` of run ``run_id``, created and committed now."""
    base = f"{PREFIX}{run_tag(run_id)}_{number}"
    meta = sa.MetaData()
    typed = {c.name: c.type for c in table.columns}
    rows = sa.Table(
        f"{base}_rows",
        meta,
        *(sa.Column(c, typed[c], nullable=True) for c in [*columns, "run_id"]),
        sa.Column(PART, sa.Integer, nullable=False),
        sa.Column(ROW, sa.BigInteger, nullable=False),
        prefixes=["UNLOGGED"],
    )
    failures = sa.Table(
        f"{base}_fail",
        meta,
        sa.Column("source_file", sa.Text),
        sa.Column("source_row", sa.BigInteger),
        sa.Column("column_name", sa.Text),
        sa.Column("rule", sa.Text),
        sa.Column("severity", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("original", sa.Text),
        sa.Column(PART, sa.Integer, nullable=False),
        prefixes=["UNLOGGED"],
    )
    keys = sa.Table(
        f"{base}_keys",
        meta,
        sa.Column(PART, sa.Integer, nullable=False),
        sa.Column(ROW, sa.BigInteger, nullable=False),
        sa.Column("key_set", sa.SmallInteger, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("clean", sa.Boolean, nullable=False),
        prefixes=["UNLOGGED"],
    )
    with engine.begin() as conn:
        for t in (rows, failures, keys):
            conn.execute(sa.schema.DropTable(t, if_exists=True))
            conn.execute(sa.schema.CreateTable(t))
    return Staging(rows.name, failures.name, keys.name, (*columns, "run_id"))


def drop(engine: Engine, staging: list[Staging]) -> None:
    """Drop these staging tables (after the run's transaction ended, whichever way)."""
    if not staging:
        return
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        for s in staging:
            for name in (s.rows, s.failures, s.keys):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")


def drop_leftovers(engine: Engine, pipeline: str, current: str) -> list[str]:
    """Staging tables left by earlier runs of ``pipeline`` whose coordinator died before it could
    drop them (killed, the machine lost). Called while this run holds the pipeline's lock, so no
    other run of it is alive. Returns the names dropped."""
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        found = conn.execute(
            sa.text(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE :p AND schemaname = current_schema()"
            ),
            {"p": PREFIX.replace("_", r"\_") + "%"},
        )
        names = list(found.scalars())
        if not names:
            return []
        runs = conn.execute(
            sa.text("SELECT run_id FROM etl_runs WHERE pipeline = :p AND run_id <> :r"),
            {"p": pipeline, "r": current},
        ).scalars()
        theirs = {f"{PREFIX}{run_tag(r)}_" for r in runs}
        dropped = [n for n in names if any(n.startswith(t) for t in theirs)]
        for name in dropped:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    return dropped
