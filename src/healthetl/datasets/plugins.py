"""A project's own Python, named in healthetl.toml: a module, its pandera model and its
transform (a function over the standardised frame)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandera.pandas as pa

from healthetl.errors import ConfigError


def load_module(path_text: str, base: Path, here: str) -> Any:
    path = Path(path_text)
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise ConfigError(f"{here}: module {path} not found")
    module_name = f"healthetl_project_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{here}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{here}: importing {path} failed: {type(exc).__name__}: {first}") from None
    return module


def _attribute(ref: Any, module: Any, base: Path, here: str, what: str) -> Any:
    """'file.py:NAME' or 'NAME' (in the dataset's module)."""
    if ref is None:
        return getattr(module, what.upper(), None) if module is not None else None
    text = str(ref)
    if ":" in text:
        file_part, _, attr = text.rpartition(":")
        module = load_module(file_part, base, here)
    else:
        attr = text
    if module is None:
        raise ConfigError(f"{here}: {what} {text!r} needs a module ('rules.py:{text}')")
    if not hasattr(module, attr):
        raise ConfigError(f"{here}: {what} {attr!r} not found in {module.__file__}")
    return getattr(module, attr)


def model(ref: Any, module: Any, base: Path, here: str) -> Any:
    model = _attribute(ref, module, base, here, "model")
    if model is None:
        return None
    ok = isinstance(model, pa.DataFrameSchema) or (
        isinstance(model, type) and issubclass(model, pa.DataFrameModel)
    )
    if not ok:
        raise ConfigError(f"{here}: model must be a pandera DataFrameModel or DataFrameSchema")
    return model


def transform(ref: Any, module: Any, base: Path, here: str) -> Callable[..., Any] | None:
    fn = _attribute(ref, module, base, here, "transform")
    if fn is not None and not callable(fn):
        raise ConfigError(f"{here}: transform must be a function frame -> frame")
    return fn  # type: ignore[no-any-return]
