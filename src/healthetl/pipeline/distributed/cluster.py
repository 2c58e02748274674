"""``--engine dask``: the per-partition work of a load on a Dask cluster, the rest in one transaction.

The coordinator (this process) cuts each source into partitions, and Dask runs
:func:`~healthetl.pipeline.distributed.worker.load_partition` on each, on whichever worker it
chooses, again elsewhere if a worker dies. Workers validate with the dataset's own rules and
COPY into the run's staging tables, with every row's keys. The coordinator then, inside the run's
one transaction: decides the run's duplicate keys over the staged keys (in the order of
partitions and rows, a local run's file order, by the local rule) and quarantines them under
the same rule and reason; writes the workers' failure records to the quarantine; and
hands the staged rows to the dataset's :class:`~healthetl.db.bulk.TableWriter`, which replaces,
appends or merges them exactly as for a local load. Counts, batch-level checks, watermark and
audit follow as for a local load. The staging tables are dropped once the transaction ended,
whichever way.

SQLite is refused: workers write their partitions concurrently, and SQLite has one writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import CancelledError
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.rules import Rule
from healthetl.datasets.spec import Dataset
from healthetl.datasets.standardise import LookupTable
from healthetl.db import bulk
from healthetl.db.engine import is_postgres
from healthetl.errors import HealthetlError, UsageError, first_line
from healthetl.failures import FAILURE_COLUMNS, json_lines
from healthetl.masking import mask_url
from healthetl.pipeline.distributed import staging
from healthetl.pipeline.distributed.staging import PART, ROW, Staging
from healthetl.pipeline.distributed.worker import Job, PartitionResult, load_partition
from healthetl.pipeline.quality import QualityTracker
from healthetl.pipeline.validator import Validator
from healthetl.results import LoadRun, Progress
from healthetl.sources.base import FileSource, ObjectSource, Source
from healthetl.sources.partitions import DEFAULT_SIZE, Partition, partitions
from healthetl.sources.storage import file_name

log = logging.getLogger("healthetl")

#: rows of cross-partition duplicates read back at a time
_FETCH = 50_000


class ClusterError(HealthetlError):
    """The Dask scheduler cannot be reached or the cluster cannot start."""


class DaskCluster:
    """A Dask client for the length of a ``run``: a ``LocalCluster`` of ``workers`` processes,
    or the scheduler at ``scheduler``."""

    def __init__(
        self, scheduler: str | None = None, workers: int | None = None, partition_size: int = DEFAULT_SIZE
    ) -> None:
        if scheduler is not None and workers is not None:
            raise UsageError("--scheduler and --workers exclude each other (the cluster has its workers)")
        if workers is not None and workers < 1:
            raise UsageError("--workers must be at least 1")
        if partition_size < 1:
            raise UsageError("--partition-size must be positive")
        self.scheduler = scheduler
        self.workers = workers or os.cpu_count() or 1
        self.partition_size = partition_size
        self.client: Any = None
        self._cluster: Any = None
        self._staged: list[Staging] = []
        #: seconds per step of the last dataset loaded on the cluster (cut, partitions, ...)
        self.steps: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> DaskCluster:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError(
                "--engine dask needs Dask's distributed scheduler",
                hint="pip install 'healthetl[dask]' (on every worker too)",
            ) from None
        try:
            if self.scheduler is not None:
                self.client = Client(self.scheduler, timeout="30s")  # type: ignore[no-untyped-call]
            else:
                self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # a free port, this machine only
                    silence_logs=logging.ERROR,
                )
                self.client = Client(self._cluster)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            self.__exit__()
            where = mask_url(self.scheduler) if self.scheduler else "a local cluster"
            raise ClusterError(f"cannot reach the Dask scheduler at {where}: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    @property
    def description(self) -> str:
        if self.scheduler is not None:
            return f"the Dask scheduler at {mask_url(self.scheduler)}"
        return f"a local Dask cluster of {self.workers} worker process{'es' if self.workers != 1 else ''}"

    def cleanup(self, engine: Engine) -> None:
        """Drop the staging tables of the run that just ended (committed or rolled back)."""
        staged, self._staged = self._staged, []
        staging.drop(engine, staged)

    # ------------------------------------------------------------------ the load
    @staticmethod
    def refusal(dataset: Dataset, catalog: Catalog, items: Iterable[Source]) -> str | None:
        """Why this dataset's load stays on this process (None: it runs on the cluster)."""
        if dataset.nested is not None:
            return "nested JSON records are loaded on one process"
        if catalog.raw_table(dataset) is not None:
            return "it keeps a raw layer"
        for item in items:
            if not isinstance(item, FileSource | ObjectSource) or item.path == "-":
                return f"{item.label} is not a file or an object"
        return None

    def stream(
        self,
        conn: sa.Connection,
        dataset: Dataset,
        items: Sequence[Source],
        options: PipelineOptions,
        validator: Validator,
        tracker: QualityTracker,
        writer: bulk.TableWriter,
        result: LoadRun,
        progress: Progress,
        *,
        known: Mapping[str, pd.Index] | None,
        lookups: Mapping[str, LookupTable] | None,
        pseudonymised: frozenset[str],
    ) -> None:
        """Validate and stage every partition on the cluster, then move the rows and the
        failures in ``conn``'s transaction (see the module's docstring)."""
        if not is_postgres(conn):
            raise UsageError(refuse_sqlite())
        engine = conn.engine
        dropped = staging.drop_leftovers(engine, result.pipeline, result.run_id)
        if dropped:
            log.info("%s: dropped staging tables of earlier runs: %s", result.pipeline, ", ".join(dropped))
        clock = _Clock()
        stage = staging.create(engine, result.run_id, len(self._staged), writer.table, dataset.stored_names)
        self._staged.append(stage)
        parts = partitions(items, options, self.partition_size)
        clock.lap("cut")
        progress(
            "engine",
            {"pipeline": result.pipeline, "detail": f"{len(parts)} partitions on {self.description}"},
        )
        job = Job(
            dataset,
            options,
            result.run_id,
            stage,
            engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
            dict(known) if known else None,
            dict(lookups) if lookups else None,
            validator.window,
            tracker.cursor,
            pseudonymised,
        )
        done = self._run(parts, job, result, progress)
        clock.lap("partitions")
        offsets = _row_offsets(parts, done)
        for part in done:
            _count(result, validator, tracker, part)
        _duplicate_keys(conn, validator, stage, parts, offsets, result, tracker)
        clock.lap("duplicates")
        _quarantine_staged(conn, stage, offsets, result)
        clock.lap("quarantine")
        # file order matters only where a dedupe order breaks ties by it (the later row wins)
        writer.insert_from(stage.rows, order=(PART, ROW) if writer.dedupe_order else ())
        writer.flush()
        clock.lap("rows")
        self.steps = clock.laps
        log.info("%s: %d partitions; %s", result.pipeline, len(parts), clock)

    def _run(
        self, parts: list[Partition], job: Job, result: LoadRun, progress: Progress
    ) -> list[PartitionResult]:
        from distributed import KilledWorker, as_completed
        from distributed.comm.core import CommClosedError

        client = self.client
        [shared] = client.scatter([job], broadcast=True, hash=False)
        keys = [f"healthetl-{job.staging.rows}-{p.index}" for p in parts]
        futures = client.map(load_partition, parts, job=shared, key=keys)
        done: list[PartitionResult] = []
        rows = 0
        try:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                part = future.result()  # a failed partition raises its own error here
                done.append(part)
                rows += part.counts.rows_read
                progress("batch", {"pipeline": result.pipeline, "rows": rows})
        except (
            KilledWorker,
            CommClosedError,
            CancelledError,
            asyncio.CancelledError,
        ) as exc:  # the cluster, not the data
            client.cancel(futures)
            raise ClusterError(f"{result.pipeline}: the Dask cluster failed: {first_line(exc)}") from None
        except BaseException:
            client.cancel(futures)
            raise
        return sorted(done, key=lambda r: r.index)


