"""What a load reads: files (fingerprinted by content, skipped when already loaded), the raw
rows of an earlier run (``--from-raw``), or the rejects file of ``validate --rejects``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from healthetl.apispec import ApiSpec
from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.errors import UsageError
from healthetl.failures import FAILURE_COLUMNS, REJECTED, mark_rejected
from healthetl.ledger import files, pages
from healthetl.pipeline.extract import checked, frames_from
from healthetl.sources import SOURCE_FILE, SOURCE_ROW
from healthetl.sources.base import Source
from healthetl.sources.http import ApiSource, page_frames
from healthetl.sources.readers import normalise_name


class _NotAFile:
    """Rows that were not delivered as a file: nothing to check up front, no content to know
    them by (never skipped as already loaded, never archived, not kept in the raw layer)."""

    path: None = None

    def check(self) -> None:
        return None

    def fingerprint(self) -> str:
        return ""


@dataclass(frozen=True)
class RawRun(_NotAFile):
    """The rows an earlier run extracted, read again from the raw layer (``--from-raw``); they
    are read by :func:`frames_of`, inside the load's transaction."""

    run_id: str

    @property
    def label(self) -> str:
        return f"raw:{self.run_id}"

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        raise UsageError("raw rows are read inside the load's transaction (see frames_of)")


@dataclass(frozen=True)
class RejectsFile(_NotAFile):
    """The rejects file an earlier ``validate --rejects`` wrote: its rows are quarantined and
    counted by the load, not loaded."""

    rejects: str

    @property
    def label(self) -> str:
        return f"rejects:{self.rejects}"

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        return rejected_frames(self.rejects, options)


def rejected_frames(path: str, options: PipelineOptions) -> Iterator[pd.DataFrame]:
    """A rejects file (``validate --rejects``) as marked rows: one per rejected source row."""
    for frame in frames_from([path], options):
        missing = [c for c in FAILURE_COLUMNS if c not in frame.columns]
        if missing:
            raise UsageError(
                f"{path}: not a rejects file of `healthetl validate --rejects` "
                f"(missing column(s) {', '.join(missing)})"
            )
        failures = frame[FAILURE_COLUMNS]
        rows = pd.to_numeric(failures["source_row"], errors="coerce")
        if rows.isna().any():
            line = int(frame.loc[rows.isna(), SOURCE_ROW].iloc[0])
            raise UsageError(f"{path}, row {line}: source_row is not a row number")
        yield mark_rejected(failures.assign(source_row=rows.astype("int64")))


def raw_frames(
    conn: sa.Connection, table: sa.Table, run_id: str, dataset: Dataset, chunk_size: int
) -> Iterator[pd.DataFrame]:
    """The rows a run extracted, from the raw layer, as the text frames a reader yields."""
    cols = [table.c[c] for c in dataset.column_names]
    query = (
        sa.select(table.c.source_file.label(SOURCE_FILE), table.c.source_row.label(SOURCE_ROW), *cols)
        .where(table.c.run_id == run_id)
        .order_by(table.c.raw_id)
    )
    rows = conn.execute(query).all()
    if not rows:
        raise UsageError(f"the raw layer of {dataset.name} has no rows of run {run_id}")
    frame = pd.DataFrame(rows, columns=[SOURCE_FILE, SOURCE_ROW, *dataset.column_names])
    for c in frame.columns:
        frame[c] = frame[c].astype("int64") if c == SOURCE_ROW else frame[c].astype("str")
    for start in range(0, len(frame), chunk_size):
        yield frame.iloc[start : start + chunk_size].reset_index(drop=True)


