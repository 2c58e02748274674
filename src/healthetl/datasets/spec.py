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

import os
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
from healthetl.datasets.keyspill import KeySpill
from healthetl.errors import ConfigError

ColumnType = Literal["integer", "float", "decimal", "boolean", "text", "date", "timestamp", "phone"]
COLUMN_TYPES: tuple[str, ...] = (
    "integer",
    "float",
    "decimal",
    "boolean",
    "text",
    "date",
    "timestamp",
    "phone",
)
Severity = Literal["error", "warning"]

SA_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "integer": sa.BigInteger,
    "float": lambda: sa.Float(precision=53),
    "decimal": lambda: sa.Numeric(),
    "boolean": lambda: sa.Boolean(create_constraint=False),
    "text": sa.Text,
    "date": sa.Date,
    "timestamp": lambda: sa.DateTime(timezone=True),
    "phone": sa.Text,
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
    #: inclusive bounds: numbers for numeric columns, ISO dates for date/timestamp columns
    minimum: float | str | None = None
    maximum: float | str | None = None
    #: the whole value must match this regular expression
    pattern: str | None = None
    #: no two rows share a value: checked within a run, and a unique constraint of the table
    #: (the primary key is always unique)
    unique: bool = False
    #: replacements applied before anything else, e.g. {"Yes": "1", "No": "0"}
    value_map: Mapping[str, str] | None = None
    #: rule name -> severity for this column's checks
    severity: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    #: False: read and checked (e.g. a natural key used to find a reference), not stored
    stored: bool = True
    #: the value when the file has no such column or the cell is empty ("today": the run's date)
    default: str | None = None


@dataclass(frozen=True)
class Lookup:
    """A reference found by natural key: ``on`` maps this frame's columns to the referenced
    dataset's, and the referenced row's generated id fills ``column``. ``fetch`` adds columns of
    the referenced row (not stored) for checks, e.g. the patient's birth date."""

    column: str
    dataset: str
    on: Mapping[str, str]
    fetch: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Compare:
    """A cross-column rule: ``column op other`` (or ``column op value``), null sides pass."""

    name: str
    column: str
    op: Literal["<", "<=", "==", "!=", ">=", ">"]
    other: str | None = None
    value: str | float | None = None
    severity: str = "error"
    description: str = ""


@dataclass(frozen=True)
class Param:
    type: Literal["integer", "text", "date"] = "text"
    default: str | None = None
    help: str = ""
    #: may be left out (bound as NULL)
    optional: bool = False


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    sql: str
    params: Mapping[str, Param] = field(default_factory=dict)
    #: dialect name -> SQL, where date arithmetic differs between SQLite and PostgreSQL
    dialect_sql: Mapping[str, str] = field(default_factory=dict)

    def sql_for(self, dialect: str) -> str:
        return self.dialect_sql.get(dialect, self.sql)


@dataclass(frozen=True)
class Analytic:
    """A derived table kept current incrementally.

    ``select`` produces the table's rows; it contains ``{where}``, which becomes a filter on
    ``partition`` (a column of the table it reads) for the partitions a run touched, or
    nothing for a full rebuild. A run deletes the touched partitions and inserts them again,
    so an incremental run and a full rebuild give the same table by construction.
    """

    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition: str
    select: str
    description: str = ""


