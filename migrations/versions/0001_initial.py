"""Initial schema: leases, cursors, history.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written out in full rather than built from ipam.store.schema: a migration is history and
must not change when the tables do. tests/test_migrate.py proves the two agree at head.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("ip", sa.String(), nullable=False),
        sa.Column("ip_key", sa.LargeBinary(16), nullable=False),
        sa.Column("next_free", sa.Boolean(), nullable=False),
        sa.Column("range_set", sa.Integer(), nullable=False),
        sa.Column("container_id", sa.String(), nullable=False),
        sa.Column("ifname", sa.String(), nullable=True),
        sa.Column("allocated_at", sa.Float(), nullable=False),
        sa.Column("boot_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
        sa.UniqueConstraint("network", "ip", name=op.f("uq_leases_network_ip")),
        sa.UniqueConstraint("network", "ip_key", name=op.f("uq_leases_network_ip_key")),
    )
    op.create_index("ix_leases_owner", "leases", ["network", "container_id", "ifname"])
    op.create_index(
        "ix_leases_run_end",
        "leases",
        ["network", "ip_key"],
        sqlite_where=sa.text("next_free = 1"),
        postgresql_where=sa.text("next_free"),
    )
    op.create_table(
        "cursors",
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("range_set", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("network", "range_set", name=op.f("pk_cursors")),
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("network", sa.String(), nullable=False),
        sa.Column("ip", sa.String(), nullable=False),
        sa.Column("container_id", sa.String(), nullable=False),
        sa.Column("ifname", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history")),
    )
    op.create_index("ix_history_network_ip_time", "history", ["network", "ip", "time"])
    op.create_index("ix_history_container_id", "history", ["container_id"])


def downgrade() -> None:
    op.drop_index("ix_history_container_id", table_name="history")
    op.drop_index("ix_history_network_ip_time", table_name="history")
    op.drop_table("history")
    op.drop_table("cursors")
    op.drop_index("ix_leases_run_end", table_name="leases")
    op.drop_index("ix_leases_owner", table_name="leases")
    op.drop_table("leases")
