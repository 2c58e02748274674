"""Rules several built-in source systems declare alike."""

from __future__ import annotations

from healthetl.datasets.spec import Compare


def not_before_birth(column: str, birth_column: str, *, severity: str = "error") -> Compare:
    """A patient's event dated before the patient was born (the birth date fetched by a lookup)."""
    return Compare(
        f"{column}_not_before_birth",
        column,
        ">=",
        other=birth_column,
        severity=severity,
        description=f"{column} is before the patient was born",
    )
