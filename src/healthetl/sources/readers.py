"""Source readers: CSV (also .gz), Excel (xlsx/xls/ods), Parquet, NDJSON, Arrow IPC stream."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthetl.errors import SourceError, UsageError

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
LINEAGE = (SOURCE_FILE, SOURCE_ROW)


def _bounded_arrow_memory() -> None:
    """Use jemalloc with immediate decay for Arrow buffers: chunks are freed back to the
    system as the stream moves on, so peak memory stays flat as files grow (measured in
    benchmarks/load_bench.py; mimalloc, the default, keeps freed pages)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a build without jemalloc
        pass


_bounded_arrow_memory()

EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}


def normalise_name(name: object) -> str:
    """' Patient ID ' -> 'patient_id', 'AppointmentID' -> 'appointment_id', 'No-show' -> 'no_show'."""  # noqa: E501
    text = str(name).strip()
    if text in LINEAGE:
        return text
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return text or "column"


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


def kind_of(path: str) -> str:
    """The reader for a path, by extension (``.gz`` looks at the extension under it)."""
    if path == "-":
        return "arrow"
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in EXCEL_SUFFIXES:
        return "excel"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix in (".arrow", ".arrows", ".ipc"):
        return "arrow"
    raise UsageError(
        f"{path}: unsupported file type {suffix or '(none)'}; "
        "use .csv, .csv.gz, .xlsx, .parquet, .ndjson or .arrow"
    )


def read_frames(
    path: str,
    *,
    chunk_size: int = 100_000,
    sheet: str | None = None,
    encoding: str = "utf-8",
) -> Iterator[pd.DataFrame]:
    """Yield text frames of at most ``chunk_size`` rows; always at least one (maybe empty)."""
    kind = kind_of(path)
    if path != "-":
        p = Path(path)
        if not p.exists():
            raise SourceError(f"{path}: file not found")
        if p.is_dir():
            raise SourceError(f"{path}: is a folder, expected a file")
        if p.stat().st_size == 0:
            raise SourceError(f"{path}: file is empty (0 bytes)")
    readers = {
        "csv": lambda: _read_csv(path, chunk_size, encoding),
        "excel": lambda: _read_excel(path, chunk_size, sheet),
        "parquet": lambda: _read_parquet(path, chunk_size),
        "ndjson": lambda: _read_ndjson(path, chunk_size),
        "arrow": lambda: _read_arrow(path),
    }
    row = 0
    name = "<stdin>" if path == "-" else Path(path).name
    for frame in readers[kind]():
        if SOURCE_ROW not in frame.columns:
            frame.columns = _unique_names([normalise_name(c) for c in frame.columns])
            n = len(frame)
            frame.insert(0, SOURCE_ROW, pd.array(range(row + 1, row + n + 1), dtype="int64"))
            frame.insert(0, SOURCE_FILE, name)
            frame[SOURCE_FILE] = frame[SOURCE_FILE].astype("str")
            row += n
        frame.index = pd.RangeIndex(len(frame))
        yield frame


