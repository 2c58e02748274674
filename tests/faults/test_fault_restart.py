"""PostgreSQL restarted mid-run, on a throwaway cluster the test starts itself (never the shared
server): one line naming the cause, exit 3, nothing half-written, and the rerun succeeds and finds
the cut-off run dead."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VIP
from tests.conftest import appointments_csv as _csv
from tests.conftest import scalar as _scalar
from tests.faults.conftest import digest, start_load, when_loading


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1, trust auth."""

    def __init__(self, bindir: Path, folder: Path) -> None:
        self.bindir, self.folder, self.port = bindir, folder, _free_port()
        # the server refuses to run as root: run it as the `postgres` account then
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options]
        command += ["-l", str(self.folder / "server.log"), "-w", "-t", "60", *args]
        subprocess.run(self.prefix + command, check=True, capture_output=True, timeout=90)

    def init(self) -> None:
        initdb = [str(self.bindir / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres"]
        initdb += ["-A", "trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(self.prefix + initdb, check=True, capture_output=True, timeout=120)
        self._ctl("start")

    def restart(self) -> None:
        """A fast restart: the server ends every session (AdminShutdown) and comes back."""
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = _bindir()
    problem = None
    if bindir is None:
        problem = "no initdb found (install the PostgreSQL server package)"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            problem = "running as root and there is no `postgres` account to run a server as"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but a throwaway PostgreSQL cluster cannot be started: {problem}")
        pytest.skip(f"a throwaway PostgreSQL cluster cannot be started: {problem}")
    assert bindir is not None
    folder = Path(tempfile.mkdtemp(prefix="healthetl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = Cluster(bindir, folder)
    try:
        server.init()
        yield server
    finally:
        try:
            server.stop()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # never started, or already down
        shutil.rmtree(folder, ignore_errors=True)


def test_a_restart_mid_load_is_one_line_and_changes_nothing(cli, cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.url
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", url).exit_code == 0
    assert cli("load", "appointments", _csv(tmp_path / "first.csv", 300), "--db", url).exit_code == 0
    before = digest(url)
    proc = start_load(url, _csv(tmp_path / "big.csv", 1_000_000))
    when_loading(url, proc)
    cluster.restart()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error: unexpected" not in err and "report it" not in err
    assert "psycopg" not in err  # the driver's own notes stay out of the output
    # the cause is named: the server ended the session
    assert "administrator command" in lines[0] or "server closed the connection" in lines[0], lines[0]
    assert "run again when it is back" in err
    assert digest(url) == before
    # the rerun loads its file once, and finds the cut-off run dead
    rerun = start_load(url, _csv(tmp_path / "small.csv", 50, first=2000))
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _scalar(url, "SELECT COUNT(*) FROM appointments") == 50
    assert _scalar(url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'running'") == 0
    statuses = _scalar(
        url,
        "SELECT COUNT(*) FROM etl_runs WHERE pipeline = 'appointments' AND status IN ('failed', 'abandoned')",
    )
    assert statuses == 1