@dataclass(frozen=True)
class Quality:
    """Batch-level data-quality thresholds (a pipeline may override each)."""

    #: required fields: share of accepted rows with a null (error above)
    required_null_rate: float = 0.0
    #: share of rows with a date or timestamp that could not be read (error above)
    invalid_date_rate: float = 0.01
    #: column -> share of nulls above which a warning is raised
    null_rate: Mapping[str, float] = field(default_factory=dict)
    #: warn when accepted rows drop by more than this share against the last successful run
    row_count_drop: float = 0.30
    #: warn when the newest cursor value is older than this many hours
    freshness_hours: float | None = 48.0
    #: a run with nothing to load is an error unless this is set
    allow_empty: bool = False


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
    #: cross-column rules
    compares: tuple[Compare, ...] = ()
    #: a pandera DataFrameModel or DataFrameSchema run on the typed rows that passed every
    #: declared check (for what the declarative form cannot say)
    model: Any = None
    #: frame -> frame, run on the standardised text before validation
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    #: rule name -> severity for the whole dataset
    severity: Mapping[str, str] = field(default_factory=dict)
    #: where it was declared: "builtin" or the project file
    origin: str = "builtin"
    #: an immutable raw layer: every extracted batch appended to this table as text
    raw_table: str | None = None
    #: duplicates of the primary key are resolved by keeping the greatest value of these
    #: columns (instead of being quarantined); the others are counted as duplicates_dropped
    dedupe_order: tuple[str, ...] = ()
    #: default incremental cursor (a timestamp column) and lookback in hours
    cursor: str | None = None
    lookback_hours: float = 24.0
    analytics: tuple[Analytic, ...] = ()
    quality: Quality | None = None
    #: healthetl.datasets.nested.Nested: records of nested JSON flattened into child tables
    nested: Any = None
    #: an integer id generated by the database (identity); primary_key is then the natural key
    generated_id: str | None = None
    lookups: tuple[Lookup, ...] = ()
    #: source columns this dataset deliberately does not load (not reported as drift)
    unused: tuple[str, ...] = ()

    @property
    def stored_names(self) -> list[str]:
        """The columns the table has (generated id aside)."""
        return [c.name for c in self.columns if c.stored]

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
        targets = {target for target, _ in self.references.values()} | {lk.dataset for lk in self.lookups}
        return targets - {self.name}

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
        if isinstance(value, str) and value[:1] in ("\x00", "\x01"):
            value = value[1:]  # a lookup marker carries the key it could not resolve
        shown = _fmt(value) if self.shows_value else ""
        return self.template.format(column=self.column, value=shown, detail=self.detail)


def _fmt(value: Any) -> str:
    return "" if value is None else f" {str(value)!r}"


