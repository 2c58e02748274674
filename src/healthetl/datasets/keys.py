"""Keys: the key of each row as one value, and the keys a run has accepted so far (to find
duplicates across batches; spilled to a scratch SQLite file past a bound)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc

from healthetl import cleaning
from healthetl.datasets.keyspill import KeySpill
from healthetl.errors import ConfigError


class KeyTracker:
    """Keys already accepted in this run, across chunks, to report later duplicates.

    Arrow arrays merged like a binary counter (up to MERGE_LIMIT keys each): few arrays to
    probe, each probe hashes only the (small) new batch, and memory is the keys themselves.
    Past ``HEALTHETL_KEYS_IN_MEMORY`` keys (default 500,000, about 6 MB) the arrays move to a
    scratch SQLite file (``keyspill.KeySpill``), so a run's memory stays flat in its row count.
    """

    #: arrays stop merging at this many keys, so a merge never copies more than this
    MERGE_LIMIT = 1 << 20

    def __init__(self, in_memory: int | None = None) -> None:
        self._levels: list[pyarrow.Array] = []
        self._held = 0
        self._limit = in_memory if in_memory is not None else keys_in_memory()
        self._spill: KeySpill | None = None

    @property
    def spilled(self) -> int:
        """Keys moved to disk so far."""
        return self._spill.keys if self._spill is not None else 0

    def duplicated(self, keys: pd.Series, holders: np.ndarray | None = None) -> pd.Series:
        """Keys an accepted row holds already: a row of an earlier batch, or an earlier row of
        this one among ``holders`` (the rows that may hold a key: all of them when None)."""
        if holders is None or holders.all():
            dup = keys.duplicated(keep="first").to_numpy()
        else:
            dup = _held_earlier(keys, holders)
        if self._levels or self._spill is not None:
            chunk = cleaning.as_arrow(keys)
            for seen in self._levels:
                hits = pc.filter(seen, pc.is_in(seen, value_set=chunk))
                if len(hits):
                    found = pc.is_in(chunk, value_set=hits)
                    dup = dup | pc.fill_null(found, False).to_numpy(zero_copy_only=False)
            if self._spill is not None:
                dup = dup | self._spill.contains(chunk)
        return pd.Series(dup, index=keys.index)

    def add(self, keys: pd.Series) -> None:
        fresh = cleaning.as_arrow(keys.dropna())
        if not len(fresh):
            return
        self._levels.append(fresh)
        self._held += len(fresh)
        while (
            len(self._levels) > 1
            and len(self._levels[-2]) <= len(self._levels[-1])
            and len(self._levels[-2]) + len(self._levels[-1]) <= self.MERGE_LIMIT
        ):
            last = self._levels.pop()
            self._levels[-1] = pyarrow.concat_arrays([self._levels[-1], last])
        if self._held > self._limit:
            if self._spill is None:
                self._spill = KeySpill()
            while self._levels:  # a level at a time: no copy of them all at once
                self._spill.add(self._levels.pop())
            self._held = 0
            pyarrow.default_memory_pool().release_unused()  # give the levels' pages back

    def close(self) -> None:
        """Remove the scratch file, if the run needed one."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def _held_earlier(keys: pd.Series, holders: np.ndarray) -> np.ndarray:
    """Rows whose key an earlier row among ``holders`` has: among the rows whose key repeats
    (usually few), each key's first holder's position compared with every row's own."""
    dup = np.zeros(len(keys), dtype=bool)
    shared = keys.duplicated(keep=False).to_numpy()
    if not shared.any():
        return dup
    rows = np.flatnonzero(shared)
    sub, held = keys.iloc[rows], holders[rows]
    owners = sub[held]
    first = ~owners.duplicated(keep="first").to_numpy()
    first_holder = pd.Series(rows[held][first], index=pd.Index(owners.to_numpy()[first]))
    earliest = sub.map(first_holder).to_numpy(dtype="float64", na_value=np.nan)
    dup[rows] = earliest < rows  # NaN (no holder) compares False
    return dup


def keys_in_memory() -> int:
    raw = os.environ.get("HEALTHETL_KEYS_IN_MEMORY", "500000")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"HEALTHETL_KEYS_IN_MEMORY must be a whole number of keys, not {raw!r}") from None
    if value < 1:
        raise ConfigError("HEALTHETL_KEYS_IN_MEMORY must be positive")
    return value


def key_series(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    if len(columns) == 1:
        return frame[columns[0]]
    out = frame[columns[0]].astype("str")
    for col in columns[1:]:
        out = out + "\x1f" + frame[col].astype("str")
    return out