def _text_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow table -> pandas frame of ``str`` columns (lineage row number stays integer)."""
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if name == SOURCE_ROW:
            cols[name] = pd.array(col.to_numpy(zero_copy_only=False), dtype="int64")
        else:
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            cols[name] = pd.Series(col.to_pandas(types_mapper=pd.ArrowDtype)).astype("str")
    frame = pd.DataFrame(cols)
    return frame


def _csv_header(path: str, encoding: str) -> list[str]:
    with _open_text(path, encoding) as fh:
        try:
            header: list[str] | None = next(csv.reader(fh), None)
        except UnicodeDecodeError:
            bad = _first_bad_line(path, encoding)
            raise SourceError(_encoding_message(path, encoding, bad)) from None
        except EOFError as exc:
            raise SourceError(f"{path}: compressed file is truncated ({exc})") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc}") from None
    if not header or all(not h.strip() for h in header):
        raise SourceError(f"{path}: no header row (the file is empty)")
    return header


def _open_text(path: str, encoding: str) -> IO[str]:
    if path.lower().endswith(".gz"):
        import gzip

        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _encoding_message(path: str, encoding: str, line: int | None) -> str:
    where = f", line {line}" if line else ""
    return (
        f"{path}{where}: bytes that are not valid {encoding}; "
        'set `encoding` for this pipeline (e.g. encoding = "latin-1")'
    )


def _first_bad_line(path: str, encoding: str) -> int | None:
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


CSV_BLOCK_BYTES = 4 << 20


def _read_csv(path: str, chunk_size: int, encoding: str) -> Iterator[pd.DataFrame]:
    """Stream a CSV in record-aligned blocks of a few MB, each parsed by Arrow.

    Arrow's own streaming reader reads a local file ahead without bound, so memory would grow
    with the file; cutting the bytes ourselves at record boundaries keeps it flat.
    """
    header = _csv_header(path, encoding)
    names = _unique_names([normalise_name(h.strip()) for h in header])
    delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
    read_opts = pacsv.ReadOptions(
        encoding="utf8" if codecs.lookup(encoding).name == "utf-8" else encoding,
        column_names=names,
        block_size=CSV_BLOCK_BYTES,
    )
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    schema = pa.schema([(n, pa.string()) for n in names])
    pending: list[pa.Table] = []
    pending_rows = 0
    yielded = False
    line = 2  # the first data record is on line 2 of the file
    for block in _record_blocks(path):
        try:
            table = pacsv.read_csv(
                pa.py_buffer(block), read_options=read_opts, parse_options=parse_opts, convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            bad = _locate_bad_record(block, encoding, delimiter, len(names), line)
            raise SourceError(_csv_error(path, encoding, exc, first_line=bad)) from None
        line += block.count(b"\n")
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= chunk_size:
            merged = pa.concat_tables(pending)
            yield _text_frame(merged.slice(0, chunk_size))
            yielded = True
            rest = merged.slice(chunk_size)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows or not yielded:
        yield _text_frame(pa.concat_tables(pending) if pending else schema.empty_table())


def _record_blocks(path: str) -> Iterator[bytes]:
    """The bytes after the header line, cut only where a record ends (an even number of
    quote characters before the newline, so newlines inside quoted values never split)."""
    import gzip

    opener: Any = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            carry = _skip_header(fh)
            while True:
                data = fh.read(CSV_BLOCK_BYTES)
                if not data:
                    if carry.strip():
                        yield carry
                    return
                buf = carry + data
                cut = _last_record_end(buf)
                if cut < 0:
                    carry = buf
                    continue
                yield buf[: cut + 1]
                carry = buf[cut + 1 :]
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read, the file looks truncated or corrupt ({exc})") from None


def _skip_header(fh: Any) -> bytes:
    buf = b""
    while True:
        data = fh.read(64 << 10)
        buf += data
        end = _first_record_end(buf)
        if end >= 0:
            return bytes(buf[end + 1 :])
        if not data:
            return b""


def _first_record_end(buf: bytes) -> int:
    pos = buf.find(b"\n")
    while pos >= 0 and buf.count(b'"', 0, pos) % 2:
        pos = buf.find(b"\n", pos + 1)
    return pos


def _last_record_end(buf: bytes) -> int:
    pos = buf.rfind(b"\n")
    while pos >= 0 and buf.count(b'"', 0, pos) % 2:
        pos = buf.rfind(b"\n", 0, pos)
    return pos


def _locate_bad_record(block: bytes, encoding: str, delimiter: str, ncols: int, first_line: int) -> int:
    """The file line where the first record with the wrong number of fields starts."""
    try:
        text = block.decode(encoding)
    except UnicodeDecodeError:
        return first_line
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = first_line
    try:
        for record in reader:
            if record and len(record) != ncols:
                return start
            start = first_line + reader.line_num
    except csv.Error:
        return start
    return first_line


def _csv_error(path: str, encoding: str, exc: Exception, first_line: int = 2) -> str:
    text = str(exc)
    if "UTF8" in text or "utf8" in text.lower() or "decode" in text.lower():
        return _encoding_message(path, encoding, _first_bad_line(path, encoding))
    first = text.splitlines()[0] if text else type(exc).__name__
    # "CSV parse error: Expected 2 columns, got 3: <the row>": never echo the row's values
    first = ":".join(first.split(":")[:2]).strip()
    return f"{path}, line {first_line}: malformed CSV ({first})"


def _read_excel(path: str, chunk_size: int, sheet: str | None) -> Iterator[pd.DataFrame]:
    if path.lower().endswith(".gz"):
        raise UsageError(f"{path}: compressed Excel files are not supported; unzip it first")
    try:
        from python_calamine import CalamineWorkbook

        workbook = CalamineWorkbook.from_path(path)
        names = workbook.sheet_names
    except Exception as exc:  # calamine raises its own error kinds for every broken file
        raise SourceError(
            f"{path}: not a readable Excel workbook (truncated or corrupt?): {_first_line(exc)}"
        ) from None
    if sheet is not None and sheet not in names:
        raise UsageError(f"{path}: no sheet {sheet!r} (sheets: {', '.join(names)})")
    try:
        frame = pd.read_excel(path, sheet_name=sheet or 0, dtype=str, engine="calamine")
    except Exception as exc:
        raise SourceError(f"{path}: cannot read sheet: {_first_line(exc)}") from None
    if frame.columns.empty:
        raise SourceError(f"{path}: sheet {sheet or names[0]!r} is empty")
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.astype("str")
    if len(frame) == 0:
        yield frame
        return
    for start in range(0, len(frame), chunk_size):
        yield frame.iloc[start : start + chunk_size].copy()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_parquet(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    try:
        pf = pq.ParquetFile(path)
        yielded = False
        for batch in pf.iter_batches(batch_size=chunk_size):
            yield _text_frame(pa.Table.from_batches([batch]))
            yielded = True
        if not yielded:
            yield _text_frame(pf.schema_arrow.empty_table())
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None


def _read_arrow(path: str) -> Iterator[pd.DataFrame]:
    try:
        source: Any = sys.stdin.buffer if path == "-" else pa.OSFile(path, "rb")
        reader = pa.ipc.open_stream(source)
        yielded = False
        for batch in reader:
            yield _text_frame(pa.Table.from_batches([batch]))
            yielded = True
        if not yielded:
            yield _text_frame(reader.schema.empty_table())
    except (pa.ArrowInvalid, OSError) as exc:
        where = "standard input" if path == "-" else path
        raise SourceError(
            f"{where}: not an Arrow IPC stream ({_first_line(exc)}); "
            "pipe the output of a healthetl stage run with `-o -`"
        ) from None


def _read_ndjson(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Flat NDJSON: one object per line; nested values are kept as JSON text."""
    import gzip

    opener: Any = gzip.open if path.lower().endswith(".gz") else open
    rows: list[dict[str, Any]] = []
    yielded = False
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise SourceError(f"{path}, line {lineno}: expected a JSON object")
                rows.append({k: _json_text(v) for k, v in obj.items()})
                if len(rows) >= chunk_size:
                    yield pd.DataFrame(rows, dtype="str")
                    yielded = True
                    rows = []
    except UnicodeDecodeError:
        raise SourceError(_encoding_message(path, "utf-8", _first_bad_line(path, "utf-8"))) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read, the file looks truncated ({exc})") from None
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
