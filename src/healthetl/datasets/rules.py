"""Rules: a declaration compiled into the pandera schema that decides whether values are
acceptable (the only place rules live), with what each failing check means."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

from healthetl import cleaning, codes, pseudonym
from healthetl.config import PipelineOptions
from healthetl.datasets import predicates
from healthetl.datasets.keys import KeyTracker
from healthetl.datasets.nesting import all_children, looked_up
from healthetl.datasets.spec import Column, Compare, Dataset, Lookup, Severity
from healthetl.datasets.standardise import AMBIGUOUS, UNRESOLVED, LookupTable, standardiser


@dataclass(frozen=True)
class Rule:
    """What a failing check means. ``template`` may use {column}, {value} and {detail}."""

    name: str
    column: str | None
    severity: Severity
    template: str
    #: show the failing value in the reason (never for identifying columns)
    shows_value: bool = False
    detail: str = ""

    def reason(self, value: Any) -> str:
        if isinstance(value, str) and value[:1] in ("\x00", "\x01"):
            value = value[1:]  # a lookup marker carries the key it could not resolve
        shown = _fmt(value) if self.shows_value else ""
        return self.template.format(column=self.column, value=shown, detail=self.detail)


def _fmt(value: Any) -> str:
    return "" if value is None else f" {str(value)!r}"


@dataclass
class CompiledDataset:
    """A dataset made ready for one validation session (one run, one set of options)."""

    dataset: Dataset
    #: the columns' checks
    schema: pa.DataFrameSchema
    #: checks of whole rows (duplicate keys, comparisons between columns), in rule order: run by
    #: the validator through pandera's ``Check`` itself, outside the schema (see
    #: ``Validator._frame_failures``)
    frame_checks: list[pa.Check]
    #: (column or None for frame-level, check_number) -> rule
    rules: dict[tuple[str | None, int], Rule]
    required_rules: dict[str, Rule]
    standardise: Callable[[pd.DataFrame], pd.DataFrame]
    #: key columns -> tracker of the values accepted so far in this run
    trackers: list[tuple[tuple[str, ...], KeyTracker]]
    #: the numbers of the frame checks that are key checks (duplicate keys, unique columns): run
    #: last, on the rows no other check rejects (``predicates.HOLDERS``)
    key_checks: list[int]
    #: reference checks that could not run (no database given)
    skipped: list[str]


def _severity(options: PipelineOptions, dataset: Dataset, column: Column | None, rule: str) -> Severity:
    """pipeline option (column.rule, then rule) > column declaration > dataset > error."""
    name = column.name if column else None
    key = f"{name}.{rule}" if name else rule
    value = (
        options.severity.get(key)
        or options.severity.get(rule)
        or (column.severity.get(rule) if column else None)
        or dataset.severity.get(key)
        or dataset.severity.get(rule)
        or "error"
    )
    return "warning" if value == "warning" else "error"


def compile_dataset(
    dataset: Dataset,
    options: PipelineOptions,
    known_keys: Mapping[str, pd.Index] | None = None,
    lookups: Mapping[str, LookupTable] | None = None,
) -> CompiledDataset:
    """Build the pandera schema and the rule table for one validation session.

    ``known_keys`` maps a referencing column to the keys that exist (read from the database
    or from rows loaded earlier in the run); references without known keys are skipped and
    listed in ``skipped``.
    """
    return _Compiler(dataset, options, known_keys or {}, lookups or {}).compile()


class _Compiler:
    """One compilation: each column's checks in a fixed order (a failure names its check by its
    position), then the frame-level checks (keys, comparisons)."""

    def __init__(
        self,
        dataset: Dataset,
        options: PipelineOptions,
        known_keys: Mapping[str, pd.Index],
        lookups: Mapping[str, LookupTable],
    ) -> None:
        self.dataset, self.options = dataset, options
        self.known_keys, self.lookups = known_keys, lookups
        #: columns compared with the database in their stored, pseudonymised form
        self.pseudonymised = dataset.pseudonymised(options.pseudonymise)
        self.rules: dict[tuple[str | None, int], Rule] = {}
        self.required_rules: dict[str, Rule] = {}
        self.skipped: list[str] = []
        self.aliases: dict[str, dict[str, str]] = {}
        self.frame_checks: list[pa.Check] = []
        self.trackers: list[tuple[tuple[str, ...], KeyTracker]] = []
        self.key_checks: list[int] = []

    def compile(self) -> CompiledDataset:
        ds = self.dataset
        columns = {col.name: self._column(col) for col in ds.columns}
        self._key_checks()
        for cmp in ds.compares:
            self._add_frame(
                pa.Check(predicates.compare_check(ds, cmp), name=f"healthetl_compare_{cmp.name}"),
                Rule(
                    cmp.name,
                    cmp.column,
                    _severity_named(self.options, ds, cmp),
                    "{detail}",
                    False,
                    cmp.description or _describe_compare(cmp),
                ),
            )
        schema = pa.DataFrameSchema(columns, strict=False, coerce=False)
        standardise = standardiser(ds, self.options, self.aliases, self.lookups)
        return CompiledDataset(
            ds,
            schema,
            self.frame_checks,
            self.rules,
            self.required_rules,
            standardise,
            self.trackers,
            self.key_checks,
            self.skipped,
        )

    def _pseudonym(self) -> Callable[[pd.Series], pd.Series]:
        secret = pseudonym.key()
        return lambda values: pseudonym.series(values, secret)

    def _rule(self, col: Column, name: str, template: str, detail: str = "") -> Rule:
        severity = _severity(self.options, self.dataset, col, name)
        return Rule(name, col.name, severity, template, not col.identifying, detail)

    def _column(self, col: Column) -> pa.Column:
        found: list[pa.Check] = []

        def add(check: pa.Check, rule: Rule) -> None:
            self.rules[(rule.column, len(found))] = rule
            found.append(check)

        if col.required:
            severity = _severity(self.options, self.dataset, col, "required")
            self.required_rules[col.name] = Rule("required", col.name, severity, "{column} is missing")
        self._value_checks(col, add)
        lookup = next((lk for lk in self.dataset.lookups if lk.column == col.name), None)
        if lookup is not None:
            self._lookup_checks(col, lookup, add)
        elif col.references:
            known = self.known_keys.get(col.name)
            if known is None:
                self.skipped.append(f"{col.name} -> {col.references}")
            else:
                stored_as = self._pseudonym() if col.name in self.pseudonymised else None
                add(
                    pa.Check(predicates.key_lookup(known, stored_as), name="healthetl_foreign_key"),
                    self._rule(col, "foreign_key", "unknown {column}{value}"),
                )
        return pa.Column("str", checks=found, nullable=not col.required, required=True, coerce=False)

    def _value_checks(self, col: Column, add: Callable[[pa.Check, Rule], None]) -> None:
        """Type, date window, range, pattern and vocabulary, in this order."""
        looked_up = any(lk.column == col.name for lk in self.dataset.lookups)
        if col.type in predicates.TYPE_CHECKS and not looked_up:  # a looked-up id comes from the database
            name, template, fn = predicates.TYPE_CHECKS[col.type]
            add(
                pa.Check(fn, element_wise=False, ignore_na=False, name=f"healthetl_{name}"),
                self._rule(col, name, template),
            )
        typed = predicates.TYPE_CHECKS[col.type][2] if col.type in predicates.TYPE_CHECKS else None
        window = (self.options.date_window.get(col.name) or col.date_window) if col.type == "date" else None
        if window:
            lo, hi = (cleaning.resolve_bound(b) for b in window)
            add(
                pa.Check(predicates.window_check(lo, hi), element_wise=False, name="healthetl_date_window"),
                self._rule(
                    col,
                    "date_window",
                    "{column}{value} is outside the plausible window {detail}",
                    f"{lo}..{hi}",
                ),
            )
        if col.minimum is not None or col.maximum is not None:
            add(
                pa.Check(predicates.range_check(col, typed), element_wise=False, name="healthetl_range"),
                self._rule(
                    col,
                    "range",
                    "{column}{value} is outside {detail}",
                    f"{_bound(col.minimum)}..{_bound(col.maximum)}",
                ),
            )
        if col.pattern:
            add(
                pa.Check.str_matches(f"^(?:{col.pattern})$"),
                self._rule(col, "pattern", "{column}{value} does not match {detail}", col.pattern),
            )
        if col.vocabulary:
            allowed = list(col.vocabulary)
            self.aliases[col.name] = cleaning.alias_table(col.vocabulary)
            add(
                pa.Check.isin(allowed),
                self._rule(
                    col,
                    "vocabulary",
                    "unknown {column}{value} (expected one of {detail})",
                    ", ".join(allowed),
                ),
            )

    def _lookup_checks(self, col: Column, lookup: Lookup, add: Callable[[pa.Check, Rule], None]) -> None:
        """A looked-up id: its natural key must match exactly one row."""
        if col.name not in self.lookups:
            self.skipped.append(f"{col.name} by {', '.join(lookup.on)} -> {lookup.dataset}")
            return
        keys = ", ".join(lookup.on)
        shown = all(not self.dataset.column(c).identifying for c in lookup.on)
        suffix = "{value}" if shown else ""
        for marker, name, check_name, text in (
            (UNRESOLVED, "reference", "healthetl_reference", f"no {lookup.dataset} matches {keys}"),
            (
                AMBIGUOUS,
                "ambiguous_reference",
                "healthetl_ambiguous",
                f"more than one {lookup.dataset} matches {keys}",
            ),
        ):
            add(
                pa.Check(predicates.not_marked(marker), element_wise=False, name=check_name),
                Rule(name, col.name, _severity(self.options, self.dataset, col, name), text + suffix, shown),
            )

    def _add_frame(self, check: pa.Check, rule: Rule) -> None:
        self.rules[(None, len(self.frame_checks))] = rule
        self.frame_checks.append(check)

    def _key_checks(self) -> None:
        """Duplicate primary keys (unless resolved by a dedupe order) and unique columns."""
        ds = self.dataset
        unique_sets: list[tuple[tuple[str, ...], str]] = []
        if ds.primary_key and not ds.dedupe_order:  # else: resolved by order, not an error
            unique_sets.append((ds.primary_key, "duplicate_key"))
        unique_sets += [((c.name,), "unique") for c in ds.columns if c.unique and (c.name,) != ds.primary_key]
        for key_cols, rule_name in unique_sets:
            tracker = KeyTracker()
            self.trackers.append((key_cols, tracker))
            shows = all(not ds.column(c).identifying for c in key_cols)
            column = ds.column(key_cols[0]) if len(key_cols) == 1 else None
            self.key_checks.append(len(self.frame_checks))
            self._add_frame(
                pa.Check(predicates.unique_check(key_cols, tracker), name=f"healthetl_{rule_name}"),
                Rule(
                    rule_name,
                    ",".join(key_cols),
                    _severity(self.options, ds, column, rule_name),
                    "duplicate {column}{value}: an earlier row in this run has the same value",
                    shows,
                ),
            )


def _severity_named(options: PipelineOptions, dataset: Dataset, cmp: Compare) -> Severity:
    value = options.severity.get(cmp.name) or dataset.severity.get(cmp.name) or cmp.severity
    return "warning" if value == "warning" else "error"


def _bound(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe_compare(cmp: Compare) -> str:
    words = {
        "<": "before or below",
        "<=": "not after",
        "==": "equal to",
        "!=": "different from",
        ">=": "not before",
        ">": "after or above",
    }
    other = cmp.other if cmp.other is not None else repr(cmp.value)
    return f"{cmp.column} must be {words[cmp.op]} {other} ({cmp.column} {cmp.op} {other})"


#: the rule a column's type implies (``dataset show``)
_TYPE_RULE = {
    "integer": "integer",
    "float": "number",
    "decimal": "number",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
    "phone": "phone",
    **{kind: rule for kind, (rule, _) in codes.RULES.items()},
}


def describe(dataset: Dataset) -> list[tuple[str, ...]]:
    """The dataset's rules as rows (column, type, key, identifying, checks, description), one per
    column, declared comparison and model: what ``healthetl dataset show`` prints. A nested
    dataset's columns say which JSON path they read, and its child tables' columns follow."""
    nested = dataset.nested
    rows: list[tuple[str, ...]] = []
    for c in dataset.columns:
        path = nested.paths.get(c.name, c.name) if nested is not None else None
        rows.append(_describe_column(dataset, c, c.name, path))
    if nested is not None:
        for child, _ancestors in all_children(nested):
            for c in child.columns:
                path = f"{child.path}[].{child.paths.get(c.name, c.name)}"
                rows.append(_describe_column(dataset, c, f"{child.table}.{c.name}", path))
    for cmp in dataset.compares:
        other = cmp.other if cmp.other is not None else repr(cmp.value)
        rows.append(
            (
                f"({cmp.name})",
                "check",
                "",
                "",
                f"{cmp.column} {cmp.op} {other} [{cmp.severity}]",
                cmp.description,
            )
        )
    if dataset.model is not None:
        rows.append(("(model)", "pandera", "", "", getattr(dataset.model, "__name__", "schema"), ""))
    return rows


def _describe_column(dataset: Dataset, c: Column, name: str, path: str | None) -> tuple[str, ...]:
    rules = (["required"] if c.required else []) + ([_TYPE_RULE[c.type]] if c.type in _TYPE_RULE else [])
    if c.date_window:
        rules.append(f"date_window {c.date_window[0]}..{c.date_window[1]}")
    if c.minimum is not None or c.maximum is not None:
        rules.append(f"range {_bound(c.minimum)}..{_bound(c.maximum)}")
    if c.pattern:
        rules.append(f"pattern {c.pattern}")
    if c.vocabulary:
        rules.append("vocabulary " + "|".join(c.vocabulary))
    if c.value_map:
        rules.append("map " + ", ".join(f"{k}->{v}" for k, v in c.value_map.items()))
    if c.references:
        rules.append(f"foreign_key {c.references}")
    parent = name == c.name
    if parent and c.name in dataset.primary_key:
        rules.append("duplicate_key")
    if c.unique and c.name not in dataset.primary_key:
        rules.append("unique")
    sev = ", ".join(f"{k}={v}" for k, v in c.severity.items())
    key = "yes" if parent and c.name in dataset.primary_key else ""
    checks_text = ", ".join(rules) + (f" [{sev}]" if sev else "")
    description = c.description
    if path is not None and parent and c.name in looked_up(dataset):
        description = " ".join(p for p in (description, "(filled by a lookup)") if p)
    elif path is not None and not (dataset.nested and c.name == dataset.nested.snapshot_column):
        description = " ".join(p for p in (description, f"<- {path}") if p)
    return (name, c.type, key, "yes" if c.identifying else "", checks_text, description)
