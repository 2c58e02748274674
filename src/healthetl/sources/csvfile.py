"""CSV (and TSV) files: pyarrow's reader over blocks cut on record boundaries, quote-aware,
with width and header limits and errors that name the line."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from healthetl.errors import SourceError
from healthetl.sources.frames import MAX_COLUMNS, normalise_name, text_frame, unique_names
from healthetl.sources.storage import ByteRange, open_binary, open_decompressed
from healthetl.sources.text import encoding_message, first_bad_line, open_text

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def default_delimiter(path: str) -> str:
    return "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","


_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


#: a header line longer than this is not a header (a file with no line breaks, say)
MAX_HEADER_BYTES = 1 << 20


def _csv_header(
    path: str, encoding: str, delimiter: str, quote: str, fs: AbstractFileSystem | None
) -> list[str]:
    with open_text(path, encoding, fs) as fh:
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
            bad = first_bad_line(path, encoding, fs)
            raise SourceError(encoding_message(path, encoding, bad, fs)) from None
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


CSV_BLOCK_BYTES = 4 << 20


#: a byte range of a file holding whole records: (first byte, end byte, file line of its first record)
Span = tuple[int, int, int]


def read_csv(
    path: str,
    chunk_size: int,
    encoding: str,
    delimiter: str,
    quote: str,
    fs: AbstractFileSystem | None = None,
    span: Span | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a CSV in record-aligned blocks of a few MB, each parsed by Arrow.

    Arrow's own streaming reader reads a local file ahead without bound, so memory would grow
    with the file; cutting the bytes ourselves at record boundaries keeps it flat. ``span``: only
    the records of that byte range (see :func:`record_spans`), the header read from the top.
    """
    header = _csv_header(path, encoding, delimiter, quote, fs)
    names = unique_names([normalise_name(h.strip()) for h in header])
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
    line = 2 if span is None else span[2]  # the first data record is on line 2 of the file
    blocks = _record_blocks(path, quote.encode(), delimiter.encode(), encoding if wide else None, fs, span)
    for block in blocks:
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
            raise SourceError(_csv_error(path, encoding, exc, first_line=bad, fs=fs)) from None
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
            yield text_frame(merged.slice(0, chunk_size))
            yielded = True
            rest = merged.slice(chunk_size)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows or not yielded:
        yield text_frame(pa.concat_tables(pending) if pending else schema.empty_table())


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


def record_spans(
    path: str, quote: str, delimiter: str, size: int, fs: AbstractFileSystem | None = None
) -> list[Span]:
    """The records after the header as consecutive byte ranges of about ``size`` bytes, each cut
    where a record ends (quote-aware, one pass at the cutter's speed), with the line each starts
    on: partitions that readers on other machines can read independently. At least one span
    (empty when the file holds only its header)."""
    cutter = _RecordCutter(quote.encode(), delimiter.encode())
    spans: list[Span] = []
    start = pos = -1  # bytes of the file the cutter has handed back
    line = first = 2
    try:
        with open_binary(path, fs) as fh:
            step = min(CSV_BLOCK_BYTES, max(64, size // 4))  # a cut falls within a quarter of ``size``
            while data := fh.read(step):
                records = cutter.feed(data)
                if start < 0:
                    end = records.find(b"\n")
                    if end < 0:
                        continue
                    start = pos = end + 1
                    records = records[end + 1 :]
                pos += len(records)
                line += records.count(b"\n")
                if pos - start >= size:
                    spans.append((start, pos, first))
                    start, first = pos, line
            pos += len(cutter.finish(path))
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    if start < 0:
        raise SourceError(f"{path}: no header row (the file is empty)")
    if pos > start or not spans:
        spans.append((start, pos, first))
    return spans


def _record_blocks(
    path: str,
    quote: bytes = b'"',
    delimiter: bytes = b",",
    recode: str | None = None,
    fs: AbstractFileSystem | None = None,
    span: Span | None = None,
) -> Iterator[bytes]:
    """The bytes after the header line (or of ``span``), cut only where a record ends (see
    ``_RecordCutter``)."""
    cutter = _RecordCutter(quote, delimiter)
    try:
        raw: Any = (
            open_decompressed(path, fs) if span is None else ByteRange(open_binary(path, fs), *span[:2])
        )
        with _Utf8Recoder(raw, recode) if recode else raw as fh:
            header_done = span is not None
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
        raise SourceError(encoding_message(path, recode or "utf-8", None, fs)) from None
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


def _csv_error(
    path: str, encoding: str, exc: Exception, first_line: int = 2, fs: AbstractFileSystem | None = None
) -> str:
    text = str(exc)
    if "UTF8" in text or "utf8" in text.lower() or "decode" in text.lower():
        return encoding_message(path, encoding, first_bad_line(path, encoding, fs), fs)
    first = text.splitlines()[0] if text else type(exc).__name__
    # "CSV parse error: Expected 2 columns, got 3: <the row>": never echo the row's values
    first = ":".join(first.split(":")[:2]).strip()
    return f"{path}, line {first_line}: malformed CSV ({first})"
