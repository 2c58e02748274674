"""Engine creation, URL normalisation and password masking."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from healthetl import masking
from healthetl.errors import DatabaseError, UsageError, first_line
from healthetl.masking import remember_secrets


def normalise_url(url: str) -> URL:
    """postgres:// and postgresql:// use psycopg 3; anything else is left to SQLAlchemy."""
    remember_secrets(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise UsageError(f"not a database URL: {mask_url(url)}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        raise UsageError(f"use the psycopg 3 driver (postgresql+psycopg://), not {parsed.drivername}")
    return parsed


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown (see :func:`healthetl.masking.mask_url`)."""
    return masking.mask_url(url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url))


def is_postgres(engine: Engine | sa.Connection) -> bool:
    return engine.dialect.name == "postgresql"


def create(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys enforced and a busy timeout.

    ``must_exist`` refuses to create a new SQLite file (for read-only commands).
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if must_exist and database and database != ":memory:" and not Path(database).exists():
            raise DatabaseError(
                f"database file {database} does not exist",
                hint=f"create it with `healthetl db upgrade --db {mask_url(parsed)}`",
            )
        # a second run waits for the first (the pipeline lock is SQLite's write lock)
        busy = float(os.environ.get("HEALTHETL_SQLITE_BUSY_TIMEOUT", "300"))
        engine = sa.create_engine(parsed, connect_args={"timeout": busy})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        return engine
    return sa.create_engine(parsed, connect_args={"connect_timeout": 10}, pool_pre_ping=False)


def create_read_only(url: str) -> Engine:
    """An engine whose every connection may only read: SQLite opens the file read-only
    (``mode=ro``: a missing file is an error, never created); PostgreSQL starts each session with
    ``default_transaction_read_only``. For servers that answer reads (``healthetl serve``)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise UsageError("a read-only database must be a file, not an in-memory SQLite database")
        target = Path(database).resolve().as_uri().replace("file://", "file:", 1)
        ro = parsed.set(database=target, query={"mode": "ro", "uri": "true"})
        busy = float(os.environ.get("HEALTHETL_SQLITE_BUSY_TIMEOUT", "300"))
        return sa.create_engine(ro, connect_args={"timeout": min(busy, 30.0)})
    return sa.create_engine(
        parsed,
        connect_args={"connect_timeout": 10, "options": "-c default_transaction_read_only=on"},
        pool_pre_ping=True,
    )


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to {mask_url(engine.url)}: {first_line(exc.orig or exc)}",
            hint="check the URL, that the server is running and that the database exists",
        ) from None
