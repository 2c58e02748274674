"""``healthetl serve``: the loaded tables, run statistics and a validated ingest endpoint over
HTTP. Needs the ``serve`` extra (FastAPI and uvicorn): ``pip install "healthetl[serve]"``.

This package's :mod:`~healthetl.serve.tokens` and :mod:`~healthetl.serve.rows` need neither;
:mod:`~healthetl.serve.app` is imported only once the extra is known to be there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from healthetl.errors import UsageError

if TYPE_CHECKING:
    from healthetl.serve.app import Settings


def require_extra() -> None:
    """A clear message, not an ImportError, when FastAPI or uvicorn is missing."""
    missing = []
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(
            f"healthetl serve needs {' and '.join(missing)}",
            hint="install the extra: pip install 'healthetl[serve]'",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    config: Path | None = None
    db: str | None = None
    tokens_file: Path | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_mb: int = 100


def settings(options: Options) -> Settings:
    """The server's settings: project, catalog, read-only and writing engines, tokens. Refuses
    an address other than loopback without tokens. The database is not contacted here: a server
    whose database is down starts, and says so on ``/health`` (503)."""
    require_extra()
    from healthetl.config import resolve_database_url, resolve_min_cell_count, resolve_query_role
    from healthetl.db import engine as db_engine
    from healthetl.serve import tokens as token_file
    from healthetl.serve.app import Settings
    from healthetl.session import open_project

    tokens = token_file.load(options.tokens_file) if options.tokens_file is not None else None
    if not is_loopback(options.host) and not tokens:
        raise UsageError(
            f"--host {options.host} serves the network: give --tokens-file (or HEALTHETL_TOKENS_FILE) "
            "with at least one token",
            hint="make one with `healthetl token add NAME --scope read --tokens-file tokens.toml`",
        )
    if options.tokens_file is not None and not tokens:
        raise UsageError(f"{options.tokens_file}: no tokens in the file; every request would be refused")
    if options.max_body_mb < 1:
        raise UsageError("--max-body-mb must be at least 1")
    session = open_project(options.config)
    url = resolve_database_url(options.db, session.project)
    return Settings(
        project=session.project,
        catalog=session.catalog,
        reader=db_engine.create_read_only(url),
        writer=db_engine.create(url, must_exist=True),
        url=url,
        tokens=tokens,
        cors_origins=list(options.cors_origins),
        max_body=options.max_body_mb * 1024 * 1024,
        query_role=resolve_query_role(session.project),
        min_cell_count=resolve_min_cell_count(None, session.project),
    )


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted. Uvicorn's access log is off: the app logs each request itself,
    without the values of identifying columns a query string may hold."""
    import uvicorn

    from healthetl.serve.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        log_level="info",
    )
