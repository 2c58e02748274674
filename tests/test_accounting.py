"""Every row accounted for on every path: failed gates, shell pipes, rejects files, batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tests.conftest import VIP
from tests.conftest import scalar as _scalar

HEADER = "booking_id,patient_id,doctor_id,booking_date,status\n"


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _last_report(cli, url: str, pipeline: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    out = cli("report", "--last", "-f", "json", "--db", url, "--pipeline", pipeline)
    assert out.exit_code == 0, out.output
    (run,) = json.loads(out.stdout)
    return run  # type: ignore[no-any-return]


def test_a_gate_that_fails_keeps_the_rejects_and_their_rules(cli, db_url: str) -> None:
    """Every row references an unknown doctor: the row_count gate fails, and the run still
    says which rows failed which rule (quarantine kept, counts balanced, report shows them)."""
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    result = cli("load", "appointments", VIP / "appointments.xlsx", "--db", db_url)
    assert result.exit_code == 1, result.output
    assert "no rows to load" in result.output and "1025 of 1025 rows quarantined" in result.output
    run = _last_report(cli, db_url, "appointments")
    assert run["status"] == "failed"
    assert run["rows_in"] == 1025 and run["rows_loaded"] == 0
    assert run["rows_in"] == (
        run["rows_loaded"] + run["rows_quarantined"] + run["duplicates_dropped"] + run["rows_rolled_back"]
    )
    assert run["rows_quarantined"] == 1025 and run["rows_rolled_back"] == 0
    rules = {(c["column_name"], c["rule"]): c["failures"] for c in run["checks"]}
    assert rules[("doctor_id", "foreign_key")] == 1025
    assert any(q["check_name"] == "row_count" and not q["passed"] for q in run["quality"])
    assert run["tables"][0]["quarantined"] == 1025
    # the quarantine rows are the run's, and every rejected source row is there once
    rows = _scalar(db_url, "SELECT COUNT(DISTINCT source_row) FROM quarantine")
    assert rows == 1025
    assert _scalar(db_url, "SELECT COUNT(*) FROM appointments") == 0


def test_a_gate_failure_with_valid_rows_counts_them_rolled_back(cli, db_url: str, tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "appts"\ndataset = "appointments"\nsource = "a.csv"\n'
        "[pipelines.quality]\ninvalid_date_rate = 0.1\n",
        encoding="utf-8",
    )
    src = _csv(
        tmp_path / "a.csv",
        ["1,10,100,2025-10-20,confirmed", "2,11,100,2025-02-30,confirmed", "3,12,100,not a date,confirmed"],
    )
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    result = cli("load", "appointments", src, "--db", db_url, "--pipeline", "appts")
    assert result.exit_code == 1, result.output
    assert "invalid_date_rate" in result.output
    run = _last_report(cli, db_url, "appts")
    assert (run["rows_in"], run["rows_loaded"], run["rows_quarantined"], run["rows_rolled_back"]) == (
        3,
        0,
        2,
        1,
    )
    assert {(c["column_name"], c["rule"]) for c in run["checks"]} == {("booking_date", "date")}
    assert _scalar(db_url, "SELECT COUNT(*) FROM appointments") == 0
    assert _scalar(db_url, "SELECT COUNT(*) FROM quarantine") == 2


def test_the_report_file_of_a_failed_gate_lists_the_rules(cli, sqlite_url: str, tmp_path: Path) -> None:
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    report = tmp_path / "dq.json"
    result = cli("load", "appointments", VIP / "appointments.xlsx", "--db", sqlite_url, "--report", report)
    assert result.exit_code == 1
    doc = json.loads(report.read_text())
    assert doc["status"] == "failed"
    assert doc["counts"]["rows_quarantined"] == 1025
    assert any(c["check"] == "row_count" and not c["passed"] for c in doc["checks"])
    assert {r["rule"] for r in doc["rules"]} >= {"foreign_key"}
    frame = pd.DataFrame(doc["rules"])
    assert int(frame.loc[frame["rule"] == "foreign_key", "failed_rows"].item()) == 1025


def _healthetl() -> str:
    return f"{sys.executable} -m healthetl"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}


def test_the_shell_pipe_carries_rejects_to_the_load(cli, db_url: str, tmp_path: Path) -> None:
    """extract | validate | load: the rows validate rejected reach quarantine, and the run's
    rows_in is the file's row count."""
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    src = _csv(
        tmp_path / "a.csv",
        [
            "1,10,100,2025-10-20,confirmed",
            "2,,100,2025-10-21,confirmed",  # rejected by validate: no patient
            "3,12,105,2025-10-21,confirmed",  # rejected by load: unknown doctor
            "4,13,100,1999-10-21,pending",  # rejected by validate: two failed checks
            "5,14,101,2025-10-22,cancelled",
        ],
    )
    he = _healthetl()
    done = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"{he} extract appointments {src} -o - | {he} validate appointments - -o - --fail-on never "
            f"| {he} load appointments - --db '{db_url}'",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "5 rows in, 2 loaded, 3 quarantined" in done.stderr
    run = _last_report(cli, db_url, "appointments")
    assert (run["rows_in"], run["rows_loaded"], run["rows_quarantined"]) == (5, 2, 3)
    rules = {(c["column_name"], c["rule"]): c["failures"] for c in run["checks"]}
    assert rules == {
        ("patient_id", "required"): 1,
        ("doctor_id", "foreign_key"): 1,
        ("booking_date", "date_window"): 1,
        ("status", "vocabulary"): 1,
    }
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        q = conn.execute(
            sa.text(
                "SELECT source_file, source_row, rule, original FROM quarantine ORDER BY source_row, rule"
            )
        ).all()
    engine.dispose()
    assert [(r.source_file, r.source_row, r.rule) for r in q] == [
        ("a.csv", 2, "required"),
        ("a.csv", 3, "foreign_key"),
        ("a.csv", 4, "date_window"),
        ("a.csv", 4, "vocabulary"),
    ]
    # the row as received travels with the reject: the quarantine holds it, not a blank
    assert json.loads(q[2].original)["booking_date"] == "1999-10-21"


