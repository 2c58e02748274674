"""Text files: opening them in an encoding, and saying where an encoding error is."""

from __future__ import annotations

import codecs
import io
from typing import IO, Any


def open_text(path: str, encoding: str) -> IO[str]:
    if path.lower().endswith(".gz"):
        import gzip

        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def encoding_message(path: str, encoding: str, line: int | None) -> str:
    where = f", line {line}" if line else ""
    guess = bom_encoding(path)
    suggestion = (
        f'encoding = "{guess}": the file starts with its byte-order mark'
        if guess
        else ('e.g. encoding = "latin-1"')
    )
    return (
        f"{path}{where}: bytes that are not valid {encoding}; set `encoding` for this pipeline ({suggestion})"
    )


def bom_encoding(path: str) -> str | None:
    import gzip

    opener: Any = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
    except (OSError, EOFError):
        return None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def first_bad_line(path: str, encoding: str) -> int | None:
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    decoder.decode(raw)
                except UnicodeDecodeError:
                    return lineno
    except (OSError, EOFError):
        return None
    return None
