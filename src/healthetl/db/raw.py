"""The raw layer: every extracted row, as received, appended to a dataset's raw table (so a
run can be reprocessed with ``--from-raw`` and a file is known by its sha256)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import sqlalchemy as sa

from healthetl.db.bulk import insert_frame, quote_name


class RawWriter:
    """Appends every extracted batch, as received, to a dataset's raw table."""

    def __init__(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        run_id: str,
        append: Callable[[str, pd.DataFrame, list[str], dict[str, str]], None] | None = None,
    ) -> None:
        self.conn = conn
        self.table = table
        self.columns = list(columns)
        self.run_id = run_id
        self.rows = 0
        self._append = append  # the load's write thread, so writes stay in order

    def write(self, frame: pd.DataFrame, sha256: str, extracted_at: str) -> None:
        if frame.empty:
            return
        out = pd.DataFrame(
            {
                "source_file": frame["_source_file"].astype("str"),
                "source_row": frame["_source_row"].astype("int64").astype("str"),
            }
        )
        for c in self.columns:
            out[c] = (
                frame[c].astype("str")
                if c in frame.columns
                else pd.Series(pd.NA, index=frame.index, dtype="str")
            )
        consts = {"run_id": self.run_id, "file_sha256": sha256, "extracted_at": extracted_at}
        columns = ["source_file", "source_row", *self.columns]
        if self._append is not None:
            self._append(quote_name(self.conn, self.table.name), out, columns, consts)
        else:
            insert_frame(self.conn, self.table.name, out, columns, consts)
        self.rows += len(frame)
