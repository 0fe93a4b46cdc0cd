"""Record each mirror directory's state after our own last change (foreign-change check).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No rows: a network without a stamp is reconciled once on its next call, which is
    # what an upgraded node wants (Go may have run beside the older version).
    op.create_table(
        "mirror_stamps",
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("stamp", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("network", "node", name=op.f("pk_mirror_stamps")),
    )


def downgrade() -> None:
    op.drop_table("mirror_stamps")
