"""Settings resolved once, in one place: flag > HEALTHETL_* environment > healthetl.toml > default.

Relative paths in a project file (sources, a SQLite database) are resolved against the folder
that holds the project file, so ``healthetl run --config examples/x/healthetl.toml`` works from
anywhere.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from healthetl.apispec import ApiSpec, parse_api
from healthetl.errors import ConfigError, UsageError
from healthetl.fhir import file_patterns as fhir_file_patterns

PROJECT_FILE = "healthetl.toml"
DEFAULT_DATABASE_URL = "sqlite:///healthetl.db"
DATABASE_ENV = "HEALTHETL_DATABASE_URL"
LOAD_MODES = ("replace", "append", "merge")
SEVERITIES = ("error", "warning")
DRIFT_POLICIES = ("warn", "fail", "ignore")

_PIPELINE_KEYS = {
    "name",
    "dataset",
    "source",
    "sheet",
    "mode",
    "encoding",
    "date_order",
    "date_window",
    "severity",
    "depends_on",
    "chunk_size",
    "timezone",
    "cursor",
    "lookback_hours",
    "quality",
    "snapshot_date",
    "archive",
    "phone_country_code",
    "pseudonymise",
    "datasets",
    "delimiter",
    "quote",
    "drift",
    "storage",
    "api",
    "rename",
    "constants",
}
#: a remote source's [pipelines.storage]: where the store is, never a secret (credentials come
#: from the AWS environment/profile chain)
STORAGE_KEYS = {"endpoint_url", "region", "profile", "anon"}
_QUALITY_KEYS = {
    "required_null_rate",
    "invalid_date_rate",
    "null_rate",
    "row_count_drop",
    "freshness_hours",
    "allow_empty",
}


@dataclass(frozen=True)
class PipelineOptions:
    """Per-pipeline knobs that change how a dataset's rules are applied."""

    sheet: str | None = None
    encoding: str = "utf-8"
    date_order: str = "MDY"
    # column -> (min, max); each bound is an ISO date, "today", or "today+2y" / "today-90d"
    date_window: dict[str, tuple[str, str]] = field(default_factory=dict)
    # "column.rule" or "rule" -> "error" | "warning"
    severity: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 75_000
    #: how naive timestamps are read (stored as UTC)
    timezone: str = "UTC"
    #: incremental loads: the cursor column and lookback (default: the dataset's)
    cursor: str | None = None
    lookback_hours: float | None = None
    #: batch-level data-quality thresholds overriding the dataset's (see datasets.spec.Quality)
    quality: dict[str, Any] = field(default_factory=dict)
    #: nested snapshots: the date when neither the records nor the file names carry one
    snapshot_date: str | None = None
    #: phone numbers with a national leading 0 get this country code (E.164)
    phone_country_code: str | None = None
    #: CSV field separator (default: tab for .tsv, comma otherwise) and quote character
    delimiter: str | None = None
    quote: str = '"'
    #: a source that sends undeclared columns, lacks declared optional ones, or whose declared
    #: JSON paths match nothing: "warn" (reported), "fail" (nothing loaded, exit 1) or "ignore"
    drift: str = "warn"
    #: several sources, one table: this source's column -> the dataset's, and columns every row
    #: of this source gets (``source = "api"``), applied before the dataset's rules
    rename: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    #: store every identifying text column as a keyed pseudonym (healthetl.pseudonym)
    pseudonymise: bool = False


