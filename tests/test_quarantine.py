"""The quarantine's lifecycle from the CLI: list, show (masked), replay after a fix, resolve."""

from __future__ import annotations

import json
from datetime import date

import sqlalchemy as sa

from tests.conftest import VIP
from tests.expected import clinic


def _default_window() -> tuple[date, date]:
    today = date.today()
    latest = date(today.year + 2, today.month, min(today.day, 28 if today.month == 2 else 31))
    return date(2000, 1, 1), latest


def _statuses(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, COUNT(*) FROM quarantine GROUP BY status")).all()
    engine.dispose()
    return {str(s): int(n) for s, n in rows}


def _count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql)).scalar()
    engine.dispose()
    return int(value or 0)


def test_replay_loads_what_passes_after_the_reference_data_is_fixed(cli, db_url: str) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    # appointments before doctors: every row fails its reference, the gate stops the load
    assert cli("load", "appointments", VIP / "appointments.xlsx", "--db", db_url).exit_code == 1
    before = json.loads(cli("quarantine", "list", "--limit", "0", "-f", "json", "--db", db_url).stdout)
    assert len({r["source_row"] for r in before}) == 1025
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0

    result = cli("quarantine", "replay", "appointments", "--db", db_url)
    assert result.exit_code == 0, result.output
    expected = clinic(VIP, _default_window())
    loaded = len(expected.valid)
    assert f"1025 rows re-validated, {loaded} loaded" in result.output
    assert _count(db_url, "SELECT COUNT(*) FROM appointments") == loaded
    # the loaded rows' records are replayed, by the replay run; the rest superseded by its own
    replay_run = _count(db_url, "SELECT COUNT(*) FROM etl_runs WHERE command = 'replay'")
    assert replay_run == 1
    statuses = _statuses(db_url)
    replayed_rows = _count(
        db_url, "SELECT COUNT(DISTINCT source_row) FROM quarantine WHERE status = 'replayed'"
    )
    assert replayed_rows == loaded
    again = _count(db_url, "SELECT COUNT(DISTINCT source_row) FROM quarantine WHERE status = 'open'")
    assert again == 1025 - loaded
    assert statuses["superseded"] >= again
    assert (
        _count(
            db_url,
            "SELECT COUNT(*) FROM quarantine q JOIN etl_runs r ON r.run_id = q.run_id "
            "WHERE q.status = 'open' AND r.command <> 'replay'",
        )
        == 0
    )
    # the replay is a run of its own, balanced, with an audit row
    runs = json.loads(cli("state", "runs", "-f", "json", "--db", db_url).stdout)
    replay = next(r for r in runs if r["command"] == "replay")
    assert replay["pipeline"] == "replay:appointments" and replay["status"] == "succeeded"
    assert replay["rows_in"] == replay["rows_loaded"] + replay["rows_quarantined"] == 1025

    # nothing new passes a second time: the same rows fail again, nothing is loaded twice
    result = cli("quarantine", "replay", "appointments", "--db", db_url)
    assert result.exit_code == 0 and ", 0 loaded" in result.output
    assert _count(db_url, "SELECT COUNT(*) FROM appointments") == loaded


def test_replay_after_a_rule_change_by_rule(cli, db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "healthetl.toml"
    narrow = '[[pipelines]]\nname = "appointments"\ndataset = "appointments"\nsource = "a.csv"\n'
    (tmp_path / "a.csv").write_text(
        "booking_id,patient_id,doctor_id,booking_date,status\n"
        "1,10,100,2025-10-20,confirmed\n2,11,100,2024-06-01,confirmed\n3,,100,2024-06-01,confirmed\n",
        encoding="utf-8",
    )
    cfg.write_text(narrow + '[pipelines.date_window]\nbooking_date = ["2025-01-01", "2026-12-31"]\n')
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    assert cli("run", "--db", db_url, "--pipeline", "appointments").exit_code == 0
    assert _count(db_url, "SELECT COUNT(*) FROM appointments") == 1
    # the window was too narrow: widen it, replay only the date_window rejects
    cfg.write_text(narrow + '[pipelines.date_window]\nbooking_date = ["2024-01-01", "2026-12-31"]\n')
    result = cli("quarantine", "replay", "appointments", "--rule", "date_window", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "2 rows re-validated, 1 loaded" in result.output  # row 3 still has no patient
    rows = _count(db_url, "SELECT COUNT(*) FROM appointments WHERE booking_id = 2")
    assert rows == 1
    open_rules = json.loads(cli("quarantine", "list", "-f", "json", "--db", db_url).stdout)
    assert {(r["source_row"], r["rule"]) for r in open_rules} == {(3, "required")}


def test_show_masks_identifying_fields_and_list_filters(cli, db_url: str) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    assert cli("load", "appointments", VIP / "appointments.xlsx", "--db", db_url).exit_code == 0
    listed = json.loads(
        cli("quarantine", "list", "--rule", "foreign_key", "-f", "json", "--db", db_url).stdout
    )
    assert listed and {r["rule"] for r in listed} == {"foreign_key"}
    assert all("original" not in r for r in listed)
    row_id = listed[0]["id"]
    shown = json.loads(cli("quarantine", "show", row_id, "--db", db_url).stdout)
    assert shown["original"]["patient_id"] == "***" and shown["original"]["doctor_id"] != "***"
    revealed = json.loads(cli("quarantine", "show", row_id, "--unmask", "--db", db_url).stdout)
    assert revealed["original"]["patient_id"] not in ("***", None)
    by_rule = json.loads(cli("quarantine", "list", "--by-rule", "-f", "json", "--db", db_url).stdout)
    assert {r["rule"] for r in by_rule} >= {"foreign_key", "date_window"}
    missing = cli("quarantine", "show", "999999", "--db", db_url)
    assert missing.exit_code == 2 and "no quarantine row" in missing.output


def test_resolve_marks_rows_with_a_note(cli, db_url: str) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    assert cli("load", "appointments", VIP / "appointments.xlsx", "--db", db_url).exit_code == 0
    unfiltered = cli("quarantine", "resolve", "--note", "checked", "--db", db_url)
    assert unfiltered.exit_code == 2 and "say which rows" in unfiltered.output
    n = _count(db_url, "SELECT COUNT(*) FROM quarantine WHERE rule = 'integer'")
    result = cli(
        "quarantine", "resolve", "--rule", "integer", "--note", "id 37X fixed at source", "--db", db_url
    )
    assert result.exit_code == 0 and f"resolved {n} quarantine rows" in result.output
    assert (
        _count(db_url, "SELECT COUNT(*) FROM quarantine WHERE status = 'resolved' AND note IS NOT NULL") == n
    )
    # resolved rows are not replayed
    listed = json.loads(
        cli("quarantine", "list", "--status", "resolved", "-f", "json", "--db", db_url).stdout
    )
    assert {r["rule"] for r in listed} == {"integer"}
