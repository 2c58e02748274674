"""A command's or an API call's working set: the project file, its catalog of datasets (built
once), and the database, resolved the same way everywhere (flag, HEALTHETL_DATABASE_URL,
healthetl.toml, the SQLite default)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog, catalog_for
from healthetl.config import PipelineOptions, Project, load_project, parse_delimiter, resolve_database_url
from healthetl.datasets.spec import Dataset
from healthetl.db import engine as db_engine
from healthetl.db import migrate
from healthetl.errors import UsageError


@dataclass
class Session:
    """What a command works with: the project, its catalog of datasets, and (maybe) a database."""

    project: Project
    catalog: Catalog
    engine: Engine | None = None
    url: str | None = None

    @property
    def db(self) -> Engine:
        assert self.engine is not None
        return self.engine


def open_project(config: Path | None) -> Session:
    project = load_project(config)
    return Session(project, catalog_for(project))


def open_database(
    db: str | None, config: Path | None, *, must_exist: bool = False, at_head: bool = False
) -> Session:
    return attach_database(open_project(config), db, must_exist=must_exist, at_head=at_head)


def attach_database(
    session: Session, db: str | None, *, must_exist: bool = False, at_head: bool = False
) -> Session:
    """Connect a session to its database (``db``, else the environment, the project file, the
    SQLite default); with ``at_head``, refuse one that is not migrated to the catalog's head."""
    url = resolve_database_url(db, session.project)
    engine = db_engine.create(url, must_exist=must_exist)
    db_engine.check_connection(engine)
    if at_head:
        hint = f" --db {db_engine.mask_url(url)}" if db else ""
        migrate.ensure_at_head(engine, session.catalog, db_flag_hint=hint)
    session.engine, session.url = engine, url
    return session


def options_for(
    project: Project, dataset: Dataset, pipeline: str | None, sheet: str | None = None
) -> tuple[PipelineOptions, str | None]:
    """Options of the named pipeline, or of the project's only pipeline of this dataset."""
    chosen = None
    if pipeline:
        chosen = project.pipeline(pipeline)
        if chosen.dataset != dataset.name and dataset.name not in chosen.datasets:
            loads = ", ".join(chosen.datasets) if chosen.datasets else chosen.dataset
            raise UsageError(f"pipeline {pipeline!r} loads {loads}, not {dataset.name!r}")
    else:
        # a pipeline of this dataset alone, or one that loads it with others (an inbox batch)
        matching = [p for p in project.pipelines if p.dataset == dataset.name or dataset.name in p.datasets]
        if len(matching) == 1:
            chosen = matching[0]
    options = chosen.options if chosen else PipelineOptions()
    if sheet is not None:
        options = replace(options, sheet=sheet)
    return options, (chosen.name if chosen else None)


def reading(
    options: PipelineOptions,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    quote: str | None = None,
    snapshot_date: str | None = None,
) -> PipelineOptions:
    """Reading settings given for one call (command-line flags) over the pipeline's."""
    if encoding is not None:
        options = replace(options, encoding=encoding)
    if delimiter is not None:
        options = replace(options, delimiter=parse_delimiter(delimiter, "--delimiter"))
    if quote is not None:
        if len(quote) != 1:
            raise UsageError(f"--quote must be one character, not {quote!r}")
        options = replace(options, quote=quote)
    if check_snapshot_date(snapshot_date) is not None:
        options = replace(options, snapshot_date=snapshot_date)
    return options


def check_snapshot_date(value: str | None) -> str | None:
    """``--snapshot-date``: a calendar date, YYYY-MM-DD."""
    if value is not None:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"--snapshot-date must be YYYY-MM-DD, not {value!r}") from None
    return value