class KeyTracker:
    """Keys already accepted in this run, across chunks, to report later duplicates.

    Arrow arrays merged like a binary counter (up to MERGE_LIMIT keys each): few arrays to
    probe, each probe hashes only the (small) new batch, and memory is the keys themselves.
    Past ``HEALTHETL_KEYS_IN_MEMORY`` keys (default 500,000, about 6 MB) the arrays move to a
    scratch SQLite file (``keyspill.KeySpill``), so a run's memory stays flat in its row count.
    """

    #: arrays stop merging at this many keys, so a merge never copies more than this
    MERGE_LIMIT = 1 << 20

    def __init__(self, in_memory: int | None = None) -> None:
        self._levels: list[pyarrow.Array] = []
        self._held = 0
        self._limit = in_memory if in_memory is not None else keys_in_memory()
        self._spill: KeySpill | None = None

    @property
    def spilled(self) -> int:
        """Keys moved to disk so far."""
        return self._spill.keys if self._spill is not None else 0

    def duplicated(self, keys: pd.Series) -> pd.Series:
        dup = keys.duplicated(keep="first").to_numpy()
        if self._levels or self._spill is not None:
            chunk = checks.as_arrow(keys)
            for seen in self._levels:
                hits = pc.filter(seen, pc.is_in(seen, value_set=chunk))
                if len(hits):
                    found = pc.is_in(chunk, value_set=hits)
                    dup = dup | pc.fill_null(found, False).to_numpy(zero_copy_only=False)
            if self._spill is not None:
                dup = dup | self._spill.contains(chunk)
        return pd.Series(dup, index=keys.index)

    def add(self, keys: pd.Series) -> None:
        fresh = checks.as_arrow(keys.dropna())
        if not len(fresh):
            return
        self._levels.append(fresh)
        self._held += len(fresh)
        while (
            len(self._levels) > 1
            and len(self._levels[-2]) <= len(self._levels[-1])
            and len(self._levels[-2]) + len(self._levels[-1]) <= self.MERGE_LIMIT
        ):
            last = self._levels.pop()
            self._levels[-1] = pyarrow.concat_arrays([self._levels[-1], last])
        if self._held > self._limit:
            if self._spill is None:
                self._spill = KeySpill()
            while self._levels:  # a level at a time: no copy of them all at once
                self._spill.add(self._levels.pop())
            self._held = 0
            pyarrow.default_memory_pool().release_unused()  # give the levels' pages back

    def close(self) -> None:
        """Remove the scratch file, if the run needed one."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def keys_in_memory() -> int:
    raw = os.environ.get("HEALTHETL_KEYS_IN_MEMORY", "500000")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"HEALTHETL_KEYS_IN_MEMORY must be a whole number of keys, not {raw!r}") from None
    if value < 1:
        raise ConfigError("HEALTHETL_KEYS_IN_MEMORY must be positive")
    return value


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
    #: key columns -> tracker of the values accepted so far in this run
    trackers: list[tuple[tuple[str, ...], KeyTracker]]
    #: reference checks that could not run (no database given)
    skipped: list[str]


def _key_lookup(known: pd.Index) -> Callable[[pd.Series], pd.Series]:
    """Membership in a parent's keys through the index's hash table, built once per run:
    ``Series.isin`` hashes all the keys again for every batch (a million keys: seconds a batch)."""
    keys = known if known.is_unique else known.unique()

    def check(values: pd.Series) -> pd.Series:
        return pd.Series(keys.get_indexer(values) >= 0, index=values.index)

    return check


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


_TYPE_CHECKS: dict[str, tuple[str, str, Callable[[pd.Series], pd.Series]]] = {
    "integer": (
        "integer",
        "{column}{value} is not an integer",
        lambda s: s.str.fullmatch(checks.INTEGER_PATTERN).fillna(False) | s.isna(),
    ),
    "float": (
        "number",
        "{column}{value} is not a number",
        lambda s: s.str.fullmatch(checks.FLOAT_PATTERN).fillna(False) | s.isna(),
    ),
    "decimal": (
        "number",
        "{column}{value} is not a decimal number",
        lambda s: s.str.fullmatch(checks.DECIMAL_PATTERN).fillna(False) | s.isna(),
    ),
    "boolean": ("boolean", "{column}{value} is not a yes/no value", lambda s: s.isin(["0", "1"]) | s.isna()),
    "date": (
        "date",
        "{column}{value} is not a real date in a recognised layout (YYYY-MM-DD, YYYY/MM/DD, MM/DD/YYYY)",
        lambda s: checks.is_real_date(s) | s.isna(),
    ),
    "timestamp": (
        "timestamp",
        "{column}{value} is not a real timestamp in a recognised layout",
        lambda s: checks.is_timestamp(s) | s.isna(),
    ),
    "phone": (
        "phone",
        "{column}{value} is not a valid phone number (with its country code, or in the pipeline's "
        "phone_country_code)",
        lambda s: checks.is_phone(s) | s.isna(),
    ),
}
#: in a LookupTable: this natural key matches more than one row
AMBIGUOUS = "\x01"  # a lookup key matching more than one row (and the prefix of its marked id)


@dataclass
class LookupTable:
    """The referenced rows a lookup can match: key tuple -> id (or AMBIGUOUS), and fetched values."""

    lookup: Lookup
    ids: dict[tuple[str, ...], str]
    fetched: dict[str, dict[tuple[str, ...], str | None]] = field(default_factory=dict)


def compile_dataset(  # noqa: C901 (over the limit before it was set; to split)
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
    rules: dict[tuple[str | None, int], Rule] = {}
    required_rules: dict[str, Rule] = {}
    pa_columns: dict[str, pa.Column] = {}
    skipped: list[str] = []
    aliases: dict[str, dict[str, str]] = {}

    for col in dataset.columns:
        col_checks: list[pa.Check] = []

        def rule(name: str, template: str, detail: str = "", _c: Column = col) -> Rule:
            return Rule(
                name, _c.name, _severity(options, dataset, _c, name), template, not _c.identifying, detail
            )

        def add(check: pa.Check, rule: Rule, _cc: list[pa.Check] = col_checks) -> None:
            rules[(rule.column, len(_cc))] = rule
            _cc.append(check)

        if col.required:
            required_rules[col.name] = Rule(
                "required",
                col.name,
                _severity(options, dataset, col, "required"),
                "{column} is missing",
            )
        looked_up = any(lk.column == col.name for lk in dataset.lookups)
        if col.type in _TYPE_CHECKS and not looked_up:  # a looked-up id comes from the database
            name, template, fn = _TYPE_CHECKS[col.type]
            add(
                pa.Check(fn, element_wise=False, ignore_na=False, name=f"healthetl_{name}"),
                rule(name, template),
            )
        typed = _TYPE_CHECKS[col.type][2] if col.type in _TYPE_CHECKS else None
        if col.type == "date":
            window = options.date_window.get(col.name) or col.date_window
            if window:
                lo, hi = (checks.resolve_bound(b) for b in window)
                add(
                    pa.Check(_window_check(lo, hi), element_wise=False, name="healthetl_date_window"),
                    rule(
                        "date_window",
                        "{column}{value} is outside the plausible window {detail}",
                        f"{lo}..{hi}",
                    ),
                )
        if col.minimum is not None or col.maximum is not None:
            add(
                pa.Check(_range_check(col, typed), element_wise=False, name="healthetl_range"),
                rule(
                    "range",
                    "{column}{value} is outside {detail}",
                    f"{_bound(col.minimum)}..{_bound(col.maximum)}",
                ),
            )
        if col.pattern:
            add(
                pa.Check.str_matches(f"^(?:{col.pattern})$"),
                rule("pattern", "{column}{value} does not match {detail}", col.pattern),
            )
        if col.vocabulary:
            allowed = list(col.vocabulary)
            aliases[col.name] = checks.alias_table(col.vocabulary)
            add(
                pa.Check.isin(allowed),
                rule("vocabulary", "unknown {column}{value} (expected one of {detail})", ", ".join(allowed)),
            )
        lookup = next((lk for lk in dataset.lookups if lk.column == col.name), None)
        if lookup is not None and col.name not in (lookups or {}):
            skipped.append(f"{col.name} by {', '.join(lookup.on)} -> {lookup.dataset}")
        elif lookup is not None:
            keys = ", ".join(lookup.on)
            shown = all(not dataset.column(c).identifying for c in lookup.on)
            add(
                pa.Check(
                    lambda s: ~s.str.startswith(UNRESOLVED).fillna(False),
                    element_wise=False,
                    name="healthetl_reference",
                ),
                Rule(
                    "reference",
                    col.name,
                    _severity(options, dataset, col, "reference"),
                    f"no {lookup.dataset} matches {keys}" + ("{value}" if shown else ""),
                    shown,
                ),
            )
            add(
                pa.Check(
                    lambda s: ~s.str.startswith(AMBIGUOUS).fillna(False),
                    element_wise=False,
                    name="healthetl_ambiguous",
                ),
                Rule(
                    "ambiguous_reference",
                    col.name,
                    _severity(options, dataset, col, "ambiguous_reference"),
                    f"more than one {lookup.dataset} matches {keys}" + ("{value}" if shown else ""),
                    shown,
                ),
            )
        if col.references and lookup is None:
            known = (known_keys or {}).get(col.name)
            if known is None:
                skipped.append(f"{col.name} -> {col.references}")
            else:
                add(
                    pa.Check(_key_lookup(known), name="healthetl_foreign_key"),
                    rule("foreign_key", "unknown {column}{value}"),
                )
        pa_columns[col.name] = pa.Column(
            "str", checks=col_checks, nullable=not col.required, required=True, coerce=False
        )

    frame_checks: list[pa.Check] = []
    trackers: list[tuple[tuple[str, ...], KeyTracker]] = []

    def add_frame(check: pa.Check, rule: Rule) -> None:
        rules[(None, len(frame_checks))] = rule
        frame_checks.append(check)

    unique_sets: list[tuple[tuple[str, ...], str]] = []
    if dataset.primary_key and not dataset.dedupe_order:  # else: resolved by order, not an error
        unique_sets.append((dataset.primary_key, "duplicate_key"))
    unique_sets += [
        ((c.name,), "unique") for c in dataset.columns if c.unique and (c.name,) != dataset.primary_key
    ]
    for key_cols, rule_name in unique_sets:
        tracker = KeyTracker()
        trackers.append((key_cols, tracker))
        shows = all(not dataset.column(c).identifying for c in key_cols)
        add_frame(
            pa.Check(_unique_check(key_cols, tracker), name=f"healthetl_{rule_name}"),
            Rule(
                rule_name,
                ",".join(key_cols),
                _severity(
                    options, dataset, dataset.column(key_cols[0]) if len(key_cols) == 1 else None, rule_name
                ),
                "duplicate {column}{value}: an earlier row in this run has the same value",
                shows,
            ),
        )
    for cmp in dataset.compares:
        add_frame(
            pa.Check(_compare_check(dataset, cmp), name=f"healthetl_compare_{cmp.name}"),
            Rule(
                cmp.name,
                cmp.column,
                _severity_named(options, dataset, cmp),
                "{detail}",
                False,
                cmp.description or _describe_compare(cmp),
            ),
        )

    schema = pa.DataFrameSchema(pa_columns, checks=frame_checks, strict=False, coerce=False)
    standardise = _standardiser(dataset, options, aliases, lookups or {})
    return CompiledDataset(dataset, schema, rules, required_rules, standardise, trackers, skipped)


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


def _unique_check(key_cols: tuple[str, ...], tracker: KeyTracker) -> Callable[[pd.DataFrame], pd.Series]:
    def healthetl_unique(frame: pd.DataFrame) -> pd.Series:
        keys = key_series(frame, key_cols)
        return ~(tracker.duplicated(keys) & keys.notna())

    return healthetl_unique


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def comparable(column: Column, s: pd.Series) -> pd.Series:
    """Values that order correctly: numbers as floats, dates and timestamps as ISO text
    (a timestamp compared with a date compares its day)."""
    if column.type in ("integer", "float", "decimal", "boolean"):
        return checks.numbers(s)
    return s


def _compare_check(dataset: Dataset, cmp: Compare) -> Callable[[pd.DataFrame], pd.Series]:
    left_col = dataset.column(cmp.column)
    right_col = dataset.column(cmp.other) if cmp.other else None

    def healthetl_compare(frame: pd.DataFrame) -> pd.Series:
        left = comparable(left_col, frame[cmp.column])
        if right_col is not None:
            right = comparable(right_col, frame[right_col.name])
            if {left_col.type, right_col.type} == {"date", "timestamp"}:
                left, right = left.str.slice(0, 10), right.str.slice(0, 10)
        else:
            right = pd.Series(cmp.value, index=frame.index)
            if left_col.type in ("integer", "float", "decimal", "boolean"):
                right = right.astype(float)
        result = _OPS[cmp.op](left, right)
        return (result.fillna(False).astype(bool)) | left.isna() | right.isna()

    return healthetl_compare


def _range_check(
    col: Column, typed: Callable[[pd.Series], pd.Series] | None
) -> Callable[[pd.Series], pd.Series]:
    def healthetl_range(s: pd.Series) -> pd.Series:
        well_typed = typed(s) if typed is not None else pd.Series(True, index=s.index)
        values = comparable(col, s)
        ok = pd.Series(True, index=s.index)
        if col.minimum is not None:
            ok &= (values >= col.minimum).fillna(False)
        if col.maximum is not None:
            ok &= (values <= col.maximum).fillna(False)
        # only judges values of the right type; the type check reports the others
        return ok | ~well_typed.astype(bool) | s.isna()

    return healthetl_range


def _window_check(lo: str, hi: str) -> Callable[[pd.Series], pd.Series]:
    def healthetl_window(s: pd.Series) -> pd.Series:
        # only judges well-formed dates; the date check reports the others
        return ~checks.is_iso_shaped(s) | ((s >= lo) & (s <= hi))

    return healthetl_window


UNRESOLVED = "\x00"  # prefix of a lookup id that matched nothing (followed by the key)


def _default(col: Column) -> str:
    assert col.default is not None
    return checks.resolve_bound(col.default) if col.default.startswith("today") else col.default


def _apply_lookups(frame: pd.DataFrame, lookups: Mapping[str, LookupTable]) -> pd.DataFrame:
    """Fill each lookup's id column from the referenced rows' natural keys. A key that matches
    nothing, or several rows, leaves a marker (with the key, for the reason) that the reference
    checks reject; a row with a key column missing gets no id (the required rule reports it)."""
    for column, table in lookups.items():
        on = list(table.lookup.on)
        if not all(c in frame.columns for c in on):
            continue
        present = pd.concat([frame[c].notna() for c in on], axis=1).all(axis=1).tolist()
        raw = list(zip(*[frame[c].tolist() for c in on], strict=True))
        keys = list(zip(*[checks.lookup_key(frame[c]).tolist() for c in on], strict=True))
        ids: list[str | None] = []
        for key, shown, ok in zip(keys, raw, present, strict=True):
            if not ok:
                ids.append(None)
                continue
            found = table.ids.get(key)
            text = ", ".join(str(v) for v in shown)
            if found is None:
                ids.append(UNRESOLVED + text)
            elif found == AMBIGUOUS:
                ids.append(AMBIGUOUS + text)
            else:
                ids.append(found)
        frame[column] = pd.Series(ids, index=frame.index, dtype="str")
        for new in table.lookup.fetch:
            values = table.fetched.get(new, {})
            frame[new] = pd.Series(
                [values.get(k) if ok else None for k, ok in zip(keys, present, strict=True)],
                index=frame.index,
                dtype="str",
            )
    return frame


def _standardiser(  # noqa: C901 (over the limit before it was set; to split)
    dataset: Dataset,
    options: PipelineOptions,
    aliases: Mapping[str, Mapping[str, str]],
    lookups: Mapping[str, LookupTable],
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    renames = {normalise_source(k): v for k, v in dataset.renames.items()}

    def standardise(frame: pd.DataFrame) -> pd.DataFrame:  # noqa: C901 (over the limit before it was set; to split)
        mapping = {c: renames[c] for c in frame.columns if c in renames and renames[c] not in frame}
        frame = frame.rename(columns=mapping)
        out: dict[str, pd.Series] = {}
        for col in dataset.columns:
            if col.name not in frame.columns:
                if col.default is not None:
                    out[col.name] = pd.Series(_default(col), index=frame.index, dtype="str")
                elif not col.required:  # an optional column may be absent from a file
                    out[col.name] = pd.Series(pd.NA, index=frame.index, dtype="str")
                continue
            s = frame[col.name]
            if col.default is not None:
                s = checks.blank_to_na(s).fillna(_default(col))
            if col.value_map:
                s = checks.apply_value_map(s, col.value_map)
            if col.type == "integer":
                s = checks.standardise_integer(s)
            elif col.type in ("float", "decimal"):
                s = checks.standardise_number(s)
            elif col.type == "boolean":
                s = checks.standardise_boolean(s)
            elif col.type == "date":
                s = checks.standardise_date(s, options.date_order)
            elif col.type == "timestamp":
                s = checks.standardise_timestamp(s, options.timezone, options.date_order)
            elif col.type == "phone":
                s = checks.standardise_phone(s, options.phone_country_code)
            elif col.name in aliases:
                s = checks.standardise_vocabulary(s, aliases[col.name])
            else:
                s = checks.blank_to_na(s)
            out[col.name] = s
        result = pd.DataFrame(out, index=frame.index)
        if lookups:
            result = _apply_lookups(result, lookups)
        if dataset.transform is not None:
            result = dataset.transform(result)
        return result

    return standardise


def typed_frame(dataset: Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical text of validated rows as pandas types, for user pandera models:
    integers Int64, numbers Float64, booleans boolean, dates and timestamps datetime64
    (timestamps in UTC), text str."""
    out: dict[str, pd.Series] = {}
    for col in dataset.columns:
        if col.name not in frame.columns:
            continue
        s = frame[col.name]
        if col.type == "integer":
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("Int64")
        elif col.type in ("float", "decimal"):
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("Float64")
        elif col.type == "boolean":
            out[col.name] = s.map({"1": True, "0": False}).astype("boolean")
        elif col.type == "date":
            out[col.name] = pd.to_datetime(s, format="%Y-%m-%d", errors="coerce")
        elif col.type == "timestamp":
            out[col.name] = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
        else:
            out[col.name] = s
    extra = [c for c in frame.columns if c not in out]
    result = pd.DataFrame(out, index=frame.index)
    for c in extra:
        result[c] = frame[c]
    return result


