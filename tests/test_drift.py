"""Drift is never silent: columns a file adds, optional columns it lacks, JSON paths that match
nothing are reported (warn), refused (fail) or ignored, per pipeline."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import sqlalchemy as sa

PROJECT = """
[[pipelines]]
name = "labs"
dataset = "labs"
source = "labs.csv"
{policy}

[[datasets]]
name = "labs"
primary_key = ["lab_id"]
unused_columns = ["Lab Notes"]
[datasets.columns]
lab_id = {{ type = "text", required = true }}
result = {{ type = "float", required = true }}
unit = "text"
flag = "text"
"""


def _project(tmp_path: Path, url: str, cli, policy: str = "") -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "healthetl.toml").write_text(PROJECT.format(policy=policy), encoding="utf-8")
    # the export added `analyser` and dropped `flag`; `lab_notes` is declared unused
    (tmp_path / "labs.csv").write_text(
        "lab_id,result,unit,analyser,Lab Notes\nL1,5.0,mmol/L,A-7,ok\nL2,6.1,mmol/L,A-7,\n", encoding="utf-8"
    )
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("db", "revision", "-m", "labs", "--db", url).exit_code == 0


def _count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql)).scalar()
    engine.dispose()
    return int(value or 0)


def test_drift_is_reported_by_default(cli, tmp_path: Path, db_url: str) -> None:
    _project(tmp_path, db_url, cli)
    report = tmp_path / "dq.json"
    result = cli("run", "--db", db_url, "--report", report)
    assert result.exit_code == 0, result.output
    assert "labs.csv: columns the dataset does not declare (not loaded): analyser" in result.output
    assert "labs.csv: declared optional columns missing (loaded as NULL): flag" in result.output
    assert "lab_notes" not in result.output  # declared unused: not drift
    assert _count(db_url, "SELECT COUNT(*) FROM labs") == 2
    # in the JSON report and in `report`, as checks of the run
    (doc,) = json.loads(report.read_text())["pipelines"]
    drift = {c["check"]: c["detail"] for c in doc["checks"] if c["check"].startswith("drift_")}
    assert drift["drift_new_columns"].endswith("analyser")
    assert drift["drift_missing_columns"].endswith("flag")
    (run,) = json.loads(cli("report", "--last", "-f", "json", "--db", db_url).stdout)
    stored = {q["check_name"]: q for q in run["quality"] if q["check_name"].startswith("drift_")}
    assert set(stored) == {"drift_new_columns", "drift_missing_columns"}
    assert all(q["severity"] == "warning" and not q["passed"] for q in stored.values())


def test_drift_fail_loads_nothing_and_exits_1(cli, tmp_path: Path, db_url: str) -> None:
    _project(tmp_path, db_url, cli, 'drift = "fail"')
    result = cli("run", "--db", db_url)
    assert result.exit_code == 1, result.output
    assert "drifted from the declaration" in result.output and "analyser" in result.output
    assert "Traceback" not in result.output
    assert _count(db_url, "SELECT COUNT(*) FROM labs") == 0
    (run,) = json.loads(cli("report", "--last", "-f", "json", "--db", db_url).stdout)
    assert run["status"] == "failed"
    assert {q["check_name"] for q in run["quality"]} == {"drift_new_columns", "drift_missing_columns"}
    # the contract holds in `validate` too (CI jobs)
    assert cli("validate", "labs", tmp_path / "labs.csv").exit_code == 1


def test_drift_ignore_says_nothing(cli, tmp_path: Path, sqlite_url: str) -> None:
    _project(tmp_path, sqlite_url, cli, 'drift = "ignore"')
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "does not declare" not in result.output and "loaded as NULL" not in result.output
    assert _count(sqlite_url, "SELECT COUNT(*) FROM dq_results WHERE check_name LIKE 'drift%'") == 0


def test_a_bad_drift_policy_is_a_config_error(cli, tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(PROJECT.format(policy='drift = "loud"'), encoding="utf-8")
    result = cli("run")
    assert result.exit_code == 2 and "drift must be one of warn, fail, ignore" in result.output


def test_a_json_path_that_matches_nothing_is_drift(cli, tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "data").mkdir()
    records = [
        {"clinic_id": "C1", "location": {"city": "Lagos"}, "staff": [{"name": "Ada"}]},
        {"clinic_id": "C2", "location": {"city": "Kano"}, "staff": []},
    ]
    (tmp_path / "data" / "clinics-2025-08-10.ndjson").write_text(
        "\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8"
    )
    (tmp_path / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "clinics"
        dataset = "clinics"
        source = "data"

        [[datasets]]
        name = "clinics"
        primary_key = ["snapshot_date", "clinic_id"]
        [datasets.columns]
        snapshot_date = { type = "date", required = true }
        clinic_id = { type = "text", required = true }
        city = "text"
        [datasets.nested]
        paths = { city = "location.cty" }
        [[datasets.nested.children]]
        table = "clinic_staff"
        path = "staf"
        ordinal = "staff_ordinal"
        columns = { name = { type = "text" } }
        """),
        encoding="utf-8",
    )
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "clinics", "--db", sqlite_url).exit_code == 0
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "declared JSON paths that matched no record" in result.output
    assert "city (location.cty)" in result.output and "clinic_staff (staf[])" in result.output
