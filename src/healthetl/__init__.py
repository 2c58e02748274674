"""healthetl: turn health-data exports into clean, validated, queryable tables.

The Python API (``healthetl.run``, ``healthetl.validate``, ``healthetl.load``; see
``healthetl.api``) is imported on first use, so ``import healthetl`` stays cheap and changes
nothing in the importing process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "run", "validate"]

if TYPE_CHECKING:
    from healthetl.api import load, run, validate


def __getattr__(name: str) -> Any:
    if name in ("load", "run", "validate"):
        from healthetl import api

        return getattr(api, name)
    raise AttributeError(f"module 'healthetl' has no attribute {name!r}")
