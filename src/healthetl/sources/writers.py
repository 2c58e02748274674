"""Frame writers chosen by the output's extension; ``-`` is an Arrow IPC stream on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthetl.errors import SourceError, UsageError
from healthetl.sources.readers import SOURCE_ROW


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Text frame -> Arrow table with plain ``string`` columns (row number stays int64)."""
    arrays = []
    for name in frame.columns:
        s = frame[name]
        if name == SOURCE_ROW:
            arrays.append(pa.array(s.to_numpy(dtype="int64"), type=pa.int64()))
        else:
            arrays.append(pa.array(s.astype("str"), type=pa.string(), from_pandas=True))
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


class FrameWriter:
    """Streams frames to one output; the schema is fixed by the first frame."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.kind = _kind(target)
        self._writer: Any = None
        self._sink: Any = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        table = to_arrow(frame)
        if self._schema is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            table = table.select(self._schema.names).cast(self._schema)
        self.rows += table.num_rows
        if self.kind == "ndjson":
            frame.to_json(self._sink, orient="records", lines=True, force_ascii=False)
            return
        self._writer.write_table(table) if self.kind == "parquet" else self._writer.write(table)

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        try:
            if self.target == "-":
                self._sink = sys.stdout.buffer
                self._writer = pa.ipc.new_stream(self._sink, schema)
                return
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(self.target, schema)
            elif self.kind == "csv":
                self._sink = pa.output_stream(self.target, compression="detect")
                self._writer = pacsv.CSVWriter(self._sink, schema)
            elif self.kind == "arrow":
                self._sink = pa.OSFile(self.target, "wb")
                self._writer = pa.ipc.new_stream(self._sink, schema)
            else:
                self._sink = open(self.target, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"{self.target}: cannot write ({exc.strerror or exc})") from None

    def close(self, empty_schema_from: pd.DataFrame | None = None) -> None:
        if self._schema is None and empty_schema_from is not None:
            self.write(empty_schema_from.iloc[0:0])
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None and self._sink is not sys.stdout.buffer:
            self._sink.close()
        elif self._sink is sys.stdout.buffer:
            self._sink.flush()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None or self._sink is not None:
            try:
                self.close()
            except Exception:
                if et is None:
                    raise


def _kind(target: str) -> str:
    if target == "-":
        return "arrow"
    name = target.lower().removesuffix(".gz")
    for suffix, kind in (
        (".parquet", "parquet"),
        (".csv", "csv"),
        (".ndjson", "ndjson"),
        (".jsonl", "ndjson"),
        (".arrow", "arrow"),
    ):
        if name.endswith(suffix):
            if kind in ("parquet", "arrow", "ndjson") and target.lower().endswith(".gz"):
                raise UsageError(f"{target}: only .csv output can be gzipped")
            return kind
    raise UsageError(
        f"{target}: output must end in .parquet, .csv, .csv.gz, .ndjson or .arrow, "
        "or be - for an Arrow stream on stdout"
    )


def open_writer(target: str) -> FrameWriter:
    return FrameWriter(target)
