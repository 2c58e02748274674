"""Dask benchmark: the same generated appointments CSV loaded into PostgreSQL by the local engine
and by ``--engine dask`` with 1 and 2 worker processes, side by side.

    python benchmarks/dask_bench.py --rows 5000000
    python benchmarks/dask_bench.py --rows 1000000 --workers 1 2 --partition-size 32MB

Each load runs in its own coordinator process (its peak RSS its own); each worker's peak RSS is
read from the worker after the load. The projection to N workers uses what was measured: the
partitions' summed task time (Dask's task stream) divided by N, plus the serial part (the
coordinator's cut of the file into partitions, its transaction, the run's bookkeeping) as the
load's wall time minus the span of its partition tasks. It assumes the database keeps up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from load_bench import (  # noqa: E402 (the sibling module, whichever the working folder)
    OUT,
    _drop,
    _options,
    _peak_mb,
    _prepare,
    admin_url,
    bound_memory_as_the_cli_does,
    child_result,
    generate,
)


def run_load(url: str, csv_path: str, scheduler: str, size: str) -> dict[str, float]:
    """One load of the CSV; ``scheduler`` empty: the local engine."""
    from healthetl.catalog import catalog_for
    from healthetl.datasets import get_dataset
    from healthetl.db.engine import create
    from healthetl.pipeline.distributed.cluster import DaskCluster
    from healthetl.pipeline.load import load
    from healthetl.sources.partitions import parse_size

    bound_memory_as_the_cli_does()
    engine = create(url)
    cluster = DaskCluster(scheduler, partition_size=parse_size(size)) if scheduler else None
    start = time.perf_counter()
    if cluster is not None:
        with cluster:
            result = load(
                engine, get_dataset("appointments"), [csv_path], _options(), catalog=catalog_for(None),
                mode="replace", cluster=cluster,
            )  # fmt: skip
    else:
        result = load(
            engine,
            get_dataset("appointments"),
            [csv_path],
            _options(),
            catalog=catalog_for(None),
            mode="replace",
        )
    seconds = time.perf_counter() - start
    c = result.counts
    steps = {f"step_{k}": v for k, v in cluster.steps.items()} if cluster is not None else {}
    return {
        **steps,
        "seconds": seconds,
        "started": time.time() - seconds,
        "rows": c.rows_in,
        "loaded": c.rows_loaded,
        "quarantined": c.rows_quarantined,
        "peak_mb": _peak_mb(),
    }


def _worker_peak_mb() -> float:
    from load_bench import _peak_mb as peak

    return peak()


def _dask(url: str, csv_path: str, workers: int, size: str) -> dict[str, float]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(sys.path.insert, 0, str(Path(__file__).parent))
        client.get_task_stream()  # starts recording
        out = child_result(
            __file__,
            "load",
            "--url",
            url,
            "--csv",
            csv_path,
            "--scheduler",
            cluster.scheduler_address,
            "--size",
            size,
        )
        tasks = [t for t in client.get_task_stream() if str(t["key"]).startswith("healthetl-")]
        spans = [s for t in tasks for s in t["startstops"] if s["action"] == "compute"]
        work = sum(s["stop"] - s["start"] for s in spans)
        span = (max(s["stop"] for s in spans) - min(s["start"] for s in spans)) if spans else 0.0
        out["partitions"] = len(tasks)
        out["task_seconds"] = work
        out["serial_seconds"] = max(0.0, out["seconds"] - span)
        out["worker_peak_mb"] = max(client.run(_worker_peak_mb).values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partition-size", default="64MB")
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--csv")
    parser.add_argument("--scheduler", default="")
    parser.add_argument("--size", default="64MB")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_load(args.url, args.csv, args.scheduler, args.size)))
        return
    csv_path = str(generate(args.rows, OUT / f"appointments_{args.rows}.csv"))
    admin = admin_url()
    rows = []
    name, url = _prepare(admin)
    try:
        local = child_result(__file__, "load", "--url", url, "--csv", csv_path)
        rows.append(("local (one process)", local))
        for n in args.workers:
            rows.append(
                (f"dask, {n} worker{'s' if n > 1 else ''}", _dask(url, csv_path, n, args.partition_size))
            )
    finally:
        _drop(admin, name)
    megabytes = Path(csv_path).stat().st_size / 1e6
    print(f"{args.rows:,} rows ({megabytes:.0f} MB CSV), partitions of {args.partition_size}")
    head = f"{'engine':<22}{'seconds':>9}{'rows/s':>11}{'speed-up':>10}"
    print(f"{head}{'coord. MB':>11}{'worker MB':>11}{'parts':>7}")
    base = local["seconds"]
    for label, r in rows:
        worker = f"{r['worker_peak_mb']:.0f}" if "worker_peak_mb" in r else "-"
        parts = f"{r['partitions']:.0f}" if "partitions" in r else "-"
        print(
            f"{label:<22}{r['seconds']:>9.1f}{r['rows'] / r['seconds']:>11,.0f}{base / r['seconds']:>9.2f}x"
            f"{r['peak_mb']:>11.0f}{worker:>11}{parts:>7}"
        )
    dask_runs = [r for label, r in rows if "task_seconds" in r]
    if dask_runs:
        r = dask_runs[-1]
        print(
            f"\nprojection from the last dask run: partition work {r['task_seconds']:.1f} s in all, "
            f"serial part {r['serial_seconds']:.1f} s"
        )
        steps = ", ".join(f"{k[5:]} {v:.1f} s" for k, v in r.items() if k.startswith("step_"))
        print(f"  the coordinator's steps: {steps}")
        for n in (1, 2, 4, 8, 16, 32):
            t = r["serial_seconds"] + r["task_seconds"] / n
            print(f"  {n:>3} workers: {t:7.1f} s  {r['rows'] / t:>11,.0f} rows/s  {base / t:5.2f}x local")


if __name__ == "__main__":
    main()
