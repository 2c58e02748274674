"""Reruns and kills around the inbox: the same file loaded again in each mode leaves stable counts
and no duplicate; an inbox run SIGKILLed at staggered moments (reading, loading, committing,
archiving) never loses a file, never archives one before its batch committed, and the next run
loads every file exactly once."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import VIP, column, row, subprocess_env
from tests.conftest import appointments_csv as _csv
from tests.conftest import scalar as _scalar


@pytest.mark.parametrize("mode", ["replace", "merge", "append"])
def test_the_same_file_again_changes_nothing(cli, db_url: str, tmp_path: Path, mode: str) -> None:
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    src = _csv(tmp_path / "a.csv", 500)
    count = "SELECT COUNT(*), COUNT(DISTINCT booking_id) FROM appointments"
    first = cli("load", "appointments", src, "--mode", mode, "--db", db_url)
    assert first.exit_code == 0, first.output
    assert row(db_url, count) == (500, 500)
    again = cli("load", "appointments", src, "--mode", mode, "--db", db_url)
    # append refuses keys already loaded (whole, nothing written); the others leave the table as it was
    assert again.exit_code == (3 if mode == "append" else 0), again.output
    assert row(db_url, count) == (500, 500)
    if mode == "merge":
        audit = "SELECT inserted, updated, unchanged FROM etl_audit_log ORDER BY id DESC LIMIT 1"
        assert row(db_url, audit) == (0, 0, 500)


def _inbox_project(folder: Path, files: int, rows: int) -> tuple[Path, dict[str, str]]:
    """An inbox of appointment files (disjoint ids); returns the config and {sha256: name}."""
    (folder / "inbox").mkdir()
    cfg = folder / "healthetl.toml"
    cfg.write_text(
        '[[pipelines]]\nname = "appointments"\ndataset = "appointments"\nsource = "inbox"\n'
        'mode = "append"\narchive = "archive/{date}"\n',
        encoding="utf-8",
    )
    shas = {}
    for i in range(files):
        path = _csv(folder / "inbox" / f"part_{i:02d}.csv", rows, first=1 + i * rows)
        shas[hashlib.sha256(path.read_bytes()).hexdigest()] = path.name
    return cfg, shas


def _where(folder: Path) -> dict[str, list[Path]]:
    """Every delivered file, by name: where it is now (inbox and/or archive)."""
    found: dict[str, list[Path]] = {}
    for path in [*(folder / "inbox").glob("*.csv"), *(folder / "archive").rglob("*.csv")]:
        found.setdefault(path.name, []).append(path)
    return found


def test_an_inbox_run_killed_anywhere_loses_no_file_and_loads_each_once(
    cli, sqlite_url: str, tmp_path: Path
) -> None:
    files, rows = 6, 40_000
    cfg, shas = _inbox_project(tmp_path, files, rows)
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", sqlite_url).exit_code == 0
    command = [sys.executable, "-m", "healthetl", "run", "--config", str(cfg), "--db", sqlite_url]
    kills = 0
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0):  # bounded: one kill per delay at most
        proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        # invariants after every kill: no file lost or doubled, and an archived file is a loaded one
        where = _where(tmp_path)
        assert sorted(where) == sorted(shas.values())
        assert all(len(paths) == 1 for paths in where.values()), where
        loaded = set(column(sqlite_url, "SELECT file_sha256 FROM loaded_files"))
        for name, (path,) in where.items():
            if "archive" in path.parts:
                assert name in {shas[s] for s in loaded}, f"{name} archived before its batch committed"
        count = _scalar(sqlite_url, "SELECT COUNT(*) FROM appointments")
        assert count == rows * len(loaded)  # whole batches only
        if len(loaded) == files:
            break
    assert kills >= 1
    final = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM appointments") == files * rows
    assert _scalar(sqlite_url, "SELECT COUNT(DISTINCT booking_id) FROM appointments") == files * rows
    assert not list((tmp_path / "inbox").glob("*.csv"))
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'running'") == 0


def test_an_inbox_run_killed_while_archiving_loads_nothing_twice(
    cli, sqlite_url: str, tmp_path: Path
) -> None:
    """Killed right after its commit, with part of the inbox moved: the files still in the inbox
    are known by content, so the next run archives them without loading them again."""
    files, rows = 300, 20
    cfg, shas = _inbox_project(tmp_path, files, rows)
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", sqlite_url).exit_code == 0
    command = [sys.executable, "-m", "healthetl", "run", "--config", str(cfg), "--db", sqlite_url]
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if next((tmp_path / "archive").rglob("*.csv"), None):  # committed, and archiving began
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.communicate(timeout=60)
    where = _where(tmp_path)
    assert sorted(where) == sorted(shas.values()) and all(len(p) == 1 for p in where.values())
    assert len(column(sqlite_url, "SELECT file_sha256 FROM loaded_files")) == files
    assert len(list((tmp_path / "inbox").glob("*.csv"))) < files  # killed with part of it moved
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM appointments") == files * rows
    final = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM appointments") == files * rows
    assert not list((tmp_path / "inbox").glob("*.csv"))
    assert len(list((tmp_path / "archive").rglob("*.csv"))) == files
