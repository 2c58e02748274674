"""api pages: the raw layer of HTTP API pipelines

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_pages",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False, comment="1-based, in the order fetched"),
        sa.Column("url", sa.Text(), nullable=False, comment="as fetched, secrets masked"),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "next", sa.Text(), nullable=True, comment="the page number, offset, cursor or link that led on"
        ),
        sa.Column("body", sa.Text(), nullable=False, comment="the response body as received"),
        sa.ForeignKeyConstraint(["run_id"], ["etl_runs.run_id"]),
        sa.PrimaryKeyConstraint("id"),
        comment="Pages an API pipeline fetched, as received; `--from-raw RUN_ID` replays from them.",
    )
    with op.batch_alter_table("api_pages", schema=None) as batch_op:
        batch_op.create_index("ix_api_pages_run_id", ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_pages", schema=None) as batch_op:
        batch_op.drop_index("ix_api_pages_run_id")
    op.drop_table("api_pages")
