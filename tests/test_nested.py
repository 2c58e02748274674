"""Nested JSON facility snapshots, on SQLite and PostgreSQL. Expected answers are computed here
from the source records with plain Python."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATA

ML = DATA / "medlaunch"
TABLES = [
    "facility_snapshots",
    "facility_services",
    "facility_labs",
    "facility_lab_certifications",
    "facility_accreditations",
]


def _records(*files: Path) -> list[dict]:
    out = []
    for f in files:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def _project(tmp_path: Path, files: list[Path], name: str = "proj", snapshot: str | None = None) -> Path:
    folder = tmp_path / name
    (folder / "data").mkdir(parents=True)
    for f in files:
        if f.is_dir():
            shutil.copytree(f, folder / "data" / f.name)
        else:
            shutil.copy(f, folder / "data" / f.name)
    extra = f'snapshot_date = "{snapshot}"\n' if snapshot else ""
    (folder / "healthetl.toml").write_text(
        f'[[pipelines]]\nname = "facilities"\ndataset = "facilities"\nsource = "data"\n{extra}'
    )
    return folder / "healthetl.toml"


def _dump(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for t in TABLES:
            cols = [c["name"] for c in sa.inspect(conn).get_columns(t) if c["name"] != "run_id"]
            rows = conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {t} ORDER BY {', '.join(cols)}"))
            out[t] = [tuple(str(v) for v in r) for r in rows]
    engine.dispose()
    return out


def _url(tmp_path: Path, db_url: str, name: str) -> str:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / (name + '.db')}"
    return db_url


def test_plain_gzip_array_and_folder_give_identical_tables(cli, tmp_path: Path, db_url: str) -> None:
    plain = _project(tmp_path, [ML / "extended_sample_facility_data.ndjson"], "plain", "2025-08-10")
    gz = _project(tmp_path, [ML / "extended_sample_facility_data.ndjson.gz"], "gz", "2025-08-10")
    array_file = tmp_path / "array.json"
    array_file.write_text(json.dumps(_records(ML / "extended_sample_facility_data.ndjson"), indent=2))
    arr = _project(tmp_path, [array_file], "array", "2025-08-10")
    results = []
    for cfg in (plain, gz, arr):
        url = f"sqlite:///{cfg.parent / 'x.db'}" if db_url.startswith("sqlite") else db_url
        result = cli("run", "--config", cfg, "--db", url)
        assert result.exit_code == 0, result.output
        results.append(_dump(url))
    assert results[0] == results[1] == results[2]
    records = _records(ML / "extended_sample_facility_data.ndjson")
    assert len(results[0]["facility_snapshots"]) == len(records)
    assert len(results[0]["facility_services"]) == sum(len(r["services"]) for r in records)
    assert len(results[0]["facility_lab_certifications"]) == sum(
        len(lab["certifications"]) for r in records for lab in r["labs"]
    )

    # a folder of single pretty-printed objects equals the NDJSON of the same records
    folder = _project(tmp_path, [ML / "single_json"], "folder", "2025-08-10")
    ndjson = _project(tmp_path, [ML / "sample_facility_data.ndjson"], "nd", "2025-08-10")
    dumps = []
    for cfg in (folder, ndjson):
        url = f"sqlite:///{cfg.parent / 'y.db'}" if db_url.startswith("sqlite") else db_url
        assert cli("run", "--config", cfg, "--db", url).exit_code == 0
        dumps.append(_dump(url))
    assert dumps[0] == dumps[1]


def test_snapshots_are_idempotent_and_coexist(cli, tmp_path: Path, db_url: str) -> None:
    day1 = tmp_path / "2025-08-10"
    day1.mkdir()
    shutil.copy(ML / "sample_facility_data.ndjson", day1 / "facilities.ndjson")
    day2 = tmp_path / "2025-08-11_facilities.ndjson.gz"
    shutil.copy(ML / "extended_sample_facility_data.ndjson.gz", day2)
    cfg = _project(tmp_path, [day1, day2])
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    first = _dump(db_url)
    snaps = sorted({r[0] for r in first["facility_snapshots"]})
    assert snaps == ["2025-08-10", "2025-08-11"]
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    assert _dump(db_url) == first  # re-run of the same snapshots: identical

    # replacing one snapshot leaves the other untouched
    (cfg.parent / "data" / "2025-08-11_facilities.ndjson.gz").unlink()
    one = json.loads((ML / "sample_facility_data.ndjson").read_text().splitlines()[0])
    (cfg.parent / "data" / "2025-08-11_small.ndjson").write_text(json.dumps(one) + "\n")
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    after = _dump(db_url)
    by_snap = {}
    for row in after["facility_snapshots"]:
        by_snap.setdefault(row[0], []).append(row[1])
    assert sorted(by_snap["2025-08-11"]) == [one["facility_id"]]
    assert [r for r in after["facility_snapshots"] if r[0] == "2025-08-10"] == [
        r for r in first["facility_snapshots"] if r[0] == "2025-08-10"
    ]


def test_bad_records_are_quarantined_and_the_rest_loads(cli, tmp_path: Path, db_url: str) -> None:
    good = _records(ML / "sample_facility_data.ndjson")
    broken = [json.dumps(good[0]), '{"facility_id": "FAC00001", "facility_name": ', json.dumps(good[1])]
    missing = dict(good[2], facility_id="FAC20001")
    del missing["facility_name"]
    wrong_type = dict(good[2], facility_id="FAC20002", employee_count="many")
    no_accr = dict(good[2], facility_id="FAC20003", accreditations=[])
    bad_date = dict(
        good[2],
        facility_id="FAC20004",
        accreditations=[
            {"accreditation_body": "NCQA", "accreditation_id": "N1", "valid_until": "2025-13-01"}
        ],
    )
    bad_state = dict(
        good[2], facility_id="FAC20005", location=dict(good[2]["location"], state="XX", zip="7500")
    )
    lines = [
        *broken,
        *(json.dumps(r) for r in (missing, wrong_type, no_accr, bad_date, bad_state)),
        json.dumps(good[0]),
    ]  # a duplicate of the first record: dropped, reported
    src = tmp_path / "2025-08-10_batch.ndjson"
    src.write_text("\n".join(lines) + "\n")
    cfg = _project(tmp_path, [src])
    report = tmp_path / "r.json"
    result = cli("run", "--config", cfg, "--db", db_url, "--report", report)
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())["pipelines"][0]
    assert rep["counts"]["rows_in"] == len(lines)
    assert rep["counts"]["rows_loaded"] == 2
    assert rep["counts"]["duplicates_dropped"] == 1
    assert rep["counts"]["rows_quarantined"] == 6
    assert rep["duplicate_records"] == [f"{src.name}:{len(lines)}"]
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        q = conn.execute(sa.text("SELECT source_row, column_name, rule, reason FROM quarantine")).all()
        loaded = sorted(conn.execute(sa.text("SELECT facility_id FROM facility_snapshots")).scalars())
    engine.dispose()
    assert loaded == sorted([good[0]["facility_id"], good[1]["facility_id"]])
    by_row = {}
    for row, column, rule, reason in q:
        by_row.setdefault(row, []).append((column, rule, reason))
    assert by_row[2][0][1] == "json" and "invalid JSON" in by_row[2][0][2]  # the line number
    assert ("facility_name", "required") in [(c, r) for c, r, _ in by_row[4]]
    assert ("employee_count", "integer") in [(c, r) for c, r, _ in by_row[5]]
    assert "at_least_one_accreditation" in [r for _, r, _ in by_row[6]]
    assert ("accreditations.valid_until", "date") in [(c, r) for c, r, _ in by_row[7]]
    assert {("state", "vocabulary"), ("zip", "pattern")} <= {(c, r) for c, r, _ in by_row[8]}


def test_truncated_gzip_loads_nothing(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path, [ML / "sample_facility_data.ndjson"], snapshot="2025-08-10")
    assert cli("run", "--config", cfg, "--db", sqlite_url).exit_code == 0
    before = _dump(sqlite_url)
    data = (ML / "extended_sample_facility_data.ndjson.gz").read_bytes()
    (cfg.parent / "data" / "sample_facility_data.ndjson").unlink()
    (cfg.parent / "data" / "extended.ndjson.gz").write_bytes(data[: len(data) // 2])
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 3
    assert "extended.ndjson.gz" in result.output and "truncated" in result.output
    assert _dump(sqlite_url) == before


def test_missing_snapshot_date_is_a_usage_error(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path, [ML / "sample_facility_data.ndjson"])
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 2 and "no snapshot date" in result.output
    assert "--snapshot-date" in result.output
    assert cli("run", "--config", cfg, "--db", sqlite_url, "--snapshot-date", "2025-08-12").exit_code == 0
    out = cli(
        "query",
        "facility-metrics",
        "--param",
        "snapshot_date=2025-08-12",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        sqlite_url,
    )
    assert len(json.loads(out.stdout)) == 3
    load = cli(
        "load",
        "facilities",
        ML / "sample_facility_data.ndjson",
        "--snapshot-date",
        "2025-08-13",
        "--db",
        sqlite_url,
    )
    assert load.exit_code == 0, load.output
    assert cli("run", "--config", cfg, "--db", sqlite_url, "--snapshot-date", "12/08/2025").exit_code == 2


@pytest.mark.parametrize(("as_of", "within"), [("2025-08-10", 180), ("2025-01-01", 181), ("2026-01-01", 181)])
def test_expiring_and_per_state_answers(cli, tmp_path: Path, db_url: str, as_of: str, within: int) -> None:
    files = [ML / "sample_facility_data.ndjson", ML / "extended_sample_facility_data.ndjson"]
    cfg = _project(tmp_path, files, snapshot="2025-08-10")
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    records = _records(*files)
    start = date.fromisoformat(as_of)
    end = start + timedelta(days=within)
    expected = sorted(
        (
            a["valid_until"],
            r["facility_id"],
            a["accreditation_id"],
            (date.fromisoformat(a["valid_until"]) - start).days,
        )
        for r in records
        for a in r["accreditations"]
        if start <= date.fromisoformat(a["valid_until"]) <= end
    )
    out = cli(
        "query",
        "expiring-accreditations",
        "--param",
        f"as_of={as_of}",
        "--param",
        f"within_days={within}",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        db_url,
    )
    assert out.exit_code == 0, out.output
    got = sorted(
        (str(r["valid_until"]), r["facility_id"], r["accreditation_id"], int(r["days_until_expiry"]))
        for r in json.loads(out.stdout)
    )
    assert got == expected and got

    def per_state(valid_on: date | None) -> dict[str, int]:
        states: dict[str, set[str]] = {}
        for r in records:
            ok = [
                a
                for a in r["accreditations"]
                if valid_on is None or date.fromisoformat(a["valid_until"]) >= valid_on
            ]
            if ok:
                states.setdefault(r["location"]["state"], set()).add(r["facility_id"])
        return {s: len(v) for s, v in states.items()}

    out = cli("query", "accredited-per-state", "-f", "json", "--config", cfg, "--db", db_url)
    assert {r["state"]: r["accredited_facilities"] for r in json.loads(out.stdout)} == per_state(None)
    out = cli(
        "query",
        "accredited-per-state",
        "--param",
        f"valid_on={as_of}",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        db_url,
    )
    assert {r["state"]: r["accredited_facilities"] for r in json.loads(out.stdout)} == per_state(start)

    out = cli("query", "facility-metrics", "-f", "json", "--config", cfg, "--db", db_url)
    metrics = {r["facility_id"]: r for r in json.loads(out.stdout)}
    for r in records:
        m = metrics[r["facility_id"]]
        assert (
            m["employee_count"],
            m["number_of_offered_services"],
            str(m["first_accreditation_valid_until"]),
        ) == (r["employee_count"], len(r["services"]), r["accreditations"][0]["valid_until"])


def test_a_nested_dataset_declared_in_the_project_file(cli, tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "2025-08-10.ndjson").write_text(
        '{"clinic_id": "C1", "location": {"city": "Lagos"}, "services": ["x-ray", "lab"],'
        ' "staff": [{"name": "A", "roles": ["nurse", "triage"]}]}\n'
        '{"clinic_id": "C2", "location": {"city": "Kano"}, "services": [], "staff": []}\n'
        '{"clinic_id": "C3", "location": {"city": "Ibadan"}, "services": [7], "staff": [{"name": null}]}\n'
    )
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "clinics"\ndataset = "clinics"\nsource = "data"\n\n'
        '[[datasets]]\nname = "clinics"\nprimary_key = ["snapshot_date", "clinic_id"]\n'
        '[datasets.columns]\nsnapshot_date = { type = "date", required = true }\n'
        'clinic_id = { type = "text", required = true }\ncity = "text"\n'
        'services_offered = { type = "integer", min = 1, severity = { range = "warning" } }\n'
        '[datasets.nested]\npaths = { city = "location.city", services_offered = "services#" }\n'
        '[[datasets.nested.children]]\ntable = "clinic_services"\npath = "services"\n'
        'ordinal = "service_ordinal"\n'
        'columns = { service = { type = "text", required = true, path = "." } }\n'
        '[[datasets.nested.children]]\ntable = "clinic_staff"\npath = "staff"\nordinal = "staff_ordinal"\n'
        'columns = { name = { type = "text", required = true } }\n'
        '[[datasets.nested.children.children]]\ntable = "clinic_staff_roles"\npath = "roles"\n'
        'ordinal = "role_ordinal"\ncolumns = { role = { type = "text", path = "." } }\n'
    )
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "clinics", "--db", sqlite_url).exit_code == 0
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        clinics = conn.execute(
            sa.text("SELECT clinic_id, city, services_offered FROM clinics ORDER BY 1")
        ).all()
        roles = conn.execute(sa.text("SELECT clinic_id, staff_ordinal, role FROM clinic_staff_roles")).all()
        services = conn.execute(sa.text("SELECT COUNT(*) FROM clinic_services")).scalar()
        rejected = conn.execute(sa.text("SELECT column_name, rule FROM quarantine")).all()
    engine.dispose()
    # C3's staff member has no name: the whole record is quarantined, children included
    assert [tuple(r) for r in clinics] == [("C1", "Lagos", 2), ("C2", "Kano", 0)]
    assert sorted(tuple(r) for r in roles) == [("C1", 1, "nurse"), ("C1", 1, "triage")]
    assert services == 2
    assert ("staff.name", "required") in [tuple(r) for r in rejected]


def test_duplicates_are_found_across_batches_and_past_the_key_memory(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12,000 records (three batches) with repeats of early records late in the file, the key
    history spilled to disk after 1,000 keys: every repeat dropped and listed, the first kept."""
    monkeypatch.setenv("HEALTHETL_KEYS_IN_MEMORY", "1000")
    template = _records(ML / "sample_facility_data.ndjson")[0]
    lines = [json.dumps(dict(template, facility_id=f"FAC{i}")) for i in range(1, 12_001)]
    repeats = {5_500: 3, 11_000: 4_999, 11_999: 10_500}  # line -> the facility it repeats
    for line, facility in repeats.items():
        lines[line - 1] = json.dumps(dict(template, facility_id=f"FAC{facility}", facility_name="Later"))
    src = tmp_path / "2025-08-10_many.ndjson"
    src.write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.json"
    db = f"sqlite:///{tmp_path / 'n.db'}"
    result = cli("run", "--config", _project(tmp_path, [src]), "--db", db, "--report", report)
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())["pipelines"][0]
    assert rep["counts"]["duplicates_dropped"] == len(repeats)
    assert rep["duplicate_records"] == [f"{src.name}:{line}" for line in sorted(repeats)]
    assert rep["counts"]["rows_loaded"] == 12_000 - len(repeats)
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        later = conn.execute(sa.text("SELECT COUNT(*) FROM facility_snapshots WHERE facility_name = 'Later'"))
        assert later.scalar_one() == 0
    engine.dispose()
