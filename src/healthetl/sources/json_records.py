"""Streaming readers of JSON records: NDJSON (also .gz), a JSON array file, a folder of JSON
files. One record in memory at a time; a bad line is reported with its number, not fatal."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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
        if first == "[":
            with _open_bytes(file) as raw:
                yield from _array(raw, file)
            return
        with _open(file) as fh:
            if first == "{" and not _is_ndjson(file):
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


def _open_bytes(file: Path) -> BinaryIO:
    if file.name.lower().endswith(".gz"):
        return gzip.open(file, "rb")  # type: ignore[return-value]
    return open(file, "rb")  # noqa: SIM115


def _first_char(fh: TextIO) -> str:
    while True:
        ch = fh.read(1)
        if not ch or not ch.isspace():
            return ch


def _is_ndjson(file: Path) -> bool:
    return any(file.name.lower().endswith(s) for s in (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz"))


def problem(line: str, value: Any) -> str | None:
    """Why a parsed record cannot be stored although it is valid JSON: a NUL character (no
    database text column holds one; checked only when the line spells one)."""
    if "\\u0000" in line and _holds_nul(value):
        return "a value holds a NUL character (\\u0000), which a database text column cannot store"
    return None


def _holds_nul(value: Any) -> bool:
    todo = [value]
    while todo:  # iterative: nesting depth costs no recursion
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def loads(line: str) -> tuple[Any, str | None]:
    """(value, None), or (None, why the line is not a usable JSON value)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "JSON nested too deeply to read"
    return value, problem(line, value)


def _lines(fh: TextIO, file: Path) -> Iterator[Record]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        value, why = loads(line)
        if why is not None:
            yield Record(file.name, lineno, None, why, str(file))
            continue
        if not isinstance(value, dict):
            yield Record(
                file.name, lineno, None, f"expected a JSON object, got {type(value).__name__}", str(file)
            )
            continue
        yield Record(file.name, lineno, value, path=str(file))


def _single(fh: TextIO, file: Path) -> Iterator[Record]:
    text = fh.read()
    value, why = loads(text)
    if why is not None:
        yield Record(file.name, 1, None, why, str(file))
        return
    yield Record(file.name, 1, value, path=str(file))


def _array(fh: BinaryIO, file: Path) -> Iterator[Record]:
    """Objects of a top-level JSON array, parsed incrementally by ijson (yajl): one object in
    memory at a time, linear in the file's size however large one object is."""
    import ijson

    index = 0
    try:
        for value in ijson.items(fh, "item", use_float=True):
            index += 1
            if isinstance(value, dict):
                yield Record(file.name, index, value, path=str(file))
            else:
                yield Record(
                    file.name, index, None, f"expected a JSON object, got {type(value).__name__}", str(file)
                )
    except ijson.IncompleteJSONError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete"
        if "premature EOF" in text or "Incomplete" in text or "incomplete" in text:
            raise SourceError(f"{file}: the JSON array is not closed (truncated file?)") from None
        # the parser cannot find the next record after a syntax error: the rest is one failure
        yield Record(file.name, index + 1, None, f"invalid JSON ({text})", str(file))