def test_load_takes_the_rejects_file_of_validate(cli, db_url: str, tmp_path: Path) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    clean, rejects = tmp_path / "clean.parquet", tmp_path / "rejects.csv"
    result = cli(
        "validate",
        "appointments",
        VIP / "appointments.xlsx",
        "-o",
        clean,
        "--rejects",
        rejects,
        "--db",
        db_url,
    )
    assert result.exit_code == 1
    valid = len(pd.read_parquet(clean))
    rejected_rows = pd.read_csv(rejects, dtype=str).query("severity == 'error'")["source_row"].nunique()
    assert valid + rejected_rows == 1025
    result = cli("load", "appointments", clean, "--rejects", rejects, "--db", db_url)
    assert result.exit_code == 0, result.output
    run = _last_report(cli, db_url, "appointments")
    assert run["rows_in"] == 1025
    assert (run["rows_loaded"], run["rows_quarantined"]) == (valid, rejected_rows)
    assert _scalar(db_url, "SELECT COUNT(DISTINCT source_row) FROM quarantine") == rejected_rows
    assert _scalar(db_url, "SELECT COUNT(*) FROM appointments") == valid


def test_a_rejects_file_of_another_shape_is_refused(cli, sqlite_url: str, tmp_path: Path) -> None:
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    src = _csv(tmp_path / "a.csv", ["1,10,100,2025-10-20,confirmed"])
    result = cli("load", "appointments", src, "--rejects", src, "--db", sqlite_url)
    assert result.exit_code == 2, result.output
    assert "not a rejects file" in result.output and "Traceback" not in result.output


BATCH_PROJECT = """
[[pipelines]]
name = "lab"
source = "data"
[pipelines.quality]
freshness_hours = 1000000
[pipelines.datasets]
labs = "labs*.csv"
sites = "sites*.csv"

[[datasets]]
name = "sites"
primary_key = ["site"]
[datasets.columns]
site = { type = "text", required = true }

[[datasets]]
name = "labs"
primary_key = ["lab_id"]
dedupe_order = ["updated"]
cursor = "updated"
lookback_hours = 1
[datasets.columns]
lab_id = { type = "text", required = true }
result = { type = "float", required = true }
updated = { type = "timestamp", required = true }
"""


def _batch_project(tmp_path: Path, url: str, cli) -> Path:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sites1.csv").write_text("site\nNorth\n")
    (tmp_path / "data" / "labs1.csv").write_text("lab_id,result,updated\nL1,5.0,2025-12-01T10:00:00Z\n")
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text(BATCH_PROJECT, encoding="utf-8")
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("db", "revision", "-m", "lab", "--db", url).exit_code == 0
    assert cli("run", "--db", url).exit_code == 0
    return cfg


def test_a_batch_pipeline_honours_full_refresh(cli, tmp_path: Path, db_url: str) -> None:
    _batch_project(tmp_path, db_url, cli)
    # a late row, far behind the watermark: an incremental run skips it, a full refresh takes it
    (tmp_path / "data" / "labs2.csv").write_text("lab_id,result,updated\nL0,1.0,2025-11-01T00:00:00Z\n")
    result = cli("run", "--db", db_url)
    assert result.exit_code == 0 and "1 behind the watermark" in result.output
    assert _scalar(db_url, "SELECT COUNT(*) FROM labs WHERE lab_id = 'L0'") == 0
    result = cli("run", "--db", db_url, "--full-refresh")
    assert result.exit_code == 0, result.output
    assert "behind the watermark" not in result.output
    assert _scalar(db_url, "SELECT COUNT(*) FROM labs WHERE lab_id = 'L0'") == 1


def test_a_batch_pipeline_refuses_from_raw(cli, tmp_path: Path, db_url: str) -> None:
    _batch_project(tmp_path, db_url, cli)
    run_id = _scalar(db_url, "SELECT run_id FROM etl_runs")
    result = cli("run", "--db", db_url, "--from-raw", run_id)
    assert result.exit_code == 2, result.output
    assert "--from-raw" in result.output and "lab" in result.output
    assert _scalar(db_url, "SELECT COUNT(*) FROM etl_runs") == 1
