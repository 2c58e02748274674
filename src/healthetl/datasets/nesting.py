"""Nested JSON: a declared mapping from JSON paths to a parent table and child tables.

A record (one JSON object) becomes one parent row and, per declared array, child rows keyed
to it (and grandchild rows keyed to those). Paths are those of :mod:`healthetl.datasets.paths`
(``location.state``, ``name[0].family``, ``identifier[system=...].value``, ``value[x]``, ``x#``);
a child column's path is relative to the array element, ``.`` being the element itself. The
record is the unit of quality: when any of its rows fails an error-severity check, the whole
record goes to quarantine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa

from healthetl.datasets.paths import getter
from healthetl.datasets.spec import Column, Dataset
from healthetl.datasets.tables import SA_TYPES
from healthetl.sources.readers import SOURCE_FILE, SOURCE_ROW

RECORD = "_record"


@dataclass(frozen=True)
class Child:
    table: str
    #: the array in the parent element, e.g. "accreditations"
    path: str
    #: the element's position within the array (1-based), part of the key
    ordinal: str
    columns: tuple[Column, ...]
    #: column -> path relative to the element ("." = the element itself)
    paths: Mapping[str, str]
    children: tuple[Child, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Nested:
    #: parent column -> path in the record ("x#" = length of array x)
    paths: Mapping[str, str]
    children: tuple[Child, ...]
    #: rows belong to a snapshot (a date): a load replaces exactly its snapshots
    snapshot_column: str | None = "snapshot_date"
    description: str = field(default="")


def as_text(value: Any) -> str | None:
    if value is None or type(value) is str:  # the usual cases first: this runs per value
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_DATE_IN_PATH = re.compile(r"(\d{4}-\d{2}-\d{2})")


def snapshot_from_path(path: str) -> str | None:
    """A YYYY-MM-DD in the file name or a folder name (the nearest wins)."""
    found = _DATE_IN_PATH.findall(path)
    return found[-1] if found else None


def all_children(nested: Nested) -> list[tuple[Child, tuple[Child, ...]]]:
    """Every child table with its chain of ancestors (parents before children)."""
    out: list[tuple[Child, tuple[Child, ...]]] = []

    def walk(children: tuple[Child, ...], ancestors: tuple[Child, ...]) -> None:
        for c in children:
            out.append((c, ancestors))
            walk(c.children, (*ancestors, c))

    walk(nested.children, ())
    return out


def looked_up(dataset: Dataset) -> set[str]:
    """Columns a lookup fills (the referenced row's key, fetched values), not read by path."""
    return {lk.column for lk in dataset.lookups} | {f for lk in dataset.lookups for f in lk.fetch}


def key_columns(dataset: Dataset) -> tuple[str, ...]:
    return dataset.primary_key


def flatten(
    dataset: Dataset, records: list[tuple[str, int, dict[str, Any], str]]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(source_file, source_row, record, snapshot) -> the parent frame and one frame per child
    table, every value as text, each row carrying the position of its record (``_record``)."""
    nested = dataset.nested
    assert nested is not None
    keys = key_columns(dataset)
    skip = looked_up(dataset)
    parent_rows: list[dict[str, Any]] = []
    child_rows: dict[str, list[dict[str, Any]]] = {c.table: [] for c, _ in all_children(nested)}
    snapshot_column = nested.snapshot_column
    # per column read from the record, its path compiled once; the snapshot and looked-up
    # columns are filled here and by the lookup
    reads = [
        (column, getter(nested.paths.get(column, column)))
        for column in dataset.column_names
        if column != snapshot_column and column not in skip
    ]
    for index, (source_file, source_row, record, snapshot) in enumerate(records):
        row: dict[str, Any] = {SOURCE_FILE: source_file, SOURCE_ROW: source_row, RECORD: index}
        row.update(dict.fromkeys(skip))
        if snapshot_column:
            row[snapshot_column] = snapshot
        for column, read in reads:
            row[column] = as_text(read(record))
        parent_rows.append(row)
        base = {k: row[k] for k in keys}
        _children(
            nested.children,
            record,
            base,
            {SOURCE_FILE: source_file, SOURCE_ROW: source_row, RECORD: index},
            child_rows,
        )
    parent = _frame(parent_rows, [SOURCE_FILE, SOURCE_ROW, RECORD, *dataset.column_names])
    children = {}
    for child, ancestors in all_children(nested):
        cols = [
            SOURCE_FILE,
            SOURCE_ROW,
            RECORD,
            *child_key(dataset, child, ancestors),
            *[c.name for c in child.columns],
        ]
        children[child.table] = _frame(child_rows[child.table], cols)
    return parent, children


def _children(
    children: tuple[Child, ...],
    element: Any,
    key: dict[str, Any],
    lineage: dict[str, Any],
    out: dict[str, list[dict[str, Any]]],
) -> None:
    for child in children:
        items = getter(child.path)(element)
        if not isinstance(items, list):
            continue
        reads = [(column.name, getter(child.paths.get(column.name, column.name))) for column in child.columns]
        rows = out[child.table]
        for position, item in enumerate(items, start=1):
            row = lineage | key
            row[child.ordinal] = str(position)
            for name, read in reads:
                row[name] = as_text(read(item))
            rows.append(row)
            if child.children:
                _children(child.children, item, key | {child.ordinal: row[child.ordinal]}, lineage, out)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for c in columns:
        if c in (SOURCE_ROW, RECORD):
            frame[c] = frame[c].astype("int64")
        else:
            frame[c] = frame[c].astype("str")
    return frame


def child_key(dataset: Dataset, child: Child, ancestors: tuple[Child, ...]) -> list[str]:
    return [*key_columns(dataset), *[a.ordinal for a in ancestors], child.ordinal]


def child_dataset(dataset: Dataset, child: Child, ancestors: tuple[Child, ...]) -> Dataset:
    """A child table as a dataset of its own, so it is validated by the same machinery."""
    parent_cols = {c.name: c for c in dataset.columns}
    key_cols = [parent_cols[k] for k in key_columns(dataset)]
    ordinals = [Column(a.ordinal, "integer", required=True) for a in (*ancestors, child)]
    return Dataset(
        name=f"{dataset.name}.{child.path}",
        description=child.description,
        columns=(*key_cols, *ordinals, *child.columns),
        primary_key=(),
        table=child.table,
        severity=dataset.severity,
    )


def child_tables(dataset: Dataset, metadata: sa.MetaData) -> list[sa.Table]:
    nested = dataset.nested
    if nested is None:
        return []
    parent = {c.name: c for c in dataset.columns}
    tables = []
    for child, ancestors in all_children(nested):
        keys = child_key(dataset, child, ancestors)
        cols: list[sa.schema.SchemaItem] = []
        for k in keys:
            ctype = parent[k].type if k in parent else "integer"
            cols.append(sa.Column(k, SA_TYPES[ctype](), nullable=False))
        for c in child.columns:
            cols.append(
                sa.Column(c.name, SA_TYPES[c.type](), nullable=not c.required, comment=c.description or None)
            )
        cols.append(sa.Column("run_id", sa.String(40), nullable=False))
        cols.append(sa.PrimaryKeyConstraint(*keys))
        up_table = ancestors[-1].table if ancestors else dataset.table
        up_keys = keys[:-1]
        cols.append(sa.ForeignKeyConstraint(up_keys, [f"{up_table}.{k}" for k in up_keys]))
        tables.append(sa.Table(child.table, metadata, *cols, comment=child.description or None))
    return tables
