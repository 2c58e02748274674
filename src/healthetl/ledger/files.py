"""Files already loaded: by an inbox pipeline (``loaded_files``) or into a raw layer (its
``file_sha256`` column). A file is known by the sha256 of its content, not its name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from healthetl.db.schema import loaded_files


def loaded_by(conn: sa.Connection, sha: str, *, raw_table: sa.Table | None, inbox: str | None) -> str | None:
    """The run that already loaded a file with this content: into the raw layer, or by this
    inbox pipeline. None: not seen."""
    seen = None
    if raw_table is not None:
        seen = conn.execute(
            sa.select(raw_table.c.run_id).where(raw_table.c.file_sha256 == sha).limit(1)
        ).scalar()
    if seen is None and inbox:
        seen = conn.execute(
            sa.select(loaded_files.c.run_id).where(
                loaded_files.c.pipeline == inbox, loaded_files.c.file_sha256 == sha
            )
        ).scalar()
    return None if seen is None else str(seen)


def remember(conn: sa.Connection, pipeline: str, run_id: str, files: list[tuple[str, str]]) -> None:
    """An inbox pipeline remembers the files (path, sha256) it loaded, in the load's transaction."""
    rows = [
        {
            "pipeline": pipeline,
            "file_sha256": sha,
            "file_name": Path(path).name,
            "run_id": run_id,
            "loaded_at": datetime.now(UTC),
        }
        for path, sha in dict(files).items()
        if sha and sha != "stdin"
    ]
    existing = set(
        conn.execute(
            sa.select(loaded_files.c.file_sha256).where(loaded_files.c.pipeline == pipeline)
        ).scalars()
    )
    fresh = {r["file_sha256"]: r for r in rows if r["file_sha256"] not in existing}
    if fresh:
        conn.execute(loaded_files.insert(), list(fresh.values()))
