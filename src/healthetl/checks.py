"""Reusable, vectorised building blocks for dataset rules.

Standardisers change only how a value is written (spaces, case, date layout, spelling
variants); they never decide whether a value is acceptable. That decision is made by the
pandera checks built in :mod:`healthetl.datasets.spec`, which test the standardised text.
A value a standardiser cannot understand is passed through unchanged, so the check fails on
it and the row goes to quarantine with the original value intact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta

import numpy as np
import pandas as pd

INTEGER_PATTERN = r"-?\d{1,18}"
ISO_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def blank_to_na(s: pd.Series) -> pd.Series:
    """Trim surrounding white space; an empty cell is missing, not an empty string."""
    s = s.astype("str").str.strip()
    return s.mask(s == "")


def standardise_integer(s: pd.Series) -> pd.Series:
    """'  +0042 ' -> '42'; '44.0' (a spreadsheet's float rendering) -> '44'.

    Anything else (letters, decimals, scientific notation such as 9377952927E-5) is left
    as it is, and the integer check rejects it: an identifier is never guessed or rounded.
    """
    s = blank_to_na(s)
    s = s.str.replace(r"^\+", "", regex=True)
    s = s.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return s.str.replace(r"^(-?)0+(?=\d)", r"\1", regex=True)


def standardise_date(s: pd.Series, order: str = "MDY") -> pd.Series:
    """Rewrite every unambiguous layout as ISO ``YYYY-MM-DD``.

    Accepted: ``YYYY-MM-DD`` and ``YYYY/MM/DD`` (also with a midnight time, as spreadsheet
    date cells come out), and ``MM/DD/YYYY`` (or ``DD/MM/YYYY`` with ``order="DMY"``).
    The layout is decided per value, never from the first row. Whether the date exists
    (2025-02-30 does not) is the date check's decision (:func:`is_real_date`). No datetime64
    is involved, so years past 2262 are still represented (and judged by the window check).
    """
    s = blank_to_na(s)
    ymd = s.str.extract(
        r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]00:00(?::00(?:\.0+)?)?)?$", expand=True
    )
    xy = s.str.extract(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$", expand=True)
    first, second = (1, 0) if order == "DMY" else (0, 1)
    year = ymd[0].fillna(xy[2])
    month = ymd[1].fillna(xy[first])
    day = ymd[2].fillna(xy[second])
    parsed = year.notna()
    if not parsed.any():
        return s
    iso = year.str.zfill(4) + "-" + month.str.zfill(2) + "-" + day.str.zfill(2)
    return iso.where(parsed, s)


def is_real_date(s: pd.Series) -> pd.Series:
    """True where the text is an ISO ``YYYY-MM-DD`` date that exists on the calendar."""
    parts = s.str.extract(r"^(\d{4})-(\d{2})-(\d{2})$", expand=True)
    shaped = parts[0].notna().to_numpy()
    y = pd.to_numeric(parts[0], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    m = pd.to_numeric(parts[1], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    d = pd.to_numeric(parts[2], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
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
