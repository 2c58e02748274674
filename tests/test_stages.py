"""extract, validate and load as separate commands, in files and through pipes."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tests.conftest import VIP
from tests.expected import clinic


def test_extract_writes_text_columns_with_lineage(cli, tmp_path: Path) -> None:
    out = tmp_path / "appointments.parquet"
    result = cli("extract", "appointments", VIP / "appointments.xlsx", "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == [
        "_source_file",
        "_source_row",
        "booking_id",
        "patient_id",
        "doctor_id",
        "booking_date",
        "status",
    ]
    assert len(frame) == 1025
    assert frame["_source_row"].tolist() == list(range(1, 1026))
    assert set(frame["_source_file"]) == {"appointments.xlsx"}
    # ids are never routed through float: '37X' survives, and missing cells stay missing
    assert frame.loc[frame["_source_row"] == 37, "booking_id"].item() == "37X"
    assert frame["patient_id"].isna().sum() == 3


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".csv.gz"])
def test_extract_output_formats_round_trip(cli, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"doctors{suffix}"
    assert cli("extract", "doctors", VIP / "doctors.xlsx", "-o", out).exit_code == 0
    if suffix == ".ndjson":
        frame = pd.read_json(out, lines=True, dtype=False)
    else:
        frame = pd.read_csv(out, dtype=str)
    assert frame["name"].tolist()[0] == "Dr. Pérez"
    assert len(frame) == 5


def test_extract_normalises_column_names_and_reads_gzip(cli, tmp_path: Path) -> None:
    src = tmp_path / "visits.csv.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        fh.write(" Booking ID ,PatientId,Doctor-ID,Booking Date,STATUS\n1,7,100,2025-10-20,Confirmed\n")
    out = tmp_path / "x.parquet"
    assert cli("extract", "appointments", src, "-o", out).exit_code == 0
    assert list(pd.read_parquet(out).columns)[2:] == [
        "booking_id",
        "patient_id",
        "doctor_id",
        "booking_date",
        "status",
    ]


def test_extract_to_stdout_is_an_arrow_stream(cli) -> None:
    result = cli("extract", "doctors", VIP / "doctors.xlsx", "-o", "-")
    assert result.exit_code == 0
    table = pa.ipc.open_stream(io.BytesIO(result.stdout_bytes)).read_all()
    assert table.num_rows == 5 and "doctor_id" in table.column_names


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "booking_id,patient_id,doctor_id,booking_date,status\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    return path


def test_validate_splits_rows_and_reports(cli, tmp_path: Path) -> None:
    src = _write_csv(
        tmp_path / "a.csv",
        [
            "1,10,100,10/20/2025,confirmed",  # valid, US layout
            "2,11,100,2025/10/21, Cancelled. ",  # valid, other layout and messy status
            "3,12,100,2025-02-30,confirmed",  # not a real date
            "4,,100,2025-10-21,confirmed",  # missing patient (identifying: value not shown)
            "5,14,100,2025-10-21,pending",  # unknown status, value named
            "1,15,100,2025-10-22,confirmed",  # duplicate booking id
            "9377952927E-5,16,100,2025-10-22,confirmed",  # scientific notation is not an integer
        ],
    )
    clean, rejects, report = tmp_path / "clean.parquet", tmp_path / "rej.csv", tmp_path / "dq.json"
    result = cli("validate", "appointments", src, "-o", clean, "--rejects", rejects, "--report", report)
    assert result.exit_code == 1, result.output
    good = pd.read_parquet(clean)
    assert good["booking_id"].tolist() == ["1", "2"]
    assert good["booking_date"].tolist() == ["2025-10-20", "2025-10-21"]
    assert good["status"].tolist() == ["confirmed", "cancelled"]
    bad = pd.read_csv(rejects, dtype=str)
    by_row = {int(r.source_row): (r.column_name, r.rule, r.reason) for r in bad.itertuples()}
    assert by_row[3][:2] == ("booking_date", "date")
    assert by_row[4] == ("patient_id", "required", "patient_id is missing")
    assert by_row[5] == (
        "status",
        "vocabulary",
        "unknown status 'pending' (expected one of confirmed, cancelled)",
    )
    assert by_row[6][:2] == ("booking_id", "duplicate_key")
    assert by_row[7][:2] == ("booking_id", "integer")
    dq = json.loads(report.read_text())
    assert dq["rows_in"] == 7 and dq["rows_valid"] == 2 and dq["rows_quarantined"] == 5
    assert dq["skipped_checks"] == ["doctor_id -> doctors.doctor_id"]


def test_validate_exit_codes_follow_fail_on(cli, tmp_path: Path) -> None:
    ok = _write_csv(tmp_path / "ok.csv", ["1,10,100,2025-10-20,confirmed"])
    bad = _write_csv(tmp_path / "bad.csv", ["x,10,100,2025-10-20,confirmed"])
    assert cli("validate", "appointments", ok).exit_code == 0
    assert cli("validate", "appointments", bad).exit_code == 1
    assert cli("validate", "appointments", bad, "--fail-on", "never").exit_code == 0
    assert cli("validate", "appointments", bad, "--fail-on", "sometimes").exit_code == 2


def test_severity_warning_keeps_the_row(cli, tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "a.csv", ["1,10,100,10/24/2030,confirmed"])
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "appts"\ndataset = "appointments"\nsource = "a.csv"\n'
        '[pipelines.date_window]\nbooking_date = ["2025-01-01", "2026-12-31"]\n'
        '[pipelines.severity]\n"booking_date.date_window" = "warning"\n'
    )
    clean = tmp_path / "clean.csv"
    assert cli("validate", "appointments", src, "-o", clean).exit_code == 0
    assert cli("validate", "appointments", src, "--fail-on", "warning").exit_code == 1
    assert pd.read_csv(clean, dtype=str)["booking_date"].tolist() == ["2030-10-24"]


def test_missing_required_column_fails_the_contract(cli, tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text("booking_id,doctor_id,booking_date,status\n1,100,2025-10-20,confirmed\n")
    result = cli("validate", "appointments", src)
    assert result.exit_code == 1
    assert "missing required column(s) patient_id" in result.output
    assert "Traceback" not in result.output


def test_validate_with_db_checks_references(cli, tmp_path: Path, sqlite_url: str) -> None:
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", sqlite_url).exit_code == 0
    src = _write_csv(tmp_path / "a.csv", ["1,10,100,2025-10-20,confirmed", "2,10,105,2025-10-20,confirmed"])
    rejects = tmp_path / "rej.ndjson"
    result = cli("validate", "appointments", src, "--db", sqlite_url, "--rejects", rejects)
    assert result.exit_code == 1
    rej = pd.read_json(rejects, lines=True, dtype=False)
    assert rej["reason"].tolist() == ["unknown doctor_id '105'"]


def test_a_merge_rewrites_only_the_rows_that_changed(cli, tmp_path: Path, db_url: str) -> None:
    """A merge counts new, changed and unchanged rows; an unchanged row (a missing value equal to a
    missing value) is not rewritten: it keeps the run id of the run that last changed it, a
    changed one takes the merging run's."""
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    first = tmp_path / "a.csv"
    first.write_text("doctor_id,name,specialty\n100,Dr. A,Vein\n101,Dr. B,\n102,Dr. C,Cardio\n")
    assert cli("load", "doctors", first, "--mode", "merge", "--db", db_url).exit_code == 0
    second = tmp_path / "b.csv"  # 100 changed, 101 and 102 as stored, 103 new
    second.write_text(
        "doctor_id,name,specialty\n100,Dr. A,Surgery\n101,Dr. B,\n102,Dr. C,Cardio\n103,Dr. D,\n"
    )
    result = cli("load", "doctors", second, "--mode", "merge", "--db", db_url, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    table = next(a for a in report["tables_written"] if a["table_name"] == "doctors")
    assert (table["inserted"], table["updated"], table["unchanged"]) == (1, 1, 2)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        stored = {
            r[0]: (r[1], r[2])
            for r in conn.execute(sa.text("SELECT doctor_id, specialty, run_id FROM doctors"))
        }
        first_run = (
            conn.execute(
                sa.text("SELECT run_id FROM etl_runs WHERE pipeline = 'doctors' ORDER BY started_at")
            )
            .scalars()
            .first()
        )
    engine.dispose()
    merged = report["run_id"]
    assert stored == {
        100: ("Surgery", merged),
        101: (None, first_run),
        102: ("Cardio", first_run),
        103: (None, merged),
    }


def test_load_modes_and_transactional_failure(cli, tmp_path: Path, db_url: str) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    first = _write_csv(tmp_path / "a.csv", ["1,10,100,2025-10-20,confirmed", "2,11,101,2025-10-21,cancelled"])
    assert cli("load", "appointments", first, "--db", db_url).exit_code == 0
    engine = sa.create_engine(db_url)

    def rows() -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT booking_id, status FROM appointments ORDER BY booking_id")
            ).all()

    before = rows()
    # append of an existing key fails as a whole: nothing half-written, run recorded failed
    dup = _write_csv(tmp_path / "b.csv", ["3,12,100,2025-10-22,confirmed", "1,10,100,2025-10-20,cancelled"])
    result = cli("load", "appointments", dup, "--mode", "append", "--db", db_url)
    assert result.exit_code == 3, result.output
    assert "nothing was written" in result.output and "Traceback" not in result.output
    assert rows() == before
    runs = json.loads(cli("state", "runs", "-f", "json", "--db", db_url).stdout)
    assert runs[0]["status"] == "failed" and runs[0]["error"]

    # merge upserts on the key
    assert cli("load", "appointments", dup, "--mode", "merge", "--db", db_url).exit_code == 0
    assert rows() == [(1, "cancelled"), (2, "cancelled"), (3, "confirmed")]

    # replacing doctors with a file that drops a referenced doctor fails at commit
    fewer = tmp_path / "doctors.csv"
    fewer.write_text("doctor_id,name,specialty\n100,Dr. Pérez,Vein\n")
    result = cli("load", "doctors", fewer, "--db", db_url)
    assert result.exit_code == 3
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM doctors")).scalar() == 5
    engine.dispose()


