"""Processes that die mid-run: SIGTERM is handled like Ctrl-C (rolled back, recorded), a run
killed with SIGKILL is found dead by the next run and marked `abandoned`; concurrent runs of a
pipeline wait for each other on SQLite too."""

from __future__ import annotations

import _thread
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthetl import interrupts
from tests.conftest import VIP
from tests.conftest import appointments_csv as _csv
from tests.conftest import scalar as _scalar
from tests.faults.conftest import digest, last_run, start_load, when_loading


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_run_killed_mid_load_changes_nothing(loaded: str, tmp_path: Path, sig: signal.Signals) -> None:
    before = digest(loaded)
    proc = start_load(loaded, _csv(tmp_path / "big.csv", 1_000_000))
    when_loading(loaded, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    # a load that finished before the signal arrived would exit 0: the message tells the two apart
    assert digest(loaded) == before, f"exit {proc.returncode}: {err.strip()[-300:]}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        status, error = "failed", "terminated (SIGTERM)"
    else:
        assert proc.returncode == -9
        status, error = "running", None  # nothing could record its end
    assert last_run(loaded) == (status, error)
    # the next run loads the file once, and finds the killed run dead
    rerun = start_load(loaded, _csv(tmp_path / "small.csv", 50, first=2000))
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _scalar(loaded, "SELECT COUNT(*) FROM appointments") == 50
    assert _scalar(loaded, "SELECT COUNT(*) FROM etl_runs WHERE status = 'running'") == 0
    if sig == signal.SIGKILL:
        assert _scalar(loaded, "SELECT COUNT(*) FROM etl_runs WHERE status = 'abandoned'") == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one
def test_an_interrupt_python_dropped_still_stops_the_run(
    cli, loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal landing while Python runs a finaliser raises there, and Python prints and drops
    the exception; the run must still stop at its next chunk instead of loading on."""
    monkeypatch.setattr(interrupts, "_pending", None)  # and back to None afterwards

    class Finaliser:
        def __del__(self) -> None:
            interrupts._handler(signal.SIGTERM, None)

    Finaliser()  # the KeyboardInterrupt is raised in __del__ and dropped ("Exception ignored")
    before = digest(loaded)
    result = cli("load", "appointments", _csv(tmp_path / "more.csv", 2_000, first=5_000), "--db", loaded)
    assert result.exit_code == 130, result.output
    assert digest(loaded) == before
    assert last_run(loaded) == (
        "failed",
        "terminated (SIGTERM)",
    )


def test_an_interrupt_inside_a_deferred_block_is_raised_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """C code that crashes on an exception raised in a call back into Python (pandas' JSON
    writer, segfaulting under a SIGTERM) runs deferred: the block ends, then the run stops."""
    monkeypatch.setattr(interrupts, "_pending", None)
    finished = []
    with pytest.raises(KeyboardInterrupt, match=interrupts.TERMINATED):
        with interrupts.deferred():
            with interrupts.deferred():  # nested: raised when the outer one ends
                interrupts._handler(signal.SIGTERM, None)  # as the signal would, mid-block
                finished.append("inner")
            finished.append("outer")
    assert finished == ["inner", "outer"]


def test_a_deferred_block_on_another_thread_does_not_hold_the_main_threads_interrupt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signal handlers run on the main thread only: a validator on a server's or a worker's
    thread writing JSON must not keep the main thread from being interrupted."""
    monkeypatch.setattr(interrupts, "_pending", None)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with interrupts.deferred():
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert inside.wait(10)
        with pytest.raises(KeyboardInterrupt, match=interrupts.TERMINATED):
            interrupts._handler(signal.SIGTERM, None)  # as the signal would, on the main thread
    finally:
        leave.set()
        other.join()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_interrupt_while_the_driver_writes_is_rolled_back_and_recorded(
    cli, loaded: str, tmp_path: Path
) -> None:
    """SIGTERM arriving while SQLite executes the load's insert (on the write thread, the main
    thread validating or waiting): the run must end recorded, exit 130, its tables as before."""
    fired: list[bool] = []

    def hook(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        armed: list[bool] = []

        def trace(statement: str) -> None:
            if statement.startswith("INSERT INTO appointments") and "json_each" in statement:
                armed.append(True)

        def progress() -> int:
            if armed and not fired:
                fired.append(True)
                _thread.interrupt_main(signal.SIGTERM)  # as the signal: its handler, main thread
            return 0

        dbapi_conn.set_trace_callback(trace)
        dbapi_conn.set_progress_handler(progress, 500)

    before = digest(loaded)
    previous = signal.signal(signal.SIGTERM, interrupts._handler)
    sa.event.listen(sa.engine.Engine, "connect", hook)
    try:
        result = cli("load", "appointments", _csv(tmp_path / "more.csv", 2_000, first=5_000), "--db", loaded)
    finally:
        sa.event.remove(sa.engine.Engine, "connect", hook)
        signal.signal(signal.SIGTERM, previous)
        interrupts._pending = None
    assert fired, "the insert never ran"
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "Cannot operate" not in result.output
    assert digest(loaded) == before
    assert last_run(loaded) == (
        "failed",
        "terminated (SIGTERM)",
    )


def test_concurrent_runs_of_a_pipeline_wait_for_each_other_on_sqlite(
    cli, tmp_path: Path, sqlite_url: str
) -> None:
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", sqlite_url).exit_code == 0
    first = start_load(sqlite_url, _csv(tmp_path / "a.csv", 400_000))
    when_loading(sqlite_url, first)
    second = start_load(sqlite_url, _csv(tmp_path / "b.csv", 1_000, first=900_000))
    out = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0, out[0][1]
    assert second.returncode == 0, out[1][1]
    statuses = _scalar(
        sqlite_url, "SELECT COUNT(*) FROM etl_runs WHERE pipeline = 'appointments' AND status = 'succeeded'"
    )
    assert statuses == 2
    # replace mode: the second run's rows are the table
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM appointments") == 1_000
