"""Sources cut into partitions that separate processes (or machines) read on their own.

A partition is whole records: a byte range of a CSV cut where a record ends (quote-aware, by the
same cutter the reader uses), a byte range of an NDJSON file cut after a line break, a run of a
Parquet file's row groups, or a whole file (Excel, JSON arrays, gzipped or UTF-16 text, which
cannot be entered in the middle). Each knows the line its first record is on, so an error in it
names the file's own line; row numbers start at 1 in each partition and the coordinator adds
the rows of the partitions before it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from healthetl.config import PipelineOptions
from healthetl.errors import UsageError
from healthetl.sources.arrowfile import read_parquet, row_group_spans
from healthetl.sources.base import FileSource, ObjectSource, Source, read_file
from healthetl.sources.csvfile import Span, default_delimiter, read_csv, record_spans
from healthetl.sources.formats import kind_of
from healthetl.sources.json_records import line_spans, read_ndjson
from healthetl.sources.readers import with_lineage
from healthetl.sources.storage import file_name

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: partitions of about this many bytes unless told otherwise (Dask's own default block size)
DEFAULT_SIZE = 64 << 20


def parse_size(text: int | str) -> int:
    """A partition size: bytes, or with a unit (``64MB``, ``512KiB``, ``1GB``)."""
    if isinstance(text, int):
        size = text
    else:
        try:
            from dask.utils import parse_bytes
        except ImportError:
            raise UsageError("--engine dask needs Dask", hint="pip install 'healthetl[dask]'") from None
        try:
            size = int(parse_bytes(text.strip()))
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"--partition-size {text!r}: not a size (64MB, 512KiB, 1GB)") from None
    if size < 1:
        raise UsageError(f"--partition-size {text!r}: must be positive")
    return size


@dataclass(frozen=True)
class Partition:
    """Whole records of one source, readable alone."""

    #: its place in the run: sources in order, then position in the file
    index: int
    #: which source of the run it belongs to (row numbers count per source)
    source: int
    path: str
    fs: AbstractFileSystem | None = field(default=None, compare=False, repr=False)
    #: CSV / NDJSON: (first byte, end byte, line of the first record)
    span: Span | None = None
    #: Parquet: the row groups it reads
    row_groups: tuple[int, ...] | None = None

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        """Its rows as the text frames a reader yields, numbered from 1 within the partition."""
        kind = kind_of(self.path)
        n = options.chunk_size
        if self.span is not None and kind == "csv":
            delimiter = options.delimiter or default_delimiter(self.path)
            frames = read_csv(self.path, n, options.encoding, delimiter, options.quote, self.fs, self.span)
        elif self.span is not None and kind == "ndjson":
            frames = read_ndjson(self.path, n, self.fs, self.span)
        elif self.row_groups is not None:
            frames = read_parquet(self.path, n, self.fs, list(self.row_groups) or None)
        else:
            return read_file(self.path, options, self.fs)
        return with_lineage(frames, file_name(self.path))


def partitions(
    sources: Sequence[Source], options: PipelineOptions, size: int = DEFAULT_SIZE
) -> list[Partition]:
    """Every source cut into partitions of about ``size`` bytes, in order."""
    out: list[Partition] = []
    for number, source in enumerate(sources):
        if isinstance(source, ObjectSource):
            path, fs = source.url, source.fs
        elif isinstance(source, FileSource) and source.path != "-":
            path, fs = source.path, None
        else:
            raise UsageError(f"{source.label}: only files and objects can be partitioned")
        for piece in _pieces(path, fs, options, size):
            out.append(Partition(len(out), number, path, fs, *piece))
    return out


def _pieces(
    path: str, fs: AbstractFileSystem | None, options: PipelineOptions, size: int
) -> list[tuple[Span | None, tuple[int, ...] | None]]:
    kind = kind_of(path)
    compressed = path.lower().endswith(".gz")
    if kind == "csv" and not compressed and not _wide(options.encoding):
        delimiter = options.delimiter or default_delimiter(path)
        return [(span, None) for span in record_spans(path, options.quote, delimiter, size, fs)]
    if kind == "ndjson" and not compressed:
        return [(span, None) for span in line_spans(path, size, fs)]
    if kind == "parquet":
        return [(None, tuple(groups)) for groups in row_group_spans(path, size, fs)]
    return [(None, None)]


def _wide(encoding: str) -> bool:
    """UTF-16/32: a line break is not the byte 0x0A, so bytes cannot be cut at one."""
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