def unseen(
    conn: sa.Connection,
    items: list[Source],
    raw_table: sa.Table | None,
    force: bool,
    skipped: list[tuple[str, str]],
    inbox: str | None = None,
) -> list[tuple[Source, str]]:
    """Files to read (with their sha256); a file the raw layer already holds, or that this
    inbox pipeline already loaded, is skipped (unless ``force``) and listed in ``skipped``
    with the run that loaded it."""
    todo: list[tuple[Source, str]] = []
    for item in items:
        item.check()
        if item.path is None or item.path == "-":  # a stream cannot be fingerprinted before it is read
            todo.append((item, item.fingerprint()))
            continue
        sha = item.fingerprint() if raw_table is not None or inbox else ""
        seen = None if force else files.loaded_by(conn, sha, raw_table=raw_table, inbox=inbox)
        if seen is not None:
            skipped.append((item.path, seen))
            continue
        todo.append((item, sha))
    return todo


@dataclass(frozen=True)
class ApiReplay(_NotAFile):
    """The pages an earlier run of an API pipeline fetched, read again from ``api_pages``
    (``--from-raw``): the run is replayed without calling the API."""

    run_id: str
    spec: ApiSpec

    @property
    def label(self) -> str:
        return f"raw:{self.run_id}"

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        raise UsageError("API pages are read inside the load's transaction (see frames_of)")


@dataclass(frozen=True)
class Reading:
    """What a source may need of the load reading it: the run, and the incremental window's
    start (an API's ``since`` parameter)."""

    run_id: str
    pipeline: str
    since: datetime | None = None


def frames_of(
    conn: sa.Connection,
    item: Source,
    dataset: Dataset,
    catalog: Catalog,
    options: PipelineOptions,
    reading: Reading,
) -> Iterable[pd.DataFrame]:
    """Files stream lazily; raw rows are read now, and an API's pages fetched and kept now,
    before the COPY thread owns the connection. A pipeline's ``rename``/``constants`` apply."""
    if isinstance(item, ApiSource | ApiReplay):
        api = fetched(conn, item, reading)
        return shaped(page_frames(api.pages, api.spec, options.chunk_size), options)
    if not isinstance(item, RawRun):
        return shaped(checked(item.frames(options)), options)
    table = catalog.raw_table(dataset)
    if table is None:
        raise UsageError(f"dataset {dataset.name} keeps no raw layer; --from-raw needs one")
    return list(raw_frames(conn, table, item.run_id, dataset, options.chunk_size))


def fetched(conn: sa.Connection, item: ApiSource | ApiReplay, reading: Reading) -> ApiSource:
    """An API's pages fetched now (or, ``--from-raw``, read back from the run that kept them) and
    kept under this run, in its transaction."""
    if isinstance(item, ApiReplay):
        kept = pages.read(conn, item.run_id)
        if not kept:
            raise UsageError(f"run {item.run_id} kept no API pages to replay")
        api = ApiSource(item.spec, reading.pipeline, pages=kept)
    else:
        api = item
        api.since = iso_utc(reading.since) if reading.since is not None else None
        api.pages = list(api.fetch())
    pages.write(conn, reading.run_id, reading.pipeline, api.pages)
    return api


def iso_utc(ts: datetime) -> str:
    """An API's incremental parameter: ISO 8601 in UTC, ``2025-01-05T03:00:00Z``."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ts.microsecond:06d}" if ts.microsecond else "") + "Z"


def shaped(frames: Iterable[pd.DataFrame], options: PipelineOptions) -> Iterator[pd.DataFrame]:
    """A pipeline's own column names mapped to the dataset's, and its constant columns added
    (several sources feeding one table), before the rules see the rows."""
    for frame in frames:
        if options.rename:
            frame = frame.rename(columns={normalise_name(k): v for k, v in options.rename.items()})
        for column, value in options.constants.items():
            frame[column] = pd.Series(value, index=frame.index, dtype="str")
        yield frame


def unmarked(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry values: a rejected row in a stream carries only its failures."""
    return frame.loc[frame[REJECTED].isna()] if REJECTED in frame.columns else frame


def renamed(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    renames = {k: v for k, v in dataset.renames.items() if k in frame.columns and v not in frame.columns}
    return frame.rename(columns=renames) if renames else frame