def is_remote(path: str) -> bool:
    """A URL with a scheme other than ``file``: ``s3://bucket/key``."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isalnum() and scheme.lower() != "file"


def parse_delimiter(value: object, where: str) -> str:
    """One character; ``tab`` and a written ``\\t`` mean a tab."""
    text = str(value)
    text = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}.get(text.lower(), text)
    if len(text) != 1 or text in ("\n", "\r"):
        raise ConfigError(f'{where}: delimiter must be one character (e.g. ";" or "\\t"), not {value!r}')
    return text


@dataclass(frozen=True)
class Pipeline:
    name: str
    dataset: str
    source: str
    mode: str | None
    depends_on: tuple[str, ...]
    options: PipelineOptions
    base_dir: Path
    #: inbox mode: after a committed load, move the files here ("{date}" = the run's day)
    archive: str | None = None
    #: several related datasets in one batch: dataset -> file pattern inside the source folder
    datasets: dict[str, str] = field(default_factory=dict)
    #: an object-store source's options (see STORAGE_KEYS)
    storage: dict[str, Any] = field(default_factory=dict)
    #: a paged HTTP JSON API instead of files (see healthetl.apispec)
    api: ApiSpec | None = None

    @property
    def remote(self) -> bool:
        """The source is a URL (``s3://bucket/prefix``), not a path on this machine."""
        return is_remote(self.source)

    def remote_archive(self, day: str = "{date}") -> str | None:
        """A remote inbox's archive as a URL: ``archive`` itself when it is one, otherwise a key
        prefix in the source's bucket (``archive/{date}`` -> ``s3://bucket/archive/{date}``)."""
        if not self.archive:
            return None
        archive = self.archive.replace("{date}", day)
        if "://" in archive:
            return archive.rstrip("/")
        scheme, _, rest = self.source.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}/{archive.strip('/')}"

    def archive_root(self) -> Path | None:
        """The folder every archived file goes under (the archive path up to ``{date}``)."""
        if not self.archive or self.remote:
            return None
        head = self.archive.split("{date}", 1)[0].rstrip("/") or "."
        folder = Path(head)
        return (folder if folder.is_absolute() else self.base_dir / folder).resolve()

    def archive_dir(self, day: str) -> Path | None:
        if not self.archive:
            return None
        folder = Path(self.archive.replace("{date}", day))
        return folder if folder.is_absolute() else self.base_dir / folder


@dataclass(frozen=True)
class Project:
    path: Path | None
    database_url: str | None
    pipelines: tuple[Pipeline, ...]
    #: the raw [[datasets]] tables; healthetl.datasets.declare turns them into datasets
    datasets: tuple[dict[str, Any], ...] = ()
    #: PostgreSQL role `healthetl query` switches to (one that may only SELECT)
    query_role: str | None = None
    #: [privacy] min_cell_count: person counts below it are suppressed (None: the default)
    min_cell_count: int | None = None

    @property
    def migrations_dir(self) -> Path:
        """The project's own Alembic revisions (tables of its declared datasets)."""
        return self.base_dir / "migrations"

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def pipeline(self, name: str) -> Pipeline:
        for p in self.pipelines:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.pipelines) or "none"
        raise UsageError(f"no pipeline named {name!r} in {self.path} (pipelines: {known})")


def parse_options(raw: dict[str, Any], where: str) -> PipelineOptions:
    """Validate the option keys shared by project files and command-line stages."""
    severity = {str(k): str(v) for k, v in (raw.get("severity") or {}).items()}
    for key, value in severity.items():
        if value not in SEVERITIES:
            raise ConfigError(f"{where}: severity.{key} must be one of {', '.join(SEVERITIES)}")
    date_order = str(raw.get("date_order", "MDY")).upper()
    if date_order not in ("MDY", "DMY"):
        raise ConfigError(f"{where}: date_order must be MDY or DMY, not {date_order!r}")
    chunk_size = int(raw.get("chunk_size", 75_000))
    if chunk_size < 1:
        raise ConfigError(f"{where}: chunk_size must be positive")
    lookback = raw.get("lookback_hours")
    if lookback is not None and (not isinstance(lookback, int | float) or lookback < 0):
        raise ConfigError(f"{where}: lookback_hours must be a non-negative number")
    timezone, snapshot = _timezone(raw, where), _snapshot_date(raw, where)
    delimiter = raw.get("delimiter")
    quote = str(raw.get("quote", '"'))
    if len(quote) != 1:
        raise ConfigError(f"{where}: quote must be one character, not {quote!r}")
    drift = str(raw.get("drift", "warn"))
    if drift not in DRIFT_POLICIES:
        raise ConfigError(f"{where}: drift must be one of {', '.join(DRIFT_POLICIES)}, not {drift!r}")
    country = raw.get("phone_country_code")
    if country is not None and not str(country).isdigit():
        raise ConfigError(f'{where}: phone_country_code must be digits, e.g. "234"')
    for key in ("rename", "constants"):
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(f'{where}: {key} must be a table of column = "value"')
    return PipelineOptions(
        rename={str(k): str(v) for k, v in raw.get("rename", {}).items()},
        constants={str(k): str(v) for k, v in raw.get("constants", {}).items()},
        drift=drift,
        delimiter=parse_delimiter(delimiter, where) if delimiter is not None else None,
        quote=quote,
        phone_country_code=str(country) if country is not None else None,
        pseudonymise=_flag(raw.get("pseudonymise", False), f"{where}: pseudonymise"),
        snapshot_date=snapshot,
        cursor=raw.get("cursor"),
        lookback_hours=float(lookback) if lookback is not None else None,
        quality=_quality(raw, where),
        timezone=timezone,
        sheet=raw.get("sheet"),
        encoding=str(raw.get("encoding", "utf-8")),
        date_order=date_order,
        date_window=_date_windows(raw, where),
        severity=severity,
        chunk_size=chunk_size,
    )


