"""Tables: a declaration turned into the SQLAlchemy tables Alembic migrates (the dataset's
table, its raw layer, its analytics tables), with the indexes its foreign keys need."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from healthetl.codes import CODE_TYPES
from healthetl.datasets.spec import (
    Dataset,
)

SA_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "integer": sa.BigInteger,
    "float": lambda: sa.Float(precision=53),
    "decimal": lambda: sa.Numeric(),
    "boolean": lambda: sa.Boolean(create_constraint=False),
    "text": sa.Text,
    "date": sa.Date,
    "timestamp": lambda: sa.DateTime(timezone=True),
    "phone": sa.Text,
    **dict.fromkeys(CODE_TYPES, sa.Text),
}


def table_for(dataset: Dataset, metadata: sa.MetaData, registry: Mapping[str, Dataset]) -> sa.Table:
    """The SQLAlchemy table of a dataset (Alembic migrates it; nothing here creates it)."""
    cols: list[sa.schema.SchemaItem] = []
    if dataset.generated_id:
        cols.append(
            sa.Column(
                dataset.generated_id,
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                sa.Identity(),
                primary_key=True,
                comment="generated id",
            )
        )
    for c in dataset.columns:
        if not c.stored:
            continue
        cols.append(
            sa.Column(
                c.name,
                SA_TYPES[c.type](),
                nullable=not (c.required or c.name in dataset.primary_key),
                comment=c.description or None,
            )
        )
    cols.append(
        sa.Column(
            "run_id",
            sa.String(40),
            nullable=False,
            comment="etl_runs.run_id of the run that loaded this row",
        )
    )
    if dataset.primary_key and dataset.generated_id:
        cols.append(sa.UniqueConstraint(*dataset.primary_key, name=f"uq_{dataset.table}_natural_key"))
    elif dataset.primary_key:
        cols.append(sa.PrimaryKeyConstraint(*dataset.primary_key))
    for c in dataset.columns:  # a unique column holds across loads, not just within one run
        if c.unique and c.stored and (c.name,) != tuple(dataset.primary_key):
            cols.append(sa.UniqueConstraint(c.name, name=f"uq_{dataset.table}_{c.name}"))
    for column, (target, target_col) in dataset.references.items():
        target_table = registry[target].table
        cols.append(
            sa.ForeignKeyConstraint(
                [column],
                [f"{target_table}.{target_col}"],
                deferrable=True,
                initially="DEFERRED",
            )
        )
    table = sa.Table(dataset.table, metadata, *cols, comment=dataset.description or None)
    for column in dataset.references:  # a parent's delete or key change checks children by index
        if not _leads_an_index(dataset, column):
            sa.Index(f"ix_{dataset.table}_{column}", table.c[column])
    return table


def _leads_an_index(dataset: Dataset, column: str) -> bool:
    """The column starts the primary key or is unique: its constraint's index serves lookups."""
    if dataset.primary_key and dataset.primary_key[0] == column:
        return True
    return any(c.name == column and c.unique for c in dataset.columns)


def raw_table_for(dataset: Dataset, metadata: sa.MetaData) -> sa.Table | None:
    """The raw layer: the values as received (text), with their lineage. Append-only."""
    if not dataset.raw_table:
        return None
    cols: list[sa.schema.SchemaItem] = [
        sa.Column(
            "raw_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("source_file", sa.Text, nullable=False),
        sa.Column("source_row", sa.BigInteger, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("extracted_at", sa.DateTime(timezone=True), nullable=False),
    ]
    cols += [sa.Column(c.name, sa.Text, nullable=True) for c in dataset.columns]
    table = sa.Table(
        dataset.raw_table,
        metadata,
        *cols,
        comment=f"Raw layer of {dataset.name}: every batch as received, never changed.",
    )
    sa.Index(f"ix_{dataset.raw_table}_run_id", table.c.run_id)
    sa.Index(f"ix_{dataset.raw_table}_file_sha256", table.c.file_sha256)
    return table


def analytic_tables_for(dataset: Dataset, metadata: sa.MetaData) -> list[sa.Table]:
    tables = []
    for a in dataset.analytics:
        cols: list[sa.schema.SchemaItem] = [
            sa.Column(
                c.name,
                SA_TYPES[c.type](),
                nullable=not (c.required or c.name in a.key),
                comment=c.description or None,
            )
            for c in a.columns
        ]
        cols.append(sa.PrimaryKeyConstraint(*a.key))
        tables.append(sa.Table(a.table, metadata, *cols, comment=a.description or None))
    return tables
