"""What a stage reads: a ``Source``. A file on disk is one; the pipeline adds its own kinds (the
raw rows of an earlier run, a rejects file). A new kind of source (object storage, an HTTP API)
is a class with these members, returned by :mod:`healthetl.sources.discover`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from healthetl.config import PipelineOptions
from healthetl.errors import SourceError
from healthetl.sources.readers import read_frames

#: the fingerprint of a stream: it cannot be known before it is read
STREAM = "stdin"


class Source(Protocol):
    @property
    def label(self) -> str:
        """How runs, reports and errors name it."""
        ...

    @property
    def path(self) -> str | None:
        """The local file it reads (``-``: standard input), which the raw layer records and an
        inbox archives; None when it is not a file."""
        ...

    def check(self) -> None:
        """Raise :class:`SourceError` when it cannot be read at all (a missing file)."""
        ...

    def fingerprint(self) -> str:
        """Its content's identity (sha256 of the bytes), by which a load skips what it already
        loaded; ``""`` when it has none, ``"stdin"`` for a stream."""
        ...

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        """Its rows as text frames with lineage (see :mod:`healthetl.sources`)."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A local file (also gzipped), or ``-`` for an Arrow stream on standard input."""

    path: str

    @property
    def label(self) -> str:
        return self.path

    def check(self) -> None:
        if self.path != "-" and not Path(self.path).exists():
            raise SourceError(f"{self.path}: file not found")

    def fingerprint(self) -> str:
        if self.path == "-":
            return STREAM
        self.check()
        return file_sha256(self.path)

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        return read_frames(
            self.path,
            chunk_size=options.chunk_size,
            sheet=options.sheet,
            encoding=options.encoding,
            delimiter=options.delimiter,
            quote=options.quote,
        )


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
