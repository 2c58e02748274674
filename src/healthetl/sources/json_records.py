"""Streaming readers of JSON records: NDJSON (also .gz), a JSON array file, a folder of JSON
files. One record in memory at a time; a bad line is reported with its number, not fatal."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from healthetl.errors import SourceError

JSON_SUFFIXES = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz")


@dataclass
class Record:
    source_file: str
    #: NDJSON: the line number; arrays and folders: the record's 1-based position
    source_row: int
    value: dict[str, Any] | None
    #: why the record could not be read (value is then None)
    error: str | None = None
    path: str = ""


def json_files(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(JSON_SUFFIXES))
        if not files:
            raise SourceError(f"{path}: no .json/.ndjson files in this folder")
        return files
    if not p.exists():
        raise SourceError(f"{path}: file not found")
    return [p]


def read_records(path: str) -> Iterator[Record]:
    for file in json_files(path):
        yield from _read_file(file)


def _open(file: Path) -> TextIO:
    if file.name.lower().endswith(".gz"):
        return gzip.open(file, "rt", encoding="utf-8")
    return open(file, encoding="utf-8")  # noqa: SIM115


def _read_file(file: Path) -> Iterator[Record]:
    if file.stat().st_size == 0:
        raise SourceError(f"{file}: file is empty (0 bytes)")
    try:
        with _open(file) as fh:
            first = _first_char(fh)
        with _open(file) as fh:
            if first == "[":
                yield from _array(fh, file)
            elif first == "{" and not _is_ndjson(file):
                yield from _single(fh, file)
            else:
                yield from _lines(fh, file)
    except EOFError:
        raise SourceError(
            f"{file}: the compressed file is truncated; nothing from it was loaded "
            "(a partial snapshot would replace a complete one)"
        ) from None
    except gzip.BadGzipFile as exc:
        raise SourceError(f"{file}: not a readable gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _first_char(fh: TextIO) -> str:
    while True:
        ch = fh.read(1)
        if not ch or not ch.isspace():
            return ch


def _is_ndjson(file: Path) -> bool:
    return any(file.name.lower().endswith(s) for s in (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz"))


def _lines(fh: TextIO, file: Path) -> Iterator[Record]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Record(
                file.name, lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})", str(file)
            )
            continue
        if not isinstance(value, dict):
            yield Record(
                file.name, lineno, None, f"expected a JSON object, got {type(value).__name__}", str(file)
            )
            continue
        yield Record(file.name, lineno, value, path=str(file))


def _single(fh: TextIO, file: Path) -> Iterator[Record]:
    text = fh.read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        yield Record(file.name, 1, None, f"invalid JSON ({exc.msg} at line {exc.lineno})", str(file))
        return
    yield Record(file.name, 1, value, path=str(file))


def _array(fh: TextIO, file: Path, chunk: int = 1 << 16) -> Iterator[Record]:
    """Objects of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    buf = fh.read(chunk)
    pos = buf.index("[") + 1
    index = 0
    while True:
        while True:  # skip white space and commas, refilling as needed
            while pos < len(buf) and (buf[pos].isspace() or buf[pos] == ","):
                pos += 1
            if pos < len(buf):
                break
            more = fh.read(chunk)
            if not more:
                raise SourceError(f"{file}: the JSON array is not closed (truncated file?)")
            buf, pos = buf[pos:] + more, 0
        if buf[pos] == "]":
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as exc:
                more = fh.read(chunk)
                if not more:
                    index += 1
                    yield Record(file.name, index, None, f"invalid JSON ({exc.msg})", str(file))
                    return
                buf, pos = buf[pos:] + more, 0
        index += 1
        if isinstance(value, dict):
            yield Record(file.name, index, value, path=str(file))
        else:
            yield Record(
                file.name, index, None, f"expected a JSON object, got {type(value).__name__}", str(file)
            )
        buf, pos = buf[end:], 0
