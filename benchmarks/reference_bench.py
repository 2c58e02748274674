"""Reference benchmark: foreign keys against a large parent, on PostgreSQL.

    python benchmarks/reference_bench.py --doctors 1000000 --appointments 1000000

Two measurements, each side by side with its baseline:

1. Validating appointments against every doctor id (the ``foreign_key`` rule): healthetl's
   check (the parent's keys hashed once per run) against the ``Series.isin`` check it replaced
   (the keys hashed again for every batch).
2. Replacing the doctors with a set that drops 900 unreferenced ids: the COMMIT checks that no
   appointment points at a dropped id, with the ``ix_appointments_doctor_id`` index (migration
   0009) and without it (the index dropped: one scan of appointments per dropped id).

The database is a fresh one created next to HEALTHETL_BENCH_DATABASE_URL (default: the test
server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import tracemalloc
import uuid
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import sqlalchemy as sa

from healthetl.catalog import catalog_for
from healthetl.config import PipelineOptions
from healthetl.datasets import get_dataset
from healthetl.db import migrate
from healthetl.db.engine import create
from healthetl.pipeline.load import load
from healthetl.pipeline.references import reference_keys
from healthetl.pipeline.validator import Validator

OUT = Path(__file__).parent / "out"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DROPPED = 900


def _write(path: Path, header: str, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _validate_seconds(
    engine: sa.Engine, frames: list[pd.DataFrame], *, baseline: bool
) -> tuple[float, float]:
    """Seconds and peak traced MB to validate the batches (the keys read once, as a run does)."""
    dataset = get_dataset("appointments")
    with engine.connect() as conn:
        known = reference_keys(conn, dataset, migrate_catalog())
    tracemalloc.start()
    start = time.perf_counter()
    validator = Validator(dataset, PipelineOptions(), known)
    if baseline:  # the check healthetl used before: pandera's isin, i.e. Series.isin per batch
        column = validator.compiled.schema.columns["doctor_id"]
        column.checks = [
            pa.Check.isin(known["doctor_id"]) if c.name == "healthetl_foreign_key" else c
            for c in column.checks
        ]
    rejected = sum(len(validator.validate(f).failures) for f in frames)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    assert rejected == 0, rejected
    return seconds, peak


def migrate_catalog():  # type: ignore[no-untyped-def]
    return catalog_for(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doctors", type=int, default=1_000_000)
    parser.add_argument("--appointments", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per validated batch")
    args = parser.parse_args()
    rng = random.Random(7)
    n, m = args.doctors, args.appointments
    doctor_lines = [f"{i},Dr. {i},Vein" for i in range(1, n + 1)]
    referenced = n - 2 * DROPPED  # the last ids are never referenced, so they can be dropped
    appointment_lines = [
        f"{i},{rng.randint(1, 50_000)},{rng.randint(1, referenced)},"
        f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)},confirmed"
        for i in range(1, m + 1)
    ]
    doctors = _write(OUT / f"ref_doctors_{n}.csv", "doctor_id,name,specialty", doctor_lines)
    fewer = _write(OUT / f"ref_doctors_{n}_fewer.csv", "doctor_id,name,specialty", doctor_lines[:-DROPPED])
    appointments = _write(
        OUT / f"ref_appointments_{m}.csv",
        "booking_id,patient_id,doctor_id,booking_date,status",
        appointment_lines,
    )
    frames = [
        pd.read_csv(appointments, dtype="str", skiprows=range(1, 1 + s), nrows=args.batch)
        for s in range(0, m, args.batch)
    ]
    for f in frames:
        f["_source_file"], f["_source_row"] = appointments, range(2, 2 + len(f))

    admin_url = os.environ.get(
        "HEALTHETL_BENCH_DATABASE_URL", os.environ.get("HEALTHETL_TEST_DATABASE_URL", DEFAULT_URL)
    )
    name = f"healthetl_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create(url)
    try:
        migrate.upgrade(engine)
        load(engine, get_dataset("doctors"), [doctors], PipelineOptions(), catalog=catalog_for(None))
        load(
            engine, get_dataset("appointments"), [appointments], PipelineOptions(), catalog=catalog_for(None)
        )
        check = {b: _validate_seconds(engine, frames, baseline=b) for b in (False, True)}
        replace = {}
        for indexed in (True, False):
            if not indexed:
                with engine.begin() as conn:
                    conn.exec_driver_sql("DROP INDEX ix_appointments_doctor_id")
            load(
                engine,
                get_dataset("doctors"),
                [doctors],
                PipelineOptions(),
                mode="replace",
                catalog=catalog_for(None),
            )
            start = time.perf_counter()
            load(
                engine,
                get_dataset("doctors"),
                [fewer],
                PipelineOptions(),
                mode="replace",
                catalog=catalog_for(None),
            )
            replace[indexed] = time.perf_counter() - start
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    print(f"\n{n:,} doctors, {m:,} appointments, PostgreSQL\n")
    print(
        f"{f'reference check (validate, batches of {args.batch:,})':<58}{'s':>8}{'rows/s':>11}{'peak MB':>9}"
    )
    for baseline, label in (
        (False, "healthetl: keys hashed once per run"),
        (True, "baseline: Series.isin per batch"),
    ):
        seconds, peak = check[baseline]
        print(f"  {label:<56}{seconds:>8.1f}{m / seconds:>11,.0f}{peak:>9.0f}")
    print(f"\n{'replace doctors, ' + str(DROPPED) + ' ids dropped (load + COMMIT)':<58}{'s':>8}")
    print(f"  {'healthetl: ix_appointments_doctor_id (migration 0009)':<56}{replace[True]:>8.1f}")
    print(f"  {'baseline: the same without the index':<56}{replace[False]:>8.1f}")


if __name__ == "__main__":
    main()
