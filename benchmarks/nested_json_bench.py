"""Nested JSON benchmark: N generated facility records (NDJSON, each with services, labs and
their certifications, accreditations: five tables) read and loaded by healthetl, beside a plain
``json.loads`` loop and an orjson loop over the same lines (parsing only: the floor of any reader).

    python benchmarks/nested_json_bench.py --records 1000000
    python benchmarks/nested_json_bench.py --records 200000 --repeat 3 --sqlite

Contenders, each in its own process (peak RSS is that process's own):
  * ``json.loads`` of every line, nothing kept (baseline);
  * ``orjson.loads`` of every line, nothing kept (baseline);
  * healthetl's record reader (every line parsed, numbered, a bad line kept with its reason);
  * ``healthetl`` load of the file into PostgreSQL (the facilities dataset: validated, children
    flattened, quarantine, one transaction); ``--sqlite`` adds the same load into SQLite.
About 0.5 % of the lines are defective (invalid JSON, a bad state or ZIP, a missing name), so the
quarantine path is part of what is timed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import load_bench  # noqa: E402 (peak memory, the database set-up and tear-down are shared)

STATES = ["OR", "AZ", "CO", "MA", "NY", "TX", "CA", "WA"]
SERVICES = ["Emergency Care", "Surgery", "Cardiology", "Oncology", "Radiology", "Laboratory", "Primary Care"]
BODIES = ["Joint Commission", "NCQA", "DNV", "CARF"]


def generate(records: int, path: Path, seed: int = 11) -> Path:
    if path.exists():
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(1, records + 1):
            roll = rng.random()
            if roll < 0.001:
                fh.write('{"facility_id": "FAC' + str(i) + '", "facility_name": \n')  # invalid JSON
                continue
            record = {
                "facility_id": f"FAC{i}",
                "facility_name": "" if roll < 0.002 else f"Facility {i} Medical Center",
                "location": {
                    "address": f"{rng.randint(1, 9999)} Main St",
                    "city": "Springfield",
                    "state": "ZZ" if roll < 0.003 else rng.choice(STATES),
                    "zip": "9720" if roll < 0.005 else f"{rng.randint(10000, 99999)}",
                },
                "employee_count": rng.randint(5, 2000),
                "services": rng.sample(SERVICES, rng.randint(1, 5)),
                "labs": [
                    {
                        "lab_name": f"Lab {j}",
                        "certifications": rng.sample(["CLIA", "CAP", "ISO"], rng.randint(1, 2)),
                    }
                    for j in range(rng.randint(0, 2))
                ],
                "accreditations": [
                    {
                        "accreditation_body": rng.choice(BODIES),
                        "accreditation_id": f"A{i}-{j}",
                        "valid_until": f"20{rng.randint(25, 30)}-{rng.randint(1, 12):02d}-28",
                    }
                    for j in range(rng.randint(1, 2))
                ],
            }
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path


def run_json_loads(path: str, url: str) -> dict[str, float]:
    start = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                json.loads(line)
            except ValueError:
                pass
            n += 1
    return {"seconds": time.perf_counter() - start, "records": n, "peak_mb": load_bench._peak_mb()}


def run_orjson(path: str, url: str) -> dict[str, float]:
    import orjson

    start = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            n += 1
    return {"seconds": time.perf_counter() - start, "records": n, "peak_mb": load_bench._peak_mb()}


def run_reader(path: str, url: str) -> dict[str, float]:
    from healthetl.sources.json_records import read_records

    start = time.perf_counter()
    n = bad = 0
    for rec in read_records(path):
        n += 1
        bad += rec.value is None
    return {
        "seconds": time.perf_counter() - start,
        "records": n,
        "bad": bad,
        "peak_mb": load_bench._peak_mb(),
    }


def _load(url: str, path: str) -> dict[str, float]:
    from healthetl.catalog import catalog_for
    from healthetl.config import PipelineOptions
    from healthetl.datasets import get_dataset
    from healthetl.db.engine import create
    from healthetl.pipeline.load import load

    engine = create(url)
    start = time.perf_counter()
    result = load(engine, get_dataset("facilities"), [path], PipelineOptions(), catalog=catalog_for(None))
    seconds = time.perf_counter() - start
    if result.status != "succeeded":
        raise SystemExit(f"load failed: {result.error}")
    c = result.counts
    return {
        "seconds": seconds,
        "records": c.rows_in,
        "loaded": c.rows_loaded,
        "quarantined": c.rows_quarantined,
        "child_rows": sum(result.analytics.values()),
        "peak_mb": load_bench._peak_mb(),
    }


def run_healthetl(path: str, url: str) -> dict[str, float]:
    return _load(url, path)


def run_healthetl_sqlite(path: str, url: str) -> dict[str, float]:
    import tempfile

    from healthetl.db import migrate
    from healthetl.db.engine import create

    sqlite_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    migrate.upgrade(create(sqlite_url))
    return _load(sqlite_url, path)


CONTENDERS = {
    "json_loads": ("json.loads loop (parse only)", run_json_loads),
    "orjson": ("orjson.loads loop (parse only)", run_orjson),
    "reader": ("healthetl record reader", run_reader),
    "healthetl": ("healthetl load, PostgreSQL (5 tables)", run_healthetl),
    "healthetl_sqlite": ("healthetl load, SQLite (5 tables)", run_healthetl_sqlite),
}


def _child(name: str, path: str, url: str) -> dict[str, float]:
    return load_bench.child_result(__file__, name, "--file", path, "--url", url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (median shown)")
    parser.add_argument("--sqlite", action="store_true", help="also load into SQLite")
    parser.add_argument("--child")
    parser.add_argument("--file")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        if args.child in ("reader", "healthetl", "healthetl_sqlite"):
            load_bench.bound_memory_as_the_cli_does()
        print(json.dumps(CONTENDERS[args.child][1](args.file, args.url)))
        return
    admin = load_bench.admin_url()
    path = generate(args.records, load_bench.OUT / f"2025-08-10_facilities_{args.records}.ndjson")
    name, url = load_bench._prepare(admin)
    names = ["json_loads", "orjson", "reader", "healthetl"] + (["healthetl_sqlite"] if args.sqlite else [])
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    try:
        for _ in range(args.repeat):
            for n in names:
                results[n].append(_child(n, str(path), url))
    finally:
        load_bench._drop(admin, name)
    size = path.stat().st_size / 1e6
    print(f"\n{args.records:,} facility records, {size:.0f} MB NDJSON, median of {args.repeat} run(s)\n")
    print(f"{'contender':<42}{'wall s':>8}{'records/s':>12}{'peak MB':>9}{'x json.loads':>14}")
    base = statistics.median(r["seconds"] for r in results["json_loads"])
    for n in names:
        runs = results[n]
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        records = runs[0]["records"]
        print(
            f"{CONTENDERS[n][0]:<42}{seconds:8.2f}{records / seconds:12,.0f}{peak:9.0f}{seconds / base:14.2f}"
        )
    for n in ("healthetl", "healthetl_sqlite"):
        if n in results:
            r = results[n][0]
            print(
                f"{n}: {r['loaded']:,.0f} loaded, {r['quarantined']:,.0f} quarantined, "
                f"{r['child_rows']:,.0f} child rows"
            )


if __name__ == "__main__":
    main()
