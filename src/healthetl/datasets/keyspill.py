"""The part of a run's key history that no longer fits the memory budget, on local disk.

A private SQLite file in a temporary folder (removed when the run ends): one ``WITHOUT ROWID``
table keyed by the text key, so a probe is an index lookup and the page cache (a few MB) is all
it holds in memory. Keys arrive sorted, which keeps the B-tree appends cheap.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.compute as pc

from healthetl.jsontext import json_array

#: keys per probe statement (one JSON parameter each), and per insert slice
_PROBE = _SLICE = 50_000


class KeySpill:
    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="healthetl-keys-")
        self._db = sqlite3.connect(Path(self._folder.name) / "keys.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")  # a scratch file: nothing to recover
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID")
        self.keys = 0

    def add(self, keys: pyarrow.Array) -> None:
        """Store keys (no nulls; unique among themselves and against what is stored)."""
        ordered = pc.take(keys, pc.sort_indices(keys))
        self._db.execute("BEGIN")
        for start in range(0, len(ordered), _SLICE):  # the text of a slice at a time only
            part = json_array(ordered.slice(start, _SLICE))  # one parameter, parsed by SQLite
            self._db.execute("INSERT OR IGNORE INTO seen (key) SELECT value FROM json_each(?)", (part,))
        self._db.execute("COMMIT")
        self.keys += len(ordered)

    def contains(self, chunk: pyarrow.Array) -> np.ndarray:
        """Which values of ``chunk`` are stored (null: no)."""
        values = pc.drop_null(chunk)
        found: list[str] = []
        for start in range(0, len(values), _PROBE):
            batch = json_array(values.slice(start, _PROBE))
            found += [
                row[0]
                for row in self._db.execute(
                    "SELECT key FROM seen WHERE key IN (SELECT value FROM json_each(?))", (batch,)
                )
            ]
        if not found:
            return np.zeros(len(chunk), dtype=bool)
        hits = pc.is_in(chunk, value_set=pyarrow.array(found, pyarrow.string()))
        return np.asarray(pc.fill_null(hits, False).to_numpy(zero_copy_only=False), dtype=bool)

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()
