"""The vectorised standardisers and checks that dataset rules are built from."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from healthetl import cleaning


def s(*values: str | None) -> pd.Series:
    return pd.Series(list(values), dtype="str")


def test_dates_are_read_per_value_not_from_the_first_row() -> None:
    out = cleaning.standardise_date(s("2025/12/05", "2025-12-05", "12/05/2025", "2025-12-05 00:00:00"))
    assert out.tolist() == ["2025-12-05"] * 4


def test_day_first_order_is_a_setting() -> None:
    assert cleaning.standardise_date(s("05/12/2025"), "DMY").tolist() == ["2025-12-05"]
    assert cleaning.standardise_date(s("05/12/2025"), "MDY").tolist() == ["2025-05-12"]


def test_unreadable_dates_pass_through_for_the_check_to_reject() -> None:
    out = cleaning.standardise_date(s("yesterday", "13/45/2025", None, " "))
    assert out.iloc[0] == "yesterday"
    assert cleaning.is_real_date(out.fillna("")).tolist() == [False, False, False, False]


def test_real_dates_include_leap_years_and_far_years() -> None:
    got = cleaning.is_real_date(
        s("2024-02-29", "2025-02-29", "1900-02-29", "2000-02-29", "2355-10-24", "2025-04-31")
    )
    assert got.tolist() == [True, False, False, True, True, False]


def test_integer_identifiers_are_never_rounded() -> None:
    out = cleaning.standardise_integer(s(" 42 ", "+7", "0042", "104.0", "9377952927E-5", "4.5", "37X"))
    assert out.tolist() == ["42", "7", "42", "104", "9377952927E-5", "4.5", "37X"]


def test_vocabulary_maps_case_punctuation_and_variants() -> None:
    table = cleaning.alias_table({"confirmed": ("confirm",), "cancelled": ("canceled",)})
    out = cleaning.standardise_vocabulary(
        s("Confirmed", "confirmed.", " cancelled ", "canceled", "pending", None), table
    )
    assert out.tolist()[:5] == ["confirmed", "confirmed", "cancelled", "cancelled", "pending"]
    assert pd.isna(out.iloc[5])


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        ("2025-01-01", "2025-01-01"),
        ("today", "2026-03-01"),
        ("today+2y", "2028-03-01"),
        ("today-10d", "2026-02-19"),
    ],
)
def test_window_bounds(bound: str, expected: str) -> None:
    assert cleaning.resolve_bound(bound, today=date(2026, 3, 1)) == expected


def test_bad_window_bound() -> None:
    with pytest.raises(ValueError):
        cleaning.resolve_bound("next week")
