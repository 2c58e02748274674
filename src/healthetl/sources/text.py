"""Text files: opening them in an encoding, and saying where an encoding error is."""

from __future__ import annotations

import codecs
import io
from typing import IO, TYPE_CHECKING

from healthetl.sources.storage import open_decompressed

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def open_text(path: str, encoding: str, fs: AbstractFileSystem | None = None) -> IO[str]:
    return io.TextIOWrapper(open_decompressed(path, fs), encoding=encoding, newline="")


def encoding_message(path: str, encoding: str, line: int | None, fs: AbstractFileSystem | None = None) -> str:
    where = f", line {line}" if line else ""
    guess = bom_encoding(path, fs)
    suggestion = (
        f'encoding = "{guess}": the file starts with its byte-order mark'
        if guess
        else ('e.g. encoding = "latin-1"')
    )
    return (
        f"{path}{where}: bytes that are not valid {encoding}; set `encoding` for this pipeline ({suggestion})"
    )


def bom_encoding(path: str, fs: AbstractFileSystem | None = None) -> str | None:
    try:
        with open_decompressed(path, fs) as fh:
            head = fh.read(4)
    except (OSError, EOFError):
        return None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def first_bad_line(path: str, encoding: str, fs: AbstractFileSystem | None = None) -> int | None:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open_decompressed(path, fs) as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    decoder.decode(raw)
                except UnicodeDecodeError:
                    return lineno
    except (OSError, EOFError):
        return None
    return None
