"""Loads of related datasets at the same time: a parent replaced while its child is replaced must
queue, not deadlock (on PostgreSQL the parent's commit checks the child's rows while the child's
load drops and re-adds its keys; on SQLite the second waits for the first's write lock)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import subprocess_env


def _load(url: str, dataset: str, src: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "healthetl", "load", dataset, str(src), "--db", url],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_replacing_a_parent_and_its_child_at_once_does_not_deadlock(cli, db_url: str, tmp_path: Path) -> None:
    size = 1_000_000 if db_url.startswith("postgresql") else 200_000
    doctors = tmp_path / "doctors.csv"
    doctors.write_text(
        "doctor_id,name,specialty\n" + "".join(f"{i},Dr. {i},Vein\n" for i in range(100, size + 100)),
        encoding="utf-8",
    )
    appointments = tmp_path / "appointments.csv"
    appointments.write_text(
        "booking_id,patient_id,doctor_id,booking_date,status\n"
        + "".join(f"{i},{i % 500},{100 + i % 1000},2025-10-20,confirmed\n" for i in range(1, 50_001)),
        encoding="utf-8",
    )
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", doctors, "--db", db_url).exit_code == 0
    assert cli("load", "appointments", appointments, "--db", db_url).exit_code == 0
    # observed before the fix: `deadlock detected` in 3 of 3 rounds at this size
    for _round in range(1):
        parent = _load(db_url, "doctors", doctors)
        time.sleep(1.0)  # the parent's transaction is open and copying
        child = _load(db_url, "appointments", appointments)
        results = [p.communicate(timeout=300) for p in (parent, child)]
        assert parent.returncode == 0, results[0][1]
        assert child.returncode == 0, results[1][1]
        assert "deadlock" not in results[0][1] + results[1][1]
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM appointments")).scalar() == 50_000
        assert conn.execute(sa.text("SELECT COUNT(*) FROM doctors")).scalar() == size
    engine.dispose()
