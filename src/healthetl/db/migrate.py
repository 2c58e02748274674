"""Alembic, in process.

healthetl's own migrations ship inside the wheel (``healthetl/_migrations``; in a source
checkout, the repository's ``alembic/``). A project that declares datasets keeps their
migrations in its own ``migrations/`` folder next to healthetl.toml: a second version location
and an independent branch labelled ``project``, upgraded together with healthetl's
(``upgrade heads``). Tables are never created or altered outside a migration.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from healthetl.db import drift
from healthetl.db.engine import mask_url
from healthetl.errors import DatabaseError, UsageError, first_line

if TYPE_CHECKING:
    from healthetl.catalog import Catalog

PROJECT_BRANCH = "project"


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    checkout = here.parent.parent / "alembic"
    if (checkout / "env.py").exists():
        return checkout
    raise DatabaseError("healthetl's migrations are missing from this installation; reinstall it")


def _project_dir(catalog: Catalog | None, *, create: bool = False) -> Path | None:
    if catalog is None or catalog.migrations_dir is None:
        return None
    folder = catalog.migrations_dir
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder if folder.is_dir() else None


def alembic_config(
    connection: sa.Connection | None = None,
    catalog: Catalog | None = None,
    *,
    include_tables: set[str] | None = None,
    create_project_dir: bool = False,
) -> Config:
    # Alembic's own chatter is silenced; the CLI reports what happened
    cfg = Config(stdout=io.StringIO(), cmd_opts=argparse.Namespace(quiet=True))
    builtin = migrations_dir()
    cfg.set_main_option("script_location", str(builtin))
    locations = [str(builtin / "versions")]
    project = _project_dir(catalog, create=create_project_dir)
    if project is not None:
        locations.append(str(project))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if catalog is not None:
        cfg.attributes["metadata"] = catalog.metadata
    if include_tables is not None:
        cfg.attributes["include_tables"] = include_tables
    return cfg


def script(catalog: Catalog | None = None) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(catalog=catalog))


def head_revisions(catalog: Catalog | None = None) -> tuple[str, ...]:
    return tuple(script(catalog).get_heads())


def current_revisions(conn: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def upgrade(
    engine: Engine, revision: str = "heads", catalog: Catalog | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Upgrade; returns (revisions before, revisions after). Rows that would break a declared
    key, unique constraint or reference are counted first: the upgrade is then refused with
    nothing changed, instead of failing half-way."""
    if catalog is not None and catalog.project_tables:
        with engine.connect() as conn:
            broken = constraint_violations(conn, catalog.metadata, catalog.project_tables)
        if broken:
            raise DatabaseError(
                "cannot migrate, nothing was changed: existing rows break declared constraints: "
                + "; ".join(broken),
                hint="fix or remove those rows (see `healthetl query --sql`), or change the "
                "declaration, then run `healthetl db upgrade` again",
            )
    return _run(engine, lambda cfg: command.upgrade(cfg, revision), revision, catalog)


