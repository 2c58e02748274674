"""Small-cell suppression of named queries' person counts.

A count of people below a threshold (default 11, the CMS cell-size rule) can identify them:
"2 patients aged 65+ at this clinic". Columns a named query declares as ``person_counts`` show
such counts as ``<11``. Zero is shown (it identifies no one). Complementary suppression: where a
column would have exactly one suppressed cell, the next smallest count of that column is suppressed
too, so a published total cannot give the hidden one back by subtraction.

Ad-hoc SQL (``healthetl query --sql``) is not judged: it declares nothing, and whoever may run it
reads the tables anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_CELL = 11


@dataclass(frozen=True)
class Suppressed:
    rows: list[tuple[Any, ...]]
    #: how many cells were hidden (small, and complementary)
    cells: int
    threshold: int


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def suppress(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], person_counts: Sequence[str], threshold: int
) -> Suppressed:
    """``rows`` with every person count in 1..threshold-1 shown as ``<threshold`` (and one more
    per column where only one would be)."""
    out = [list(r) for r in rows]
    if threshold <= 0:
        return Suppressed([tuple(r) for r in out], 0, threshold)
    hidden = 0
    for name in person_counts:
        if name not in columns:
            continue
        i = list(columns).index(name)
        small = [n for n, r in enumerate(out) if (c := _count(r[i])) is not None and 0 < c < threshold]
        if len(small) == 1:
            others = [(c, n) for n, r in enumerate(out) if n not in small and (c := _count(r[i])) and c > 0]
            if others:
                small.append(min(others)[1])
        for n in small:
            out[n][i] = f"<{threshold}"
        hidden += len(small)
    return Suppressed([tuple(r) for r in out], hidden, threshold)
