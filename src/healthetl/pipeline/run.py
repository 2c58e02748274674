"""``healthetl run``: every stage for the project's pipelines, in dependency order."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog, catalog_for
from healthetl.config import Pipeline, Project
from healthetl.datasets import dependency_order
from healthetl.db import migrate
from healthetl.errors import SourceError, UsageError
from healthetl.pipeline.stages import LoadResult, Progress, _quiet, load


@dataclass
class RunResult:
    upgraded_from: tuple[str, ...] | None = None
    results: list[LoadResult] = field(default_factory=list)


def plan(
    project: Project, selected: list[str] | None = None, catalog: Catalog | None = None
) -> list[Pipeline]:
    """The pipelines to run, dependencies first (dataset references and ``depends_on``)."""
    if not project.pipelines:
        where = project.path or "the current folder"
        raise UsageError(
            f"no pipelines declared in {where}", hint="write a project file with `healthetl init`"
        )
    catalog = catalog or catalog_for(project)
    chosen = [project.pipeline(n) for n in selected] if selected else list(project.pipelines)
    by_dataset = {p.dataset: p.name for p in project.pipelines}
    deps: dict[str, set[str]] = {}
    for p in chosen:
        dataset = catalog.dataset(p.dataset)
        deps[p.name] = {by_dataset[d] for d in dataset.depends_on if d in by_dataset}
        deps[p.name] |= set(p.depends_on)
    names = dependency_order([p.name for p in chosen], deps)
    return [project.pipeline(n) for n in names]


def run(
    engine: Engine,
    project: Project,
    selected: list[str] | None = None,
    *,
    progress: Progress = _quiet,
) -> RunResult:
    catalog = catalog_for(project)
    pipelines = plan(project, selected, catalog)
    result = RunResult()
    with engine.connect() as conn:
        ready = migrate.at_head(conn, catalog)
    if not ready:
        before, after = migrate.upgrade(engine, catalog=catalog)
        result.upgraded_from = before
        progress("upgraded", {"from": before, "to": after})
    migrate.ensure_declarations_match(engine, catalog)
    for p in pipelines:
        dataset = catalog.dataset(p.dataset)
        sources = [str(s) for s in p.source_paths()]
        if not sources:
            raise SourceError(f"pipeline {p.name}: no file matches {p.source!r} in {p.base_dir}")
        result.results.append(
            load(
                engine,
                dataset,
                sources,
                p.options,
                mode=p.mode,
                pipeline=p.name,
                command="run",
                progress=progress,
                catalog=catalog,
            )
        )
    return result