def constraint_violations(conn: sa.Connection, metadata: sa.MetaData, include: set[str]) -> list[str]:
    """For each declared primary key, unique constraint and reference of the existing tables in
    ``include``: how many stored rows would break it (only the failing ones are listed)."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    q = conn.dialect.identifier_preparer.quote
    out: list[str] = []
    for name in sorted(include & tables):
        table = metadata.tables[name]
        have = {c["name"] for c in inspector.get_columns(name)}
        keys: list[tuple[str, list[str]]] = []
        if table.primary_key.columns:
            keys.append(
                (str(table.primary_key.name or f"pk_{name}"), [c.name for c in table.primary_key.columns])
            )
        for uc in table.constraints:
            if isinstance(uc, sa.UniqueConstraint):
                keys.append((str(uc.name), [c.name for c in uc.columns]))
        for cname, cols in keys:
            if not set(cols) <= have:
                continue
            listed = ", ".join(q(c) for c in cols)
            filled = " AND ".join(f"{q(c)} IS NOT NULL" for c in cols)
            dupes = conn.exec_driver_sql(
                f"SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM {q(name)} "
                f"WHERE {filled} GROUP BY {listed} HAVING COUNT(*) > 1) d"
            ).one()
            if dupes[0]:
                out.append(f"{name}.{cname} ({', '.join(cols)}): {dupes[0]} value(s) held by {dupes[1]} rows")
        for fk in table.foreign_key_constraints:
            cols = [c.name for c in fk.columns]
            target = fk.referred_table.name
            target_cols = [e.column.name for e in fk.elements]
            if not set(cols) <= have or target not in tables:
                continue
            if not set(target_cols) <= {c["name"] for c in inspector.get_columns(target)}:
                continue
            match = " AND ".join(f"p.{q(t)} = c.{q(s)}" for s, t in zip(cols, target_cols, strict=True))
            filled = " AND ".join(f"c.{q(s)} IS NOT NULL" for s in cols)
            orphans = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM {q(name)} c WHERE {filled} "
                f"AND NOT EXISTS (SELECT 1 FROM {q(target)} p WHERE {match})"
            ).scalar_one()
            if orphans:
                out.append(
                    f"{name}.{fk.name} ({', '.join(cols)} -> {target}.{', '.join(target_cols)}): "
                    f"{orphans} rows without a match"
                )
    return out


def downgrade(
    engine: Engine, revision: str, catalog: Catalog | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _run(engine, lambda cfg: command.downgrade(cfg, revision), revision, catalog)


def _run(
    engine: Engine, action: Callable[[Config], None], revision: str, catalog: Catalog | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            saved = None
            if sqlite:
                # Python's sqlite3 commits DDL as it goes unless it is told not to manage
                # transactions: take them over, so a failed migration (SQLite rebuilds a table
                # to alter it) rolls back whole instead of leaving `_alembic_tmp_*` behind.
                # Foreign keys are off while tables are copied (the pragma only works outside
                # a transaction) and checked before the commit.
                assert raw is not None
                saved = raw.isolation_level
                raw.isolation_level = None
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    if sqlite:
                        conn.exec_driver_sql("BEGIN")
                    before = current_revisions(conn)
                    action(alembic_config(conn, catalog))
                    after = current_revisions(conn)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise DatabaseError("the migration left rows with broken references; rolled back")
            finally:
                if sqlite:
                    assert raw is not None
                    raw.execute("PRAGMA foreign_keys = ON")
                    raw.isolation_level = saved
    except CommandError as exc:
        raise UsageError(f"alembic: {first_line(exc)} (revision {revision!r})") from None
    except sa.exc.IntegrityError as exc:
        raise DatabaseError(
            f"the migration breaks a constraint on existing rows and was rolled back, nothing was "
            f"changed: {first_line(exc.orig or exc)}",
            hint="fix or remove those rows, then run `healthetl db upgrade` again",
        ) from None
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
    branch: str


def history(engine: Engine | None = None, catalog: Catalog | None = None) -> list[Revision]:
    current: tuple[str, ...] = ()
    if engine is not None:
        with engine.connect() as conn:
            current = current_revisions(conn)
    out = []
    for rev in script(catalog).walk_revisions():
        down = rev.down_revision
        labels = set(rev.branch_labels or ())
        out.append(
            Revision(
                revision=rev.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                message=rev.doc or "",
                is_head=rev.is_head,
                is_current=rev.revision in current,
                branch=PROJECT_BRANCH
                if PROJECT_BRANCH in labels or _in_project(rev, catalog)
                else "healthetl",
            )
        )
    return out


def _in_project(rev: Any, catalog: Catalog | None) -> bool:
    folder = _project_dir(catalog)
    return folder is not None and Path(rev.path).resolve().parent == folder.resolve()


def at_head(conn: sa.Connection, catalog: Catalog | None = None) -> bool:
    """Every head is applied (a head another branch depends on is applied implicitly)."""
    current = current_revisions(conn)
    sd = script(catalog)
    heads = set(sd.get_heads())
    try:
        applied = {r.revision for c in current for r in sd.iterate_revisions(c, "base")}
    except (CommandError, RevisionError):  # a revision these scripts do not know
        return False
    return heads <= applied and set(current) <= heads


def _ensure_migrated(engine: Engine, catalog: Catalog | None, hint: str) -> None:
    """The database is at every head of these migrations; else say why and what to run."""
    with engine.connect() as conn:
        current = set(current_revisions(conn))
        ok = at_head(conn, catalog)
    unknown = current - {r.revision for r in script(catalog).walk_revisions()}
    if unknown:
        raise DatabaseError(
            f"{mask_url(engine.url)} has migration(s) {', '.join(sorted(unknown))} that this "
            "project does not know",
            hint="run the command with the project file that declared them (--config, or from "
            "its folder); a newer healthetl may also have written them",
        )
    if not ok:
        state = ", ".join(sorted(current)) if current else "an empty (never migrated) database"
        heads = ", ".join(sorted(head_revisions(catalog)))
        raise DatabaseError(f"{mask_url(engine.url)} is at {state}, not at head {heads}", hint=hint)


def ensure_at_head(engine: Engine, catalog: Catalog | None = None, *, db_flag_hint: str = "") -> None:
    """Refuse to touch tables unless the database is migrated to head and the declared datasets
    match their tables; say what to run."""
    _ensure_migrated(engine, catalog, f"run `healthetl db upgrade{db_flag_hint}`")
    drift.ensure_declarations_match(engine, catalog)


def _render_create_primary_key(autogen_context: Any, op: Any) -> str:
    """Alembic renders no CreatePrimaryKeyOp (it never autogenerates one); healthetl does."""
    columns = list(op.columns)
    if getattr(autogen_context, "_has_batch", False):
        return f"batch_op.create_primary_key({op.constraint_name!r}, {columns!r})"
    return f"op.create_primary_key({op.constraint_name!r}, {op.table_name!r}, {columns!r})"


def _register_renderers() -> None:
    from alembic.autogenerate import renderers
    from alembic.operations import ops

    renderers.dispatch_for(ops.CreatePrimaryKeyOp, replace=True)(_render_create_primary_key)


def _primary_key_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """Alembic hook for `db revision`: write the primary-key changes autogenerate misses."""
    from alembic.operations import ops

    include = context.config.attributes.get("include_tables") or set()
    metadata = context.config.attributes.get("metadata")
    if not directives or metadata is None:
        return
    script = directives[0]
    for table, old, new, old_name in drift.primary_key_changes(context.connection, metadata, include):
        name = str(metadata.tables[table].primary_key.name or f"pk_{table}")
        up: list[Any] = []
        down: list[Any] = []
        if old:
            up.append(ops.DropConstraintOp(old_name or f"pk_{table}", table, type_="primary"))
            down.append(ops.CreatePrimaryKeyOp(old_name or f"pk_{table}", table, old))
        if new:
            up.append(ops.CreatePrimaryKeyOp(name, table, new))
            down.insert(0, ops.DropConstraintOp(name, table, type_="primary"))
        script.upgrade_ops.ops.append(ops.ModifyTableOps(table, up))
        script.downgrade_ops.ops.insert(0, ops.ModifyTableOps(table, down))


def revision(engine: Engine, catalog: Catalog, message: str) -> Path:
    """Autogenerate a migration for the project's declared-but-missing or changed tables."""
    if not catalog.project_tables or catalog.project is None:
        raise UsageError(
            "the project declares no datasets, so it has no tables to migrate",
            hint="declare one under [[datasets]] in healthetl.toml",
        )
    _ensure_migrated(engine, catalog, "run `healthetl db upgrade` before generating a revision")
    if not drift.declaration_drift(engine, catalog):
        raise UsageError("nothing to do: the declared datasets match the database")
    folder = catalog.project.migrations_dir
    existing = _project_dir(catalog) is not None and any(folder.glob("*.py"))
    builtin_heads = list(head_revisions(None))
    try:
        with engine.begin() as conn:
            cfg = alembic_config(
                conn, catalog, include_tables=catalog.project_tables, create_project_dir=True
            )
            cfg.attributes["process_revision_directives"] = _primary_key_directives
            _register_renderers()
            kwargs: dict[str, Any] = (
                {"head": f"{PROJECT_BRANCH}@head"}
                if existing
                else {
                    "head": "base",
                    "branch_label": PROJECT_BRANCH,
                    "version_path": str(folder),
                    "depends_on": builtin_heads,
                }
            )
            scripts = command.revision(cfg, message=message, autogenerate=True, **kwargs)
    except CommandError as exc:
        raise UsageError(f"alembic: {first_line(exc)}") from None
    made = scripts if isinstance(scripts, list) else [scripts]
    return Path(made[0].path)  # type: ignore[union-attr]
