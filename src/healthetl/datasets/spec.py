"""A dataset is one declaration: columns, keys, references, rules, table and named queries.

Built-in datasets (``doctors``, ``appointments``) are declared with exactly these classes, and
the stages only ever see a :class:`Dataset`: nothing downstream knows a dataset by name.

This module holds the declarations only. Beside it, their interpreters:
* :mod:`~healthetl.datasets.standardise`: how values are written (and lookups resolved),
* :mod:`~healthetl.datasets.rules`: the pandera schema (whether values are acceptable; the only
  place rules live) and what each rule means,
* :mod:`~healthetl.datasets.keys`: row keys and the duplicate tracker,
* :mod:`~healthetl.datasets.tables`: the SQLAlchemy tables Alembic migrates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import pandas as pd

from healthetl.codes import CODE_TYPES

ColumnType = Literal[
    "integer",
    "float",
    "decimal",
    "boolean",
    "text",
    "date",
    "timestamp",
    "phone",
    # clinical identifiers and codes (healthetl.codes), stored as text
    "npi",
    "icd10cm",
    "loinc",
    "snomed",
    "us_zip",
    "us_ssn",
    "mrn",
    "e164_phone",
]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)
assert set(CODE_TYPES) <= set(COLUMN_TYPES), "healthetl.codes.CODE_TYPES must be column types"
Severity = Literal["error", "warning"]


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
    #: stored as a keyed pseudonym (healthetl.pseudonym), not the value
    pseudonymise: bool = False


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
    #: result columns that count people: small counts are suppressed (healthetl.privacy)
    person_counts: tuple[str, ...] = ()

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
    #: healthetl.datasets.nesting.Nested: records of nested JSON flattened into child tables
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

    def pseudonymised(self, everything_identifying: bool = False) -> set[str]:
        """The columns stored as pseudonyms: those declared so, and with
        ``everything_identifying`` (a pipeline's ``pseudonymise = true``) every identifying
        stored column whose type holds text. Nested datasets keep their values."""
        if self.nested is not None:
            return set()
        from healthetl.pseudonym import TEXT_TYPES

        return {
            c.name
            for c in self.columns
            if c.pseudonymise or (everything_identifying and c.identifying and c.type in TEXT_TYPES)
        }

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def visible_fields(self) -> set[str]:
        """The fields of a row as received that may be shown: the declared columns that identify
        no one, under their own names and the source names renamed to them. Everything else
        (identifying columns, fields the dataset does not declare) is masked wherever a row is
        shown outside its table."""
        from healthetl.sources.frames import normalise_name

        visible = {c.name for c in self.columns if not c.identifying}
        return visible | {normalise_name(src) for src, target in self.renames.items() if target in visible}

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
