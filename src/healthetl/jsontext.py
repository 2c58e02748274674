"""JSON text of Arrow columns, written by Arrow's string kernels.

SQLite has no COPY: bulk inserts and probes hand it one JSON array per statement
(``... FROM json_each(?)``), which it parses in C. Building that text with Arrow compute
kernels, not pandas' encoder or ``json.dumps`` over Python strings, keeps the work off the GIL
(the kernels release it, so the text is made on a write thread while the main thread validates)
and never makes a Python object per value.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_array", "json_objects", "json_rows"]

#: a value JSON needs escaped: a quote, a backslash or a control character (RFC 8259, section 7)
_ESCAPE = '["\\\\\\x00-\\x1f]'
_CONTROL = "[\\x00-\\x1f]"


def _literals(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value as a JSON string literal; null as ``null``. Values that are not text are
    written as their text (as ``COPY`` would receive them). A slice of a batch: its text stays
    within ``string``'s 2 GB."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):  # large_string (older pandas' text) and non-text alike
        values = values.cast(pa.string())
    if pc.any(pc.match_substring_regex(values, _ESCAPE)).as_py():
        values = pc.replace_substring(values, "\\", "\\\\")
        values = pc.replace_substring(values, '"', '\\"')
        if pc.any(pc.match_substring_regex(values, _CONTROL)).as_py():  # rare (a composite key's separator)
            for code in range(32):
                if pc.any(pc.match_substring(values, chr(code))).as_py():
                    values = pc.replace_substring(values, chr(code), f"\\u{code:04x}")
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    return pc.coalesce(quoted, pa.scalar("null", quoted.type))


def _array_of(items: pa.Array) -> str:
    """``[item,item,...]`` of JSON texts."""
    whole = pa.ListArray.from_arrays(pa.array([0, len(items)], pa.int32()), items)
    text: str = pc.binary_join(whole, ",")[0].as_py()
    return "[" + text + "]"


def json_array(values: pa.Array | pa.ChunkedArray) -> str:
    """A JSON array of the values as strings (null as ``null``)."""
    return _array_of(_literals(values))


def json_rows(table: pa.Table) -> str:
    """A JSON array of the table's rows, each an array of its values in column order."""
    if table.num_columns == 0:
        raise ValueError("a table without columns has no rows to write")
    cells = [_literals(column) for column in table.columns]
    joined = pc.binary_join_element_wise(*cells, ",") if len(cells) > 1 else cells[0]
    return _array_of(pc.binary_join_element_wise("[", joined, "]", ""))


def json_objects(table: pa.Table) -> pa.Array:
    """Each row of the table as one JSON object text, its columns in order (null for a missing
    value; non-ASCII written as it is)."""
    if table.num_columns == 0:
        return pa.array(["{}"] * table.num_rows, pa.string())
    parts: list[pa.Array | str] = []
    for number, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
        parts += [
            ("{" if number == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":",
            _literals(column),
        ]
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")
