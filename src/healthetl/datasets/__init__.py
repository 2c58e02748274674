"""The dataset registry: every dataset the stages can run, looked up by name."""

from __future__ import annotations

from healthetl.datasets.builtin import builtin_datasets
from healthetl.datasets.spec import Dataset
from healthetl.errors import UsageError

BUILTIN: dict[str, Dataset] = builtin_datasets()


def get_dataset(name: str) -> Dataset:
    """A built-in dataset (project datasets: healthetl.catalog.catalog_for(project))."""
    try:
        return BUILTIN[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN))
        raise UsageError(f"unknown dataset {name!r} (known: {known})") from None


def dependency_order(names: list[str], extra: dict[str, set[str]] | None = None) -> list[str]:
    """Order dataset/pipeline names so every dependency comes first (stable otherwise)."""
    deps = {n: set(extra.get(n, set()) if extra else set()) for n in names}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered:
            return
        if n in visiting:
            raise UsageError(f"circular dependency involving {n!r}")
        visiting.add(n)
        for d in sorted(deps.get(n, ())):
            if d in deps:
                visit(d)
        visiting.discard(n)
        ordered.append(n)

    for n in names:
        visit(n)
    return ordered
