"""A batch: several related datasets (dependencies first) loaded in one transaction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.db import locks
from healthetl.pipeline.load import load_dataset
from healthetl.pipeline.transaction import absorb, execute, new_result
from healthetl.results import LoadResult, Progress, quiet
from healthetl.sources.base import Source

if TYPE_CHECKING:
    from healthetl.pipeline.distributed.cluster import DaskCluster


def load_batch(
    engine: Engine,
    steps: list[tuple[Dataset, list[Source]]],
    options: PipelineOptions,
    *,
    pipeline: str,
    catalog: Catalog,
    command: str = "run",
    progress: Progress = quiet,
    force: bool = False,
    full_refresh: bool = False,
    inbox: bool = False,
    report_path: Path | None = None,
    cluster: DaskCluster | None = None,
) -> LoadResult:
    """Several related datasets (dependencies first) in ONE transaction: a later dataset finds
    the rows an earlier one wrote by natural key, and a failure anywhere writes nothing."""
    labels = [i.label for _, items in steps for i in items]
    result = new_result(pipeline, "+".join(ds.name for ds, _ in steps), "merge", labels)

    def body(conn: sa.Connection) -> None:
        locks.lock_related(conn, [catalog.table(ds) for ds, _ in steps])
        for ds, items in steps:
            part = new_result(pipeline, ds.name, ds.default_mode, [i.label for i in items])
            part.run_id, part.spool, part.requarantine = result.run_id, result.spool, result.requarantine
            try:
                load_dataset(
                    conn,
                    ds,
                    catalog,
                    items,
                    options,
                    ds.default_mode,
                    part,
                    force=force,
                    full_refresh=full_refresh,
                    inbox=inbox,
                    progress=progress,
                    cluster=cluster,
                )
            finally:  # a failed part still counts (its rejects are kept, its checks reported)
                result.parts.append(part)
                absorb(result, part)

    try:
        return execute(
            engine, result, body, command=command, progress=progress, inbox=inbox, report_path=report_path
        )
    finally:
        if cluster is not None:
            cluster.cleanup(engine)
