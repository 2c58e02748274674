"""Reusable, vectorised building blocks for dataset rules.

Standardisers change only how a value is written (spaces, case, date layout, spelling
variants); they never decide whether a value is acceptable. That decision is made by the
pandera checks built in :mod:`healthetl.datasets.spec`, which test the standardised text.
A value a standardiser cannot understand is passed through unchanged, so the check fails on
it and the row goes to quarantine with the original value intact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

INTEGER_PATTERN = r"-?\d{1,18}"
ISO_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def blank_to_na(s: pd.Series) -> pd.Series:
    """Trim surrounding white space; an empty cell is missing, not an empty string."""
    s = s.astype("str").str.strip()
    return s.mask(s == "")


def as_arrow(s: pd.Series) -> pa.Array:
    """The text of a series as one Arrow ``string`` array (no copy when already Arrow-backed)."""
    arr = pa.array(s, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.string()) if arr.type != pa.string() else arr


def _series(arr: pa.Array, like: pd.Series) -> pd.Series:
    return pd.Series(arr.to_pandas(types_mapper={pa.string(): like.dtype}.get), index=like.index)


def _rewrite_where_needed(arr: pa.Array, canonical: str, rewrite: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Apply ``rewrite`` only to the values not already matching ``canonical``."""
    ok = pc.fill_null(pc.match_substring_regex(arr, canonical), True)
    if pc.all(ok).as_py():
        return arr
    todo = pc.invert(ok)
    fixed = rewrite(pc.filter(arr, todo))
    return pc.replace_with_mask(arr, todo, fixed)


def standardise_integer(s: pd.Series) -> pd.Series:
    """'  +0042 ' -> '42'; '44.0' (a spreadsheet's float rendering) -> '44'.

    Anything else (letters, decimals, scientific notation such as 9377952927E-5) is left
    as it is, and the integer check rejects it: an identifier is never guessed or rounded.
    """
    s = blank_to_na(s)

    def rewrite(arr: pa.Array) -> pa.Array:
        arr = pc.replace_substring_regex(arr, r"^\+", "")
        arr = pc.replace_substring_regex(arr, r"^(-?\d+)\.0+$", r"\1")
        return pc.replace_substring_regex(arr, r"^(-?)0+(\d)", r"\1\2")

    return _series(_rewrite_where_needed(as_arrow(s), r"^(?:0|-?[1-9]\d*)$", rewrite), s)


_DATE = (
    r"^(?:(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?:[ T]00:00(?::00(?:\.0+)?)?)?"
    r"|(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<y2>\d{4}))$"
)
_ISO = r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})$"
ISO_SHAPE = r"^\d{4}-\d{2}-\d{2}$"


def standardise_date(s: pd.Series, order: str = "MDY") -> pd.Series:
    """Rewrite every unambiguous layout as ISO ``YYYY-MM-DD``.

    Accepted: ``YYYY-MM-DD`` and ``YYYY/MM/DD`` (also with a midnight time, as spreadsheet
    date cells come out), and ``MM/DD/YYYY`` (or ``DD/MM/YYYY`` with ``order="DMY"``).
    The layout is decided per value, never from the first row. Whether the date exists
    (2025-02-30 does not) is the date check's decision (:func:`is_real_date`). No datetime64
    is involved, so years past 2262 are still represented (and judged by the window check).
    """
    s = blank_to_na(s)
    month_f, day_f = ("b", "a") if order == "DMY" else ("a", "b")

    def rewrite(arr: pa.Array) -> pa.Array:
        parts = pc.extract_regex(arr, _DATE)

        def field(name: str) -> pa.Array:
            # RE2 gives an empty string for a group of the branch that did not match
            values = pc.struct_field(parts, name)
            return pc.if_else(pc.equal(values, ""), None, values)

        year = pc.coalesce(field("y"), field("y2"))
        month = pc.coalesce(field("m"), field(month_f))
        day = pc.coalesce(field("d"), field(day_f))
        iso = pc.binary_join_element_wise(year, pc.utf8_lpad(month, 2, "0"), pc.utf8_lpad(day, 2, "0"), "-")
        return pc.coalesce(iso, arr)

    return _series(_rewrite_where_needed(as_arrow(s), ISO_SHAPE, rewrite), s)


def is_iso_shaped(s: pd.Series) -> pd.Series:
    found = pc.fill_null(pc.match_substring_regex(as_arrow(s), ISO_SHAPE), False)
    return pd.Series(found.to_numpy(zero_copy_only=False), index=s.index)


def is_real_date(s: pd.Series) -> pd.Series:
    """True where the text is an ISO ``YYYY-MM-DD`` date that exists on the calendar."""
    parts = pc.extract_regex(as_arrow(s), _ISO)
    shaped = pc.is_valid(parts).to_numpy(zero_copy_only=False)

    def number(field: str) -> np.ndarray:
        values = pc.cast(pc.struct_field(parts, field), pa.int64())
        return np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False))

    y, m, d = number("y"), number("m"), number("d")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_ok = (m >= 1) & (m <= 12)
    limit = _DAYS_IN_MONTH[np.where(month_ok, m, 0)] + ((m == 2) & leap)
    return pd.Series(shaped & month_ok & (d >= 1) & (d <= limit) & (y >= 1), index=s.index)


def vocabulary_key(s: pd.Series) -> pd.Series:
    """The spelling-insensitive key of a vocabulary value: lower case, letters only."""
    return s.str.lower().str.replace(r"[^a-z]", "", regex=True)


def alias_table(vocabulary: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical, aliases in vocabulary.items():
        for spelling in (canonical, *aliases):
            key = re.sub(r"[^a-z]", "", spelling.lower())
            table[key] = canonical
    return table


def standardise_vocabulary(s: pd.Series, aliases: Mapping[str, str]) -> pd.Series:
    """Map case, surrounding spaces/punctuation and declared variants to the canonical value.

    Works on the distinct values only, so it costs the same for 10 rows or 10 million.
    """
    s = blank_to_na(s)
    uniques = s.dropna().unique()
    if len(uniques) == 0:
        return s
    keys = vocabulary_key(pd.Series(uniques, dtype="str"))
    mapped = {u: aliases.get(k, u) for u, k in zip(uniques, keys, strict=True)}
    return s.map(mapped).astype("str")


def resolve_bound(bound: str, today: date | None = None) -> str:
    """'2025-01-01' -> itself; 'today' / 'today+2y' / 'today-30d' -> an ISO date."""
    text = bound.strip().lower()
    match = re.fullmatch(r"today(?:([+-])(\d+)([dy]))?", text)
    if not match:
        if not re.fullmatch(ISO_DATE_PATTERN, text):
            raise ValueError(f"{bound!r} is not an ISO date or today[+-]N(d|y)")
        date.fromisoformat(text)
        return text
    base = today or date.today()
    if match.group(1) is None:
        return base.isoformat()
    n = int(match.group(2)) * (1 if match.group(1) == "+" else -1)
    if match.group(3) == "d":
        return (base + timedelta(days=n)).isoformat()
    try:
        return base.replace(year=base.year + n).isoformat()
    except ValueError:  # 29 February
        return base.replace(year=base.year + n, day=28).isoformat()
