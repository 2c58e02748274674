"""``api_pages``: every page an API pipeline fetched, as received, written in the load's
transaction (a failed run keeps none, its checkpoint does not move)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from healthetl.db.schema import api_pages
from healthetl.sources.http import Page


def write(conn: sa.Connection, run_id: str, pipeline: str, pages: Sequence[Page]) -> None:
    if not pages:
        return
    conn.execute(
        api_pages.insert(),
        [
            {
                "run_id": run_id,
                "pipeline": pipeline,
                "page": p.number,
                "url": p.url,
                "status": p.status,
                "fetched_at": p.fetched_at,
                "sha256": p.sha256,
                "next": p.next,
                "body": p.body,
            }
            for p in pages
        ],
    )


def read(conn: sa.Connection, run_id: str) -> list[Page]:
    """The pages run ``run_id`` fetched, in order."""
    rows = conn.execute(
        sa.select(api_pages).where(api_pages.c.run_id == run_id).order_by(api_pages.c.page)
    ).mappings()
    return [Page(r["page"], r["url"], r["status"], r["fetched_at"], r["body"], r["next"]) for r in rows]
