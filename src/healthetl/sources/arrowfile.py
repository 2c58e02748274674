"""Parquet files and Arrow IPC streams (the format between stages, with its end mark)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthetl.errors import SourceError, first_line
from healthetl.sources.frames import STREAM_END, STREAM_MARK, text_frame
from healthetl.sources.storage import open_binary

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def read_parquet(
    path: str, chunk_size: int, fs: AbstractFileSystem | None = None, row_groups: list[int] | None = None
) -> Iterator[pd.DataFrame]:
    """``row_groups``: only those (a partition; see :func:`row_group_spans`)."""
    try:
        pf = pq.ParquetFile(path if fs is None else open_binary(path, fs))
        yielded = False
        for batch in pf.iter_batches(batch_size=chunk_size, row_groups=row_groups):
            yield text_frame(pa.Table.from_batches([batch]))
            yielded = True
        if not yielded:
            yield text_frame(pf.schema_arrow.empty_table())
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {first_line(exc)}") from None


def row_group_spans(path: str, size: int, fs: AbstractFileSystem | None = None) -> list[list[int]]:
    """A Parquet file's row groups gathered into partitions of about ``size`` bytes
    (uncompressed), in order; at least one (maybe empty)."""
    try:
        meta = pq.ParquetFile(path if fs is None else open_binary(path, fs)).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {first_line(exc)}") from None
    spans: list[list[int]] = [[]]
    held = 0
    for i in range(meta.num_row_groups):
        if spans[-1] and held >= size:
            spans.append([])
            held = 0
        spans[-1].append(i)
        held += meta.row_group(i).total_byte_size
    return spans


def read_arrow(path: str) -> Iterator[pd.DataFrame]:
    """An Arrow IPC stream. One written by a healthetl stage must end with its trailer (the
    row count, written only when that stage finished): without it the stage before failed or was
    killed, and the stream is refused, so a load rolls back instead of committing a prefix."""
    where = "standard input" if path == "-" else path
    try:
        source: Any = sys.stdin.buffer if path == "-" else pa.OSFile(path, "rb")
        reader = pa.ipc.open_stream(source)
        ours = bool(reader.schema.metadata) and all(
            reader.schema.metadata.get(k) == v for k, v in STREAM_MARK.items()
        )
        yielded, rows, ended = False, 0, None
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            if meta is not None and STREAM_END.encode() in meta:
                ended = int(meta[STREAM_END.encode()])
                continue
            rows += batch.num_rows
            yield text_frame(pa.Table.from_batches([batch]))
            yielded = True
        if ours and ended is None:
            raise SourceError(
                f"{where}: the Arrow stream ended without its end mark after {rows} rows: the stage "
                "writing it failed or was killed; nothing from it is loaded"
            )
        if ended is not None and ended != rows:
            raise SourceError(f"{where}: the Arrow stream says {ended} rows but carried {rows}")
        if not yielded:
            yield text_frame(reader.schema.empty_table())
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"{where}: not a complete Arrow IPC stream ({first_line(exc)}); "
            "pipe the output of a healthetl stage run with `-o -`"
        ) from None