class _Clock:
    """Seconds spent in each step of a load on the cluster, in order."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = now - self._last
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.laps.items())


def refuse_sqlite() -> str:
    return (
        "--engine dask needs PostgreSQL: its workers write their partitions concurrently and "
        "SQLite has one writer; use --engine local (the default) for a SQLite database"
    )


def _row_offsets(parts: list[Partition], done: list[PartitionResult]) -> dict[int, int]:
    """Partition -> rows of its source before it (rows are numbered from 1 in each partition)."""
    read = {r.index: r.counts.rows_read for r in done}
    offsets: dict[int, int] = {}
    before: dict[int, int] = {}
    for p in parts:
        offsets[p.index] = before.get(p.source, 0)
        before[p.source] = offsets[p.index] + read[p.index]
    return offsets


def _count(result: LoadRun, validator: Validator, tracker: QualityTracker, part: PartitionResult) -> None:
    result.counts.absorb(part.counts)
    validator.summary.absorb(part.summary)
    tracker.absorb(part.tracker)


def _unique_rules(validator: Validator) -> list[tuple[tuple[str, ...], Rule]]:
    """The key sets a run must not repeat, each with its rule (duplicate_key, unique)."""
    compiled = validator.compiled
    rules = {(r.name, r.column): r for r in compiled.rules.values() if r.name in ("duplicate_key", "unique")}
    out = []
    for key_cols, _ in compiled.trackers:
        column = ",".join(key_cols)
        rule = rules.get(("duplicate_key", column)) or rules[("unique", column)]
        out.append((key_cols, rule))
    return out


def _duplicate_keys(
    conn: sa.Connection,
    validator: Validator,
    stage: Staging,
    parts: list[Partition],
    offsets: dict[int, int],
    result: LoadRun,
    tracker: QualityTracker,
) -> None:
    """The run's duplicate keys, all decided here: the workers stage every row's keys (each
    partition blind to the others) and this finds, in the order of partitions and rows (a local
    load's order), each row (clean or not) repeating a key that an earlier accepted row holds,
    by the rule a local load applies (``Validator._key_failures``): a row with another error
    holds no key, and a row rejected for repeating one key set holds none of the others, which
    may free a later row (passes until no row changes). Each is quarantined with the local rule
    and reason (the key as standardised); the clean ones are not loaded (unless the rule is a
    warning). A row that repeats both the key and a unique column gets both records."""
    rules = _unique_rules(validator)
    if not rules:  # no key, no unique column: nothing to decide
        return
    q = conn.dialect.identifier_preparer.quote
    data = [c for c in stage.columns if c != "run_id"]
    names = {p.index: file_name(p.path) for p in parts}
    flagged = _flag_duplicates(conn, q(stage.keys), rules)
    texts = ", ".join(f"r.{q(c)}::text AS {q(c)}" for c in data)
    for number, (_, rule) in enumerate(rules):
        found = conn.exec_driver_sql(  # a server-side cursor: read a chunk at a time
            f"SELECT d.{PART}, d.{ROW}, d.key, d.clean, f.original, {texts} FROM {flagged} d "
            f"LEFT JOIN {q(stage.rows)} r ON d.clean AND r.{PART} = d.{PART} AND r.{ROW} = d.{ROW} "
            f"LEFT JOIN (SELECT DISTINCT ON ({PART}, source_row) {PART}, source_row, original "
            f"FROM {q(stage.failures)} ORDER BY {PART}, source_row) f "
            f"ON NOT d.clean AND f.{PART} = d.{PART} AND f.source_row = d.{ROW} "
            f"WHERE d.key_set = {number}",
            execution_options={"stream_results": True},
        )
        for chunk in found.partitions(_FETCH):
            frame = pd.DataFrame(chunk, columns=[PART, ROW, "key", "clean", "original", *data], dtype=object)
            failures = _duplicate_failures(frame, rule, names, offsets, data)
            bulk.write_quarantine(
                conn, failures, run_id=result.run_id, dataset=result.dataset, spool=result.spool
            )
            validator.summary.add_failures(failures)
    # a clean row flagged: rejected if any of its rules is an error, else warned; a row its
    # partition counted as warned already is not counted again, and leaves the warned if rejected
    rejected, newly_warned, warned_rejected = conn.exec_driver_sql(
        "SELECT COUNT(*) FILTER (WHERE err), COUNT(*) FILTER (WHERE NOT err AND NOT warned), "
        "COUNT(*) FILTER (WHERE err AND warned) FROM ("
        f"SELECT d.err, EXISTS (SELECT 1 FROM {q(stage.failures)} x WHERE x.{PART} = d.{PART} "
        f"AND x.source_row = d.{ROW} AND x.severity = 'warning') AS warned FROM ("
        f"SELECT {PART}, {ROW}, bool_or(severity = 'error') AS err FROM {flagged} WHERE clean "
        f"GROUP BY {PART}, {ROW}) d) t"
    ).one()
    warned = newly_warned - warned_rejected
    if rejected:
        conn.exec_driver_sql(
            f"DELETE FROM {q(stage.rows)} s USING {flagged} d "
            f"WHERE d.clean AND d.severity = 'error' AND s.{PART} = d.{PART} AND s.{ROW} = d.{ROW}"
        )
    result.counts.rows_quarantined += rejected
    validator.summary.rows_quarantined += rejected
    validator.summary.rows_valid -= rejected
    tracker.rows_accepted -= rejected
    result.counts.rows_warned += warned
    validator.summary.rows_warned += warned
    conn.exec_driver_sql(f"DROP TABLE {flagged}")  # the run's next dataset makes its own


def _flag_duplicates(conn: sa.Connection, keys: str, rules: list[tuple[tuple[str, ...], Rule]]) -> str:
    """Fill a temporary table with the rows (clean or not) that repeat a key an earlier accepted
    row holds, one row per key set repeated, and return its name. ``keys``: the quoted staging
    table of every row's keys."""
    flagged, shared, holders = "_healthetl_dups", "_healthetl_shared_keys", "_healthetl_holders"
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {flagged} ({PART} integer, {ROW} bigint, pos bigint, key_set smallint, "
        "key text, clean boolean, severity text) ON COMMIT DROP"
    )
    # the keys more than one row has (usually few): only their rows can repeat one; a row's place
    # in the run's order as one number, its partition then its row
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {shared} ON COMMIT DROP AS SELECT {PART}, {ROW}, "
        f"({PART}::bigint << 40) + {ROW} AS pos, key_set, key, clean FROM {keys} "
        f"WHERE (key_set, key) IN (SELECT key_set, key FROM {keys} "
        "GROUP BY key_set, key HAVING COUNT(*) > 1)"
    )
    eligible = f"SELECT DISTINCT pos FROM {shared} WHERE clean"
    conn.exec_driver_sql(f"CREATE TEMP TABLE {holders} ON COMMIT DROP AS {eligible}")
    severity = " ".join(f"WHEN {n} THEN '{rule.severity}'" for n, (_, rule) in enumerate(rules))
    settles = len(rules) > 1 and any(rule.severity == "error" for _, rule in rules)
    while True:  # each pass settles at least the next row in order: it ends
        conn.exec_driver_sql(f"TRUNCATE {flagged}")
        conn.exec_driver_sql(
            f"INSERT INTO {flagged} SELECT s.{PART}, s.{ROW}, s.pos, s.key_set, s.key, s.clean, "
            f"CASE s.key_set {severity} END FROM {shared} s JOIN (SELECT h.key_set, h.key, "
            f"MIN(h.pos) AS first FROM {shared} h JOIN {holders} USING (pos) "
            "GROUP BY h.key_set, h.key) f USING (key_set, key) WHERE s.pos > f.first"
        )
        if not settles:  # one key set: the rows with no other error hold it exactly
            break
        accepted = f"{eligible} EXCEPT SELECT pos FROM {flagged} WHERE severity = 'error'"
        changed = conn.exec_driver_sql(
            f"SELECT (SELECT COUNT(*) FROM ({accepted} EXCEPT SELECT pos FROM {holders}) a) "
            f"+ (SELECT COUNT(*) FROM (SELECT pos FROM {holders} EXCEPT ({accepted})) b)"
        ).scalar_one()
        if not changed:
            break
        conn.exec_driver_sql(f"TRUNCATE {holders}")
        conn.exec_driver_sql(f"INSERT INTO {holders} {accepted}")
    conn.exec_driver_sql(f"DROP TABLE {shared}, {holders}")
    return flagged


