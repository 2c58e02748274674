"""Schedulers read outcomes from stdout: `--format json` prints the result object of run, load and
validate (logs stay on stderr), `--report -` prints the report (also when the run fails), and two
documents never share stdout. Run as subprocesses, so stdout and stderr are really apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, appointments_csv


def _healthetl(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "healthetl", *[str(a) for a in args]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_prints_its_result_as_json_on_stdout(tmp_path: Path) -> None:
    config = REPO / "examples" / "vip-healthtech" / "healthetl.toml"
    db = f"sqlite:///{tmp_path / 'x.db'}"
    done = _healthetl("run", "--config", config, "--db", db, "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is one JSON document, nothing else
    by_pipeline = {p["pipeline"]: p for p in result["pipelines"]}
    assert set(by_pipeline) == {"doctors", "appointments"}
    for report in by_pipeline.values():
        c = report["counts"]
        assert report["status"] == "succeeded"
        assert c["rows_in"] == c["rows_loaded"] + c["rows_quarantined"] + c["duplicates_dropped"]
    assert "succeeded" in done.stderr  # the human summary is still there, on stderr


def test_load_and_validate_print_their_results(tmp_path: Path) -> None:
    dirty = appointments_csv(tmp_path / "appointments.csv", 200)
    lines = dirty.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("2025-10-20", "not-a-date")
    dirty.write_text("\n".join(lines) + "\n", encoding="utf-8")

    checked = _healthetl("validate", "appointments", dirty, "--format", "json", cwd=tmp_path)
    assert checked.returncode == 1  # the exit code stays the contract
    summary = json.loads(checked.stdout)
    assert summary["rows_in"] == 200 and summary["rows_quarantined"] >= 1
    assert any(c["column"] == "booking_date" for c in summary["checks"])

    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert _healthetl("db", "upgrade", "--db", db, cwd=tmp_path).returncode == 0
    doctors = tmp_path / "doctors.csv"
    doctors.write_text("doctor_id,name,specialty\n" + "".join(f"{i},Dr {i},Vein\n" for i in range(100, 105)))
    assert _healthetl("load", "doctors", doctors, "--db", db, cwd=tmp_path).returncode == 0
    loaded = _healthetl("load", "appointments", dirty, "--db", db, "--format", "json", cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(loaded.stdout)
    assert report["counts"]["rows_in"] == 200
    assert report["counts"]["rows_quarantined"] == summary["rows_quarantined"]


def test_report_dash_is_stdout_even_when_the_run_fails(tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "appointments"\ndataset = "appointments"\nsource = "missing.csv"\n',
        encoding="utf-8",
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    done = _healthetl("run", "--db", db, "--report", "-", cwd=tmp_path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["error"] and "missing.csv" in report["error"]
    assert "error:" in done.stderr


def test_two_documents_never_share_stdout(tmp_path: Path) -> None:
    source = appointments_csv(tmp_path / "a.csv", 3)
    done = _healthetl("validate", "appointments", source, "-o", "-", "--report", "-", cwd=tmp_path)
    assert done.returncode == 2 and "--report - and -o - would both write to stdout" in done.stderr
    clash = _healthetl("run", "--format", "json", "--report", "-", cwd=tmp_path)
    assert clash.returncode == 2 and "would both write to stdout" in clash.stderr
