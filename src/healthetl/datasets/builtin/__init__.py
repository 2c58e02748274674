"""The built-in datasets, one module per source system; each module's ``DATASETS`` lists what
it declares. A new built-in dataset is a module here (added to ``MODULES``), a migration, a
test and an example."""

from __future__ import annotations

from importlib import import_module

from healthetl.datasets.spec import Dataset

#: the modules, in the order their datasets are listed
MODULES = ("clinic", "visits", "facilities", "medilink", "synthea", "fhir")


def builtin_datasets() -> dict[str, Dataset]:
    """Every built-in dataset by name."""
    found: dict[str, Dataset] = {}
    for name in MODULES:
        module = import_module(f"{__name__}.{name}")
        for dataset in module.DATASETS:
            found[dataset.name] = dataset
    return found
