"""Readers and writers only: bytes in, frames of text out, no rules.

Every reader yields pandas frames in which every column is text (``str`` dtype), column names
are normalised (trimmed, lower case, snake_case) and two lineage columns are present:
``_source_file`` (the file name) and ``_source_row`` (1-based data row, header not counted).
Frames that already carry lineage (a Parquet or Arrow stream written by ``extract``) keep it.
"""

from __future__ import annotations

from healthetl.sources.readers import LINEAGE, SOURCE_FILE, SOURCE_ROW, normalise_name, read_frames
from healthetl.sources.writers import FrameWriter, open_writer

__all__ = [
    "LINEAGE",
    "SOURCE_FILE",
    "SOURCE_ROW",
    "FrameWriter",
    "normalise_name",
    "open_writer",
    "read_frames",
]