def _date_windows(raw: dict[str, Any], where: str) -> dict[str, tuple[str, str]]:
    from healthetl.cleaning import resolve_bound  # pandas: only for a project that sets windows

    window: dict[str, tuple[str, str]] = {}
    for column, bounds in (raw.get("date_window") or {}).items():
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise ConfigError(f"{where}: date_window.{column} must be [min, max]")
        for bound in bounds:
            try:
                resolve_bound(str(bound))
            except ValueError as exc:
                raise ConfigError(f"{where}: date_window.{column}: {exc}") from None
        window[str(column)] = (str(bounds[0]), str(bounds[1]))
    return window


def _quality(raw: dict[str, Any], where: str) -> dict[str, Any]:
    quality = raw.get("quality") or {}
    if not isinstance(quality, dict) or set(quality) - _QUALITY_KEYS:
        unknown = ", ".join(sorted(set(quality) - _QUALITY_KEYS)) if isinstance(quality, dict) else ""
        raise ConfigError(
            f"{where}: quality: unknown key(s) {unknown} (known: {', '.join(sorted(_QUALITY_KEYS))})"
        )
    for key, value in quality.items():
        if key == "allow_empty" and not isinstance(value, bool):
            raise ConfigError(f"{where}: quality.allow_empty must be true or false")
        if key == "null_rate" and not isinstance(value, dict):
            raise ConfigError(f"{where}: quality.null_rate must be a table of column = rate")
        if key not in ("allow_empty", "null_rate") and not isinstance(value, int | float):
            raise ConfigError(f"{where}: quality.{key} must be a number")
    return dict(quality)


def _timezone(raw: dict[str, Any], where: str) -> str:
    timezone = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except Exception:
        raise ConfigError(f"{where}: unknown timezone {timezone!r} (use an IANA name)") from None
    return timezone


def _snapshot_date(raw: dict[str, Any], where: str) -> str | None:
    snapshot = raw.get("snapshot_date")
    if snapshot is None:
        return None
    try:
        date.fromisoformat(str(snapshot))
    except ValueError:
        raise ConfigError(f"{where}: snapshot_date must be YYYY-MM-DD") from None
    return str(snapshot)


def load_project(config: Path | None = None) -> Project:
    """Read ``--config`` or ./healthetl.toml; with neither, an empty project in the cwd."""
    if config is None:
        candidate = Path.cwd() / PROJECT_FILE
        if not candidate.exists():
            return Project(path=None, database_url=None, pipelines=())
        config = candidate
    if not config.exists():
        raise ConfigError(f"project file {config} not found", hint="create one with `healthetl init`")
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{config}: cannot read: {exc.strerror}") from None
    base = config.resolve().parent

    db = data.get("database", {})
    url = db.get("url") if isinstance(db, dict) else None
    if url is not None:
        url = _anchor_sqlite(str(url), base)

    pipelines = [
        _pipeline(raw, f"{config}: pipeline #{i}", base)
        for i, raw in enumerate(data.get("pipelines", []), start=1)
    ]
    for p in pipelines:
        _check_archive(p, str(config))
    names = [p.name for p in pipelines]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{config}: pipeline names must be unique: {', '.join(sorted(dupes))}")
    raw_datasets = data.get("datasets", [])
    if not isinstance(raw_datasets, list) or not all(isinstance(d, dict) for d in raw_datasets):
        raise ConfigError(f"{config}: [[datasets]] must be an array of tables")
    role = db.get("query_role") if isinstance(db, dict) else None
    return Project(
        query_role=str(role) if role else None,
        min_cell_count=_min_cell_count(data.get("privacy", {}), str(config)),
        path=config.resolve(),
        database_url=url,
        pipelines=tuple(pipelines),
        datasets=tuple(raw_datasets),
    )


