"""``healthetl run``: every stage for the project's pipelines, in dependency order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import Pipeline, Project
from healthetl.datasets import dependency_order
from healthetl.datasets.spec import Dataset
from healthetl.db import drift, migrate
from healthetl.errors import UsageError
from healthetl.ledger import runs
from healthetl.pipeline.batch import load_batch
from healthetl.pipeline.inputs import ApiReplay, RawRun
from healthetl.pipeline.load import load
from healthetl.pipeline.validate import write_report
from healthetl.results import LoadResult, Progress, quiet
from healthetl.sources import discover, storage
from healthetl.sources.base import Source

if TYPE_CHECKING:
    from healthetl.pipeline.distributed.cluster import DaskCluster


@dataclass
class RunResult:
    upgraded_from: tuple[str, ...] | None = None
    results: list[LoadResult] = field(default_factory=list)
    failed: Exception | None = None
    #: pipeline -> files moved to its archive after the commit
    archived: dict[str, list[str]] = field(default_factory=dict)
    #: inbox pipelines whose inbox was empty: nothing to do is not a failure
    idle: list[str] = field(default_factory=list)


def plan(project: Project, catalog: Catalog, selected: list[str] | None = None) -> list[Pipeline]:
    """The pipelines to run, dependencies first (dataset references and ``depends_on``)."""
    if not project.pipelines:
        where = project.path or "the current folder"
        raise UsageError(
            f"no pipelines declared in {where}", hint="write a project file with `healthetl init`"
        )
    chosen = [project.pipeline(n) for n in selected] if selected else list(project.pipelines)
    by_dataset = {p.dataset: p.name for p in project.pipelines}
    deps: dict[str, set[str]] = {}
    for p in chosen:
        names = list(p.datasets) or [p.dataset]
        for ds in names:
            catalog.dataset(ds)  # unknown datasets are usage errors, before anything runs
        needed = set().union(*(catalog.dataset(ds).depends_on for ds in names)) - set(names)
        deps[p.name] = {by_dataset[d] for d in needed if d in by_dataset}
        deps[p.name] |= set(p.depends_on)
    names = dependency_order([p.name for p in chosen], deps)
    return [project.pipeline(n) for n in names]


def run(
    engine: Engine,
    project: Project,
    selected: list[str] | None = None,
    *,
    catalog: Catalog,
    progress: Progress = quiet,
    force: bool = False,
    full_refresh: bool = False,
    from_raw: str | None = None,
    report_path: Path | None = None,
    snapshot_date: str | None = None,
    cluster: DaskCluster | None = None,
) -> RunResult:
    """Every selected pipeline, dependencies first. ``from_raw`` reprocesses the raw rows of
    one earlier run (its pipeline only) instead of reading the sources. ``cluster``: flat
    datasets are validated and staged by its workers (``--engine dask``)."""
    if from_raw is not None:
        selected = [_pipeline_of_run(engine, from_raw)]
    pipelines = plan(project, catalog, selected)
    if snapshot_date is not None:  # --snapshot-date: for records that carry no date of their own
        pipelines = [replace(p, options=replace(p.options, snapshot_date=snapshot_date)) for p in pipelines]
    batches = [p.name for p in pipelines if p.datasets]
    if from_raw is not None and batches:
        raise UsageError(
            f"--from-raw reprocesses one dataset's raw layer; pipeline {batches[0]} loads several "
            "datasets as one batch",
            hint="run it again from its files (--force loads files it already loaded)",
        )
    result = RunResult()
    _migrate(engine, catalog, result, progress)
    try:
        for p in pipelines:
            inbox = p.archive is not None and from_raw is None
            if inbox and not _inbox_has_files(p):
                result.idle.append(p.name)
                progress("idle", {"pipeline": p.name})
                continue
            loaded = _load_pipeline(engine, p, catalog, progress, force, full_refresh, from_raw, cluster)
            result.results.append(loaded)
            if inbox:
                result.archived[p.name] = archive(p, loaded)
    except Exception as exc:  # the report names why the run stopped, whatever stopped it
        result.failed = exc
        raise
    finally:
        if report_path is not None:
            reports = [r.report() for r in result.results]
            write_report(report_path, {"pipelines": reports, "error": str(result.failed or "") or None})
    return result


def _load_pipeline(
    engine: Engine,
    p: Pipeline,
    catalog: Catalog,
    progress: Progress,
    force: bool,
    full_refresh: bool,
    from_raw: str | None,
    cluster: DaskCluster | None = None,
) -> LoadResult:
    """One pipeline's load: a batch of several datasets, or one dataset's sources (its files, or
    the raw rows of run ``from_raw``)."""
    if p.datasets:
        return _batch(engine, p, catalog, progress, force, full_refresh, cluster)
    sources: list[Source] = list(discover.discover(p)) if from_raw is None else [_replay(p, from_raw)]
    return load(
        engine,
        catalog.dataset(p.dataset),
        sources,
        p.options,
        mode=p.mode,
        pipeline=p.name,
        command="run",
        progress=progress,
        catalog=catalog,
        force=force,
        full_refresh=full_refresh,
        inbox=p.archive is not None and from_raw is None,
        cluster=cluster,
    )


def _replay(p: Pipeline, run_id: str) -> Source:
    """``--from-raw``: the raw rows of that run, or the pages an API pipeline's run kept."""
    return ApiReplay(run_id, p.api) if p.api is not None else RawRun(run_id)