def _duplicate_failures(
    frame: pd.DataFrame, rule: Rule, names: dict[int, str], offsets: dict[int, int], data: list[str]
) -> pd.DataFrame:
    """Failure records of duplicate keys: a clean row's original is the row as
    standardised (the row as received stayed on its worker); a rejected row's is its own."""
    parts = frame[PART].astype("int64")
    clean = frame["clean"].astype(bool).to_numpy()
    original = frame["original"].copy()
    if clean.any():
        original[clean] = json_lines(frame.loc[clean, data])
    out = pd.DataFrame(
        {
            "source_file": parts.map(names),
            "source_row": frame[ROW].astype("int64") + parts.map(offsets),
            "column_name": rule.column,
            "rule": rule.name,
            "severity": rule.severity,
            "reason": [rule.reason(v) for v in frame["key"]],
            "original": original,
        }
    )
    return out[FAILURE_COLUMNS]


def _quarantine_staged(conn: sa.Connection, stage: Staging, offsets: dict[int, int], result: LoadRun) -> None:
    """The workers' failure records into the quarantine, numbered by the row of their source; and
    the same again after a rollback (the failed run still says which rows failed which rule)."""
    q = conn.dialect.identifier_preparer.quote
    cols = ", ".join(FAILURE_COLUMNS)
    picked = ", ".join(
        "f.source_row + o.rows_before" if c == "source_row" else f"f.{c}" for c in FAILURE_COLUMNS
    )
    before = ", ".join(f"({index}, {rows})" for index, rows in offsets.items()) or "(0, 0)"
    statement = sa.text(
        f"INSERT INTO quarantine ({cols}, run_id, dataset) SELECT {picked}, :run_id, :dataset "
        f"FROM {q(stage.failures)} f JOIN (VALUES {before}) AS o (part, rows_before) ON f.{PART} = o.part"
    )
    params = {"run_id": result.run_id, "dataset": result.dataset}
    moved = conn.execute(statement, params).rowcount
    if moved:
        log.info("%s: %d failure records from the cluster's partitions", result.pipeline, moved)

    def write_again(other: sa.Connection) -> None:
        exists = other.exec_driver_sql(f"SELECT to_regclass('{stage.failures}') IS NOT NULL").scalar_one()
        if exists:
            other.execute(statement, params)

    result.requarantine.append(write_again)