def _pipeline(raw: dict[str, Any], where: str, base: Path) -> Pipeline:
    unknown = set(raw) - _PIPELINE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    required = ("name", "source") if raw.get("datasets") else ("name", "dataset", "source")
    for key in required:
        if key not in raw and not (key == "source" and "api" in raw):
            raise ConfigError(f"{where}: missing required key {key!r}")
    api = parse_api(raw["api"], where) if "api" in raw else None
    if api is not None and ("source" in raw or raw.get("datasets") or raw.get("archive")):
        raise ConfigError(
            f"{where}: a pipeline reads an api or a source, not both (and an api has no archive)"
        )
    datasets = raw.get("datasets") or {}
    if datasets == "fhir":  # a FHIR Bulk Data export: every resource type to its dataset
        datasets = fhir_file_patterns()
    if not isinstance(datasets, dict) or not all(isinstance(v, str) for v in datasets.values()):
        raise ConfigError(
            f'{where}: datasets must be a table of dataset = "file pattern" (or "fhir" for a bulk export)'
        )
    mode = raw.get("mode")
    if mode is not None and mode not in LOAD_MODES:
        raise ConfigError(f"{where}: mode must be one of {', '.join(LOAD_MODES)}")
    depends = raw.get("depends_on", [])
    return Pipeline(
        name=str(raw["name"]),
        dataset=str(raw.get("dataset") or ("fhir" if raw.get("datasets") == "fhir" else "+".join(datasets))),
        source=str(raw["source"]) if api is None else api.endpoint,
        api=api,
        mode=mode,
        depends_on=tuple(depends if isinstance(depends, list) else [depends]),
        options=parse_options(raw, where),
        base_dir=base,
        archive=str(raw["archive"]) if raw.get("archive") else None,
        datasets={str(k): str(v) for k, v in datasets.items()},
        storage=_storage(raw, where),
    )


def _storage(raw: dict[str, Any], where: str) -> dict[str, Any]:
    storage = raw.get("storage") or {}
    if not isinstance(storage, dict) or set(storage) - STORAGE_KEYS:
        unknown = ", ".join(sorted(set(storage) - STORAGE_KEYS)) if isinstance(storage, dict) else ""
        raise ConfigError(
            f"{where}: storage: unknown key(s) {unknown} (known: {', '.join(sorted(STORAGE_KEYS))}); "
            "credentials come from the AWS environment or profile, never the project file"
        )
    return dict(storage)


def _check_archive(p: Pipeline, where: str) -> None:
    """An archive stays inside the project, and is neither the inbox itself nor above it
    (files would be excluded from every run, or archived into the inbox again forever)."""
    if p.remote:
        _check_remote_archive(p, where)
        return
    root = p.archive_root()
    if root is None:
        return
    base = p.base_dir.resolve()
    if root != base and base not in root.parents:
        raise ConfigError(f"{where}: pipeline {p.name}: archive {p.archive!r} leaves the project folder")
    source = Path(p.source)
    inbox = (source if source.is_absolute() else p.base_dir / source).resolve()
    if root == inbox or root in inbox.parents:
        raise ConfigError(
            f"{where}: pipeline {p.name}: archive {p.archive!r} is the inbox {p.source!r} or holds it; "
            'archive into a folder of its own, e.g. archive = "archive/{date}"'
        )


