"""Where a file lives: the local disk, or object storage (``s3://bucket/key``) through fsspec.

Readers take an optional fsspec filesystem: with none they open local paths; with one they open
the URL through it, streaming ranges of the object as they read (s3fs reads ahead a few MB, it
never downloads an object whole). Credentials come from the standard AWS chain (environment,
``AWS_PROFILE``, the shared files, an instance role); a project file only says where the store
is (``endpoint_url`` for MinIO, Ceph, ...), never a secret."""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from healthetl.config import is_remote
from healthetl.errors import SourceError, UsageError, first_line
from healthetl.masking import mask_url

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: bytes s3fs fetches per range request while a reader streams an object
BLOCK_BYTES = 8 << 20


def file_name(path: str) -> str:
    """The last part of a path or URL (what lineage records as the source file)."""
    return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else Path(path).name


def protocol_of(url: str) -> str:
    return url.partition("://")[0].lower()


def filesystem(url: str, storage: Mapping[str, Any]) -> AbstractFileSystem:
    """The fsspec filesystem for ``url`` (s3fs for ``s3://``), configured from the pipeline's
    ``storage`` options. Listings are not cached: an object deleted or added between two runs
    of one process is seen."""
    protocol = protocol_of(url)
    if protocol in ("s3", "s3a"):
        try:
            import s3fs
        except ImportError:
            raise UsageError(
                f"{url}: reading s3:// sources needs s3fs", hint="pip install 'healthetl[s3]'"
            ) from None
        client: dict[str, Any] = {}
        if storage.get("region"):
            client["region_name"] = str(storage["region"])
        return s3fs.S3FileSystem(
            endpoint_url=storage.get("endpoint_url") or None,
            profile=storage.get("profile") or None,
            anon=bool(storage.get("anon", False)),
            client_kwargs=client,
            use_listings_cache=False,
            default_block_size=BLOCK_BYTES,
            skip_instance_cache=True,
        )
    try:
        import fsspec

        return fsspec.filesystem(protocol, **dict(storage))
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{mask_url(url)}: no filesystem for {protocol}:// ({first_line(exc)})") from None


def open_binary(path: str, fs: AbstractFileSystem | None = None) -> IO[bytes]:
    """The raw bytes of ``path``: a local file, or the object through ``fs``."""
    if fs is None:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    try:
        return fs.open(path, "rb")  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise remote_error(path, exc) from None


class ByteRange(io.RawIOBase):
    """The bytes ``start:end`` of a binary file, read as if they were all of it (a partition)."""

    def __init__(self, raw: Any, start: int, end: int) -> None:
        super().__init__()
        raw.seek(start)
        self._raw, self._left = raw, end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def open_decompressed(path: str, fs: AbstractFileSystem | None = None) -> IO[bytes]:
    """Like :func:`open_binary`, through gzip for a ``.gz`` name."""
    if path.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=open_binary(path, fs), mode="rb")  # type: ignore[return-value]
    return open_binary(path, fs)


def missing_bucket(exc: BaseException) -> bool:
    """The store said the bucket itself is not there (S3's ``NoSuchBucket``), not merely a key
    under it (whose message is the key's path, which may well hold the word "bucket")."""
    text = first_line(exc).lower()
    return isinstance(exc, FileNotFoundError) and ("bucket does not exist" in text or "nosuchbucket" in text)


def remote_error(url: str, exc: BaseException) -> SourceError:
    """One line for a store's error: what is missing or refused, the URL named (masked)."""
    where = mask_url(url)
    if missing_bucket(exc):
        return SourceError(f"{where}: the bucket does not exist ({first_line(exc)})")
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"{where}: object not found (deleted after it was listed?)")
    if isinstance(exc, PermissionError):
        return SourceError(
            f"{where}: access denied: the credentials in use may not read it (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID or the instance role)"
        )
    return SourceError(f"{where}: cannot read from the store: {first_line(exc)}")


def info(path: str, fs: AbstractFileSystem) -> dict[str, Any]:
    """What the store says of an object (size, ETag, type); :class:`SourceError` when it is gone
    or refused."""
    try:
        return dict(fs.info(path))
    except (OSError, ValueError) as exc:
        raise remote_error(path, exc) from None


def size_of(path: str, fs: AbstractFileSystem) -> int:
    """The object's size; raises :class:`SourceError` when it is gone, refused or a prefix."""
    found = info(path, fs)
    if found.get("type") == "directory":
        raise SourceError(f"{mask_url(path)}: is a folder (prefix), expected an object")
    return int(found.get("size") or 0)
