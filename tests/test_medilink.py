"""Related entities (Medilink layout): generated ids, references by natural key in one
transaction per batch, upserts with exact counts, orphans quarantined, inbox archive, views."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa

from tests.medilink_gen import generate

TABLES = {
    "facilities": "medilink_facilities",
    "patients": "medilink_patients",
    "records": "medilink_medical_records",
    "visits": "medilink_triage_visits",
}


def _project(tmp_path: Path) -> Path:
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text(
        '[[pipelines]]\nname = "medilink"\nsource = "inbox"\narchive = "archive/{date}"\n'
        'phone_country_code = "234"\n[pipelines.datasets]\n'
        'medilink_facilities = "facilities*.csv"\nmedilink_patients = "patients*.csv"\n'
        'medilink_medical_records = "medical_records*.csv"\nmedilink_triage_visits = "triage_visits*.csv"\n'
    )
    return cfg


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    engine.dispose()
    return n


def _tables_written(cli, cfg: Path, url: str) -> dict[str, dict]:
    run = json.loads(cli("report", "--last", "-f", "json", "--config", cfg, "--db", url).stdout)[0]
    return {t["table_name"]: t for t in run["tables"]}


def test_batch_resolves_natural_keys_and_quarantines_orphans(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    batch = generate()
    batch.write(tmp_path / "inbox")
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0, result.output
    written = _tables_written(cli, cfg, db_url)
    for kind, table in TABLES.items():
        rows = getattr(batch, kind)
        bad = sum(1 for (k, _), _rule in batch.defects.items() if k == kind)
        assert _count(db_url, table) == len(rows) - bad, table
        assert (written[table]["inserted"], written[table]["quarantined"]) == (len(rows) - bad, bad), table

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        q = conn.execute(
            sa.text("SELECT dataset, source_file, source_row, rule, reason FROM quarantine")
        ).all()
        phones = conn.execute(sa.text("SELECT phone FROM medilink_patients")).scalars().all()
        ids = conn.execute(sa.text("SELECT facility_id FROM medilink_facilities")).scalars().all()
    engine.dispose()
    got = {(r.source_file.split(".")[0], r.source_row, r.rule) for r in q}
    file_of = {
        "facilities": "facilities",
        "patients": "patients",
        "records": "medical_records",
        "visits": "triage_visits",
    }
    assert {(file_of[k], row, rule) for (k, row), rule in batch.defects.items()} <= got
    orphan = next(r for r in q if r.dataset == "medilink_patients" and r.rule == "reference")
    assert orphan.reason == "no medilink_facilities matches facility_name 'Nowhere Clinic'"
    unknown_patient = next(r for r in q if r.dataset == "medilink_medical_records" and r.rule == "reference")
    assert "Nobody" not in unknown_patient.reason  # patient names are identifying
    assert all(p.startswith("+234") and len(p) == 14 for p in phones)  # E.164
    assert all(isinstance(i, int) for i in ids)
    # archived only after the commit, inbox empty
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert sorted(p.name for p in (tmp_path / "archive" / today).iterdir()) == [
        "facilities.csv",
        "medical_records.csv",
        "patients.csv",
        "triage_visits.csv",
    ]
    assert list((tmp_path / "inbox").iterdir()) == []

    # the views and named queries, against values computed from the generated rows
    # the queries' arithmetic, so every count shown (small-cell suppression: test_privacy)
    exact = ("--min-cell-count", "0")
    stats = json.loads(
        cli("query", "facility-stats", "-f", "json", *exact, "--config", cfg, "--db", db_url).stdout
    )
    patients_per = {}
    for p in batch.good("patients"):
        patients_per[p["facility_name"]] = patients_per.get(p["facility_name"], 0) + 1
    assert {s["facility_name"]: s["patients"] for s in stats if s["patients"]} == patients_per
    ages = json.loads(
        cli("query", "patients-by-age-group", "-f", "json", *exact, "--config", cfg, "--db", db_url).stdout
    )

    def group(dob: str) -> str:
        born, now = date.fromisoformat(dob), date.today()
        age = now.year - born.year - ((now.month, now.day) < (born.month, born.day))
        return (
            "Infant"
            if age < 1
            else "Child"
            if age <= 12
            else "Adolescent"
            if age <= 17
            else ("Adult" if age <= 64 else "Senior")
        )

    expected: dict[str, int] = {}
    for p in batch.good("patients"):
        expected[group(p["dob"])] = expected.get(group(p["dob"]), 0) + 1
    by_group: dict[str, int] = {}
    for row in ages:
        by_group[row["age_group"]] = by_group.get(row["age_group"], 0) + row["patients"]
    assert by_group == expected
    trends = json.loads(cli("query", "triage-trends", "-f", "json", "--config", cfg, "--db", db_url).stdout)
    per_day: dict[str, int] = {}
    for v in batch.good("visits"):
        per_day[v["visit_date"]] = per_day.get(v["visit_date"], 0) + 1
    assert {str(t["visit_date"]): t["visits"] for t in trends} == per_day


def test_redelivery_updates_without_duplicates(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    batch = generate()
    batch.write(tmp_path / "inbox")
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    before = _count(db_url, "medilink_patients")

    # the patients again, three with a new phone number, plus one new patient
    again = generate()
    good = again.good("patients")
    for p in good[:3]:
        p["phone"] = "08030000" + p["phone"][-3:]
    new = dict(good[3], first_name="Newly", last_name="Registered")
    rows = [*good, new]
    again.patients, again.defects = rows, {}
    again.facilities, again.records, again.visits = [], [], []
    again.write(tmp_path / "inbox", suffix="_2")
    for empty in ("facilities_2.csv", "medical_records_2.csv", "triage_visits_2.csv"):
        (tmp_path / "inbox" / empty).unlink()  # only a patients file is re-delivered
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0, result.output
    written = _tables_written(cli, cfg, db_url)["medilink_patients"]
    changed = sum(1 for p in good[:3])
    assert (written["inserted"], written["updated"], written["unchanged"]) == (
        1,
        changed,
        len(good) - changed,
    )
    assert _count(db_url, "medilink_patients") == before + 1


def test_failing_batch_writes_nothing_and_leaves_the_inbox(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    batch = generate()
    batch.write(tmp_path / "inbox")
    # the facilities file lost a required column: the whole batch fails its contract
    text = (tmp_path / "inbox" / "facilities.csv").read_text().splitlines()
    (tmp_path / "inbox" / "facilities.csv").write_text(
        "\n".join(",".join(line.split(",")[:2] + line.split(",")[3:]) for line in text) + "\n"
    )
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 1 and "lga" in result.output
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [
        "facilities.csv",
        "medical_records.csv",
        "patients.csv",
        "triage_visits.csv",
    ]
    assert not (tmp_path / "archive").exists()
    for table in TABLES.values():
        assert _count(sqlite_url, table) == 0


def test_validate_resolves_references_only_with_a_database(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    generate().write(tmp_path / "inbox")
    assert cli("run", "--config", cfg, "--db", sqlite_url).exit_code == 0
    orphan = tmp_path / "patients.csv"
    orphan.write_text(
        "facility_name,first_name,last_name,sex,dob,phone\nNowhere Clinic,Ann,Lee,F,1990-01-01,08031234567\n"
    )
    offline = cli("validate", "medilink_patients", orphan, "--config", cfg)
    assert offline.exit_code == 0 and "skipped reference check facility_id" in offline.output
    online = cli("validate", "medilink_patients", orphan, "--config", cfg, "--db", sqlite_url)
    assert online.exit_code == 1 and "medilink_patients.facility_id" not in online.output
    assert "facility_id.reference: 1 rows" in online.output
