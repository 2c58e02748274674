"""Incremental, layered loads of the patient-visit extract, on SQLite and PostgreSQL.

Expected values are computed here from the CSV files with pandas, following the documented
rules: every column required, duplicates of visit_id resolved by the greatest last_updated,
dates read per value (2025/12/05 is 5 December 2025), rows with last_updated older than
watermark - 24 h not taken."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import DATA, REPO

VISITS = DATA / "patient-visits" / "patient_visits.csv"
COLUMNS = [
    "patient_id",
    "visit_id",
    "visit_date",
    "diagnosis_code",
    "provider_id",
    "visit_cost",
    "last_updated",
]


def _project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    (folder / "data").mkdir(parents=True)
    shutil.copy(VISITS, folder / "data" / "2025-12-05.csv")
    text = (REPO / "examples" / "patient-visits" / "healthetl.toml").read_text()
    (folder / "healthetl.toml").write_text(text)
    return folder / "healthetl.toml"


def _accepted(*files: Path, since: datetime | None = None) -> pd.DataFrame:
    """What staging must hold: complete rows, newest version per visit_id."""
    frames = [pd.read_csv(f, dtype=str) for f in files]
    raw = pd.concat(frames, ignore_index=True)
    raw["ts"] = pd.to_datetime(raw["last_updated"], utc=True)
    if since is not None:
        raw = raw[raw["ts"] >= since]
    complete = raw.dropna(subset=COLUMNS)
    complete = complete.assign(day=pd.to_datetime(complete["visit_date"].str.replace("/", "-")).dt.date)
    return complete.sort_values("ts").drop_duplicates("visit_id", keep="last").set_index("visit_id")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _table(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = _engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql))]
    engine.dispose()
    return rows


def _daily(url: str) -> dict[str, tuple[int, float]]:
    rows = _table(url, "SELECT visit_date, visit_count, total_cost FROM daily_visit_metrics")
    return {str(d): (int(n), float(t)) for d, n, t in rows}


def _expected_daily(accepted: pd.DataFrame) -> dict[str, tuple[int, float]]:
    g = accepted.assign(cost=accepted["visit_cost"].astype(float)).groupby("day")["cost"]
    return {str(day): (int(n), float(t)) for day, n, t in zip(g.size().index, g.size(), g.sum(), strict=True)}


def _state(cli, cfg: Path, url: str) -> dict[str, object]:
    rows = json.loads(cli("state", "show", "visits", "-f", "json", "--config", cfg, "--db", url).stdout)
    return rows[0]


def test_full_run_then_nothing_new(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    report = tmp_path / "dq.json"
    result = cli("run", "--config", cfg, "--db", db_url, "--report", report)
    assert result.exit_code == 0, result.output
    accepted = _accepted(VISITS)
    raw = pd.read_csv(VISITS, dtype=str)

    staged = _table(db_url, "SELECT visit_id, visit_cost, last_updated FROM stg_visits ORDER BY visit_id")
    assert [r[0] for r in staged] == sorted(accepted.index)
    newest = {
        r[0]: pd.Timestamp(str(r[2])).tz_convert("UTC")
        if pd.Timestamp(str(r[2])).tzinfo
        else pd.Timestamp(str(r[2])).tz_localize("UTC")
        for r in staged
    }
    assert newest == dict(accepted["ts"].items())
    assert _daily(db_url) == _expected_daily(accepted)
    assert sorted(r[0] for r in _table(db_url, "SELECT visit_id FROM fact_visits")) == sorted(accepted.index)
    assert _table(db_url, "SELECT COUNT(*) FROM raw_visits") == [(len(raw),)]

    dq = json.loads(report.read_text())["pipelines"][0]
    counts = dq["counts"]
    incomplete = int(raw[COLUMNS].isna().any(axis=1).sum())
    assert counts["rows_read"] == counts["rows_in"] == len(raw)
    assert counts["rows_quarantined"] == incomplete
    assert counts["duplicates_dropped"] == len(raw) - incomplete - len(accepted)
    assert counts["rows_loaded"] == len(accepted)
    checks = {c["check"] + (f":{c['column']}" if c["column"] else ""): c for c in dq["checks"]}
    assert checks["row_count"]["passed"] and checks["invalid_date_rate"]["passed"]
    assert checks["null_rate:visit_cost"]["severity"] == "warning"
    assert not checks["null_rate:visit_cost"]["passed"]  # 1 of 6 costs missing > 5 %
    state = _state(cli, cfg, db_url)
    assert datetime.fromisoformat(str(state["watermark"])) == accepted["ts"].max().to_pydatetime()

    # the same file again: detected by its sha256, nothing changes
    before = (_table(db_url, "SELECT * FROM stg_visits ORDER BY visit_id"), _daily(db_url))
    again = cli("run", "--config", cfg, "--db", db_url)
    assert again.exit_code == 0, again.output
    assert "already loaded by run" in again.output
    assert (_table(db_url, "SELECT * FROM stg_visits ORDER BY visit_id"), _daily(db_url)) == before
    assert _table(db_url, "SELECT COUNT(*) FROM raw_visits") == [(len(raw),)]
    assert _state(cli, cfg, db_url)["watermark"] == state["watermark"]

    # the DQ history is in the database for `report --checks`
    history = json.loads(cli("report", "--checks", "-f", "json", "--config", cfg, "--db", db_url).stdout)
    assert {h["check_name"] for h in history} >= {"row_count", "null_rate", "invalid_date_rate"}


def test_late_rows_inside_and_outside_the_lookback(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    watermark = _accepted(VISITS)["ts"].max()  # 2025-12-05 07:00 UTC
    day2 = cfg.parent / "data" / "2025-12-06.csv"
    day2.write_text(
        ",".join(COLUMNS) + "\n"
        # a late correction of v1002 inside the 24 h lookback: merged, not duplicated
        "p002,v1002,2025-12-02,B20,pr02,95.00,2025-12-05T01:00:00Z\n"
        # an older version of v1005 inside the lookback: must not overwrite the newer one
        "p005,v1005,2025-12-05,E50,pr05,1.00,2025-12-05T06:00:00Z\n"
        # a new visit
        "p007,v1007,2025-12-06,G70,pr07,50.00,2025-12-06T09:00:00Z\n"
        # a late row older than watermark - 24 h: not taken, reported
        "p008,v1008,2025-12-03,H80,pr08,70.00,2025-12-03T00:00:00Z\n"
    )
    result = cli("run", "--config", cfg, "--db", db_url, "--report", tmp_path / "dq.json")
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "dq.json").read_text())["pipelines"][0]["counts"]
    assert counts["rows_read"] == 4 and counts["rows_skipped"] == 1 and counts["rows_in"] == 3
    assert "1 behind the watermark" in result.output

    since = watermark - timedelta(hours=24)
    first, second = _accepted(VISITS), _accepted(day2, since=since.to_pydatetime())
    expected = pd.concat([first, second]).sort_values("ts")
    expected = expected[~expected.index.duplicated(keep="last")]
    staged = dict(_table(db_url, "SELECT visit_id, visit_cost FROM stg_visits"))
    assert sorted(staged) == sorted(expected.index)
    assert "v1008" not in staged
    assert {k: float(v) for k, v in staged.items()} == {
        k: float(v) for k, v in expected["visit_cost"].items()
    }
    assert float(staged["v1002"]) == 95.0 and float(staged["v1005"]) == 200.0
    assert _daily(db_url) == _expected_daily(expected)
    assert datetime.fromisoformat(str(_state(cli, cfg, db_url)["watermark"])) == datetime(
        2025, 12, 6, 9, tzinfo=UTC
    )

    # incremental analytics equal a full rebuild
    incremental = (
        _table(db_url, "SELECT * FROM fact_visits ORDER BY visit_id"),
        _table(db_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date"),
    )
    rebuilt = cli("run", "--config", cfg, "--db", db_url, "--full-refresh")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (
        _table(db_url, "SELECT * FROM fact_visits ORDER BY visit_id"),
        _table(db_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date"),
    ) == incremental


def test_reprocess_a_run_from_raw(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    assert cli("run", "--config", cfg, "--db", sqlite_url).exit_code == 0
    first_run = json.loads(cli("state", "runs", "-f", "json", "--config", cfg, "--db", sqlite_url).stdout)[0]
    before = _table(sqlite_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date")
    shutil.rmtree(cfg.parent / "data")  # the source file is gone; raw still has it
    assert cli("state", "reset", "visits", "--config", cfg, "--db", sqlite_url).exit_code == 0
    result = cli("run", "--config", cfg, "--db", sqlite_url, "--from-raw", first_run["run_id"])
    assert result.exit_code == 0, result.output
    runs = json.loads(cli("state", "runs", "-f", "json", "--config", cfg, "--db", sqlite_url).stdout)
    assert runs[0]["source"] == f"raw:{first_run['run_id']}"
    assert runs[0]["rows_in"] == first_run["rows_in"] and runs[0]["rows_loaded"] == first_run["rows_loaded"]
    assert _table(sqlite_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date") == before
    assert _table(sqlite_url, "SELECT COUNT(*) FROM raw_visits") == [(first_run["rows_read"],)]


def test_state_import_set_reset_with_audit(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    assert cli("db", "upgrade", "--config", cfg, "--db", db_url).exit_code == 0
    state_file = DATA / "patient-visits" / "author_pipeline_state.json"
    dry = cli(
        "state",
        "import",
        state_file,
        "--pipeline",
        "visits",
        "--dry-run",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        db_url,
    )
    assert json.loads(dry.stdout)["dry_run"] is True
    assert _state(cli, cfg, db_url)["watermark"] is None
    assert (
        cli("state", "import", state_file, "--pipeline", "visits", "--config", cfg, "--db", db_url).exit_code
        == 0
    )
    imported = datetime.fromisoformat(json.loads(state_file.read_text())["watermark_last_updated"])
    assert datetime.fromisoformat(str(_state(cli, cfg, db_url)["watermark"])) == imported

    # every row of the extract is older than watermark - 24 h: nothing to load is an error,
    # nothing is written, and the watermark stays
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 1
    assert "no rows to load" in result.output
    assert _table(db_url, "SELECT COUNT(*) FROM stg_visits") == [(0,)]
    assert _table(db_url, "SELECT COUNT(*) FROM raw_visits") == [(0,)]
    assert datetime.fromisoformat(str(_state(cli, cfg, db_url)["watermark"])) == imported

    assert (
        cli(
            "state",
            "set",
            "visits",
            "--watermark",
            "2025-12-01T00:00:00Z",
            "--dry-run",
            "--config",
            cfg,
            "--db",
            db_url,
        ).exit_code
        == 0
    )
    assert datetime.fromisoformat(str(_state(cli, cfg, db_url)["watermark"])) == imported
    assert (
        cli(
            "state", "set", "visits", "--watermark", "2025-12-01T00:00:00Z", "--config", cfg, "--db", db_url
        ).exit_code
        == 0
    )
    assert cli("state", "reset", "visits", "--config", cfg, "--db", db_url).exit_code == 0
    assert _state(cli, cfg, db_url)["watermark"] is None
    audit = json.loads(cli("state", "audit", "visits", "-f", "json", "--config", cfg, "--db", db_url).stdout)
    assert [a["action"] for a in audit] == ["reset", "set", "import"]
    assert pd.Timestamp(audit[0]["previous_watermark"]) == pd.Timestamp("2025-12-01T00:00:00Z")
    assert pd.Timestamp(audit[1]["previous_watermark"]) == pd.Timestamp(imported)
    assert (
        cli("state", "set", "visits", "--watermark", "yesterday", "--config", cfg, "--db", db_url).exit_code
        == 2
    )


@pytest.mark.slow
def test_killed_run_leaves_tables_and_watermark(tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    exe = [sys.executable, "-m", "healthetl"]
    done = subprocess.run([*exe, "run", "--config", str(cfg), "--db", db_url], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    before = (
        _table(db_url, "SELECT * FROM stg_visits ORDER BY visit_id"),
        _table(db_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date"),
        _table(db_url, "SELECT watermark FROM pipeline_state"),
        _table(db_url, "SELECT COUNT(*) FROM raw_visits"),
    )
    big = cfg.parent / "data" / "2025-12-06.csv"
    with big.open("w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for i in range(400_000):
            fh.write(f"p{i},x{i},2025-12-06,Z99,pr9,10.00,2025-12-06T10:00:00Z\n")
    proc = subprocess.Popen(
        [*exe, "run", "--config", str(cfg), "--db", db_url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = _engine(db_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the run has started loading
        with engine.connect() as conn:
            running = conn.execute(sa.text("SELECT COUNT(*) FROM etl_runs WHERE status = 'running'")).scalar()
        if running:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed; make the file bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    engine.dispose()
    after = (
        _table(db_url, "SELECT * FROM stg_visits ORDER BY visit_id"),
        _table(db_url, "SELECT * FROM daily_visit_metrics ORDER BY visit_date"),
        _table(db_url, "SELECT watermark FROM pipeline_state"),
        _table(db_url, "SELECT COUNT(*) FROM raw_visits"),
    )
    assert after == before
    # the next run completes and takes the new file
    done = subprocess.run([*exe, "run", "--config", str(cfg), "--db", db_url], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert _table(db_url, "SELECT COUNT(*) FROM stg_visits") == [(len(before[0]) + 400_000,)]


@pytest.mark.slow
def test_concurrent_runs_of_one_pipeline_do_not_load_twice(tmp_path: Path, pg_url: str) -> None:
    cfg = _project(tmp_path)
    big = cfg.parent / "data" / "2025-12-06.csv"
    with big.open("w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for i in range(50_000):
            fh.write(f"p{i},y{i},2025-12-06,Z99,pr9,10.00,2025-12-06T10:00:00Z\n")
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    exe = [sys.executable, "-m", "healthetl"]
    subprocess.run(
        [*exe, "db", "upgrade", "--config", str(cfg), "--db", pg_url],
        env=env,
        check=True,
        capture_output=True,
    )
    procs = [
        subprocess.Popen(
            [*exe, "run", "--config", str(cfg), "--db", pg_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    raw_lines = sum(1 for _ in VISITS.open()) - 1 + 50_000
    assert _table(pg_url, "SELECT COUNT(*) FROM raw_visits") == [(raw_lines,)]
    runs = _table(pg_url, "SELECT rows_read FROM etl_runs WHERE status = 'succeeded' ORDER BY rows_read")
    assert [r[0] for r in runs] == [0, raw_lines]  # the second run found both files already loaded
