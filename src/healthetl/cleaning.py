"""Reusable, vectorised building blocks for dataset rules.

Standardisers change only how a value is written (spaces, case, date layout, spelling
variants); they never decide whether a value is acceptable. That decision is made by the
pandera checks built in :mod:`healthetl.datasets.rules`, which test the standardised text.
A value a standardiser cannot understand is passed through unchanged, so the check fails on
it and the row goes to quarantine with the original value intact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

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
    """Arrow values back as a series on ``like``'s index (by position: never realigned by label)."""
    values = arr.to_pandas(types_mapper={pa.string(): like.dtype}.get)
    return pd.Series(values.array, index=like.index)


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
    r"^(?:(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"(?:[ T]00:00(?::00(?:\.0+)?)?(?:Z|[+-]00:?00)?)?"
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


FLOAT_PATTERN = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
DECIMAL_PATTERN = r"-?(?:\d+\.?\d*|\.\d+)"
TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?\+00:00"
TRUE_WORDS = ("1", "true", "t", "yes", "y")
FALSE_WORDS = ("0", "false", "f", "no", "n")


def standardise_number(s: pd.Series) -> pd.Series:
    """'1,234.5' stays as written (a thousands separator is ambiguous); '+3.50 ' -> '3.50'."""
    s = blank_to_na(s)
    return _series(pc.replace_substring_regex(as_arrow(s), r"^\+", ""), s)


def apply_value_map(s: pd.Series, mapping: Mapping[str, str]) -> pd.Series:
    """Declared replacements (exact, then case-insensitive), e.g. {'Yes': '1', 'No': '0'}."""
    s = blank_to_na(s)
    folded = {k.strip().lower(): v for k, v in mapping.items()}
    uniques = s.dropna().unique()
    table = {u: mapping.get(u, folded.get(str(u).lower(), u)) for u in uniques}
    return s.map(table).astype("str") if table else s


def standardise_boolean(s: pd.Series) -> pd.Series:
    """yes/no, true/false, y/n, t/f, 1/0 in any case -> '1' / '0'; anything else unchanged."""
    words = dict.fromkeys(TRUE_WORDS, "1") | dict.fromkeys(FALSE_WORDS, "0")
    return apply_value_map(s, words)


_TS = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[ T](?P<h>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?P<f>\.\d{1,9})?)?)?\s*(?P<z>Z|UTC|[+-]\d{2}:?\d{2})?$"
)


def standardise_timestamp(s: pd.Series, timezone: str = "UTC", order: str = "MDY") -> pd.Series:
    """Rewrite timestamps as UTC ``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``.

    The date part accepts the same layouts as :func:`standardise_date`. A timestamp with an
    offset (``Z``, ``+02:00``) is converted to UTC; a naive one is read in ``timezone``
    (default UTC). Anything unreadable passes through unchanged for the check to reject.
    """
    s = blank_to_na(s)
    head = s.str.extract(r"^(\S+)(.*)$", expand=True)
    date_part = standardise_date(head[0].astype("str"), order)
    rest = head[1].fillna("").astype("str").str.replace(r"\s*UTC$", "Z", regex=True)
    rest = rest.str.replace(r"^T", " ", regex=True)
    candidate = (date_part + rest).where(head[0].notna(), s)
    shaped = candidate.str.match(_TS).fillna(False) & is_real_date(date_part.str.slice(0, 10))
    zoned = candidate.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True).fillna(False)
    aware = pd.to_datetime(candidate.where(shaped & zoned), errors="coerce", format="ISO8601", utc=True)
    naive = pd.to_datetime(candidate.where(shaped & ~zoned), errors="coerce", format="ISO8601")
    try:
        local = naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    except Exception as exc:  # an unknown zone name is a configuration error
        raise ValueError(f"unknown timezone {timezone!r}") from exc
    parsed = aware.where(zoned, local.dt.tz_convert("UTC"))
    formatted = parsed.dt.strftime("%Y-%m-%d %H:%M:%S.%f+00:00").str.replace(r"\.000000\+", "+", regex=True)
    return formatted.where(parsed.notna(), s).astype("str")


def is_timestamp(s: pd.Series) -> pd.Series:
    return s.str.fullmatch(TIMESTAMP_PATTERN).fillna(False).astype(bool)


def _phone_region(country_code: str | None) -> str | None:
    if not country_code:
        return None
    import phonenumbers

    region = phonenumbers.region_code_for_country_code(int(country_code))
    return None if region == phonenumbers.UNKNOWN_REGION else region


def _canonical_phone(text: str, region: str | None) -> str | None:
    """E.164 (with ``;ext=N`` for an extension) of a valid number, else None (libphonenumber's
    metadata decides: length and assigned ranges per country)."""
    import phonenumbers

    value = text.strip()
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{e164};ext={number.extension}" if number.extension else e164


def _per_distinct(s: pd.Series, fn: Callable[[str], Any]) -> pd.Series:
    """``fn`` of each distinct value, spread back over the rows (costs the distinct count)."""
    values = s.dropna().unique()
    return s.map(dict(zip(values, (fn(str(v)) for v in values), strict=True)))


def standardise_phone(s: pd.Series, country_code: str | None = None) -> pd.Series:
    """E.164 for valid numbers, by Google's libphonenumber (``phonenumbers``): '+234 801-234
    5678' -> '+2348012345678', '00' prefix -> '+', a national number ('0803 123 4567') read in
    the pipeline's country, an extension kept as ';ext=4'. Anything else stays as received, and
    the phone check reports it."""
    s = blank_to_na(s)
    region = _phone_region(country_code)
    canonical = _per_distinct(s, lambda v: _canonical_phone(v, region))
    return canonical.where(canonical.notna(), s).astype("str")


def standardise_code(s: pd.Series, canonical: Callable[[str], str | None]) -> pd.Series:
    """A clinical identifier or code in its stored form (:mod:`healthetl.codes`); a value that
    cannot be read stays as received, for the type's check to report."""
    s = blank_to_na(s)
    found = _per_distinct(s, canonical)
    return found.where(found.notna(), s).astype("str")


def is_code(s: pd.Series, canonical: Callable[[str], str | None]) -> pd.Series:
    """True where the value is a valid code in its stored form."""
    return _per_distinct(s, lambda v: canonical(v) == v).eq(True)


def is_phone(s: pd.Series) -> pd.Series:
    """True where the value is a valid number in the canonical form ``standardise_phone`` writes."""
    return _per_distinct(s, lambda v: _canonical_phone(v, None) == v).eq(True)


def lookup_key(s: pd.Series) -> pd.Series:
    """How natural keys are matched: case, surrounding and repeated spaces do not count."""
    return s.astype("str").str.strip().str.replace(r"\s+", " ", regex=True).str.casefold()


def numbers(s: pd.Series) -> pd.Series:
    """Float values of numeric text; NaN where the text is not a number."""
    return pd.to_numeric(s.where(s.str.fullmatch(FLOAT_PATTERN).fillna(False)), errors="coerce")


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
