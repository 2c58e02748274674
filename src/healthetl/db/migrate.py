"""Alembic, in process. The migrations ship inside the wheel (``healthetl/_migrations``);
in a source checkout they are the repository's top-level ``alembic/`` folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from healthetl.db.engine import first_line, mask_url
from healthetl.errors import DatabaseError, UsageError


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    checkout = here.parent.parent / "alembic"
    if (checkout / "env.py").exists():
        return checkout
    raise DatabaseError("healthetl's migrations are missing from this installation; reinstall it")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> tuple[str, ...]:
    return tuple(script().get_heads())


def current_revisions(conn: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine, revision: str = "head") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Upgrade; returns (revisions before, revisions after)."""
    return _run(engine, lambda cfg: command.upgrade(cfg, revision), revision)


def downgrade(engine: Engine, revision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _run(engine, lambda cfg: command.downgrade(cfg, revision), revision)


def _run(
    engine: Engine, action: Callable[[Config], None], revision: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from alembic.util import CommandError

    try:
        with engine.begin() as conn:
            before = current_revisions(conn)
            action(alembic_config(conn))
            after = current_revisions(conn)
    except CommandError as exc:
        raise UsageError(f"alembic: {first_line(exc)} (revision {revision!r})") from None
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"{mask_url(engine.url)}: {first_line(exc.orig or exc)}") from None
    return before, after


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool
    is_current: bool


def history(engine: Engine | None = None) -> list[Revision]:
    current: tuple[str, ...] = ()
    if engine is not None:
        with engine.connect() as conn:
            current = current_revisions(conn)
    out = []
    for rev in script().walk_revisions():
        down = rev.down_revision
        out.append(
            Revision(
                revision=rev.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                message=rev.doc or "",
                is_head=rev.is_head,
                is_current=rev.revision in current,
            )
        )
    return out


def ensure_at_head(engine: Engine, *, db_flag_hint: str = "") -> None:
    """Refuse to touch tables unless the database is migrated to head; say what to run."""
    with engine.connect() as conn:
        current = set(current_revisions(conn))
    heads = set(head_revisions())
    if current == heads:
        return
    where = mask_url(engine.url)
    state = ", ".join(sorted(current)) if current else "an empty (never migrated) database"
    raise DatabaseError(
        f"{where} is at {state}, not at head {', '.join(sorted(heads))}",
        hint=f"run `healthetl db upgrade{db_flag_hint}`",
    )
