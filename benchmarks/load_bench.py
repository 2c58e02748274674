"""Load benchmark: healthetl extract + validate + load into PostgreSQL, side by side with
(a) a raw ``COPY ... FROM STDIN`` of the same CSV and (b) pandas ``read_csv`` + ``to_sql``.

    python benchmarks/load_bench.py --rows 1000000
    python benchmarks/load_bench.py --rows 200000 --skip-to-sql --repeat 3

Each contender runs in its own process, so the peak RSS printed is that process's own.
The database is a fresh one created next to HEALTHETL_BENCH_DATABASE_URL (default: the test
server), dropped at the end. The generated CSV is dirty the way real extracts are: three date
layouts, status spelling variants, non-numeric booking ids, missing patients, an unknown doctor
and implausible years. Booking ids are unique, so the raw COPY baseline can load it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

OUT = Path(__file__).parent / "out"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STATUSES = ["confirmed"] * 16 + ["cancelled"] * 4
STATUSES += ["Confirmed", "confirmed.", " cancelled", "canceled"]


def generate(rows: int, path: Path, seed: int = 7) -> Path:
    if path.exists():
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("booking_id,patient_id,doctor_id,booking_date,status\n")
        for i in range(1, rows + 1):
            booking = f"{i}X" if rng.random() < 0.002 else str(i)
            patient = "" if rng.random() < 0.003 else str(rng.randint(1, 50_000))
            doctor = str(rng.choice([100, 101, 102, 103, 104, 104, 103, 102, 101, 100, 105]))
            month, day = rng.randint(1, 12), rng.randint(1, 28)
            year = 2025 if rng.random() > 0.01 else rng.randint(2027, 2355)
            layout = rng.random()
            if layout < 0.7:
                when = f"{month:02d}/{day:02d}/{year}"
            elif layout < 0.99:
                when = f"{year}-{month:02d}-{day:02d}"
            else:
                when = f"{year}/{month:02d}/{day:02d}"
            fh.write(f"{booking},{patient},{doctor},{when},{rng.choice(STATUSES)}\n")
    return path


def _options():  # type: ignore[no-untyped-def]
    from healthetl.config import PipelineOptions

    return PipelineOptions(date_window={"booking_date": ("2000-01-01", "2030-12-31")})


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------- contenders
def run_healthetl(url: str, csv_path: str, *more: str) -> dict[str, float]:
    """healthetl's load of the file (and ``more`` files, in the same run) into ``appointments``."""
    from healthetl.catalog import catalog_for
    from healthetl.datasets import get_dataset
    from healthetl.db.engine import create
    from healthetl.pipeline.load import load

    engine = create(url)
    options = _options()
    start = time.perf_counter()
    result = load(
        engine,
        get_dataset("appointments"),
        [csv_path, *more],
        options,
        mode="replace",
        catalog=catalog_for(None),
    )
    seconds = time.perf_counter() - start
    c = result.counts
    return {
        "seconds": seconds,
        "rows": c.rows_in,
        "loaded": c.rows_loaded,
        "quarantined": c.rows_quarantined,
        "peak_mb": _peak_mb(),
    }