def _check_remote_archive(p: Pipeline, where: str) -> None:
    archive = p.remote_archive()
    if archive is None:
        return
    root = archive.split("{date}", 1)[0].rstrip("/")
    inbox = p.source.split("*", 1)[0].rstrip("/")
    if root == inbox or inbox.startswith(root + "/"):
        raise ConfigError(
            f"{where}: pipeline {p.name}: archive {p.archive!r} is the inbox {p.source!r} or holds it; "
            'archive under a prefix of its own, e.g. archive = "archive/{date}"'
        )


def _anchor_sqlite(url: str, base: Path) -> str:
    """A relative SQLite path in a project file is relative to that file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str(base / rest)
    return url


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _min_cell_count(privacy: Any, where: str) -> int | None:
    if not isinstance(privacy, dict):
        raise ConfigError(f"{where}: [privacy] must be a table")
    unknown = sorted(set(privacy) - {"min_cell_count"})
    if unknown:
        raise ConfigError(f"{where}: [privacy]: unknown key(s) {', '.join(unknown)} (min_cell_count)")
    value = privacy.get("min_cell_count")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: [privacy] min_cell_count must be a whole number, 0 or more")
    return value


def resolve_min_cell_count(flag: int | None, project: Project | None) -> int:
    """--min-cell-count > HEALTHETL_MIN_CELL_COUNT > [privacy] min_cell_count > 11."""
    from healthetl.privacy import DEFAULT_MIN_CELL

    if flag is not None:
        chosen = flag
    elif os.environ.get("HEALTHETL_MIN_CELL_COUNT"):
        text = os.environ["HEALTHETL_MIN_CELL_COUNT"]
        if not text.isdigit():
            raise ConfigError(f"HEALTHETL_MIN_CELL_COUNT must be a whole number, not {text!r}")
        chosen = int(text)
    elif project is not None and project.min_cell_count is not None:
        chosen = project.min_cell_count
    else:
        chosen = DEFAULT_MIN_CELL
    if chosen < 0:
        raise UsageError("--min-cell-count must be 0 or more")
    return chosen


def resolve_query_role(project: Project | None) -> str | None:
    """HEALTHETL_QUERY_ROLE > [database] query_role > none."""
    return os.environ.get("HEALTHETL_QUERY_ROLE") or (project.query_role if project else None)


def resolve_database_url(flag: str | None, project: Project | None) -> str:
    """--db flag > HEALTHETL_DATABASE_URL > healthetl.toml > sqlite:///healthetl.db (cwd)."""
    if flag:
        return flag
    env = os.environ.get(DATABASE_ENV)
    if env:
        return env
    if project is not None and project.database_url:
        return project.database_url
    return DEFAULT_DATABASE_URL


STARTER = """\
# healthetl project file. Every relative path here is relative to this file's folder.
# Run all pipelines with `healthetl run`, one with `healthetl run --pipeline NAME`.

[database]
# Precedence: --db flag > HEALTHETL_DATABASE_URL > this value > sqlite:///healthetl.db (cwd).
# PostgreSQL: url = "postgresql://user:password@host:5432/dbname"
url = "sqlite:///healthetl.db"

# One [[pipelines]] table per source. `healthetl dataset list` shows the datasets.
[[pipelines]]
name = "doctors"
dataset = "doctors"
source = "data/doctors.xlsx"      # a path or a glob (csv, csv.gz, xlsx, parquet, ndjson)
# sheet = "doctors"               # xlsx: defaults to the first sheet
# mode = "replace"                # replace | append | merge (upsert on the primary key)

[[pipelines]]
name = "appointments"
dataset = "appointments"
source = "data/appointments.xlsx"
# date_order = "MDY"              # how to read 03/04/2025: MDY (US) or DMY
# Dates outside [min, max] are quarantined; bounds are ISO dates or today+Ny / today-Nd.
[pipelines.date_window]
booking_date = ["2000-01-01", "today+2y"]
# Lower a rule to a warning (the row loads, the report counts it):
# [pipelines.severity]
# "booking_date.date_window" = "warning"
"""


def write_starter(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / PROJECT_FILE
    if target.exists():
        raise UsageError(f"{target} already exists; not overwriting it")
    target.write_text(STARTER, encoding="utf-8")
    return target
