"""Inbox pipelines: files archived only after their batch committed, re-delivered files skipped
by content, inserted/updated/unchanged counts and the audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa


def _doctors(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["doctor_id", "name", "specialty"])
        w.writerows(rows)
    return path


def _project(tmp_path: Path) -> Path:
    cfg = tmp_path / "healthetl.toml"
    (tmp_path / "inbox").mkdir()
    cfg.write_text(
        '[[pipelines]]\nname = "doctors"\ndataset = "doctors"\nsource = "inbox"\n'
        'mode = "merge"\narchive = "archive/{date}"\n'
    )
    return cfg


def _report(cli, cfg: Path, url: str) -> dict:
    return json.loads(cli("report", "--last", "-f", "json", "--config", cfg, "--db", url).stdout)[0]


def test_inbox_archive_redelivery_and_counts(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    inbox, today = tmp_path / "inbox", datetime.now(UTC).strftime("%Y-%m-%d")
    first = [(100, "Dr. Pérez", "Vein"), (101, "Dr. Gómez", "Pain"), (102, "Dr. Sánchez", "Vein")]
    _doctors(inbox / "doctors_1.csv", first)
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    assert list(inbox.iterdir()) == []
    assert (tmp_path / "archive" / today / "doctors_1.csv").exists()
    tables = {t["table_name"]: t for t in _report(cli, cfg, db_url)["tables"]}
    assert (tables["doctors"]["inserted"], tables["doctors"]["updated"], tables["doctors"]["unchanged"]) == (
        3,
        0,
        0,
    )

    # the same content again, under another name: skipped, reported, archived; nothing changes
    _doctors(inbox / "doctors_1_again.csv", first)
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0 and "already loaded by run" in result.output
    assert list(inbox.iterdir()) == []

    # a re-delivery with one change and one new row updates in place, never duplicates
    second = [*first[:2], (102, "Dr. Sánchez-Ruiz", "Vein"), (103, "Dr. Rodríguez", "Pain")]
    _doctors(inbox / "doctors_2.csv", second)
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    old = {r[0]: r for r in first}
    expected_inserted = sum(1 for r in second if r[0] not in old)
    expected_updated = sum(1 for r in second if r[0] in old and old[r[0]] != r)
    tables = {t["table_name"]: t for t in _report(cli, cfg, db_url)["tables"]}
    assert (tables["doctors"]["inserted"], tables["doctors"]["updated"], tables["doctors"]["unchanged"]) == (
        expected_inserted,
        expected_updated,
        len(second) - expected_inserted - expected_updated,
    )
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT doctor_id, name FROM doctors ORDER BY doctor_id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(r[0], r[1]) for r in second]

    # a failing batch (a required column missing) leaves its file in the inbox
    (inbox / "broken.csv").write_text("doctor_id,specialty\n104,Vein\n")
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 1
    assert [p.name for p in inbox.iterdir()] == ["broken.csv"]
    audit = json.loads(cli("report", "--last", "-f", "json", "--config", cfg, "--db", db_url).stdout)[0]
    assert audit["status"] == "failed" and audit["tables"][0]["error"]
    archived = sorted(p.name for p in (tmp_path / "archive" / today).iterdir())
    assert archived == ["doctors_1.csv", "doctors_1_again.csv", "doctors_2.csv"]


def test_state_runs_tables_shows_the_audit_log(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    _doctors(tmp_path / "inbox" / "d.csv", [(100, "Dr. Pérez", "Vein"), (101, "Dr. Gómez", "Pain")])
    assert cli("run", "--config", cfg, "--db", sqlite_url).exit_code == 0
    rows = json.loads(
        cli("state", "runs", "--tables", "-f", "json", "--config", cfg, "--db", sqlite_url).stdout
    )
    assert [(r["table_name"], r["rows_processed"], r["inserted"]) for r in rows] == [("doctors", 2, 2)]
    assert rows[0]["started_at"] and rows[0]["finished_at"] and rows[0]["error"] is None


def test_an_empty_inbox_is_nothing_to_do(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "doctors: the inbox is empty, nothing to do" in result.output
    # a pipeline that is not an inbox still says its file is missing
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "doctors"\ndataset = "doctors"\nsource = "inbox/doctors.csv"\n'
    )
    missing = cli("run", "--config", cfg, "--db", sqlite_url)
    assert missing.exit_code == 3 and "doctors.csv: file not found" in missing.output


def test_archive_paths_are_checked_and_symlinks_archived_as_files(
    cli, tmp_path: Path, sqlite_url: str
) -> None:
    cfg = _project(tmp_path)
    for archive in ("../../elsewhere/{date}", "inbox/{date}", "."):
        cfg.write_text(
            '[[pipelines]]\nname = "doctors"\ndataset = "doctors"\nsource = "inbox"\n'
            f'mode = "merge"\narchive = "{archive}"\n'
        )
        result = cli("run", "--config", cfg, "--db", sqlite_url)
        assert result.exit_code == 2, (archive, result.output)
        assert "leaves the project folder" in result.output or "is the inbox" in result.output
    # an archive inside the inbox is fine: its files are not read again
    cfg.write_text(
        '[[pipelines]]\nname = "doctors"\ndataset = "doctors"\nsource = "inbox"\n'
        'mode = "merge"\narchive = "inbox/done/{date}"\n'
    )
    outside = _doctors(tmp_path / "delivered.csv", [(100, "Dr. Pérez", "Vein")])
    (tmp_path / "inbox" / "doctors.csv").symlink_to(outside)
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    archived = list((tmp_path / "inbox" / "done").rglob("*.csv"))
    assert (
        len(archived) == 1 and not archived[0].is_symlink() and archived[0].read_text() == outside.read_text()
    )
    assert outside.exists() and not (tmp_path / "inbox" / "doctors.csv").exists()
    again = cli("run", "--config", cfg, "--db", sqlite_url)
    assert again.exit_code == 0 and "the inbox is empty" in again.output
