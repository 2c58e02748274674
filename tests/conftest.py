"""Shared fixtures. PostgreSQL tests use HEALTHETL_TEST_DATABASE_URL (a server reachable with
that URL), create a uniquely named database per test and drop it afterwards. Without a server
they skip, except under CI=true, where a missing server fails the run."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from healthetl.cli import app
from tests.browser import browser  # noqa: F401 (the fixture, for every test module)
from tests.s3server import bucket, endpoint, s3  # noqa: F401 (the object store's fixtures, likewise)

DATA = Path(__file__).parent / "data"
VIP = DATA / "vip-healthtech"
REPO = Path(__file__).resolve().parent.parent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T = TypeVar("T")


def pg_admin_url() -> str:
    return os.environ.get("HEALTHETL_TEST_DATABASE_URL", PG_DEFAULT)


def _pg_reachable(url: str) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # any reason at all means: no usable server
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> str:
    url = pg_admin_url()
    problem = _pg_reachable(url)
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at {url} is unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {url} ({problem}); set HEALTHETL_TEST_DATABASE_URL")
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    with fresh_database(pg_server) as url:
        yield url


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (its URL), dropped afterwards."""
    name = f"healthetl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Invoke the CLI in a clean working folder with no database in the environment."""
    monkeypatch.delenv("HEALTHETL_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, input: bytes | str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def vip_project(tmp_path: Path) -> Path:
    """The clinic's project: both real workbooks and a project file, in a temp folder."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    shutil.copy(VIP / "doctors.xlsx", folder / "data")
    shutil.copy(VIP / "appointments.xlsx", folder / "data")
    (folder / "healthetl.toml").write_text(
        """
[[pipelines]]
name = "appointments"
dataset = "appointments"
source = "data/appointments.xlsx"
[pipelines.date_window]
booking_date = ["2025-01-01", "2026-12-31"]

[[pipelines]]
name = "doctors"
dataset = "doctors"
source = "data/doctors.xlsx"
""",
        encoding="utf-8",
    )
    return folder / "healthetl.toml"


APPOINTMENTS_HEADER = "booking_id,patient_id,doctor_id,booking_date,status\n"


def appointments_csv(path: Path, rows: int, *, first: int = 1, bad_at: int | None = None) -> Path:
    """A generated appointments CSV (doctor ids 100-104); ``bad_at``: a line with extra fields."""
    lines = [f"{i},{i % 500},{100 + i % 5},2025-10-20,confirmed\n" for i in range(first, first + rows)]
    if bad_at is not None:
        lines.insert(bad_at - 1, "999999,1,100,2025-10-20,confirmed,extra,fields\n")
    path.write_text(APPOINTMENTS_HEADER + "".join(lines), encoding="utf-8")
    return path


def _fetch(url: str, sql: str, take: Callable[[sa.CursorResult[Any]], T]) -> T:
    """``take`` of a query's result, on a connection of its own."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return take(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> object:
    """One value from a database."""
    return _fetch(url, sql, lambda r: r.scalar())


def row(url: str, sql: str) -> tuple[object, ...]:
    """One row from a database."""
    return _fetch(url, sql, lambda r: tuple(r.one()))


def column(url: str, sql: str) -> list[object]:
    """The first column of every row."""
    return _fetch(url, sql, lambda r: list(r.scalars()))


def rows(url: str, sql: str) -> list[Any]:
    """Every row (columns by name or position)."""
    return _fetch(url, sql, lambda r: list(r.all()))


def subprocess_env() -> dict[str, str]:
    """The environment for a healthetl subprocess: no database URL inherited."""
    return {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
