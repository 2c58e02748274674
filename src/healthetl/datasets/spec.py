"""A dataset is one declaration: columns, keys, references, rules, table and named queries.

Built-in datasets (``doctors``, ``appointments``) are declared with exactly these classes, and
the stages only ever see a :class:`Dataset`: nothing downstream knows a dataset by name.

From a declaration we derive
* the standardisation (how values are written),
* the pandera schema (whether values are acceptable; the only place rules live),
* the SQLAlchemy table Alembic migrates, and
* the named queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
import sqlalchemy as sa

from healthetl import checks
from healthetl.config import PipelineOptions

ColumnType = Literal["integer", "text", "date"]
Severity = Literal["error", "warning"]

SA_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "integer": sa.BigInteger,
    "text": sa.Text,
    "date": sa.Date,
}


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "text"
    required: bool = False
    #: values of this column identify a patient: never shown in messages or logs
    identifying: bool = False
    #: closed vocabulary: canonical value -> accepted spelling variants
    vocabulary: Mapping[str, tuple[str, ...]] | None = None
    #: "dataset.column" this column refers to; unknown values are quarantined
    references: str | None = None
    #: default plausible window for a date column; a pipeline may override it
    date_window: tuple[str, str] | None = None
    description: str = ""


@dataclass(frozen=True)
class Param:
    type: Literal["integer", "text", "date"] = "text"
    default: str | None = None
    help: str = ""


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    sql: str
    params: Mapping[str, Param] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    table: str
    #: source column name (after normalisation) -> declared column name
    renames: Mapping[str, str] = field(default_factory=dict)
    default_mode: str = "replace"
    queries: tuple[Query, ...] = ()

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def references(self) -> dict[str, tuple[str, str]]:
        """column -> (dataset, column) for every declared reference."""
        out: dict[str, tuple[str, str]] = {}
        for c in self.columns:
            if c.references:
                target, _, target_col = c.references.partition(".")
                out[c.name] = (target, target_col)
        return out

    @property
    def depends_on(self) -> set[str]:
        return {target for target, _ in self.references.values()} - {self.name}

    def query(self, name: str) -> Query | None:
        return next((q for q in self.queries if q.name == name), None)


# ---------------------------------------------------------------------------------------------
# Rules: what a failing check means, independent of pandera's own wording.


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
        shown = _fmt(value) if self.shows_value else ""
        return self.template.format(column=self.column, value=shown, detail=self.detail)


def _fmt(value: Any) -> str:
    return "" if value is None else f" {str(value)!r}"


class KeyTracker:
    """Keys already accepted in this run, across chunks, to report later duplicates.

    Arrow arrays merged like a binary counter (up to MERGE_LIMIT keys each): few arrays to
    probe, each probe hashes only the (small) new batch, and memory is the keys themselves.
    """

    #: arrays stop merging at this many keys, so a merge never copies more than this
    MERGE_LIMIT = 1 << 20

    def __init__(self) -> None:
        self._levels: list[pyarrow.Array] = []

    def duplicated(self, keys: pd.Series) -> pd.Series:
        dup = keys.duplicated(keep="first").to_numpy()
        if self._levels:
            chunk = checks.as_arrow(keys)
            for seen in self._levels:
                hits = pc.filter(seen, pc.is_in(seen, value_set=chunk))
                if len(hits):
                    found = pc.is_in(chunk, value_set=hits)
                    dup = dup | pc.fill_null(found, False).to_numpy(zero_copy_only=False)
        return pd.Series(dup, index=keys.index)

    def add(self, keys: pd.Series) -> None:
        fresh = checks.as_arrow(keys.dropna())
        if not len(fresh):
            return
        self._levels.append(fresh)
        while (
            len(self._levels) > 1
            and len(self._levels[-2]) <= len(self._levels[-1])
            and len(self._levels[-2]) + len(self._levels[-1]) <= self.MERGE_LIMIT
        ):
            last = self._levels.pop()
            self._levels[-1] = pyarrow.concat_arrays([self._levels[-1], last])


def key_series(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    if len(columns) == 1:
        return frame[columns[0]]
    out = frame[columns[0]].astype("str")
    for col in columns[1:]:
        out = out + "\x1f" + frame[col].astype("str")
    return out


@dataclass
class CompiledDataset:
    """A dataset made ready for one validation session (one run, one set of options)."""

    dataset: Dataset
    schema: pa.DataFrameSchema
    #: (column or None for frame-level, check_number) -> rule
    rules: dict[tuple[str | None, int], Rule]
    required_rules: dict[str, Rule]
    standardise: Callable[[pd.DataFrame], pd.DataFrame]
    keys: KeyTracker
    #: reference checks that could not run (no database given)
    skipped: list[str]

    def all_rules(self) -> list[Rule]:
        return [*self.required_rules.values(), *self.rules.values()]


def _severity(options: PipelineOptions, column: str | None, rule: str) -> Severity:
    key = f"{column}.{rule}" if column else rule
    value = options.severity.get(key) or options.severity.get(rule) or "error"
    return "warning" if value == "warning" else "error"


def compile_dataset(
    dataset: Dataset,
    options: PipelineOptions,
    known_keys: Mapping[str, pd.Index] | None = None,
) -> CompiledDataset:
    """Build the pandera schema and the rule table for one validation session.

    ``known_keys`` maps a referencing column to the keys that exist (read from the database
    or from rows loaded earlier in the run); references without known keys are skipped and
    listed in ``skipped``.
    """
    rules: dict[tuple[str | None, int], Rule] = {}
    required_rules: dict[str, Rule] = {}
    pa_columns: dict[str, pa.Column] = {}
    skipped: list[str] = []
    aliases: dict[str, dict[str, str]] = {}

    def rule(name: str, column: str | None, template: str, show: bool, detail: str = "") -> Rule:
        return Rule(name, column, _severity(options, column, name), template, show, detail)

    for col in dataset.columns:
        col_checks: list[pa.Check] = []
        show = not col.identifying

        def add(check: pa.Check, rule: Rule, _cc: list[pa.Check] = col_checks) -> None:
            rules[(rule.column, len(_cc))] = rule
            _cc.append(check)

        if col.required:
            required_rules[col.name] = rule("required", col.name, "{column} is missing", False)
        if col.type == "integer":
            add(
                pa.Check.str_matches(f"^{checks.INTEGER_PATTERN}$"),
                rule("integer", col.name, "{column}{value} is not an integer", show),
            )
        elif col.type == "date":
            add(
                pa.Check(checks.is_real_date, element_wise=False),
                rule(
                    "date",
                    col.name,
                    "{column}{value} is not a real date in a recognised layout "
                    "(YYYY-MM-DD, YYYY/MM/DD, MM/DD/YYYY)",
                    show,
                ),
            )
            window = options.date_window.get(col.name) or col.date_window
            if window:
                lo, hi = (checks.resolve_bound(b) for b in window)
                add(
                    pa.Check(_window_check(lo, hi), element_wise=False),
                    rule(
                        "date_window",
                        col.name,
                        "{column}{value} is outside the plausible window {detail}",
                        show,
                        f"{lo}..{hi}",
                    ),
                )
        if col.vocabulary:
            allowed = list(col.vocabulary)
            aliases[col.name] = checks.alias_table(col.vocabulary)
            add(
                pa.Check.isin(allowed),
                rule(
                    "vocabulary",
                    col.name,
                    "unknown {column}{value} (expected one of {detail})",
                    show,
                    ", ".join(allowed),
                ),
            )
        if col.references:
            known = (known_keys or {}).get(col.name)
            if known is None:
                skipped.append(f"{col.name} -> {col.references}")
            else:
                add(
                    pa.Check.isin(known),
                    rule("foreign_key", col.name, "unknown {column}{value}", show),
                )
        pa_columns[col.name] = pa.Column(
            "str", checks=col_checks, nullable=not col.required, required=True, coerce=False
        )

    frame_checks: list[pa.Check] = []
    tracker = KeyTracker()
    if dataset.primary_key:
        pk = dataset.primary_key
        pk_shows = all(not dataset.column(c).identifying for c in pk)

        def unique_key(frame: pd.DataFrame) -> pd.Series:
            keys = key_series(frame, pk)
            return ~(tracker.duplicated(keys) & keys.notna())

        rules[(None, len(frame_checks))] = Rule(
            "duplicate_key",
            ",".join(pk),
            _severity(options, None, "duplicate_key"),
            "duplicate {column}{value}: an earlier row in this run has the same key",
            pk_shows,
        )
        frame_checks.append(pa.Check(unique_key))

    schema = pa.DataFrameSchema(pa_columns, checks=frame_checks, strict=False, coerce=False)
    standardise = _standardiser(dataset, options, aliases)
    return CompiledDataset(dataset, schema, rules, required_rules, standardise, tracker, skipped)


def _window_check(lo: str, hi: str) -> Callable[[pd.Series], pd.Series]:
    def in_window(s: pd.Series) -> pd.Series:
        # only judges well-formed dates; the date check reports the others
        return ~checks.is_iso_shaped(s) | ((s >= lo) & (s <= hi))

    return in_window


def _standardiser(
    dataset: Dataset, options: PipelineOptions, aliases: Mapping[str, Mapping[str, str]]
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def standardise(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.rename(columns=dict(dataset.renames))
        out: dict[str, pd.Series] = {}
        for col in dataset.columns:
            if col.name not in frame.columns:
                if not col.required:  # an optional column may be absent from a file
                    out[col.name] = pd.Series(pd.NA, index=frame.index, dtype="str")
                continue
            s = frame[col.name]
            if col.type == "integer":
                s = checks.standardise_integer(s)
            elif col.type == "date":
                s = checks.standardise_date(s, options.date_order)
            elif col.name in aliases:
                s = checks.standardise_vocabulary(s, aliases[col.name])
            else:
                s = checks.blank_to_na(s)
            out[col.name] = s
        return pd.DataFrame(out, index=frame.index)

    return standardise


# ---------------------------------------------------------------------------------------------
# Tables


def table_for(dataset: Dataset, metadata: sa.MetaData, registry: Mapping[str, Dataset]) -> sa.Table:
    """The SQLAlchemy table of a dataset (Alembic migrates it; nothing here creates it)."""
    cols: list[sa.schema.SchemaItem] = []
    for c in dataset.columns:
        cols.append(
            sa.Column(
                c.name,
                SA_TYPES[c.type](),
                nullable=not (c.required or c.name in dataset.primary_key),
                comment=c.description or None,
            )
        )
    cols.append(
        sa.Column(
            "run_id",
            sa.String(40),
            nullable=False,
            comment="etl_runs.run_id of the run that loaded this row",
        )
    )
    if dataset.primary_key:
        cols.append(sa.PrimaryKeyConstraint(*dataset.primary_key))
    for column, (target, target_col) in dataset.references.items():
        target_table = registry[target].table
        cols.append(
            sa.ForeignKeyConstraint(
                [column],
                [f"{target_table}.{target_col}"],
                deferrable=True,
                initially="DEFERRED",
            )
        )
    return sa.Table(dataset.table, metadata, *cols, comment=dataset.description)
