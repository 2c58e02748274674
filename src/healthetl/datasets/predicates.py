"""The vectorised predicates the pandera checks call: type shapes, ranges, date windows,
comparisons between columns, membership in a parent's keys, duplicates across a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from healthetl import cleaning, codes
from healthetl.datasets.keys import KeyTracker, key_series
from healthetl.datasets.spec import Column, Compare, Dataset


def key_lookup(
    known: pd.Index, transform: Callable[[pd.Series], pd.Series] | None = None
) -> Callable[[pd.Series], pd.Series]:
    """Membership in a parent's keys through the index's hash table, built once per run:
    ``Series.isin`` hashes all the keys again for every batch (a million keys: seconds a batch).
    ``transform``: how a value is stored (a pseudonym), to compare it with stored keys."""
    keys = known if known.is_unique else known.unique()

    def check(values: pd.Series) -> pd.Series:
        compared = transform(values) if transform is not None else values
        return pd.Series(keys.get_indexer(compared) >= 0, index=values.index)

    return check


def _code_check(kind: str) -> Callable[[pd.Series], pd.Series]:
    canonical = codes.CANONICAL[kind]
    return lambda s: cleaning.is_code(s, canonical) | s.isna()


TYPE_CHECKS: dict[str, tuple[str, str, Callable[[pd.Series], pd.Series]]] = {
    "integer": (
        "integer",
        "{column}{value} is not an integer",
        lambda s: s.str.fullmatch(cleaning.INTEGER_PATTERN).fillna(False) | s.isna(),
    ),
    "float": (
        "number",
        "{column}{value} is not a number",
        lambda s: s.str.fullmatch(cleaning.FLOAT_PATTERN).fillna(False) | s.isna(),
    ),
    "decimal": (
        "number",
        "{column}{value} is not a decimal number",
        lambda s: s.str.fullmatch(cleaning.DECIMAL_PATTERN).fillna(False) | s.isna(),
    ),
    "boolean": ("boolean", "{column}{value} is not a yes/no value", lambda s: s.isin(["0", "1"]) | s.isna()),
    "date": (
        "date",
        "{column}{value} is not a real date in a recognised layout (YYYY-MM-DD, YYYY/MM/DD, MM/DD/YYYY)",
        lambda s: cleaning.is_real_date(s) | s.isna(),
    ),
    "timestamp": (
        "timestamp",
        "{column}{value} is not a real timestamp in a recognised layout",
        lambda s: cleaning.is_timestamp(s) | s.isna(),
    ),
    "phone": (
        "phone",
        "{column}{value} is not a valid phone number (with its country code, or in the pipeline's "
        "phone_country_code)",
        lambda s: cleaning.is_phone(s) | s.isna(),
    ),
    **{kind: (rule, template, _code_check(kind)) for kind, (rule, template) in codes.RULES.items()},
}


def not_marked(marker: str) -> Callable[[pd.Series], pd.Series]:
    def check(s: pd.Series) -> pd.Series:
        return ~s.str.startswith(marker).fillna(False)

    return check


#: a boolean column the validator adds for the key checks: the rows that may hold a key (no other
#: error); a row rejected for another reason holds none, as a row of an earlier batch would not
HOLDERS = "__healthetl_holders"


def unique_check(key_cols: tuple[str, ...], tracker: KeyTracker) -> Callable[[pd.DataFrame], pd.Series]:
    def healthetl_unique(frame: pd.DataFrame) -> pd.Series:
        keys = key_series(frame, key_cols)
        holders = frame[HOLDERS].to_numpy(dtype=bool) if HOLDERS in frame.columns else None
        return ~(tracker.duplicated(keys, holders) & keys.notna())

    return healthetl_unique


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def comparable(column: Column, s: pd.Series) -> pd.Series:
    """Values that order correctly: numbers as floats, dates and timestamps as ISO text
    (a timestamp compared with a date compares its day)."""
    if column.type in ("integer", "float", "decimal", "boolean"):
        return cleaning.numbers(s)
    return s


def compare_check(dataset: Dataset, cmp: Compare) -> Callable[[pd.DataFrame], pd.Series]:
    left_col = dataset.column(cmp.column)
    right_col = dataset.column(cmp.other) if cmp.other else None

    def healthetl_compare(frame: pd.DataFrame) -> pd.Series:
        left = comparable(left_col, frame[cmp.column])
        if right_col is not None:
            right = comparable(right_col, frame[right_col.name])
            if {left_col.type, right_col.type} == {"date", "timestamp"}:
                left, right = left.str.slice(0, 10), right.str.slice(0, 10)
        else:
            right = pd.Series(cmp.value, index=frame.index)
            if left_col.type in ("integer", "float", "decimal", "boolean"):
                right = right.astype(float)
        result = _OPS[cmp.op](left, right)
        return (result.fillna(False).astype(bool)) | left.isna() | right.isna()

    return healthetl_compare


def range_check(
    col: Column, typed: Callable[[pd.Series], pd.Series] | None
) -> Callable[[pd.Series], pd.Series]:
    def healthetl_range(s: pd.Series) -> pd.Series:
        well_typed = typed(s) if typed is not None else pd.Series(True, index=s.index)
        values = comparable(col, s)
        ok = pd.Series(True, index=s.index)
        if col.minimum is not None:
            ok &= (values >= col.minimum).fillna(False)
        if col.maximum is not None:
            ok &= (values <= col.maximum).fillna(False)
        # only judges values of the right type; the type check reports the others
        return ok | ~well_typed.astype(bool) | s.isna()

    return healthetl_range


def window_check(lo: str, hi: str) -> Callable[[pd.Series], pd.Series]:
    def healthetl_window(s: pd.Series) -> pd.Series:
        # only judges well-formed dates; the date check reports the others
        return ~cleaning.is_iso_shaped(s) | ((s >= lo) & (s <= hi))

    return healthetl_window
