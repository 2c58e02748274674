"""The access log (``api_access_log``): every time values of identifying columns were shown,
through ``healthetl serve`` with the ``phi`` scope or on the command line with
``--show-identifying``: who, when, what and how many rows."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from healthetl.db.schema import api_access_log


def record(
    engine: Engine,
    *,
    who: str,
    endpoint: str,
    dataset: str | None,
    rows: int,
    columns: list[str],
    method: str = "CLI",
    client: str | None = None,
) -> None:
    """One access, in a transaction of its own, before the values are shown."""
    with engine.begin() as conn:
        conn.execute(
            api_access_log.insert().values(
                at=datetime.now(UTC),
                token=who,
                client=client,
                method=method,
                endpoint=endpoint,
                dataset=dataset,
                rows=rows,
                columns=", ".join(columns),
            )
        )


def cli_user() -> str:
    """Who runs the command, as the access log names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
