"""Datasets declared by users: in healthetl.toml (`[[datasets]]`), optionally with a Python
module for pandera models and transforms the declarative form cannot express."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from healthetl.codes import IDENTIFYING_TYPES
from healthetl.config import LOAD_MODES, SEVERITIES, Project
from healthetl.datasets import plugins
from healthetl.datasets.nesting import Child, Nested
from healthetl.datasets.paths import TEMPLATE, PathError, compile_path
from healthetl.datasets.spec import COLUMN_TYPES, Column, Compare, Dataset, Lookup, Param, Quality, Query
from healthetl.errors import ConfigError
from healthetl.pseudonym import TEXT_TYPES
from healthetl.sources.readers import normalise_name

_DATASET_KEYS = {
    "name",
    "table",
    "description",
    "primary_key",
    "mode",
    "columns",
    "checks",
    "queries",
    "severity",
    "model",
    "transform",
    "module",
    "raw",
    "dedupe_order",
    "cursor",
    "lookback_hours",
    "quality",
    "generated_id",
    "lookups",
    "unused_columns",
    "nested",
}
_COLUMN_KEYS = {
    "type",
    "required",
    "identifying",
    "allowed",
    "vocabulary",
    "references",
    "date_window",
    "min",
    "max",
    "pattern",
    "unique",
    "map",
    "source",
    "severity",
    "description",
    "stored",
    "default",
    "pseudonymise",
}
_LOOKUP_KEYS = {"column", "dataset", "on", "fetch"}
_CHECK_KEYS = {"name", "column", "op", "other", "value", "severity", "description"}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_QUERY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # a command-line word: `healthetl query NAME`


def declared_datasets(project: Project) -> list[Dataset]:
    where = str(project.path or "healthetl.toml")
    return [_dataset(raw, where, project.base_dir) for raw in project.datasets]


def _dataset(raw: dict[str, Any], where: str, base: Path) -> Dataset:
    name = raw.get("name")
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ConfigError(
            f"{where}: every [[datasets]] needs a name of lower-case letters, digits and _ (got {name!r})"
        )
    here = f"{where}: dataset {name}"
    unknown = set(raw) - _DATASET_KEYS
    if unknown:
        raise ConfigError(f"{here}: unknown key(s) {', '.join(sorted(unknown))}")
    columns, renames = _columns(raw, here)
    names = {c.name for c in columns}
    pk = _names(raw, "primary_key", here, names)
    columns = [Column(**{**c.__dict__, "required": c.required or c.name in pk}) for c in columns]
    mode = _mode(raw, here, pk)
    table = raw.get("table", name)
    if not isinstance(table, str) or not _IDENT.match(table):
        raise ConfigError(f"{here}: table must be a plain lower-case name")
    module = plugins.load_module(raw["module"], base, here) if raw.get("module") else None
    order = _names(raw, "dedupe_order", here, names)
    if order and not pk:
        raise ConfigError(f"{here}: dedupe_order needs a primary_key")
    cursor = raw.get("cursor")
    if cursor is not None and cursor not in names:
        raise ConfigError(f"{here}: cursor column {cursor!r} is not declared")
    generated = _generated_id(raw, here, names, pk)
    unused = raw.get("unused_columns", [])
    if not isinstance(unused, list) or not all(isinstance(u, str) for u in unused):
        raise ConfigError(f"{here}: unused_columns must be a list of source column names")
    return Dataset(
        name=name,
        description=str(raw.get("description", "")),
        columns=tuple(columns),
        primary_key=pk,
        table=table,
        renames=renames,
        queries=tuple(_query(q, here) for q in raw.get("queries", [])),
        compares=tuple(_compare(c, here, names) for c in raw.get("checks", [])),
        model=plugins.model(raw.get("model"), module, base, here),
        transform=plugins.transform(raw.get("transform"), module, base, here),
        severity=_severity_map(raw.get("severity", {}), f"{here}: severity"),
        origin=where,
        raw_table=f"raw_{table}" if raw.get("raw") else None,
        dedupe_order=order,
        cursor=cursor,
        lookback_hours=float(raw.get("lookback_hours", 24.0)),
        quality=_quality(raw, here),
        default_mode="merge" if (order or generated) and "mode" not in raw else mode,
        generated_id=generated,
        lookups=tuple(_lookup(lk, here, names) for lk in raw.get("lookups", [])),
        nested=_nested(raw["nested"], here, names) if raw.get("nested") else None,
        unused=tuple(unused),
    )


def _columns(raw: dict[str, Any], here: str) -> tuple[list[Column], dict[str, str]]:
    """The declared columns, and the renames of those read under another source name."""
    raw_columns = raw.get("columns")
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise ConfigError(f"{here}: declare its columns in [datasets.columns]")
    columns = []
    renames: dict[str, str] = {}
    for col_name, spec in raw_columns.items():
        column, source = _column(str(col_name), spec, here)
        columns.append(column)
        if source:
            renames[normalise_name(source)] = column.name
    return columns, renames


def _names(raw: dict[str, Any], key: str, here: str, names: set[str]) -> tuple[str, ...]:
    """A column name or a list of them (``primary_key``, ``dedupe_order``), each declared."""
    value = raw.get(key, [])
    found = (value,) if isinstance(value, str) else tuple(value)
    for column in found:
        if column not in names:
            raise ConfigError(f"{here}: {key} column {column!r} is not declared")
    return found


def _mode(raw: dict[str, Any], here: str, pk: tuple[str, ...]) -> str:
    mode = raw.get("mode", "replace")
    if mode not in LOAD_MODES:
        raise ConfigError(f"{here}: mode must be one of {', '.join(LOAD_MODES)}")
    if mode == "merge" and not pk:
        raise ConfigError(f"{here}: mode merge needs a primary_key")
    return str(mode)


def _generated_id(raw: dict[str, Any], here: str, names: set[str], pk: tuple[str, ...]) -> str | None:
    generated = raw.get("generated_id")
    if generated is None:
        return None
    if not isinstance(generated, str) or not _IDENT.match(generated) or generated in names:
        raise ConfigError(f"{here}: generated_id must be a new lower-case column name")
    if not pk:
        raise ConfigError(f"{here}: generated_id needs a primary_key (the natural key)")
    return generated


def _quality(raw: dict[str, Any], here: str) -> Quality | None:
    quality_raw = raw.get("quality", {})
    try:
        return Quality(**quality_raw) if quality_raw else None
    except TypeError as exc:
        raise ConfigError(f"{here}: quality: {exc}") from None


def _column(name: str, spec: Any, here: str) -> tuple[Column, str | None]:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{here}: column {name} must be a table or a type name")
    if not _IDENT.match(name):
        raise ConfigError(f"{here}: column name {name!r} must be lower-case letters, digits, _")
    where = f"{here}, column {name}"
    unknown = set(spec) - _COLUMN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    ctype = spec.get("type", "text")
    if ctype not in COLUMN_TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(COLUMN_TYPES)}")
    if spec.get("pseudonymise") and ctype not in TEXT_TYPES:
        raise ConfigError(
            f"{where}: pseudonymise needs a text column (a pseudonym is text), not {ctype}; "
            "generalise dates or numbers instead"
        )
    if ctype == "mrn" and spec.get("pattern") is None:
        raise ConfigError(
            f"{where}: type mrn needs the pattern your record numbers follow, e.g. pattern = 'MRN[0-9]{{7}}'"
        )
    vocabulary: dict[str, tuple[str, ...]] | None = None
    if "allowed" in spec:
        vocabulary = {str(v): () for v in spec["allowed"]}
    if "vocabulary" in spec:
        vocabulary = {str(k): tuple(str(a) for a in v) for k, v in spec["vocabulary"].items()}
    value_map = None
    if "map" in spec:
        value_map = {str(k): _map_value(v) for k, v in spec["map"].items()}
    if spec.get("pattern") is not None:
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ConfigError(f"{where}: pattern is not a regular expression ({exc})") from None
    window = spec.get("date_window")
    bounds = {k: _bound(spec.get(k), ctype, f"{where}: {k}") for k in ("min", "max")}
    refs = spec.get("references")
    if refs is not None and not re.match(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$", str(refs)):
        raise ConfigError(f"{where}: references must be 'dataset.column'")
    column = Column(
        name=name,
        type=ctype,
        required=bool(spec.get("required", False)),
        # an SSN or a record number identifies a person unless the declaration says otherwise
        identifying=bool(spec.get("identifying", ctype in IDENTIFYING_TYPES)),
        vocabulary=vocabulary,
        references=refs,
        date_window=tuple(window) if window else None,
        minimum=bounds["min"],
        maximum=bounds["max"],
        pattern=spec.get("pattern"),
        unique=bool(spec.get("unique", False)),
        value_map=value_map,
        severity=_severity_map(spec.get("severity", {}), f"{where}: severity"),
        description=str(spec.get("description", "")),
        stored=bool(spec.get("stored", True)),
        default=str(spec["default"]) if spec.get("default") is not None else None,
        pseudonymise=bool(spec.get("pseudonymise", False)),
    )
    source = spec.get("source")
    return column, (str(source) if source is not None else None)


def _map_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _bound(value: Any, ctype: str, where: str) -> float | str | None:
    if value is None:
        return None
    if ctype in ("integer", "float", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number for a {ctype} column")
        return float(value)
    if ctype in ("date", "timestamp"):
        text = str(value)
        if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
            raise ConfigError(f"{where} must be an ISO date for a {ctype} column")
        return text
    raise ConfigError(f"{where}: min/max apply to numeric, date and timestamp columns")


def _severity_map(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(f'{where} must be a table of rule = "error" | "warning"')
    for rule, value in raw.items():
        if value not in SEVERITIES:
            raise ConfigError(f"{where}.{rule} must be error or warning")
    return {str(k): str(v) for k, v in raw.items()}


def _compare(raw: dict[str, Any], here: str, names: set[str]) -> Compare:
    unknown = set(raw) - _CHECK_KEYS
    if unknown:
        raise ConfigError(f"{here}: check: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not name:
        raise ConfigError(f"{here}: every [[datasets.checks]] needs a name")
    where = f"{here}, check {name}"
    if raw.get("op") not in ("<", "<=", "==", "!=", ">=", ">"):
        raise ConfigError(f"{where}: op must be one of < <= == != >= >")
    for key in ("column", "other"):
        if key in raw and raw[key] not in names:
            raise ConfigError(f"{where}: {key} {raw[key]!r} is not a declared column")
    if "column" not in raw or ("other" in raw) == ("value" in raw):
        raise ConfigError(f"{where}: give column, op and either other (a column) or value")
    severity = raw.get("severity", "error")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be error or warning")
    return Compare(
        name=str(name),
        column=raw["column"],
        op=raw["op"],
        other=raw.get("other"),
        value=raw.get("value"),
        severity=severity,
        description=str(raw.get("description", "")),
    )


def _nested(raw: Any, here: str, names: set[str]) -> Nested:
    """[datasets.nested]: paths of the parent's columns, and [[datasets.nested.children]]."""
    if not isinstance(raw, dict) or set(raw) - {"paths", "children", "snapshot_column"}:
        raise ConfigError(f"{here}: nested takes paths, children and snapshot_column")
    paths = raw.get("paths", {})
    for column, path in paths.items():
        if column not in names:
            raise ConfigError(f"{here}: nested.paths: column {column!r} is not declared")
        _check_path(str(path), f"{here}: nested.paths.{column}")
    snapshot: str | None = None
    if raw.get("snapshot_column", "snapshot_date") is not False:  # false: upserted on the key
        snapshot = str(raw.get("snapshot_column", "snapshot_date"))
        if snapshot not in names:  # a load replaces exactly its snapshots: the date is part of the key
            raise ConfigError(
                f"{here}: nested records need a declared date column {snapshot!r} "
                "(or name it with nested.snapshot_column; snapshot_column = false upserts on the key)"
            )
    return Nested(
        paths={str(k): str(v) for k, v in paths.items()},
        children=tuple(_child(c, f"{here}, nested child") for c in raw.get("children", [])),
        snapshot_column=snapshot,
    )