def test_shell_pipe_extract_validate_load(tmp_path: Path, sqlite_url: str) -> None:
    exe = [sys.executable, "-m", "healthetl"]
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    subprocess.run([*exe, "db", "upgrade", "--db", sqlite_url], check=True, env=env, capture_output=True)
    subprocess.run(
        [*exe, "load", "doctors", str(VIP / "doctors.xlsx"), "--db", sqlite_url],
        check=True,
        env=env,
        capture_output=True,
    )
    py = " ".join(exe)
    pipeline = (
        f"{py} extract appointments {VIP / 'appointments.xlsx'} -o - "
        f"| {py} validate appointments - -o - --fail-on never "
        f"| {py} load appointments - --db {sqlite_url}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT COUNT(*) FROM appointments")).scalar()
        rules = set(conn.execute(sa.text("SELECT DISTINCT rule FROM quarantine")).scalars())
        orphans = conn.execute(sa.text("SELECT COUNT(*) FROM quarantine WHERE rule = 'foreign_key'")).scalar()
        rejected = conn.execute(sa.text("SELECT COUNT(DISTINCT source_row) FROM quarantine")).scalar()
        rows_in = conn.execute(
            sa.text("SELECT rows_in FROM etl_runs WHERE pipeline = 'appointments'")
        ).scalar()
    # validate without --db cannot know the doctors; load checks them against the database;
    # the rows validate rejected travel down the pipe and are quarantined by the load
    today = date.today()
    latest = date(today.year + 2, today.month, min(today.day, 28 if today.month == 2 else 31))
    default_window = (date(2000, 1, 1), latest)
    assert "foreign_key" in rules and len(rules) > 1
    assert loaded == len(clinic(VIP, default_window).valid)
    assert orphans > 0
    assert rows_in == 1025 == loaded + rejected
