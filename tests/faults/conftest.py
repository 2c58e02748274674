"""Shared by the fault tests: a database with doctors and a first batch of appointments loaded,
a digest of the appointments table to compare before and after a fault, the last run's outcome,
and a load started in a subprocess (to be signalled)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import VIP, subprocess_env
from tests.conftest import appointments_csv as _csv
from tests.conftest import scalar as _scalar


@pytest.fixture
def loaded(cli, db_url: str, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    assert cli("load", "appointments", _csv(tmp_path / "first.csv", 300), "--db", db_url).exit_code == 0
    return db_url


def digest(url: str) -> str:
    """The appointments table's rows (without the run id), as one hash."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM appointments ORDER BY booking_id")).all()
    engine.dispose()
    return hashlib.sha256(repr([tuple(r)[:5] for r in rows]).encode()).hexdigest()


def last_run(url: str) -> tuple[str, str | None]:
    """(status, error) of the newest appointments run."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT status, error FROM etl_runs WHERE pipeline = 'appointments' ORDER BY started_at DESC"
            )
        ).first()
    engine.dispose()
    assert row is not None
    return str(row[0]), row[1]


def start_load(url: str, src: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "healthetl", "load", "appointments", str(src), "--db", url],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def when_loading(url: str, proc: subprocess.Popen[str]) -> None:
    """Wait (bounded) until the run is recorded running, then a little more: mid-load."""
    deadline = time.monotonic() + 60
    query = "SELECT COUNT(*) FROM etl_runs WHERE status = 'running'"
    while time.monotonic() < deadline and proc.poll() is None:
        if _scalar(url, query):
            time.sleep(0.8)
            return
        time.sleep(0.05)
    pytest.fail("the load never started")
