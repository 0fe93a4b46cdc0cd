"""Record the node of every lease and history event, for pools shared by many nodes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: leases made before this revision have no recorded node. A plain ADD
    # COLUMN on both engines, so no SQLite table copy (batch mode) is needed.
    op.add_column("leases", sa.Column("node", sa.String(), nullable=True))
    op.add_column("history", sa.Column("node", sa.String(), nullable=True))
    op.create_index("ix_leases_network_node", "leases", ["network", "node"])


def downgrade() -> None:
    op.drop_index("ix_leases_network_node", table_name="leases")
    with op.batch_alter_table("history") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("node")
