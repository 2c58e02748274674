"""Paths into JSON records, as nested datasets declare them (in the spirit of SQL-on-FHIR v2
ViewDefinitions' FHIRPath subset):

- ``location.state``: fields of nested objects; ``.`` is the element itself;
- ``name[0].family``: an element of an array by position (0-based);
- ``identifier[system=http://hl7.org/fhir/sid/us-ssn].value``: the first element whose field
  equals the value (``extension[url=...].valueCoding.code`` alike);
- ``value[x]``: a choice element, whichever of ``valueQuantity``, ``valueString``... is present;
  ``value.ofType(Quantity).value``: that choice of one type only;
- ``services#``: the length of an array;
- ``{resourceType}/{id}``: a template, each ``{path}`` replaced by its value (nothing when a part
  is missing).

A field of an array needs an index or a filter (``coding[0].code``): ``coding.code`` gives None,
never an arbitrary element. A path that does not match gives None; a dataset reports a declared
path that matched nothing in a whole run as drift."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

TEMPLATE = re.compile(r"\{([^{}]+)\}")
_STEP = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(?:\[(?P<index>[^\]]*)\])?$")
_OF_TYPE = re.compile(r"^ofType\((?P<type>[A-Za-z]+)\)$")


class PathError(ValueError):
    """A declared path that cannot be read (a typo in the declaration, not in the data)."""


def split(path: str) -> list[str]:
    """The steps of a path: dots inside ``[...]`` and ``(...)`` do not split (URLs in filters)."""
    steps: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in path:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "." and depth == 0:
            steps.append("".join(current))
            current = []
        else:
            current.append(ch)
    steps.append("".join(current))
    return steps


@lru_cache(maxsize=4096)
def compile_path(path: str) -> tuple[tuple[str, str | None], ...]:
    """(field, selector) steps; ``ofType(T)`` folds into the field before it (``valueT``)."""
    out: list[tuple[str, str | None]] = []
    for raw in split(path):
        of_type = _OF_TYPE.match(raw)
        if of_type:
            if not out or out[-1][1] is not None:
                raise PathError(f"{path!r}: ofType() must follow a choice element's name")
            name = out[-1][0]
            out[-1] = (name + of_type.group("type")[0].upper() + of_type.group("type")[1:], None)
            continue
        step = _STEP.match(raw)
        if step is None:
            raise PathError(f"{path!r}: cannot read the step {raw!r}")
        selector = step.group("index")
        if selector is not None and selector != "x" and "=" not in selector:
            try:
                int(selector)
            except ValueError:
                raise PathError(
                    f"{path!r}: [{selector}] is neither an index (a whole number), a filter "
                    "(field=value) nor a choice ([x])"
                ) from None
        out.append((step.group("name"), selector))
    return tuple(out)


_PLAIN = re.compile(r"^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*$")


@lru_cache(maxsize=4096)
def getter(path: str) -> Callable[[Any], Any]:
    """``get_path`` for one path, compiled once: a path of plain field names (the usual case:
    ``location.state``) becomes a chain of dict lookups, with no parsing per record."""
    if path == ".":
        return _itself
    if path.endswith("#") and "{" not in path:
        inner = getter(path[:-1])
        return lambda value: _length(inner(value))
    if _PLAIN.match(path):  # no selector, filter, choice, ofType() or template
        names = tuple(path.split("."))
        if len(names) == 1:
            name = names[0]
            return lambda value: value.get(name) if isinstance(value, dict) else None
        return lambda value: _fields(value, names)
    return lambda value: get_path(value, path)


def _itself(value: Any) -> Any:
    return value


def _length(items: Any) -> int | None:
    return len(items) if isinstance(items, list) else 0 if items is None else None


def _fields(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def get_path(value: Any, path: str) -> Any:
    if path == ".":
        return value
    if "{" in path:
        return _template(value, path)
    if path.endswith("#"):
        return _length(get_path(value, path[:-1]))
    for name, selector in compile_path(path):
        if not isinstance(value, dict):
            return None
        if selector == "x":
            value = _choice(value, name)
        else:
            value = value.get(name)
        if selector is not None and selector != "x":
            value = _select(value, selector)
    return value


def _template(value: Any, path: str) -> str | None:
    parts = []
    last = 0
    for match in TEMPLATE.finditer(path):
        found = get_path(value, match.group(1))
        if found is None or isinstance(found, dict | list):
            return None
        parts.append(path[last : match.start()])
        parts.append(str(found))
        last = match.end()
    parts.append(path[last:])
    return "".join(parts)


def _choice(obj: dict[str, Any], name: str) -> Any:
    """``value[x]``: the value of the first present ``valueSomething`` key."""
    for key, item in obj.items():
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return item
    return None


def _select(items: Any, selector: str) -> Any:
    if not isinstance(items, list):
        return None
    if "=" in selector:
        field, _, wanted = selector.partition("=")
        for item in items:
            if isinstance(item, dict) and str(item.get(field.strip())) == wanted.strip():
                return item
        return None
    position = int(selector)  # compile_path checked it
    return items[position] if -len(items) <= position < len(items) else None
