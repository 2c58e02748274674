"""Deferred imports for the command line: ``healthetl --help`` and ``--version`` must not pay for
pandas, pandera, SQLAlchemy and Alembic, which a command imports when it first uses them.

    if TYPE_CHECKING:               # the type checker sees the real module
        from healthetl.db import migrate
    else:
        migrate = lazy("healthetl.db.migrate")
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Module:
    """A module imported on its first attribute access."""

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name
        self.__dict__["_module"] = None

    def _load(self) -> ModuleType:
        module = self.__dict__["_module"]
        if module is None:
            module = self.__dict__["_module"] = importlib.import_module(self.__dict__["_name"])
        return module  # type: ignore[no-any-return]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_name']}>"


class _Function:
    """A function of a module, the module imported on the first call."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self._module), self._name)(*args, **kwargs)


def lazy(module: str, name: str | None = None) -> Any:
    """``module`` (or its function ``name``) imported when first used."""
    return _Module(module) if name is None else _Function(module, name)
