"""The catalog: every dataset a command can use (built in + declared in the project file),
with the tables they load into. Built-in and user datasets go through the same machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

from healthetl.config import Project
from healthetl.datasets import BUILTIN
from healthetl.datasets.declare import declared_datasets
from healthetl.datasets.nesting import child_tables as nested_child_tables
from healthetl.datasets.spec import Dataset, Query
from healthetl.datasets.tables import analytic_tables_for, raw_table_for, table_for
from healthetl.db.schema import NAMING_CONVENTION
from healthetl.db.schema import metadata as bookkeeping
from healthetl.errors import ConfigError, UsageError


@dataclass
class Catalog:
    datasets: dict[str, Dataset]
    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    #: names of the tables the project's own migrations own
    project_tables: set[str] = field(default_factory=set)
    project: Project | None = None

    def dataset(self, name: str) -> Dataset:
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets))
            raise UsageError(f"unknown dataset {name!r} (known: {known})") from None

    def table(self, dataset: Dataset) -> sa.Table:
        return self.tables[dataset.name]

    def raw_table(self, dataset: Dataset) -> sa.Table | None:
        return self.metadata.tables.get(dataset.raw_table) if dataset.raw_table else None

    def find_query(self, name: str) -> tuple[Dataset, Query]:
        for dataset in self.datasets.values():
            query = dataset.query(name)
            if query is not None:
                return dataset, query
        raise UsageError(f"unknown query {name!r}", hint="list them with `healthetl query --list`")

    @property
    def migrations_dir(self) -> Path | None:
        return self.project.migrations_dir if self.project and self.project_tables else None


def catalog_for(project: Project | None) -> Catalog:
    if project is None or not project.datasets:
        return _builtin()
    return _project_catalog(project)


@lru_cache(maxsize=1)
def _builtin() -> Catalog:
    """healthetl's own tables and the built-in datasets' tables, in one metadata."""
    metadata = _copy(bookkeeping)
    tables = {name: table_for(ds, metadata, BUILTIN) for name, ds in BUILTIN.items()}
    for ds in BUILTIN.values():
        raw_table_for(ds, metadata)
        nested_child_tables(ds, metadata)
        analytic_tables_for(ds, metadata)
    return Catalog(dict(BUILTIN), metadata, tables)


def _copy(source: sa.MetaData) -> sa.MetaData:
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    for table in source.sorted_tables:
        table.to_metadata(metadata)
    return metadata


def _project_catalog(project: Project) -> Catalog:
    declared = declared_datasets(project)
    datasets = dict(BUILTIN)
    for ds in declared:
        if ds.name in datasets:
            raise ConfigError(
                f"{project.path}: dataset {ds.name!r} is already defined"
                + (" (built in)" if ds.name in BUILTIN else "")
            )
        datasets[ds.name] = ds
    builtin_tables = {t.name for t in _builtin().metadata.sorted_tables}
    for ds in declared:
        if ds.raw_table in builtin_tables:
            raise ConfigError(
                f"{project.path}: dataset {ds.name}: raw table {ds.raw_table!r} "
                "belongs to healthetl; choose another name"
            )
        if ds.table in builtin_tables:
            raise ConfigError(
                f"{project.path}: dataset {ds.name}: table {ds.table!r} belongs "
                "to healthetl; choose another table name"
            )
        for column, (target, _) in ds.references.items():
            if target not in datasets:
                raise ConfigError(
                    f"{project.path}: dataset {ds.name}: {column} references unknown dataset {target!r}"
                )
        for lk in ds.lookups:
            found = datasets.get(lk.dataset)
            if found is None:
                raise ConfigError(
                    f"{project.path}: dataset {ds.name}: lookup {lk.column} refers to unknown dataset "
                    f"{lk.dataset!r}"
                )
            missing = [c for c in [*lk.on.values(), *lk.fetch.values()] if c not in found.stored_names]
            if missing:
                raise ConfigError(
                    f"{project.path}: dataset {ds.name}: lookup {lk.column}: {lk.dataset} has no "
                    f"column(s) {', '.join(missing)}"
                )
    metadata = _copy(_builtin().metadata)
    tables = {name: metadata.tables[BUILTIN[name].table] for name in BUILTIN}
    owned: set[str] = set()
    for ds in declared:
        tables[ds.name] = table_for(ds, metadata, datasets)
        owned.add(ds.table)
        raw = raw_table_for(ds, metadata)
        if raw is not None:
            owned.add(raw.name)
        owned.update(t.name for t in analytic_tables_for(ds, metadata))
        owned.update(t.name for t in nested_child_tables(ds, metadata))
    return Catalog(datasets, metadata, tables, owned, project)
