"""Engine creation, URL normalisation and password masking."""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from healthetl.errors import DatabaseError, UsageError, first_line

#: passwords of the database URLs this process was given: masked in everything it prints
_SECRETS: set[str] = set()


def remember_secrets(url: str) -> None:
    """Note a URL's password (and, for one with an unencoded ``@``, each piece of it: a driver
    may quote the part it took for a host name) so that :func:`scrub` masks them."""
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    if not sep:
        return
    head, _, query = rest.partition("?")
    found = [m.group(0).split("=", 1)[1] for m in _SECRET_KEYS.finditer("?" + query)]
    at = head.rfind("@")
    if at >= 0 and ":" in head[:at]:
        password = head[head.index(":") + 1 : at]
        found += [password, *password.split("@")]
    _SECRETS.update(p for f in found for p in {f, unquote(f)} if len(p) >= 3)


def scrub(text: str) -> str:
    """``text`` with every remembered password replaced by ``***`` (longest first)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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


_SECRET_KEYS = re.compile(r"([?&](?:password|passwd|pass|pwd|sslpassword|secret|token)=)[^&#]*", re.I)


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown: a password is always ``***``, wherever the URL put it (the
    user-info part, even with an unencoded ``@`` inside, or a ``?password=`` parameter)."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    scheme, sep, rest = text.partition("://")
    if sep:
        head, qmark, query = rest.partition("?")
        at = head.rfind("@")  # the last @ ends the user info, whatever the password holds
        if at >= 0 and ":" in head[:at]:
            head = head[: head.index(":")] + ":***" + head[at:]
        text = scheme + sep + head + qmark + query
    return _SECRET_KEYS.sub(r"\1***", text)


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


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to {mask_url(engine.url)}: {first_line(exc.orig or exc)}",
            hint="check the URL, that the server is running and that the database exists",
        ) from None
