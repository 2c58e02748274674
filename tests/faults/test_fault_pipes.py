"""Faults in the documented shell pipe: a stage that fails or is killed mid-stream must never
let the load at the end commit a prefix (the stream's trailer is the proof of a finished stage)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from tests.conftest import appointments_csv as _csv
from tests.conftest import subprocess_env
from tests.faults.conftest import digest, last_run

HE = f"{sys.executable} -m healthetl"


def _pipe(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'{command}; echo "codes ${{PIPESTATUS[*]}}"'],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_a_bad_line_mid_file_loads_nothing_through_the_pipe(loaded: str, tmp_path: Path) -> None:
    before = digest(loaded)
    src = _csv(tmp_path / "big.csv", 200_000, bad_at=190_001)  # after the first batches are out
    done = _pipe(
        f"{HE} extract appointments {src} -o - | {HE} validate appointments - -o - --fail-on never "
        f"| {HE} load appointments - --db '{loaded}'",
        tmp_path,
    )
    assert "codes 3 3 3" in done.stdout, done.stderr
    assert "big.csv, line 190002: malformed CSV" in done.stderr
    assert "ended without its end mark" in done.stderr and "Traceback" not in done.stderr
    assert digest(loaded) == before
    status, error = last_run(loaded)
    assert status == "failed" and error and "end mark" in error


def test_a_stream_cut_short_is_refused(loaded: str, tmp_path: Path) -> None:
    """What a killed producer leaves: the stream stops mid-way (here cut by `head -c`)."""
    before = digest(loaded)
    src = _csv(tmp_path / "big.csv", 20_000)
    done = _pipe(
        f"{HE} extract appointments {src} -o - | head -c 200000 | {HE} load appointments - --db '{loaded}'",
        tmp_path,
    )
    assert done.stdout.strip().endswith("3"), (done.stdout, done.stderr)
    assert "standard input" in done.stderr and "Traceback" not in done.stderr
    assert digest(loaded) == before
    assert last_run(loaded)[0] == "failed"


def test_a_killed_producer_loads_nothing(loaded: str, tmp_path: Path) -> None:
    """extract is killed (SIGKILL) once it has written its first 400 kB into the pipe."""
    before = digest(loaded)
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
    assert digest(loaded) == before
    assert last_run(loaded)[0] == "failed"


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
