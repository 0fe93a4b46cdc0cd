"""Record which hosts use each node name (one row per name and boot), so that two hosts
given one name are detected.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

A new table, nothing rewritten: the upgrade is instant on a pool of any size. Leases
made before it belong to no recorded boot, which counts as no evidence either way.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_boots",
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("boot_id", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node", "boot_id", name=op.f("pk_node_boots")),
    )


def downgrade() -> None:
    op.drop_table("node_boots")
