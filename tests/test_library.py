"""Using healthetl as a library: importing it changes nothing about the importing process."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, VIP, appointments_csv, subprocess_env


def test_importing_healthetl_leaves_the_process_settings_alone() -> None:
    code = (
        "import signal, pyarrow as pa\n"
        "pool, term = pa.default_memory_pool().backend_name, signal.getsignal(signal.SIGTERM)\n"
        "import healthetl.cli, healthetl.pipeline.run, healthetl.sources.readers\n"
        "print(pa.default_memory_pool().backend_name == pool, signal.getsignal(signal.SIGTERM) == term)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_import_healthetl_is_cheap() -> None:
    """`import healthetl` loads neither pandas nor SQLAlchemy: the API is imported on first use."""
    code = (
        "import sys, healthetl\n"
        "print(sorted(m for m in ('pandas', 'sqlalchemy', 'pandera') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_validate_and_load_from_python(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import healthetl
    from healthetl.errors import QualityGateError, UsageError

    # a process that never ran the command line: no handlers of its own on the healthetl logger
    logger = logging.getLogger("healthetl")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    config = REPO / "examples" / "vip-healthtech" / "healthetl.toml"
    with caplog.at_level(logging.INFO, logger="healthetl"):
        result = healthetl.run(config, db=url)
    assert [r.status for r in result.results] == ["succeeded"] * len(result.results)
    loaded = {r.pipeline: r.counts for r in result.results}
    assert loaded and all(
        c.rows_in == c.rows_loaded + c.rows_quarantined + c.duplicates_dropped for c in loaded.values()
    )
    assert any("started" in m for m in caplog.messages)  # progress as log records
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # never printed

    checked = healthetl.validate("appointments", VIP / "appointments.xlsx", config=config, db=url)
    assert checked.summary.rows_in > 0 and checked.summary.rows_quarantined > 0
    more = tmp_path / "more.csv"
    appointments_csv(more, 20, first=900_000)
    again = healthetl.load("appointments", more, db=url, mode="append")
    assert again.status == "succeeded" and again.counts.rows_loaded == 20
    with pytest.raises(UsageError, match="mode must be one of"):
        healthetl.load("appointments", more, db=url, mode="upsert")
    bad = tmp_path / "bad.csv"
    bad.write_text("booking_id,patient_id,doctor_id,booking_date,status\n1,x,999,nope,??\n", encoding="utf-8")
    with pytest.raises(QualityGateError):  # nothing loaded
        healthetl.load("appointments", bad, db=url, mode="append")
    assert capsys.readouterr().out == ""


def test_the_api_takes_the_commands_options_and_returns_frozen_results(tmp_path: Path) -> None:
    """validate -> rejects file -> load with it, from Python: the load counts the source's every row,
    writes its report, and hands back a result nobody can change afterwards."""
    import dataclasses
    import json

    import healthetl

    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    config = REPO / "examples" / "vip-healthtech" / "healthetl.toml"
    healthetl.run(config, db=url)
    src = tmp_path / "semi.csv"
    good = appointments_csv(tmp_path / "good.csv", 1, first=700_001).read_text(encoding="utf-8")
    bad_row = "700002,2,999,2025-10-20,confirmed\n"  # no such doctor
    src.write_text((good + bad_row).replace(",", ";"), encoding="utf-8")
    clean, rejects = tmp_path / "clean.parquet", tmp_path / "rejects.csv"
    checked = healthetl.validate(
        "appointments", src, config=config, db=url, output=clean, rejects=rejects, delimiter=";"
    )
    assert (checked.summary.rows_valid, checked.summary.rows_quarantined) == (1, 1)
    report = tmp_path / "load.json"
    loaded = healthetl.load(
        "appointments", clean, config=config, db=url, mode="append", rejects=rejects, report=report
    )
    assert (loaded.counts.rows_in, loaded.counts.rows_loaded, loaded.counts.rows_quarantined) == (2, 1, 1)
    assert json.loads(report.read_text(encoding="utf-8"))["run_id"] == loaded.run_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.status = "failed"  # type: ignore[misc]
