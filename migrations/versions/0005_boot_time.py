"""Record each lease's age on a clock that cannot step: CLOCK_BOOTTIME at allocation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: leases made before this revision (and imported ones) are aged by their
    # wall-clock time, as before.
    op.add_column("leases", sa.Column("boot_time", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("boot_time")
