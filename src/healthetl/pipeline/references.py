"""Reference data a validation needs from the database: the keys each reference may point to,
and the rows each lookup resolves a natural key against."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from healthetl import cleaning
from healthetl.catalog import Catalog
from healthetl.datasets.spec import Dataset
from healthetl.datasets.standardise import AMBIGUOUS, LookupTable
from healthetl.db import bulk


def lookup_tables(conn: sa.Connection, dataset: Dataset, catalog: Catalog) -> dict[str, LookupTable]:
    """For each lookup: the referenced rows by natural key (in this transaction, so rows an
    earlier dataset of the same batch wrote are found)."""
    out: dict[str, LookupTable] = {}
    for lk in dataset.lookups:
        target = catalog.dataset(lk.dataset)
        table = catalog.table(target)
        id_col = target.generated_id or target.primary_key[0]
        cols = [
            table.c[id_col],
            *[table.c[c] for c in lk.on.values()],
            *[table.c[c] for c in lk.fetch.values()],
        ]
        rows = conn.execute(sa.select(*cols)).all()
        if not rows:
            out[lk.column] = LookupTable(lk, {}, {k: {} for k in lk.fetch})
            continue
        frame = pd.DataFrame(
            rows,
            columns=["_id", *[f"k{i}" for i in range(len(lk.on))], *[f"f{i}" for i in range(len(lk.fetch))]],
        )
        keys = list(
            zip(
                *[cleaning.lookup_key(frame[f"k{i}"].astype(str)).tolist() for i in range(len(lk.on))],
                strict=True,
            )
        )
        ids: dict[tuple[str, ...], str] = {}
        fetched: dict[str, dict[tuple[str, ...], str | None]] = {k: {} for k in lk.fetch}
        for n, key in enumerate(keys):
            ids[key] = AMBIGUOUS if key in ids else str(frame["_id"].iat[n])
            for i, name in enumerate(lk.fetch):
                value = frame[f"f{i}"].iat[n]
                fetched[name][key] = None if pd.isna(value) else str(value)
        out[lk.column] = LookupTable(lk, ids, fetched)
    return out


def reference_keys(conn: sa.Connection, dataset: Dataset, catalog: Catalog) -> dict[str, pd.Index]:
    """Keys each reference may point to, read from the referenced tables."""
    known: dict[str, pd.Index] = {}
    for column, (target, target_col) in dataset.references.items():
        table = catalog.table(catalog.dataset(target))
        known[column] = bulk.known_keys(conn, table, target_col)
    return known
