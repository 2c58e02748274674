"""Frame writers chosen by the output's extension; ``-`` is an Arrow IPC stream on stdout.

An Arrow stream written by a stage is marked as healthetl's (schema metadata) and, only when
the stage finished, ends with a trailer: an empty batch carrying the row count. A stage that
fails or is killed leaves no trailer, and the next stage refuses the stream (see the reader)."""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthetl import interrupts
from healthetl.errors import SourceError, UsageError
from healthetl.sources.formats import output_kind
from healthetl.sources.readers import SOURCE_ROW, STREAM_END, STREAM_MARK


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
    """Streams frames to one output; the schema is fixed by the first frame.

    A file is written under a temporary name beside it and renamed into place only when the
    stage finished: a failed stage leaves no valid-looking truncated output (and an existing
    file of that name untouched)."""

    def __init__(self, target: str, *, csv_safe: bool = False) -> None:
        self.target = target
        self.kind = output_kind(target)
        #: CSV for spreadsheets: text that a spreadsheet would run as a formula gets a leading '
        self.csv_safe = csv_safe and self.kind == "csv"
        self._part: Path | None = None
        self._writer: Any = None
        self._sink: Any = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.csv_safe:
            frame = defuse_formulas(frame)
        table = to_arrow(frame)
        if self._schema is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            table = table.select(self._schema.names).cast(self._schema)
        self.rows += table.num_rows
        if self.kind == "ndjson":
            self._sink.write(interrupts.json_text(frame, orient="records", lines=True, force_ascii=False))
            return
        self._writer.write_table(table) if self.kind == "parquet" else self._writer.write(table)

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        try:
            if self.kind == "arrow":
                schema = self._schema = schema.with_metadata({**(schema.metadata or {}), **STREAM_MARK})
            if self.target == "-":
                self._sink = sys.stdout.buffer
                self._writer = pa.ipc.new_stream(self._sink, schema)
                return
            target = Path(self.target)
            target.parent.mkdir(parents=True, exist_ok=True)
            # same folder (so the rename is atomic), same extension (so .gz is detected)
            part = self._part = target.parent / f".{secrets.token_hex(4)}.part.{target.name}"
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(str(part), schema)
            elif self.kind == "csv":
                self._sink = pa.output_stream(str(part), compression="detect")
                self._writer = pacsv.CSVWriter(self._sink, schema)
            elif self.kind == "arrow":
                self._sink = pa.OSFile(str(part), "wb")
                self._writer = pa.ipc.new_stream(self._sink, schema)
            else:
                self._sink = open(part, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"{self.target}: cannot write ({exc.strerror or exc})") from None

    def close(self, empty_schema_from: pd.DataFrame | None = None, *, complete: bool = True) -> None:
        """``complete``: the stage finished; an Arrow stream then gets its trailer."""
        if self._schema is None and empty_schema_from is not None:
            self.write(empty_schema_from.iloc[0:0])
        if self._writer is not None and self.kind == "arrow" and complete and self._schema is not None:
            trailer = pa.RecordBatch.from_pylist([], schema=self._schema)
            self._writer.write_batch(trailer, custom_metadata={STREAM_END: str(self.rows)})
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None and self._sink is not sys.stdout.buffer:
            self._sink.close()
        elif self._sink is sys.stdout.buffer:
            self._sink.flush()
        self._writer = self._sink = None
        if self._part is not None:
            part, self._part = self._part, None
            if complete:
                os.replace(part, self.target)
            else:
                part.unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None or self._sink is not None or self._part is not None:
            try:
                self.close(complete=et is None)
            except Exception:
                if et is None:
                    raise


_FORMULA = r"[=+\-@\t\r].*"
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def defuse_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """OWASP's advice for CSV that spreadsheets open: a value starting with = + - @ or a tab or
    carriage return (``=cmd|' /C calc'!A0``) gets a leading ``'`` so it is shown, never run;
    plain numbers such as -5 are left alone."""
    out = frame.copy()
    for name in out.columns:
        if name == SOURCE_ROW:
            continue
        s = out[name].astype("str")
        risky = s.str.fullmatch(_FORMULA, flags=re.S).fillna(False) & ~s.str.fullmatch(_NUMBER).fillna(False)
        if bool(risky.any()):
            out[name] = s.where(~risky, "'" + s)
    return out


def open_writer(target: str, *, inputs: tuple[str, ...] = (), csv_safe: bool = False) -> FrameWriter:
    """A writer for ``target``; refused when it is one of the stage's ``inputs``."""
    if target != "-":
        out = Path(target).resolve()
        for source in inputs:
            if source != "-" and Path(source).resolve() == out:
                raise UsageError(f"{target}: the output is the stage's input; write somewhere else")
    return FrameWriter(target, csv_safe=csv_safe)
