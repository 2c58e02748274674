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

#: an Arrow stream written by a healthetl stage (schema metadata), and the key of its trailer
STREAM_MARK = {b"healthetl": b"stream/1"}
STREAM_END = "healthetl_end"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
LINEAGE = (SOURCE_FILE, SOURCE_ROW)


def bound_arrow_memory() -> None:
    """Use jemalloc with immediate decay for Arrow buffers: chunks are freed back to the
    system as the stream moves on, so peak memory stays flat as files grow (measured in
    benchmarks/load_bench.py; mimalloc, the default, keeps freed pages).

    A process-wide switch, so the command line makes it (it owns its process) and importing
    healthetl never does: a program using the library (a notebook, a scheduler's worker) calls
    this itself if it wants the same bound."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a build without jemalloc
        pass


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
    if suffix == ".json":
        return "json"
    if suffix in (".arrow", ".arrows", ".ipc"):
        return "arrow"
    raise UsageError(
        f"{path}: unsupported file type {suffix or '(none)'}; "
        "use .csv, .tsv, .csv.gz, .xlsx, .parquet, .ndjson, .json or .arrow"
    )


def read_frames(
    path: str,
    *,
    chunk_size: int = 100_000,
    sheet: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    quote: str = '"',
) -> Iterator[pd.DataFrame]:
    """Yield text frames of at most ``chunk_size`` rows; always at least one (maybe empty).

    CSV: ``delimiter`` defaults to a tab for ``.tsv`` files and a comma otherwise."""
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
        "csv": lambda: _read_csv(path, chunk_size, encoding, delimiter or _default_delimiter(path), quote),
        "excel": lambda: _read_excel(path, chunk_size, sheet),
        "parquet": lambda: _read_parquet(path, chunk_size),
        "ndjson": lambda: _read_ndjson(path, chunk_size),
        "json": lambda: _read_json(path, chunk_size),
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


def _default_delimiter(path: str) -> str:
    return "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","


_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


#: PostgreSQL's limit of columns in a table: a file with more is not a table healthetl can load
MAX_COLUMNS = 1600
#: a header line longer than this is not a header (a file with no line breaks, say)
MAX_HEADER_BYTES = 1 << 20


def _csv_header(path: str, encoding: str, delimiter: str, quote: str) -> list[str]:
    with _open_text(path, encoding) as fh:
        try:
            head = fh.read(MAX_HEADER_BYTES)
            if len(head) == MAX_HEADER_BYTES and "\n" not in head:
                raise SourceError(
                    f"{path}, line 1: no line break in the first {MAX_HEADER_BYTES >> 20} MB: not a "
                    "CSV header (a file written as one line?)"
                )
            reader = csv.reader(io.StringIO(head, newline=""), delimiter=delimiter, quotechar=quote)
            header: list[str] | None = next(reader, None)
        except UnicodeDecodeError:
            bad = _first_bad_line(path, encoding)
            raise SourceError(_encoding_message(path, encoding, bad)) from None
        except EOFError as exc:
            raise SourceError(f"{path}: compressed file is truncated ({exc})") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc}") from None
        except csv.Error as exc:
            raise SourceError(f"{path}, line 1: not a readable CSV header ({exc})") from None
    if not header or all(not h.strip() for h in header):
        raise SourceError(f"{path}: no header row (the file is empty)")
    if len(header) > MAX_COLUMNS:
        raise SourceError(
            f"{path}, line 1: {len(header):,} columns, more than the {MAX_COLUMNS:,} a database table "
            "can hold; check the delimiter"
        )
    if len(header) == 1:  # one column whose name holds another separator: say which to set
        for other in (";", "\t", "|", ","):
            if other != delimiter and other in header[0]:
                shown = "\\t" if other == "\t" else other
                raise SourceError(
                    f"{path}, line 1: the header reads as one column with {_NAMES[delimiter]} as "
                    f'the delimiter, but it holds {_NAMES[other]}s; set delimiter = "{shown}" for '
                    f"this pipeline (or --delimiter '{shown}')"
                )
    return header


def _open_text(path: str, encoding: str) -> IO[str]:
    if path.lower().endswith(".gz"):
        import gzip

        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _encoding_message(path: str, encoding: str, line: int | None) -> str:
    where = f", line {line}" if line else ""
    guess = _bom_encoding(path)
    suggestion = (
        f'encoding = "{guess}": the file starts with its byte-order mark'
        if guess
        else ('e.g. encoding = "latin-1"')
    )
    return (
        f"{path}{where}: bytes that are not valid {encoding}; set `encoding` for this pipeline ({suggestion})"
    )


def _bom_encoding(path: str) -> str | None:
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


def _read_csv(
    path: str, chunk_size: int, encoding: str, delimiter: str, quote: str
) -> Iterator[pd.DataFrame]:
    """Stream a CSV in record-aligned blocks of a few MB, each parsed by Arrow.

    Arrow's own streaming reader reads a local file ahead without bound, so memory would grow
    with the file; cutting the bytes ourselves at record boundaries keeps it flat.
    """
    header = _csv_header(path, encoding, delimiter, quote)
    names = _unique_names([normalise_name(h.strip()) for h in header])
    wide = _wide_encoding(encoding)  # UTF-16/32 is recoded to UTF-8 before blocks are cut
    arrow_encoding = "utf8" if wide or codecs.lookup(encoding).name == "utf-8" else encoding
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char=quote, newlines_in_values=True)
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
    for block in _record_blocks(path, quote.encode(), delimiter.encode(), encoding if wide else None):
        # the whole block in one Arrow block: a field longer than the usual block size (a
        # 10 MB value) is still one field, never "straddling" two blocks
        read_opts = pacsv.ReadOptions(
            encoding=arrow_encoding, column_names=names, block_size=max(len(block) + 1, CSV_BLOCK_BYTES)
        )
        try:
            table = pacsv.read_csv(
                pa.py_buffer(block), read_options=read_opts, parse_options=parse_opts, convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            bad = _locate_bad_record(block, encoding, delimiter, quote, len(names), line)
            raise SourceError(_csv_error(path, encoding, exc, first_line=bad)) from None
        nul = block.find(b"\x00")
        if nul >= 0:
            at = line + block.count(b"\n", 0, nul)
            raise SourceError(
                f"{path}, line {at}: a NUL byte, which text does not hold (binary data, or a UTF-16 "
                "file: set `encoding`)"
            )
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


def _wide_encoding(encoding: str) -> bool:
    """Encodings whose line breaks are not the byte 0x0A (UTF-16, UTF-32)."""
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


class _Utf8Recoder:
    """A binary file in a wide encoding, read as UTF-8 bytes (for the record cutter)."""

    def __init__(self, raw: Any, encoding: str) -> None:
        self._text = io.TextIOWrapper(raw, encoding=encoding, newline="")

    def read(self, size: int) -> bytes:
        return self._text.read(max(1, size // 2)).encode("utf-8")

    def __enter__(self) -> _Utf8Recoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._text.close()


def _record_blocks(
    path: str, quote: bytes = b'"', delimiter: bytes = b",", recode: str | None = None
) -> Iterator[bytes]:
    """The bytes after the header line, cut only where a record ends (see ``_RecordCutter``)."""
    import gzip

    opener: Any = gzip.open if path.lower().endswith(".gz") else open
    cutter = _RecordCutter(quote, delimiter)
    try:
        raw = opener(path, "rb")
        with _Utf8Recoder(raw, recode) if recode else raw as fh:
            header_done = False
            while True:
                data = fh.read(CSV_BLOCK_BYTES if header_done else 64 << 10)
                if not data:
                    rest = cutter.finish(path)
                    if header_done and rest.strip():
                        yield rest
                    return
                records = cutter.feed(data)
                if not header_done:
                    end = records.find(b"\n") if records else -1
                    if end < 0:
                        continue
                    header_done, records = True, records[end + 1 :]
                if records:
                    yield records
    except UnicodeDecodeError:
        raise SourceError(_encoding_message(path, recode or "utf-8", None)) from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read, the file looks truncated or corrupt ({exc})") from None


class _RecordCutter:
    """Finds where CSV records end, in one linear pass over the bytes, as they stream by.

    A quote opens a quoted field only at the start of a field (after the delimiter or a line
    break); inside one, a doubled quote is a literal quote and a single one closes it. A quote
    anywhere else (``12" tube``) is part of the value. Only quote bytes are visited one by one,
    and the scan's state carries across blocks, so nothing is read twice. A quoted
    field still open at the end of the file is an error naming the line where it opened."""

    def __init__(self, quote: bytes, delimiter: bytes) -> None:
        self._q, self._qb = quote[0], quote
        self._d = delimiter[0]
        #: every byte but the delimiter, line breaks and the quote becomes 0, so a quote inside an
        #: unquoted value (``12" tube``: 0 " 0), where the fast count cannot be trusted, is one
        #: plain search (C speed)
        keep = {self._d, 10, 13, self._q}
        self._table = bytes(b if b in keep else 0 for b in range(256))
        self._needle = bytes([0, self._q, 0])
        self._buf = b""
        self._scanned = 0  # bytes of _buf already scanned
        self._done = 0  # bytes of _buf up to the last record end
        self._in_quote = False
        self._skip_next = False  # the second quote of a doubled pair
        self._line = 1  # the file line _scanned is on
        self._open_line = 0

    def feed(self, data: bytes, *, exact: bool = False) -> bytes:
        """Add bytes; return the complete records that are now known (possibly empty). Only
        quotes are visited one by one; the line breaks between two quotes are handled in bulk,
        so a file without quotes is cut at C speed."""
        buf = self._buf = self._buf + data
        q, d, n = self._q, self._d, len(buf)
        pos = self._scanned
        fast = not (exact or self._in_quote or self._skip_next)
        if fast and (buf.find(self._qb, pos) < 0 or not self._has_stray_quote(buf, pos)):
            return self._feed_by_parity(buf, pos)
        fast_again = not exact
        while True:
            qpos = buf.find(self._qb, pos)
            stop = n if qpos < 0 else qpos
            breaks = buf.count(b"\n", pos, stop)
            if breaks:
                self._line += breaks
                if not self._in_quote:
                    self._done = buf.rfind(b"\n", pos, stop) + 1
            if qpos < 0:
                break
            if self._skip_next:
                self._skip_next = False
            elif self._in_quote:
                if qpos + 1 >= n:  # the last byte so far: decide when the next one is known
                    self._scanned = qpos
                    return self._take()
                if buf[qpos + 1] == q:
                    self._skip_next = True  # "" inside a quoted field
                else:
                    self._in_quote = False
            elif qpos == 0 or buf[qpos - 1] in (d, 10, 13):
                self._in_quote, self._open_line = True, self._line
            pos = qpos + 1
            if fast_again and not (self._in_quote or self._skip_next):
                # out of the quoted field a block boundary fell into: count the rest fast,
                # unless it holds a stray quote (checked once per block)
                fast_again = False
                if not self._has_stray_quote(buf, pos):
                    return self._feed_by_parity(buf, pos)
        self._scanned = n
        return self._take()

    def _has_stray_quote(self, buf: bytes, pos: int) -> bool:
        start = max(0, pos - 1)
        return buf[start:].translate(self._table).find(self._needle) >= 0

    def _feed_by_parity(self, buf: bytes, pos: int) -> bytes:
        """No quote in sight sits inside a value: every quote opens, closes or doubles, so a line
        break ends a record exactly when an even number of quotes precedes it (counted at C
        speed, each byte once). A final quote is left for the next feed (it may be half of "")."""
        end = len(buf) - 1 if buf.endswith(self._qb) else len(buf)
        cut = buf.rfind(b"\n", pos, end)
        if cut >= 0:
            odd = buf.count(self._qb, pos, cut) % 2
            while cut >= 0 and odd:  # step back one line at a time, subtracting, never recounting
                prev = buf.rfind(b"\n", pos, cut)
                odd ^= buf.count(self._qb, max(prev, pos), cut) % 2
                cut = prev
            if cut >= 0:
                self._done = cut + 1
        self._line += buf.count(b"\n", pos, end)
        if buf.count(self._qb, pos, end) % 2:
            self._in_quote, self._open_line = True, 0  # the line is found again if it never closes
        self._scanned = end
        return self._take()

    def _take(self) -> bytes:
        out, self._buf = self._buf[: self._done], self._buf[self._done :]
        self._scanned -= self._done
        self._done = 0
        return out

    def finish(self, path: str) -> bytes:
        """The last record (a file need not end with a line break)."""
        if self._scanned < len(self._buf) and self._in_quote:  # a quote as the very last byte
            self._in_quote = False
        if self._in_quote and not self._open_line:  # counted fast: find the line quote by quote
            probe = _RecordCutter(self._qb, bytes([self._d]))
            probe._line = self._line - self._buf.count(b"\n")
            probe.feed(self._buf, exact=True)
            self._open_line = probe._open_line
        if self._in_quote:
            raise SourceError(
                f"{path}, line {self._open_line}: a quoted field opens here and never closes "
                "(unbalanced quote); fix the line, or set `quote` if this file quotes otherwise"
            )
        rest, self._buf = self._buf, b""
        return rest


def _locate_bad_record(
    block: bytes, encoding: str, delimiter: str, quote: str, ncols: int, first_line: int
) -> int:
    """The file line where the first record with the wrong number of fields starts."""
    try:
        text = block.decode(encoding)
    except UnicodeDecodeError:
        return first_line
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote)
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
    if path.lower().endswith((".xlsx", ".xlsm")):
        _check_workbook(path)
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


_DIMENSION = re.compile(rb'<dimension ref="([A-Z]{1,3})([0-9]+)(?::([A-Z]{1,3})([0-9]+))?"')


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n


def _check_workbook(path: str) -> None:
    """Before the Excel reader opens it (a native library: some hostile workbooks crash it, or
    make it inflate gigabytes): refuse a workbook that inflates past the limit or declares a
    sheet wider than a table can be."""
    import os
    import zipfile

    limit = int(float(os.environ.get("HEALTHETL_MAX_WORKBOOK_MB", "1024")) * (1 << 20))
    try:
        with zipfile.ZipFile(path) as z:
            inflated = sum(i.file_size for i in z.infolist())
            if inflated > limit:
                raise SourceError(
                    f"{path}: the workbook inflates to {inflated >> 20:,} MB, more than the "
                    f"{limit >> 20:,} MB allowed (HEALTHETL_MAX_WORKBOOK_MB); not opened"
                )
            for name in z.namelist():
                if not (name.startswith("xl/worksheets/") and name.endswith(".xml")):
                    continue
                with z.open(name) as fh:
                    found = _DIMENSION.search(fh.read(64 << 10))
                if found is None:
                    continue
                last_col, last_row = found.group(3) or found.group(1), found.group(4) or found.group(2)
                columns = _column_number(last_col)
                if columns > MAX_COLUMNS:
                    sheet = name.rsplit("/", 1)[-1].removesuffix(".xml")
                    raise SourceError(
                        f"{path}: {sheet} spans {columns:,} columns (to cell "
                        f"{last_col.decode()}{last_row.decode()}), more than the {MAX_COLUMNS:,} "
                        "a database table can hold; not opened"
                    )
    except zipfile.BadZipFile:
        return  # not a zip at all: the Excel reader says what it is


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
    """An Arrow IPC stream. One written by a healthetl stage must end with its trailer (the
    row count, written only when that stage finished): without it the stage before failed or was
    killed, and the stream is refused, so a load rolls back instead of committing a prefix."""
    where = "standard input" if path == "-" else path
    try:
        source: Any = sys.stdin.buffer if path == "-" else pa.OSFile(path, "rb")
        reader = pa.ipc.open_stream(source)
        ours = bool(reader.schema.metadata) and all(
            reader.schema.metadata.get(k) == v for k, v in STREAM_MARK.items()
        )
        yielded, rows, ended = False, 0, None
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            if meta is not None and STREAM_END.encode() in meta:
                ended = int(meta[STREAM_END.encode()])
                continue
            rows += batch.num_rows
            yield _text_frame(pa.Table.from_batches([batch]))
            yielded = True
        if ours and ended is None:
            raise SourceError(
                f"{where}: the Arrow stream ended without its end mark after {rows} rows: the stage "
                "writing it failed or was killed; nothing from it is loaded"
            )
        if ended is not None and ended != rows:
            raise SourceError(f"{where}: the Arrow stream says {ended} rows but carried {rows}")
        if not yielded:
            yield _text_frame(reader.schema.empty_table())
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"{where}: not a complete Arrow IPC stream ({_first_line(exc)}); "
            "pipe the output of a healthetl stage run with `-o -`"
        ) from None


def _read_ndjson(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Flat NDJSON: one object per line; nested values are kept as JSON text."""
    import gzip

    from healthetl.sources.json_records import loads as json_loads

    opener: Any = gzip.open if path.lower().endswith(".gz") else open
    rows: list[dict[str, Any]] = []
    yielded = False
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                obj, why = json_loads(line)
                if why is not None:
                    raise SourceError(f"{path}, line {lineno}: {why}")
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


def _read_json(path: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """A .json file of records: an array of objects (streamed), or one object (one record);
    nested values are kept as JSON text, as for NDJSON."""
    from healthetl.sources.json_records import read_records

    rows: list[dict[str, Any]] = []
    yielded = False
    for rec in read_records(path):
        if rec.value is None:
            raise SourceError(f"{path}, record {rec.source_row}: {rec.error}")
        rows.append({k: _json_text(v) for k, v in rec.value.items()})
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