def _raw_copy(url: str, table: str, csv_path: str) -> dict[str, float]:
    """COPY a CSV file's bytes as they are into ``table``: the database's own limit."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute(f"TRUNCATE {table}")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, open(csv_path, "rb") as fh:
            with cur.copy(
                f"COPY {table} (booking_id, patient_id, doctor_id, booking_date, "
                "status) FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy:
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - start
        rows = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "rows": rows, "peak_mb": _peak_mb()}


def run_raw_copy(url: str, csv_path: str) -> dict[str, float]:
    return _raw_copy(url, "bench_copy", csv_path)


def run_raw_copy_typed(url: str, csv_path: str) -> dict[str, float]:
    """The rows healthetl accepts, COPYed raw into a twin of ``appointments`` (types, PK, FK)."""
    return _raw_copy(url, "bench_typed", str(Path(csv_path).with_suffix(".clean.csv")))


def run_to_sql(url: str, csv_path: str) -> dict[str, float]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE bench_tosql")
    start = time.perf_counter()
    frame = pd.read_csv(csv_path, dtype=str)
    frame.to_sql("bench_tosql", engine, if_exists="append", index=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(frame), "peak_mb": _peak_mb()}


def run_healthetl_sqlite(url: str, csv_path: str) -> dict[str, float]:
    """The same load into a fresh SQLite file (executemany in one transaction)."""
    import tempfile

    from healthetl.catalog import catalog_for
    from healthetl.config import PipelineOptions
    from healthetl.datasets import get_dataset
    from healthetl.db import migrate
    from healthetl.db.engine import create
    from healthetl.pipeline.load import load

    folder = tempfile.mkdtemp()
    engine = create(f"sqlite:///{folder}/bench.db")
    migrate.upgrade(engine)
    doctors = Path(folder) / "doctors.csv"
    doctors.write_text("doctor_id,name\n" + "".join(f"{i},Dr. {i}\n" for i in range(100, 105)))
    load(engine, get_dataset("doctors"), [str(doctors)], PipelineOptions(), catalog=catalog_for(None))
    start = time.perf_counter()
    result = load(
        engine, get_dataset("appointments"), [csv_path], _options(), mode="replace", catalog=catalog_for(None)
    )
    seconds = time.perf_counter() - start
    c = result.counts
    return {
        "seconds": seconds,
        "rows": c.rows_in,
        "loaded": c.rows_loaded,
        "quarantined": c.rows_quarantined,
        "peak_mb": _peak_mb(),
    }


def run_sqlite_executemany(url: str, csv_path: str) -> dict[str, float]:
    """The SQLite baseline: the accepted rows (the clean CSV), read by the standard library's csv
    module and inserted by ``executemany`` in one transaction into the same migrated
    ``appointments`` table (primary key, foreign key enforced), no checks."""
    import csv
    import sqlite3
    import tempfile

    from healthetl.db import migrate
    from healthetl.db.engine import create

    folder = tempfile.mkdtemp()
    migrate.upgrade(create(f"sqlite:///{folder}/bench.db"))
    db = sqlite3.connect(f"{folder}/bench.db", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.executemany(
        "INSERT INTO doctors (doctor_id, name, run_id) VALUES (?, ?, 'bench')",
        [(str(i), f"Dr. {i}") for i in range(100, 105)],
    )
    clean = Path(csv_path).with_suffix(".clean.csv")
    start = time.perf_counter()
    with clean.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        db.execute("BEGIN")
        rows = db.executemany(
            "INSERT INTO appointments (booking_id, patient_id, doctor_id, booking_date, status, run_id) "
            "VALUES (?, ?, ?, ?, ?, 'bench')",
            reader,
        ).rowcount
        db.execute("COMMIT")
    return {"seconds": time.perf_counter() - start, "rows": rows, "peak_mb": _peak_mb()}


def run_healthetl_twice(url: str, csv_path: str) -> dict[str, float]:
    """The file delivered twice in one run (a second path, the same rows): every row of the
    second copy is a duplicate key, quarantined with its reason."""
    again = Path(csv_path).with_suffix(".again.csv")
    if not again.exists():
        again.write_bytes(Path(csv_path).read_bytes())
    return run_healthetl(url, csv_path, str(again))


def run_healthetl_keys_in_memory(url: str, csv_path: str) -> dict[str, float]:
    """The same load with the whole key history in memory (no spill to disk): the baseline of
    the spill's memory (HEALTHETL_KEYS_IN_MEMORY)."""
    os.environ["HEALTHETL_KEYS_IN_MEMORY"] = str(10**12)
    return run_healthetl(url, csv_path)


CONTENDERS = {
    "healthetl_twice": run_healthetl_twice,
    "healthetl_keys_in_memory": run_healthetl_keys_in_memory,
    "healthetl_sqlite": run_healthetl_sqlite,
    "sqlite_executemany": run_sqlite_executemany,
    "healthetl": run_healthetl,
    "raw_copy": run_raw_copy,
    "raw_copy_typed": run_raw_copy_typed,
    "to_sql": run_to_sql,
}


def admin_url() -> str:
    """The server the benchmarks create their databases on."""
    return os.environ.get(
        "HEALTHETL_BENCH_DATABASE_URL", os.environ.get("HEALTHETL_TEST_DATABASE_URL", DEFAULT_URL)
    )


def child_result(script: str, name: str, *args: str) -> dict[str, float]:
    """Run contender ``name`` of ``script`` in a fresh process (its peak memory its own) and
    return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, script, "--child", name, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bound_memory_as_the_cli_does() -> None:
    """Arrow's memory pool bounded as the command line bounds it, for a healthetl contender."""
    from healthetl.sources.readers import bound_arrow_memory

    bound_arrow_memory()


def _child(name: str, url: str, csv_path: str) -> dict[str, float]:
    return child_result(__file__, name, "--url", url, "--csv", csv_path)


def _clean_copy(csv_path: Path) -> None:
    """The rows healthetl accepts, as a plain CSV (for the typed raw-COPY baseline)."""
    from healthetl.catalog import catalog_for
    from healthetl.datasets import get_dataset
    from healthetl.pipeline.validate import validate

    target = csv_path.with_suffix(".clean.csv")
    if target.exists():
        return
    tmp = csv_path.with_suffix(".clean.parquet")
    validate(
        get_dataset("appointments"),
        str(csv_path),
        _options(),
        catalog=catalog_for(None),
        clean_output=str(tmp),
    )
    import pandas as pd

    cols = ["booking_id", "patient_id", "doctor_id", "booking_date", "status"]
    frame = pd.read_parquet(tmp, columns=cols)
    frame = frame[frame["doctor_id"] != "105"]  # the unknown doctor, quarantined on load
    frame.to_csv(target, index=False)
    tmp.unlink()