def normalise_source(name: str) -> str:
    from healthetl.sources.readers import normalise_name

    return normalise_name(name)


# ---------------------------------------------------------------------------------------------
# Tables


def table_for(dataset: Dataset, metadata: sa.MetaData, registry: Mapping[str, Dataset]) -> sa.Table:
    """The SQLAlchemy table of a dataset (Alembic migrates it; nothing here creates it)."""
    cols: list[sa.schema.SchemaItem] = []
    if dataset.generated_id:
        cols.append(
            sa.Column(
                dataset.generated_id,
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                sa.Identity(),
                primary_key=True,
                comment="generated id",
            )
        )
    for c in dataset.columns:
        if not c.stored:
            continue
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
    if dataset.primary_key and dataset.generated_id:
        cols.append(sa.UniqueConstraint(*dataset.primary_key, name=f"uq_{dataset.table}_natural_key"))
    elif dataset.primary_key:
        cols.append(sa.PrimaryKeyConstraint(*dataset.primary_key))
    for c in dataset.columns:  # a unique column holds across loads, not just within one run
        if c.unique and c.stored and (c.name,) != tuple(dataset.primary_key):
            cols.append(sa.UniqueConstraint(c.name, name=f"uq_{dataset.table}_{c.name}"))
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
    table = sa.Table(dataset.table, metadata, *cols, comment=dataset.description or None)
    for column in dataset.references:  # a parent's delete or key change checks children by index
        if not _leads_an_index(dataset, column):
            sa.Index(f"ix_{dataset.table}_{column}", table.c[column])
    return table


