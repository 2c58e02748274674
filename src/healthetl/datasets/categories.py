"""Each data-quality rule's category in Kahn et al.'s harmonised framework (conformance,
completeness, plausibility), as OHDSI's Data Quality Dashboard rolls its checks up.

* conformance: values in the declared shape: types, codes, patterns, vocabularies, keys,
  references, the file's columns (drift);
* completeness: values and rows present: required fields, null rates, empty or shrinking batches;
* plausibility: values believable: ranges, date windows, comparisons between columns, freshness,
  a dataset's own model checks.
"""

from __future__ import annotations

from typing import Literal

from healthetl.codes import CODE_TYPES

Category = Literal["conformance", "completeness", "plausibility"]
CATEGORIES: tuple[Category, ...] = ("conformance", "completeness", "plausibility")

_CONFORMANCE = frozenset(
    {
        "integer",
        "number",
        "boolean",
        "date",
        "timestamp",
        "phone",
        "pattern",
        "vocabulary",
        "foreign_key",
        "reference",
        "ambiguous_reference",
        "duplicate_key",
        "unique",
        "invalid_date_rate",
        "unreadable",
        *CODE_TYPES,
    }
)
_COMPLETENESS = frozenset({"required", "required_null_rate", "null_rate", "row_count", "row_count_drop"})


def category(rule: str) -> Category:
    """The category of a row rule or a batch check, by name (a dataset's own comparisons and
    model checks judge plausibility)."""
    if rule in _CONFORMANCE or rule.startswith("drift_"):
        return "conformance"
    if rule in _COMPLETENESS:
        return "completeness"
    return "plausibility"