def _check_path(path: str, here: str) -> None:
    """A declared JSON path must be readable (see healthetl.datasets.paths)."""
    for part in [path[:-1] if path.endswith("#") else path] if "{" not in path else TEMPLATE.findall(path):
        if part in (".", ""):
            continue
        try:
            compile_path(part)
        except PathError as exc:
            raise ConfigError(f"{here}: {exc}") from None


def _child(raw: Any, here: str) -> Child:
    if not isinstance(raw, dict) or set(raw) - {
        "table",
        "path",
        "ordinal",
        "columns",
        "children",
        "description",
    }:
        raise ConfigError(f"{here}: a child takes table, path, ordinal, columns, children, description")
    for key in ("table", "path", "columns"):
        if key not in raw:
            raise ConfigError(f"{here}: missing {key!r}")
    table = str(raw["table"])
    if not _IDENT.match(table):
        raise ConfigError(f"{here}: table must be a plain lower-case name")
    where = f"{here} {table}"
    columns, paths = [], {}
    for name, spec in raw["columns"].items():
        spec = {"type": spec} if isinstance(spec, str) else dict(spec)
        if "path" in spec:
            paths[str(name)] = str(spec.pop("path"))
            _check_path(paths[str(name)], f"{where}: column {name}")
        columns.append(_column(str(name), spec, where)[0])
    return Child(
        table=table,
        path=str(raw["path"]),
        ordinal=str(raw.get("ordinal", f"{table}_ordinal")),
        columns=tuple(columns),
        paths=paths,
        children=tuple(_child(c, where) for c in raw.get("children", [])),
        description=str(raw.get("description", "")),
    )


