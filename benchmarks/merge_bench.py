"""Large merges: an upsert of M rows into an N-row table on PostgreSQL (default 1M into 10M),
healthetl's ``--mode merge`` beside the plain SQL way of doing the same upsert (``COPY`` into a
staging table, one ``INSERT ... ON CONFLICT DO UPDATE``), in the same invocation:

    python benchmarks/merge_bench.py                       # 1,000,000 into 10,000,000
    python benchmarks/merge_bench.py --base 1000000 --update 100000 --repeat 3

The table is filled once with N clean appointment rows (healthetl ``replace``, timed too), then for
each repetition both contenders start from that same table (a copy made by the server). The update
file's rows: a third existing keys with a changed status, a third existing keys exactly as stored,
a third new keys; healthetl validates every row and reports inserted / updated / unchanged, which
are checked against what the file was built to hold. rows/s are update rows over seconds; peak MB
is the loading process's own.
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

HEADER = "booking_id,patient_id,doctor_id,booking_date,status\n"


def _row(booking: int, rng: random.Random, status: str | None = None) -> str:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    return (
        f"{booking},{rng.randint(1, 50_000)},{rng.choice([100, 101, 102, 103, 104])},"
        f"2025-{month:02d}-{day:02d},{status or rng.choice(['confirmed', 'cancelled'])}\n"
    )


def generate(base: int, update: int) -> tuple[Path, Path]:
    """The base file (keys 1..base) and the update file, both clean, from fixed seeds."""
    base_path = load_bench.OUT / f"merge_base_{base}.csv"
    update_path = load_bench.OUT / f"merge_update_{base}_{update}.csv"
    base_path.parent.mkdir(parents=True, exist_ok=True)
    if not base_path.exists():
        rng = random.Random(3)
        with base_path.open("w", encoding="utf-8") as fh:
            fh.write(HEADER)
            for i in range(1, base + 1):
                fh.write(_row(i, rng))
    if not update_path.exists():
        stored: dict[int, str] = {}
        rng = random.Random(5)
        third = update // 3
        picked = set(rng.sample(range(1, base + 1), 2 * third))
        with base_path.open(encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                key = int(line.split(",", 1)[0])
                if key in picked:
                    stored[key] = line
        keys = sorted(stored)
        rng.shuffle(keys)
        with update_path.open("w", encoding="utf-8") as fh:
            fh.write(HEADER)
            for key in keys[:third]:  # changed: the status flipped
                *rest, status = stored[key].rstrip("\n").split(",")
                flipped = "cancelled" if status == "confirmed" else "confirmed"
                fh.write(",".join([*rest, flipped]) + "\n")
            for key in keys[third:]:  # unchanged: exactly as stored
                fh.write(stored[key])
            for i in range(update - 2 * third):  # new keys
                fh.write(_row(base + 1 + i, rng))
    return base_path, update_path


def _options():  # type: ignore[no-untyped-def]
    from healthetl.config import PipelineOptions

    return PipelineOptions(date_window={"booking_date": ("2000-01-01", "2030-12-31")})


def run_fill(url: str, csv_path: str) -> dict[str, float]:
    return _load(url, csv_path, "replace")


def run_healthetl(url: str, csv_path: str) -> dict[str, float]:
    return _load(url, csv_path, "merge")


def _load(url: str, csv_path: str, mode: str) -> dict[str, float]:
    from healthetl.catalog import catalog_for
    from healthetl.datasets import get_dataset
    from healthetl.db.engine import create
    from healthetl.pipeline.load import load

    engine = create(url)
    start = time.perf_counter()
    result = load(
        engine, get_dataset("appointments"), [csv_path], _options(), mode=mode, catalog=catalog_for(None)
    )
    seconds = time.perf_counter() - start
    if result.status != "succeeded":
        raise SystemExit(f"load failed: {result.error}")
    table = next(a for a in result.audit if a["table_name"] == "appointments")
    return {
        "seconds": seconds,
        "rows": result.counts.rows_in,
        "inserted": table["inserted"],
        "updated": table["updated"],
        "unchanged": table["unchanged"],
        "quarantined": result.counts.rows_quarantined,
        "peak_mb": load_bench._peak_mb(),
    }


def run_sql_upsert(url: str, csv_path: str) -> dict[str, float]:
    """COPY into a temporary staging table, one INSERT ... ON CONFLICT DO UPDATE (no checks)."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    start = time.perf_counter()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE stage (booking_id bigint, patient_id bigint, doctor_id bigint, "
            "booking_date date, status text) ON COMMIT DROP"
        )
        with (
            open(csv_path, "rb") as fh,
            cur.copy(
                "COPY stage (booking_id, patient_id, doctor_id, booking_date, status) "
                "FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy,
        ):
            while data := fh.read(1 << 20):
                copy.write(data)
        cur.execute(
            "INSERT INTO appointments (booking_id, patient_id, doctor_id, booking_date, status, run_id) "
            "SELECT booking_id, patient_id, doctor_id, booking_date, status, 'bench' FROM stage "
            "ON CONFLICT (booking_id) DO UPDATE SET patient_id = excluded.patient_id, "
            "doctor_id = excluded.doctor_id, booking_date = excluded.booking_date, "
            "status = excluded.status, run_id = excluded.run_id"
        )
        rows = cur.rowcount
    return {"seconds": time.perf_counter() - start, "rows": rows, "peak_mb": load_bench._peak_mb()}


CONTENDERS = {
    "fill": run_fill,
    "healthetl": run_healthetl,
    "sql_upsert": run_sql_upsert,
}


def _child(name: str, url: str, csv_path: Path) -> dict[str, float]:
    return load_bench.child_result(__file__, name, "--url", url, "--csv", str(csv_path))


def _sql(url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=10_000_000, help="rows in the table before the merge")
    parser.add_argument("--update", type=int, default=1_000_000, help="rows in the merged file")
    parser.add_argument("--repeat", type=int, default=1, help="merges per contender (median shown)")
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--csv")
    args = parser.parse_args()
    if args.child:
        if args.child in ("fill", "healthetl"):
            load_bench.bound_memory_as_the_cli_does()
        print(json.dumps(CONTENDERS[args.child](args.url, args.csv)))
        return
    admin = load_bench.admin_url()
    base_path, update_path = generate(args.base, args.update)
    name, url = load_bench._prepare(admin)
    results: dict[str, list[dict[str, float]]] = {"healthetl": [], "sql_upsert": []}
    try:
        fill = _child("fill", url, base_path)
        # the filled table, kept aside: each merge starts from a copy of it
        _sql(url, "CREATE TABLE merge_base AS TABLE appointments")
        for _ in range(args.repeat):
            for contender in results:
                _sql(
                    url,
                    f"DELETE FROM appointments WHERE booking_id > {args.base}",
                    "UPDATE appointments a SET status = b.status, run_id = b.run_id FROM merge_base b "
                    "WHERE a.booking_id = b.booking_id AND (a.status, a.run_id) IS DISTINCT FROM "
                    "(b.status, b.run_id)",
                    "VACUUM ANALYZE appointments",
                )
                results[contender].append(_child(contender, url, update_path))
    finally:
        load_bench._drop(admin, name)
    third = args.update // 3
    expected = {"inserted": args.update - 2 * third, "updated": third, "unchanged": third}
    print(
        f"\nmerge of {args.update:,} rows into {args.base:,} (PostgreSQL, median of {args.repeat}); "
        f"the table filled by healthetl replace in {fill['seconds']:.1f} s "
        f"({args.base / fill['seconds']:,.0f} rows/s, peak {fill['peak_mb']:.0f} MB)\n"
    )
    print(f"{'contender':<52}{'wall s':>8}{'rows/s':>11}{'peak MB':>9}{'x SQL':>7}")
    base = statistics.median(r["seconds"] for r in results["sql_upsert"])
    labels = {
        "sql_upsert": "COPY to staging + INSERT ... ON CONFLICT (no checks)",
        "healthetl": "healthetl load --mode merge (every row validated)",
    }
    for n, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        print(f"{labels[n]:<52}{seconds:8.2f}{args.update / seconds:11,.0f}{peak:9.0f}{seconds / base:7.2f}")
    ours = results["healthetl"][-1]
    got = {k: int(ours[k]) for k in expected}
    print(f"\nhealthetl: {got} (the file holds {expected}); {int(ours['quarantined'])} quarantined")
    if got != expected:
        raise SystemExit("the merge's counts differ from what the file holds")


if __name__ == "__main__":
    main()
