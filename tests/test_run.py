"""`healthetl run` end to end on the clinic's real workbooks, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import VIP
from tests.expected import clinic

WINDOW = (date(2025, 1, 1), date(2026, 12, 31))


def _csv(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def _tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        out = {
            "doctors": conn.execute(
                sa.text("SELECT doctor_id, name, specialty FROM doctors ORDER BY doctor_id")
            ).all(),
            "appointments": conn.execute(
                sa.text(
                    "SELECT booking_id, patient_id, doctor_id, booking_date, status "
                    "FROM appointments ORDER BY booking_id"
                )
            ).all(),
        }
    engine.dispose()
    return out


def test_run_loads_answers_and_accounts_for_every_row(cli, vip_project: Path, db_url: str) -> None:
    expected = clinic(VIP, WINDOW)
    result = cli("run", "--config", vip_project, "--db", db_url)
    assert result.exit_code == 0, result.output
    # doctors ran before appointments although the project file lists appointments first
    assert result.output.index("doctors: succeeded") < result.output.index("appointments: succeeded")

    tables = _tables(db_url)
    assert len(tables["doctors"]) == len(expected.doctors)
    assert [r[0] for r in tables["appointments"]] == sorted(a["booking_id"] for a in expected.valid)
    assert {r[4] for r in tables["appointments"]} == {"confirmed", "cancelled"}

    report = cli("report", "--last", "--format", "json", "--db", db_url)
    assert report.exit_code == 0, report.output
    runs = {r["pipeline"]: r for r in json.loads(report.stdout)}
    appts = runs["appointments"]
    assert appts["status"] == "succeeded"
    assert appts["rows_in"] == expected.rows_in
    assert appts["rows_loaded"] == len(expected.valid)
    assert appts["rows_quarantined"] == len(expected.rejected_rows)
    assert appts["rows_in"] == appts["rows_loaded"] + appts["rows_quarantined"] + appts["duplicates_dropped"]
    rules = {(c["column_name"], c["rule"]) for c in appts["checks"]}
    assert ("doctor_id", "foreign_key") in rules
    assert ("booking_id", "integer") in rules
    assert ("patient_id", "required") in rules
    assert ("booking_date", "date_window") in rules

    # the quarantine holds exactly the rejected source rows, each with run id and reason
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        q = conn.execute(
            sa.text(
                "SELECT run_id, source_file, source_row, column_name, rule, reason, original "
                "FROM quarantine WHERE dataset = 'appointments'"
            )
        ).all()
        loaded_run_ids = set(conn.execute(sa.text("SELECT DISTINCT run_id FROM appointments")).scalars())
    engine.dispose()
    assert {r.source_row for r in q} == expected.rejected_rows
    assert {r.run_id for r in q} == {appts["run_id"]} == loaded_run_ids
    assert all(r.source_file == "appointments.xlsx" and r.reason for r in q)
    orphan = next(r for r in q if r.rule == "foreign_key")
    assert orphan.reason == "unknown doctor_id '105'"
    assert json.loads(orphan.original)["doctor_id"] == "105"

    # the four business questions, against answers computed from the workbooks
    per_doctor = expected.confirmed_per_doctor()
    top = max(per_doctor.values())
    out = cli("query", "most-confirmed-doctor", "--format", "csv", "--db", db_url)
    assert out.exit_code == 0, out.output
    assert {(r["name"], int(r["confirmed_appointments"])) for r in _csv(out.stdout)} == {
        (n, c) for n, c in per_doctor.items() if c == top
    }

    out = cli("query", "confirmed-per-doctor", "--format", "json", "--db", db_url)
    assert {r["name"]: r["confirmed_appointments"] for r in json.loads(out.stdout)} == per_doctor

    out = cli(
        "query",
        "patient-confirmed-appointments",
        "--param",
        "patient_id=34",
        "--format",
        "csv",
        "--db",
        db_url,
    )
    assert [int(r["booking_id"]) for r in _csv(out.stdout)] == sorted(expected.patient_confirmed(34))

    out = cli(
        "query",
        "cancelled-between",
        "--param",
        "start=2025-10-21",
        "--param",
        "end=2025-10-24",
        "--format",
        "csv",
        "--db",
        db_url,
    )
    got = sorted(int(r["booking_id"]) for r in _csv(out.stdout))
    assert got == expected.cancelled_between(date(2025, 10, 21), date(2025, 10, 24))
    assert got  # the window is inclusive and not empty


def test_second_identical_run_leaves_identical_tables(cli, vip_project: Path, db_url: str) -> None:
    assert cli("run", "--config", vip_project, "--db", db_url).exit_code == 0
    first = _tables(db_url)
    second_run = cli("run", "--config", vip_project, "--db", db_url)
    assert second_run.exit_code == 0, second_run.output
    assert _tables(db_url) == first
    ledger = cli("state", "runs", "--format", "json", "--db", db_url)
    runs = json.loads(ledger.stdout)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"succeeded"}


def test_run_selected_pipeline_and_log_file(cli, vip_project: Path, sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    result = cli(
        "run",
        "--config",
        vip_project,
        "--db",
        sqlite_url,
        "--pipeline",
        "doctors",
        "--log-file",
        log,
    )
    assert result.exit_code == 0, result.output
    text = log.read_text()
    assert "doctors: succeeded" in text and "appointments" not in text
    runs = json.loads(cli("state", "runs", "-f", "json", "--db", sqlite_url).stdout)
    assert [r["pipeline"] for r in runs] == ["doctors"]


def test_run_fail_on_error_exits_1_when_rows_were_quarantined(
    cli, vip_project: Path, sqlite_url: str
) -> None:
    result = cli("run", "--config", vip_project, "--db", sqlite_url, "--fail-on", "error")
    assert result.exit_code == 1
    # the load itself still committed: quarantine is not failure of the tool
    assert _tables(sqlite_url)["appointments"]
