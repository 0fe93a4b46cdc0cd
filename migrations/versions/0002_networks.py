"""Record each network's range sets and mirror settings for ipamctl.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("data_dir", sa.String(), nullable=False),
        sa.Column("export", sa.Boolean(), nullable=False),
        sa.Column("range_sets", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("network", name=op.f("pk_networks")),
    )


def downgrade() -> None:
    op.drop_table("networks")
