"""api access log: who read identifying values through `healthetl serve`

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_access_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "token", sa.Text(), nullable=False, comment="the token's name (`loopback`: no tokens configured)"
        ),
        sa.Column("client", sa.Text(), nullable=True, comment="the client's address"),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False, comment="the route, e.g. /datasets/{name}/rows"),
        sa.Column("dataset", sa.Text(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False, comment="rows returned with identifying values"),
        sa.Column("columns", sa.Text(), nullable=False, comment="the identifying columns returned"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_access_log")),
        comment="Every `healthetl serve` response that returned values of identifying columns.",
    )
    with op.batch_alter_table("api_access_log", schema=None) as batch_op:
        batch_op.create_index("ix_api_access_log_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_access_log", schema=None) as batch_op:
        batch_op.drop_index("ix_api_access_log_at")

    op.drop_table("api_access_log")
