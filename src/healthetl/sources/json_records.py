"""JSON files: NDJSON (also .gz), a JSON array, one object, a folder of them. Nested datasets
read them as records, one in memory at a time, a bad line reported with its number; flat
datasets read them as text frames (nested values kept as JSON text)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO

import orjson
import pandas as pd

from healthetl.errors import SourceError
from healthetl.sources.formats import holds_records
from healthetl.sources.storage import ByteRange, file_name, open_binary, open_decompressed, size_of
from healthetl.sources.text import encoding_message, first_bad_line

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: what the NDJSON reader does with a line that is not a JSON object
BadLines = Literal["keep", "fail"]


@dataclass
class Record:
    source_file: str
    #: NDJSON: the line number; arrays and folders: the record's 1-based position
    source_row: int
    value: dict[str, Any] | None
    #: why the record could not be read (value is then None)
    error: str | None = None
    path: str = ""


def json_files(path: str, fs: AbstractFileSystem | None = None) -> list[str]:
    """The record files ``path`` names: itself, or (a local folder) the JSON files below it."""
    if fs is not None:
        size_of(path, fs)  # raises when the object is gone or refused
        return [path]
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and holds_records(f.name))
        if not files:
            raise SourceError(f"{path}: no .json/.ndjson files in this folder")
        return files
    if not p.exists():
        raise SourceError(f"{path}: file not found")
    return [path]


def read_records(path: str, fs: AbstractFileSystem | None = None) -> Iterator[Record]:
    for file in json_files(path, fs):
        yield from _read_file(file, fs)


def _open(file: str, fs: AbstractFileSystem | None) -> TextIO:
    return io.TextIOWrapper(open_decompressed(file, fs), encoding="utf-8")


def _read_file(file: str, fs: AbstractFileSystem | None) -> Iterator[Record]:
    if (size_of(file, fs) if fs is not None else Path(file).stat().st_size) == 0:
        raise SourceError(f"{file}: file is empty (0 bytes)")
    try:
        with _open(file, fs) as fh:
            first = _first_char(fh)
        if first == "[":
            with open_decompressed(file, fs) as raw:
                yield from _array(raw, file)
            return
        with _open(file, fs) as fh:
            if first == "{" and not _is_ndjson(file):
                yield from _single(fh, file)
            else:
                yield from ndjson_lines(fh, file)
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


def _is_ndjson(file: str) -> bool:
    return any(file.lower().endswith(s) for s in (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz"))


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


#: digits to "0", every other ASCII character to " ": a line holds a run of 19 digits (an integer
#: orjson may not hold exactly: 2**63 has 19 digits) when its translation holds 19 zeros (3x
#: cheaper than a regular expression, which cost more than the parse itself)
_DIGITS = str.maketrans({chr(c): "0" if chr(c).isdigit() else " " for c in range(128)})
_LONG_RUN = "0" * 19


def loads(line: str) -> tuple[Any, str | None]:
    """(value, None), or (None, why the line is not a usable JSON value).

    orjson parses (3-4x the standard library's speed); a line it refuses is parsed again by the
    standard library, which words the reason (and reads what orjson does not: NaN and Infinity,
    which are not JSON but which Python's own writer emits). A line with 19 digits in a row may
    hold an integer past 64 bits, which orjson would turn into an inexact float: the standard
    library reads it exactly."""
    if _LONG_RUN not in line.translate(_DIGITS):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
        else:
            return value, problem(line, value)
    try:
        value = json.loads(line.rstrip("\r\n"))  # a column on the line, not at the start of the next
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "JSON nested too deeply to read"
    return value, problem(line, value)


def line_spans(path: str, size: int, fs: AbstractFileSystem | None = None) -> list[tuple[int, int, int]]:
    """An NDJSON file as consecutive byte ranges of about ``size`` bytes cut after a line break
    (a JSON text holds no raw line break), each with the line it starts on: partitions."""
    spans: list[tuple[int, int, int]] = []
    start = pos = 0
    first = line = 1
    try:
        with open_binary(path, fs) as fh:
            while data := fh.read(4 << 20):
                done = 0  # bytes of data counted
                while (want := start + size - pos) < len(data):
                    cut = data.find(b"\n", max(want, done, 1) - 1) + 1
                    if not cut:
                        break
                    line += data.count(b"\n", done, cut)
                    spans.append((start, pos + cut, first))
                    start, first, done = pos + cut, line, cut
                line += data.count(b"\n", done)
                pos += len(data)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    if pos > start or not spans:
        spans.append((start, pos, first))
    return spans


def ndjson_lines(
    fh: Iterable[str], file: str, *, bad_lines: BadLines = "keep", first_line: int = 1
) -> Iterator[Record]:
    """The NDJSON reader: one record per non-blank line. A line that is not a JSON object is a
    record carrying why (``keep``: nested loads quarantine it) or stops the file (``fail``: flat
    files, read as a table, have no place for it)."""
    name = file_name(file)
    for lineno, line in enumerate(fh, start=first_line):
        if not line.strip():
            continue
        value, why = loads(line)
        if why is None and not isinstance(value, dict):
            why = f"expected a JSON object, got {type(value).__name__}"
        if why is not None:
            if bad_lines == "fail":
                raise SourceError(f"{file}, line {lineno}: {why}")
            yield Record(name, lineno, None, why, file)
            continue
        yield Record(name, lineno, value, path=file)


def _single(fh: TextIO, file: str) -> Iterator[Record]:
    text = fh.read()
    value, why = loads(text)
    if why is not None:
        yield Record(file_name(file), 1, None, why, file)
        return
    yield Record(file_name(file), 1, value, path=file)


def _array(fh: IO[bytes], file: str) -> Iterator[Record]:
    """Objects of a top-level JSON array, parsed incrementally by ijson (yajl): one object in
    memory at a time, linear in the file's size however large one object is."""
    import ijson

    index = 0
    name = file_name(file)
    try:
        for value in ijson.items(fh, "item", use_float=True):
            index += 1
            if isinstance(value, dict):
                yield Record(name, index, value, path=file)
            else:
                yield Record(name, index, None, f"expected a JSON object, got {type(value).__name__}", file)
    except ijson.IncompleteJSONError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete"
        if "premature EOF" in text or "Incomplete" in text or "incomplete" in text:
            raise SourceError(f"{file}: the JSON array is not closed (truncated file?)") from None
        # the parser cannot find the next record after a syntax error: the rest is one failure
        yield Record(file_name(file), index + 1, None, f"invalid JSON ({text})", file)


def read_ndjson(
    path: str,
    chunk_size: int,
    fs: AbstractFileSystem | None = None,
    span: tuple[int, int, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """Flat NDJSON: one object per line; nested values are kept as JSON text; a bad line fails.
    ``span``: only the lines of that byte range (see :func:`line_spans`)."""
    try:
        if span is None:
            fh = _open(path, fs)
        else:
            part = io.BufferedReader(ByteRange(open_binary(path, fs), span[0], span[1]))
            fh = io.TextIOWrapper(part, encoding="utf-8")
        with fh:
            lines = ndjson_lines(fh, path, bad_lines="fail", first_line=1 if span is None else span[2])
            yield from record_frames((rec.value for rec in lines if rec.value is not None), chunk_size)
    except UnicodeDecodeError:
        raise SourceError(encoding_message(path, "utf-8", first_bad_line(path, "utf-8", fs), fs)) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read, the file looks truncated ({exc})") from None


def read_json(path: str, chunk_size: int, fs: AbstractFileSystem | None = None) -> Iterator[pd.DataFrame]:
    """A .json file of records: an array of objects (streamed), or one object (one record);
    nested values are kept as JSON text, as for NDJSON."""

    def values() -> Iterator[dict[str, Any]]:
        for rec in read_records(path, fs):
            if rec.value is None:
                raise SourceError(f"{path}, record {rec.source_row}: {rec.error}")
            yield rec.value

    return record_frames(values(), chunk_size)


def record_frames(values: Iterator[dict[str, Any]], chunk_size: int) -> Iterator[pd.DataFrame]:
    """Objects as text frames of at most ``chunk_size`` rows; at least one (maybe empty)."""
    rows: list[dict[str, Any]] = []
    yielded = False
    for value in values:
        rows.append({k: _json_text(v) for k, v in value.items()})
        if len(rows) >= chunk_size:
            yield pd.DataFrame(rows, dtype="str")
            yielded = True
            rows = []
    if rows or not yielded:
        yield pd.DataFrame(rows, dtype="str")


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value).lower() if isinstance(value, bool) else str(value)