def _migrate(engine: Engine, catalog: Catalog, result: RunResult, progress: Progress) -> None:
    """Bring the database to the catalog's head first, and refuse tables that differ from their
    declarations."""
    with engine.connect() as conn:
        ready = migrate.at_head(conn, catalog)
    if not ready:
        before, after = migrate.upgrade(engine, catalog=catalog)
        result.upgraded_from = before
        progress("upgraded", {"from": before, "to": after})
    drift.ensure_declarations_match(engine, catalog)


def _inbox_has_files(p: Pipeline) -> bool:
    if p.datasets:
        return any(discover.dataset_sources(p).values())
    return bool(discover.pipeline_sources(p))


def _batch(
    engine: Engine,
    p: Pipeline,
    catalog: Catalog,
    progress: Progress,
    force: bool,
    full_refresh: bool,
    cluster: DaskCluster | None = None,
) -> LoadResult:
    """A pipeline of several related datasets: each dataset's files, dependencies first, in one
    transaction."""
    files = discover.discover_datasets(p)
    unused = discover.left_out(p, files)
    if unused:
        progress("left_out", {"pipeline": p.name, "files": unused})
    deps = {ds: catalog.dataset(ds).depends_on & set(files) for ds in files}
    order = dependency_order(list(files), deps)
    steps: list[tuple[Dataset, list[Source]]] = [
        (catalog.dataset(ds), list(files[ds])) for ds in order if files[ds]
    ]
    return load_batch(
        engine,
        steps,
        p.options,
        pipeline=p.name,
        catalog=catalog,
        progress=progress,
        force=force,
        full_refresh=full_refresh,
        inbox=p.archive is not None,
        cluster=cluster,
    )


def _pipeline_of_run(engine: Engine, run_id: str) -> str:
    pipeline = runs.pipeline_of(engine, run_id)
    if pipeline is None:
        raise UsageError(f"no run {run_id!r} in the ledger", hint="see `healthetl state runs`")
    return pipeline


def archive(pipeline: Pipeline, loaded: LoadResult) -> list[str]:
    """Move the files of a committed load (and re-delivered ones it skipped) to the archive.

    Called only after the load committed; a failed load raised before and left its files."""
    import shutil
    from datetime import UTC, datetime

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    paths = [p for p, _ in loaded.files] + [p for p, _ in loaded.skipped_files]
    if pipeline.remote:
        return _archive_objects(pipeline, paths, day)
    target = pipeline.archive_dir(day)
    assert target is not None
    moved = []
    for path in paths:
        source = Path(path)
        if not source.exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        dest = target / source.name
        n = 1
        while dest.exists():  # never overwrite an archived file
            dest = target / f"{source.stem}.{n}{source.suffix}"
            n += 1
        if source.is_symlink():  # archive what was loaded, not a link that would dangle there
            shutil.copy2(source.resolve(), dest)
            source.unlink()
        else:
            shutil.move(str(source), dest)
        moved.append(str(dest))
    return moved


def _archive_objects(pipeline: Pipeline, urls: list[str], day: str) -> list[str]:
    """A bucket inbox: each loaded object copied under the archive prefix, then deleted (a store
    has no move); an object already gone is left out, an archived one is never overwritten."""
    target = pipeline.remote_archive(day)
    assert target is not None
    fs = storage.filesystem(pipeline.source, pipeline.storage)
    moved = []
    for url in urls:
        if not fs.exists(url):
            continue
        name = storage.file_name(url)
        stem, dot, suffix = name.partition(".")
        dest, n = f"{target}/{name}", 1
        while fs.exists(dest):
            dest, n = f"{target}/{stem}.{n}{dot}{suffix}", n + 1
        try:
            fs.copy(url, dest)
            fs.rm(url)
        except (OSError, ValueError) as exc:
            raise storage.remote_error(url, exc) from None
        moved.append(dest)
    return moved