def _prepare(admin_url: str) -> tuple[str, str]:
    import sqlalchemy as sa

    from healthetl.catalog import catalog_for
    from healthetl.config import PipelineOptions
    from healthetl.datasets import get_dataset
    from healthetl.db import migrate
    from healthetl.db.engine import create
    from healthetl.pipeline.load import load

    name = f"healthetl_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create(url)
    migrate.upgrade(engine)
    doctors = OUT / "doctors.csv"
    doctors.write_text("doctor_id,name,specialty\n" + "".join(f"{i},Dr. {i},Vein\n" for i in range(100, 105)))
    load(engine, get_dataset("doctors"), [str(doctors)], PipelineOptions(), catalog=catalog_for(None))
    with engine.begin() as conn:
        # the baselines' table: same columns and the same primary key as appointments, as text
        # so that the dirty rows load (COPY and to_sql do not validate anything)
        for table in ("bench_copy", "bench_tosql"):
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (booking_id text PRIMARY KEY, patient_id text, "
                "doctor_id text, booking_date text, status text, run_id text)"
            )
        # a twin of appointments: same types, primary key and foreign key
        fk = conn.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'appointments'::regclass AND contype = 'f'"
        ).scalar_one()
        conn.exec_driver_sql("CREATE TABLE bench_typed (LIKE appointments INCLUDING ALL)")
        conn.exec_driver_sql("ALTER TABLE bench_typed ALTER run_id SET DEFAULT 'bench'")
        conn.exec_driver_sql(f"ALTER TABLE bench_typed ADD CONSTRAINT bench_typed_fk {fk}")
    engine.dispose()
    return name, url


def _drop(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (median shown)")
    parser.add_argument("--skip-to-sql", action="store_true", help="skip the slow pandas baseline")
    parser.add_argument(
        "--sqlite", action="store_true", help="also load into SQLite (same rows), beside executemany"
    )
    parser.add_argument(
        "--keys-baseline", action="store_true", help="also load with every key held in memory (no spill)"
    )
    parser.add_argument(
        "--twice", action="store_true", help="also load the file delivered twice (half the rows duplicates)"
    )
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--csv")
    args = parser.parse_args()
    if args.child:
        if args.child.startswith("healthetl"):
            bound_memory_as_the_cli_does()
        print(json.dumps(CONTENDERS[args.child](args.url, args.csv)))
        return

    admin = admin_url()
    csv_path = generate(args.rows, OUT / f"appointments_{args.rows}.csv")
    size_mb = csv_path.stat().st_size / 1e6
    _clean_copy(csv_path)
    name, url = _prepare(admin)
    try:
        names = ["raw_copy", "raw_copy_typed", "healthetl"]
        names += [] if args.skip_to_sql else ["to_sql"]
        names += ["sqlite_executemany", "healthetl_sqlite"] if args.sqlite else []
        names += ["healthetl_keys_in_memory"] if args.keys_baseline else []
        names += ["healthetl_twice"] if args.twice else []
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for _ in range(args.repeat):
            for n in names:
                results[n].append(_child(n, url, str(csv_path)))
    finally:
        _drop(admin, name)

    print(
        f"\n{args.rows:,} appointment rows, {size_mb:.0f} MB CSV, PostgreSQL, "
        f"median of {args.repeat} run(s)\n"
    )
    print(f"{'contender':<46}{'wall s':>8}{'rows/s':>11}{'peak MB':>9}{'x COPY':>8}{'x typed COPY':>14}")
    base = statistics.median(r["seconds"] for r in results["raw_copy"])
    typed = statistics.median(r["seconds"] for r in results["raw_copy_typed"])
    labels = {
        "raw_copy": "(a) raw COPY, text columns + PK, no checks",
        "raw_copy_typed": "(a') raw COPY of accepted rows, typed+PK+FK",
        "healthetl": "healthetl extract+validate+load (typed+PK+FK)",
        "to_sql": "(b) pandas read_csv + to_sql",
        "sqlite_executemany": "(c) SQLite: csv + executemany of accepted rows",
        "healthetl_sqlite": "healthetl into SQLite (same rows)",
        "healthetl_keys_in_memory": "healthetl, every key in memory (no spill)",
        "healthetl_twice": "healthetl, the file twice (2x rows, half dups)",
    }
    #: input rows per contender, as a multiple of the file's
    copies = {"healthetl_twice": 2}
    for n in names:
        secs = statistics.median(r["seconds"] for r in results[n])
        peak = max(r["peak_mb"] for r in results[n])
        print(
            f"{labels[n]:<46}{secs:>8.2f}{args.rows * copies.get(n, 1) / secs:>11,.0f}{peak:>9.0f}"
            f"{secs / base:>8.2f}{secs / typed:>14.2f}"
        )
    ours = results["healthetl"][-1]
    print(
        f"\nhealthetl accounted for every row: {ours['rows']:,.0f} in = {ours['loaded']:,.0f} "
        f"loaded + {ours['quarantined']:,.0f} quarantined"
    )
    if "to_sql" in results:
        ratio = statistics.median(r["seconds"] for r in results["to_sql"]) / statistics.median(
            r["seconds"] for r in results["healthetl"]
        )
        print(f"healthetl is {ratio:.1f}x faster than pandas to_sql")


if __name__ == "__main__":
    main()