def _lookup(raw: Any, here: str, names: set[str]) -> Lookup:
    if not isinstance(raw, dict) or set(raw) - _LOOKUP_KEYS:
        raise ConfigError(f"{here}: every [[datasets.lookups]] takes column, dataset, on and fetch")
    where = f"{here}, lookup {raw.get('column')}"
    for key in ("column", "dataset", "on"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key!r}")
    on, fetch = raw["on"], raw.get("fetch", {})
    if not isinstance(on, dict) or not on or not isinstance(fetch, dict):
        raise ConfigError(f'{where}: on (and fetch) must be tables of this_column = "their_column"')
    for column in [raw["column"], *on, *fetch]:
        if column not in names:
            raise ConfigError(f"{where}: column {column!r} is not declared")
    return Lookup(
        str(raw["column"]),
        str(raw["dataset"]),
        {str(k): str(v) for k, v in on.items()},
        {str(k): str(v) for k, v in fetch.items()},
    )


def _query(raw: dict[str, Any], here: str) -> Query:
    if not raw.get("name") or not raw.get("sql"):
        raise ConfigError(f"{here}: every [[datasets.queries]] needs a name and sql")
    if not isinstance(raw["name"], str) or not _QUERY_NAME.match(raw["name"]):
        raise ConfigError(
            f"{here}: query name {raw['name']!r} must be lower-case letters, digits, _ and - (no quotes or ;)"
        )
    params = {}
    for pname, spec in (raw.get("params") or {}).items():
        if not _IDENT.match(str(pname)):
            raise ConfigError(
                f"{here}, query {raw['name']}: parameter name {pname!r} must be lower-case letters, digits, _"
            )
        spec = spec if isinstance(spec, dict) else {"type": spec}
        ptype = spec.get("type", "text")
        if ptype not in ("integer", "text", "date"):
            raise ConfigError(
                f"{here}, query {raw['name']}: parameter {pname} type must be integer, text or date"
            )
        default = spec.get("default")
        params[str(pname)] = Param(
            ptype, None if default is None else str(default), str(spec.get("help", ""))
        )
    counts = raw.get("person_counts", [])
    if not isinstance(counts, list) or not all(isinstance(c, str) for c in counts):
        raise ConfigError(f"{here}, query {raw['name']}: person_counts must be a list of result column names")
    return Query(
        str(raw["name"]),
        str(raw.get("description", "")),
        str(raw["sql"]),
        params,
        person_counts=tuple(counts),
    )
