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
            header = next(csv.reader(fh), None)
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


def _read_csv(path: str, chunk_size: int, encoding: str) -> Iterator[pd.DataFrame]:
    header = _csv_header(path, encoding)
    names = [h.strip() for h in header]
    delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
    read_opts = pacsv.ReadOptions(
        encoding="utf8" if codecs.lookup(encoding).name == "utf-8" else encoding,
        block_size=4 << 20,
        skip_rows=1,
        column_names=_unique_names([normalise_name(n) for n in names]),
    )
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in read_opts.column_names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        stream = pa.input_stream(path, compression="detect")
        reader = pacsv.open_csv(
            stream, read_options=read_opts, parse_options=parse_opts, convert_options=convert
        )
    except pa.ArrowInvalid as exc:
        raise SourceError(_csv_error(path, encoding, exc)) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from None
    yielded = False
    buffered: list[pa.RecordBatch] = []
    buffered_rows = 0
    try:
        for batch in reader:
            buffered.append(batch)
            buffered_rows += batch.num_rows
            while buffered_rows >= chunk_size:
                table = pa.Table.from_batches(buffered)
                yield _text_frame(table.slice(0, chunk_size))
                yielded = True
                rest = table.slice(chunk_size)
                buffered = rest.to_batches()
                buffered_rows = rest.num_rows
    except pa.ArrowInvalid as exc:
        raise SourceError(_csv_error(path, encoding, exc)) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read, the file looks truncated or corrupt ({exc})") from None
    if buffered_rows or not yielded:
        table = pa.Table.from_batches(buffered, schema=reader.schema)
        yield _text_frame(table)


def _csv_error(path: str, encoding: str, exc: Exception) -> str:
    text = str(exc)
    if "UTF8" in text or "utf8" in text.lower() or "decode" in text.lower():
        return _encoding_message(path, encoding, _first_bad_line(path, encoding))
    match = re.search(r"Row #(\d+)", text)
    where = f", line {match.group(1)}" if match else ""
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r":\s*got\s*'.*$", "", first)  # never echo the row's values
    return f"{path}{where}: malformed CSV ({first})"


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