def _leads_an_index(dataset: Dataset, column: str) -> bool:
    """The column starts the primary key or is unique: its constraint's index serves lookups."""
    if dataset.primary_key and dataset.primary_key[0] == column:
        return True
    return any(c.name == column and c.unique for c in dataset.columns)


def raw_table_for(dataset: Dataset, metadata: sa.MetaData) -> sa.Table | None:
    """The raw layer: the values as received (text), with their lineage. Append-only."""
    if not dataset.raw_table:
        return None
    cols: list[sa.schema.SchemaItem] = [
        sa.Column(
            "raw_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("source_file", sa.Text, nullable=False),
        sa.Column("source_row", sa.BigInteger, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("extracted_at", sa.DateTime(timezone=True), nullable=False),
    ]
    cols += [sa.Column(c.name, sa.Text, nullable=True) for c in dataset.columns]
    table = sa.Table(
        dataset.raw_table,
        metadata,
        *cols,
        comment=f"Raw layer of {dataset.name}: every batch as received, never changed.",
    )
    sa.Index(f"ix_{dataset.raw_table}_run_id", table.c.run_id)
    sa.Index(f"ix_{dataset.raw_table}_file_sha256", table.c.file_sha256)
    return table


def analytic_tables_for(dataset: Dataset, metadata: sa.MetaData) -> list[sa.Table]:
    tables = []
    for a in dataset.analytics:
        cols: list[sa.schema.SchemaItem] = [
            sa.Column(
                c.name,
                SA_TYPES[c.type](),
                nullable=not (c.required or c.name in a.key),
                comment=c.description or None,
            )
            for c in a.columns
        ]
        cols.append(sa.PrimaryKeyConstraint(*a.key))
        tables.append(sa.Table(a.table, metadata, *cols, comment=a.description or None))
    return tables
