"""Reading any supported file as text frames: the format picks the reader (see
:mod:`healthetl.sources.formats`), and every frame gets the same lineage columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from healthetl.errors import SourceError
from healthetl.sources.arrowfile import read_arrow, read_parquet
from healthetl.sources.csvfile import default_delimiter, read_csv
from healthetl.sources.excel import read_excel
from healthetl.sources.formats import kind_of
from healthetl.sources.frames import (
    LINEAGE,
    SOURCE_FILE,
    SOURCE_ROW,
    STREAM_END,
    STREAM_MARK,
    normalise_name,
    unique_names,
)
from healthetl.sources.json_records import read_json, read_ndjson
from healthetl.sources.storage import file_name, size_of

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "LINEAGE",
    "SOURCE_FILE",
    "SOURCE_ROW",
    "STREAM_END",
    "STREAM_MARK",
    "bound_arrow_memory",
    "normalise_name",
    "read_frames",
]


def bound_arrow_memory() -> None:
    """Use jemalloc with immediate decay for Arrow buffers: chunks are freed back to the
    system as the stream moves on, so peak memory stays flat as files grow (measured in
    benchmarks/load_bench.py; mimalloc, the default, keeps freed pages). The C heap gets the
    same bound (:func:`bound_heap`).

    A process-wide switch, so the command line makes it (it owns its process) and importing
    healthetl never does: a program using the library (a notebook, a scheduler's worker) calls
    this itself if it wants the same bound."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a build without jemalloc
        pass
    bound_heap()


#: glibc's ``mallopt`` parameter for the size from which a block is its own mapping
_M_MMAP_THRESHOLD = -3
#: blocks from this size on (a 75,000-row chunk's numpy columns, pandas' masks and indexes)
#: are mapped on their own and unmapped when freed
HEAP_MMAP_THRESHOLD = 256 * 1024


def bound_heap() -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``), which otherwise rises to
    the size of each large block freed, up to 32 MB: pandas' and numpy's per-chunk arrays then
    come from the heap, whose freed middle is never given back, and a load's resident memory
    creeps up by tens of MB. Fixed, every block from 256 KB is a mapping of its own, returned
    to the system when freed (a 1M-row load: 25 MB lower peak, no slower; see the README's
    Performance section). Returns whether it applied: only glibc has the knob."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))


def read_frames(
    path: str,
    *,
    chunk_size: int = 100_000,
    sheet: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    quote: str = '"',
    fs: AbstractFileSystem | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield text frames of at most ``chunk_size`` rows; always at least one (maybe empty).

    CSV: ``delimiter`` defaults to a tab for ``.tsv`` files and a comma otherwise. With ``fs``,
    ``path`` is an object's URL in that filesystem (see :mod:`healthetl.sources.storage`)."""
    kind = kind_of(path)
    if fs is not None:
        if size_of(path, fs) == 0:
            raise SourceError(f"{path}: file is empty (0 bytes)")
    elif path != "-":
        p = Path(path)
        if not p.exists():
            raise SourceError(f"{path}: file not found")
        if p.is_dir():
            raise SourceError(f"{path}: is a folder, expected a file")
        if p.stat().st_size == 0:
            raise SourceError(f"{path}: file is empty (0 bytes)")
    readers = {
        "csv": lambda: read_csv(path, chunk_size, encoding, delimiter or default_delimiter(path), quote, fs),
        "excel": lambda: read_excel(path, chunk_size, sheet, fs),
        "parquet": lambda: read_parquet(path, chunk_size, fs),
        "ndjson": lambda: read_ndjson(path, chunk_size, fs),
        "json": lambda: read_json(path, chunk_size, fs),
        "arrow": lambda: read_arrow(path),
    }
    yield from with_lineage(readers[kind](), "<stdin>" if path == "-" else file_name(path))


def with_lineage(frames: Iterator[pd.DataFrame], name: str) -> Iterator[pd.DataFrame]:
    """Frames as every reader yields them: normalised column names, then the source's name and
    each row's 1-based number (frames that carry lineage already keep theirs)."""
    row = 0
    for frame in frames:
        if SOURCE_ROW not in frame.columns:
            frame.columns = unique_names([normalise_name(c) for c in frame.columns])
            n = len(frame)
            frame.insert(0, SOURCE_ROW, pd.array(range(row + 1, row + n + 1), dtype="int64"))
            frame.insert(0, SOURCE_FILE, name)
            frame[SOURCE_FILE] = frame[SOURCE_FILE].astype("str")
            row += n
        frame.index = pd.RangeIndex(len(frame))
        yield frame
