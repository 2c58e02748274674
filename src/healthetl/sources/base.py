"""What a stage reads: a ``Source``. A file on disk is one; the pipeline adds its own kinds (the
raw rows of an earlier run, a rejects file). A new kind of source (object storage, an HTTP API)
is a class with these members, returned by :mod:`healthetl.sources.discover`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

from healthetl.config import PipelineOptions, is_remote
from healthetl.errors import SourceError
from healthetl.sources import storage
from healthetl.sources.json_records import Record, read_records
from healthetl.sources.readers import read_frames
from healthetl.sources.storage import filesystem, size_of

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: the fingerprint of a stream: it cannot be known before it is read
STREAM = "stdin"


class Source(Protocol):
    @property
    def label(self) -> str:
        """How runs, reports and errors name it."""
        ...

    @property
    def path(self) -> str | None:
        """The file it reads (a local path, an object's URL, ``-``: standard input), which the
        raw layer records and an inbox archives; None when it is not a file."""
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


@runtime_checkable
class RecordSource(Protocol):
    """A source nested datasets can read: JSON records, one at a time (a file or an object)."""

    @property
    def label(self) -> str: ...

    def records(self) -> Iterator[Record]: ...


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
        return read_file(self.path, options)

    def records(self) -> Iterator[Record]:
        return read_records(self.path)


@dataclass(frozen=True)
class ObjectSource:
    """An object in a store (``s3://bucket/key``), streamed through its fsspec filesystem.

    Its identity is the store's ETag (the MD5 of the content for a single-part upload), taken
    from the listing, so an object already loaded is skipped without reading it again; it is
    hashed to the ledger's sha256 width, ``etag`` marked so it never collides with a file's."""

    url: str
    fs: AbstractFileSystem = field(compare=False, repr=False)
    etag: str = ""

    @property
    def label(self) -> str:
        return self.url

    @property
    def path(self) -> str:
        return self.url

    def check(self) -> None:
        size_of(self.url, self.fs)

    def fingerprint(self) -> str:
        """The ETag the listing gave, else the store's answer now (an object named directly)."""
        etag = self.etag or etag_of(storage.info(self.url, self.fs))
        return object_fingerprint(etag, self.url)

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        return read_file(self.url, options, self.fs)

    def records(self) -> Iterator[Record]:
        return read_records(self.url, self.fs)


def read_file(
    path: str, options: PipelineOptions, fs: AbstractFileSystem | None = None
) -> Iterator[pd.DataFrame]:
    """A whole file (or object) as text frames, read as the pipeline's options say."""
    return read_frames(
        path,
        chunk_size=options.chunk_size,
        sheet=options.sheet,
        encoding=options.encoding,
        delimiter=options.delimiter,
        quote=options.quote,
        fs=fs,
    )


def source_for(path: str, storage_options: dict[str, Any] | None = None) -> Source:
    """A path given on the command line as a source: a local file, ``-``, or an object's URL
    (the store found as the AWS environment says: ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...)."""
    if is_remote(path):
        return ObjectSource(path, filesystem(path, storage_options or {}))
    return FileSource(path)


def etag_of(info: dict[str, Any]) -> str:
    return str(info.get("ETag") or info.get("etag") or "")


def object_fingerprint(etag: str, url: str) -> str:
    """sha256 of ``etag:<ETag>``; a store that gives no ETag: of the URL (never skipped twice
    by content, only by name)."""
    tag = etag.strip('"')
    return hashlib.sha256((f"etag:{tag}" if tag else f"url:{url}").encode()).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
