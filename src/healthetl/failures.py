"""The shape of a validation failure record (a rejects file row; a quarantine row minus its run),
and the spool that keeps a run's failure records safe from its own rollback."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from healthetl import cleaning
from healthetl.errors import DataContractError
from healthetl.jsontext import json_objects

FAILURE_COLUMNS = ["source_file", "source_row", "column_name", "rule", "severity", "reason", "original"]


def json_lines(frame: pd.DataFrame) -> list[str]:
    """Each row of ``frame`` as one JSON object (a failure record's ``original``), its values as
    text, written by Arrow's kernels (:mod:`healthetl.jsontext`)."""
    if frame.empty:
        return []
    columns = {str(c): cleaning.as_arrow(frame[c]) for c in frame.columns}
    return json_objects(pa.table(columns)).to_pylist()  # type: ignore[no-any-return]


_SPOOL_SCHEMA = pa.schema(
    [("dataset", pa.string()), ("source_row", pa.int64())]
    + [(c, pa.string()) for c in FAILURE_COLUMNS if c != "source_row"]
)


class FailureSpool:
    """Every failure record a run wrote to quarantine, also kept in a local Arrow file.

    The quarantine rows are written inside the load's transaction. When that transaction rolls
    back (a failed batch gate, a database error), the spool lets the run write them again in a
    transaction of its own: a failed run still says which rows failed which rule. Memory stays
    flat (records go to disk as they come); the file is removed by ``close``.
    """

    def __init__(self) -> None:
        self.records = 0
        self._path: str | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def add(self, dataset: str, failures: pd.DataFrame) -> None:
        if failures.empty:
            return
        if self._writer is None:
            fd, self._path = tempfile.mkstemp(prefix="healthetl-quarantine-", suffix=".arrow")
            os.close(fd)
            self._writer = pa.ipc.new_stream(self._path, _SPOOL_SCHEMA)
        frame = failures.assign(dataset=dataset)
        arrays = [
            pa.array(frame["source_row"].astype("int64").to_numpy(), type=pa.int64())
            if name == "source_row"
            else pa.array(frame[name].astype("str"), type=pa.string(), from_pandas=True)
            for name in _SPOOL_SCHEMA.names
        ]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=_SPOOL_SCHEMA))
        self.records += len(frame)

    def frames(self) -> Iterator[tuple[str, pd.DataFrame]]:
        """(dataset, failure records) in the order they were added."""
        if self._writer is None or self._path is None:
            return
        self._writer.close()
        self._writer = None
        with pa.ipc.open_stream(self._path) as reader:
            for batch in reader:
                frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
                for dataset, part in frame.groupby("dataset", sort=False):
                    out = part[FAILURE_COLUMNS].astype({"source_row": "int64"})
                    out = out.astype({c: "str" for c in FAILURE_COLUMNS if c != "source_row"})
                    yield str(dataset), out.reset_index(drop=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            self._path = None


#: In an Arrow stream between stages: a row ``validate`` rejected, carried to ``load`` so the
#: run accounts for it; the value is the row's failure records as JSON (lineage columns aside).
REJECTED = "_rejected"
_CARRIED = [c for c in FAILURE_COLUMNS if c not in ("source_file", "source_row")]


def mark_rejected(failures: pd.DataFrame) -> pd.DataFrame:
    """One row per rejected source row (a row with an error-severity failure): its lineage and
    every failure record of it, as JSON in ``REJECTED``. Rows with warnings only are clean rows."""
    from healthetl.sources import SOURCE_FILE, SOURCE_ROW

    if failures.empty:
        return pd.DataFrame(
            {SOURCE_FILE: pd.Series([], dtype="str"), SOURCE_ROW: pd.Series([], dtype="int64")}
        )
    keys = ["source_file", "source_row"]
    errors = failures.loc[failures["severity"] == "error", keys].drop_duplicates()
    rows = failures.merge(errors, on=keys, how="inner")
    records = rows[_CARRIED].astype(object).where(rows[_CARRIED].notna(), None)
    payload = pd.Series(
        [json.dumps(r, ensure_ascii=False) for r in records.to_dict("records")], index=rows.index
    )
    grouped = payload.groupby([rows["source_file"], rows["source_row"]], sort=False).agg(
        lambda items: "[" + ",".join(items) + "]"
    )
    return pd.DataFrame(
        {
            SOURCE_FILE: grouped.index.get_level_values(0).astype("str"),
            SOURCE_ROW: grouped.index.get_level_values(1).astype("int64"),
            REJECTED: grouped.to_numpy(dtype=object),
        }
    ).astype({REJECTED: "str"})


def unmark_rejected(marked: pd.DataFrame) -> pd.DataFrame:
    """The failure records carried by marked rows (the inverse of ``mark_rejected``)."""
    from healthetl.sources import SOURCE_FILE, SOURCE_ROW

    records = []
    for source_file, source_row, text in zip(
        marked[SOURCE_FILE], marked[SOURCE_ROW], marked[REJECTED], strict=True
    ):
        try:
            items = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            items = None
        if not isinstance(items, list) or not items:
            raise DataContractError(
                f"{source_file}, row {source_row}: the stream marks the row rejected but carries no "
                "failure records; pipe the output of `healthetl validate -o -`"
            )
        for item in items:
            records.append(
                {"source_file": source_file, "source_row": int(source_row)}
                | {c: item.get(c) for c in _CARRIED}
            )
    return pd.DataFrame.from_records(records, columns=FAILURE_COLUMNS)
