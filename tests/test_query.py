"""healthetl query: named queries, ad-hoc SQL, formats, read-only and bound parameters."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa


def _loaded(cli, vip_project: Path, url: str) -> None:
    assert cli("run", "--config", vip_project, "--db", url).exit_code == 0


def test_list_names_every_query(cli) -> None:
    result = cli("query", "--list", "--format", "json")
    assert result.exit_code == 0
    names = {q["query"] for q in json.loads(result.stdout)}
    assert names == {
        "most-confirmed-doctor",
        "patient-confirmed-appointments",
        "cancelled-between",
        "confirmed-per-doctor",
        "daily-visits",
        "facility-metrics",
        "expiring-accreditations",
        "accredited-per-state",
        "facility-stats",
        "patients-by-age-group",
        "triage-trends",
        "encounters-per-month",
        "top-conditions",
        "fhir-encounters-per-class-month",
        "fhir-top-conditions",
        "fhir-patients-by-age-group",
        "fhir-active-medications-per-patient",
    }


def test_writes_are_refused_and_nothing_changes(cli, vip_project: Path, db_url: str) -> None:
    _loaded(cli, vip_project, db_url)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT COUNT(*) FROM appointments")).scalar()
    for sql in (
        "DELETE FROM appointments",
        "COMMIT; DELETE FROM appointments",
        "SELECT 1; DELETE FROM appointments",
        "DROP TABLE appointments",
    ):
        result = cli("query", "--sql", sql, "--db", db_url)
        assert result.exit_code == 2, (sql, result.output)
        assert "query refused" in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM appointments")).scalar() == before > 0
    engine.dispose()


def test_parameters_are_bound_not_formatted(cli, vip_project: Path, db_url: str) -> None:
    _loaded(cli, vip_project, db_url)
    hostile = "x' OR '1'='1"
    result = cli(
        "query",
        "--sql",
        "SELECT COUNT(*) AS n FROM appointments WHERE status = :s",
        "--param",
        f"s={hostile}",
        "--format",
        "json",
        "--db",
        db_url,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 0}]
    # a typed parameter is checked before it reaches the database
    result = cli("query", "patient-confirmed-appointments", "--param", "patient_id=34 OR 1=1", "--db", db_url)
    assert result.exit_code == 2 and "must be an integer" in result.output


def test_missing_and_unknown_parameters(cli, vip_project: Path, sqlite_url: str) -> None:
    _loaded(cli, vip_project, sqlite_url)
    result = cli("query", "cancelled-between", "--param", "start=2025-10-21", "--db", sqlite_url)
    assert result.exit_code == 2 and "missing --param end" in result.output
    result = cli("query", "confirmed-per-doctor", "--param", "x=1", "--db", sqlite_url)
    assert result.exit_code == 2 and "unknown parameter" in result.output
    assert cli("query", "nope", "--db", sqlite_url).exit_code == 2
    assert cli("query", "--db", sqlite_url).exit_code == 2


def test_formats(cli, vip_project: Path, sqlite_url: str) -> None:
    _loaded(cli, vip_project, sqlite_url)
    as_json = json.loads(cli("query", "confirmed-per-doctor", "-f", "json", "--db", sqlite_url).stdout)
    as_csv = cli("query", "confirmed-per-doctor", "-f", "csv", "--db", sqlite_url).stdout
    table = cli("query", "confirmed-per-doctor", "--db", sqlite_url).stdout
    assert as_csv.splitlines()[0] == "doctor_id,name,confirmed_appointments"
    assert len(as_csv.splitlines()) == len(as_json) + 1
    assert all(r["name"] in table for r in as_json)
