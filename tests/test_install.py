"""The package as users get it: a built wheel installed (not editable) into a fresh virtual
environment, migrating a database and running the example from an unrelated folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the healthetl wheel installed; its dependencies are made visible from
    the test environment's site-packages (no network needed), but not this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((root / "dist").glob("healthetl-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True
    )
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    # a plain path line: the directory is added, its .pth files (our editable install) are not
    Path(purelib, "zz_test_dependencies.pth").write_text(deps + "\n")
    return venv


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("HEALTHETL_DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }


def test_wheel_ships_migrations_and_migrates_from_any_folder(wheel_env: Path, tmp_path: Path) -> None:
    py = wheel_env / "bin" / "python"
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import healthetl, healthetl.db.migrate as m; "
            "print(healthetl.__file__); print(m.migrations_dir())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    ).stdout.split()
    assert str(wheel_env) in where[0]  # the installed copy, not this checkout
    assert where[1].endswith("healthetl/_migrations") and str(wheel_env) in where[1]
    cli = wheel_env / "bin" / "healthetl"
    db = f"sqlite:///{tmp_path / 'w.db'}"
    done = subprocess.run(
        [str(cli), "db", "upgrade", "--db", db], capture_output=True, text=True, cwd=tmp_path, env=_env()
    )
    assert done.returncode == 0, done.stderr
    current = subprocess.run(
        [str(cli), "db", "current", "--db", db], capture_output=True, text=True, cwd=tmp_path, env=_env()
    )
    assert "(at head)" in current.stdout


def test_wheel_runs_the_quick_start(wheel_env: Path, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    cli = wheel_env / "bin" / "healthetl"
    done = subprocess.run(
        [str(cli), "run", "--config", "examples/vip-healthtech/healthetl.toml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "healthetl.db").exists()
    out = subprocess.run(
        [str(cli), "query", "confirmed-per-doctor", "-f", "csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 6


def test_wheel_serves_the_loaded_example(wheel_env: Path, tmp_path: Path) -> None:
    """`pip install "healthetl[serve]"` then `healthetl serve` over the loaded Medilink example,
    from the installed wheel (its migrations included)."""
    from tests.test_serve import serving

    shutil.copytree(REPO / "examples" / "medilink", tmp_path, dirs_exist_ok=True)
    cli = wheel_env / "bin" / "healthetl"
    url = f"sqlite:///{tmp_path / 'medilink.db'}"
    done = subprocess.run(
        [str(cli), "run", "--config", "healthetl.toml", "--db", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    with serving(tmp_path, url, exe=cli) as server:
        assert server.get("/health").json()["status"] == "ok"
        rows = server.get("/datasets/medilink_facilities/rows", state="LAGOS").json()
        assert rows["total"] >= 1 and {r["state"] for r in rows["rows"]} == {"LAGOS"}
