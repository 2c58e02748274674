"""Faults in the documented shell pipe: a stage that fails or is killed mid-stream must never
let the load at the end commit a prefix (the stream's trailer is the proof of a finished stage)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from tests.conftest import VIP, subprocess_env
from tests.conftest import appointments_csv as _csv

HE = f"{sys.executable} -m healthetl"


def _digest(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM appointments ORDER BY booking_id")).all()
    engine.dispose()
    return hashlib.sha256(repr([tuple(r)[:5] for r in rows]).encode()).hexdigest()


def _last_run(url: str) -> tuple[str, str | None]:
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


@pytest.fixture
def loaded(cli, db_url: str, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    assert cli("load", "appointments", _csv(tmp_path / "first.csv", 500), "--db", db_url).exit_code == 0
    return db_url


def _pipe(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'{command}; echo "codes ${{PIPESTATUS[*]}}"'],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_a_bad_line_mid_file_loads_nothing_through_the_pipe(loaded: str, tmp_path: Path) -> None:
    before = _digest(loaded)
    src = _csv(tmp_path / "big.csv", 200_000, bad_at=190_001)  # after the first batches are out
    done = _pipe(
        f"{HE} extract appointments {src} -o - | {HE} validate appointments - -o - --fail-on never "
        f"| {HE} load appointments - --db '{loaded}'",
        tmp_path,
    )
    assert "codes 3 3 3" in done.stdout, done.stderr
    assert "big.csv, line 190002: malformed CSV" in done.stderr
    assert "ended without its end mark" in done.stderr and "Traceback" not in done.stderr
    assert _digest(loaded) == before
    status, error = _last_run(loaded)
    assert status == "failed" and error and "end mark" in error


def test_a_stream_cut_short_is_refused(loaded: str, tmp_path: Path) -> None:
    """What a killed producer leaves: the stream stops mid-way (here cut by `head -c`)."""
    before = _digest(loaded)
    src = _csv(tmp_path / "big.csv", 20_000)
    done = _pipe(
        f"{HE} extract appointments {src} -o - | head -c 200000 | {HE} load appointments - --db '{loaded}'",
        tmp_path,
    )
    assert done.stdout.strip().endswith("3"), (done.stdout, done.stderr)
    assert "standard input" in done.stderr and "Traceback" not in done.stderr
    assert _digest(loaded) == before
    assert _last_run(loaded)[0] == "failed"


def test_a_killed_producer_loads_nothing(loaded: str, tmp_path: Path) -> None:
    """extract is killed (SIGKILL) once it has written its first 400 kB into the pipe."""
    before = _digest(loaded)
    src = _csv(tmp_path / "big.csv", 300_000)
    done = _pipe(
        f"mkfifo out; {HE} extract appointments {src} -o - > out & pid=$!; "
        f"(head -c 400000 out; kill -9 $pid) | {HE} load appointments - --db '{loaded}'",
        tmp_path,
    )
    assert done.stdout.strip().endswith("3"), (done.stdout, done.stderr)
    # cut between batches (no end mark) or inside one (an incomplete message): refused either way
    assert "ended without its end mark" in done.stderr or "not a complete Arrow IPC stream" in done.stderr
    assert "Traceback" not in done.stderr
    assert _digest(loaded) == before
    assert _last_run(loaded)[0] == "failed"


def test_a_stream_from_another_arrow_writer_still_loads(cli, loaded: str, tmp_path: Path) -> None:
    """Only streams healthetl marks as its own need the trailer."""
    table = pa.table(
        {
            "booking_id": ["1"],
            "patient_id": ["7"],
            "doctor_id": ["100"],
            "booking_date": ["2025-10-20"],
            "status": ["confirmed"],
        }
    )
    buf = io.BytesIO()
    with pa.ipc.new_stream(buf, table.schema) as writer:
        writer.write_table(table)
    path = tmp_path / "foreign.arrow"
    path.write_bytes(buf.getvalue())
    result = cli("load", "appointments", path, "--db", loaded)
    assert result.exit_code == 0, result.output
