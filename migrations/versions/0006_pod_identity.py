"""Record the pod (or container) identity the runtime sends in CNI_ARGS with each lease and
history event: K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("pod_namespace", "pod_name", "pod_uid")


def upgrade() -> None:
    # Nullable: leases made before this revision read with no identity. A plain ADD
    # COLUMN on both engines: no table copy, however many leases and events there are.
    for table in ("leases", "history"):
        for name in COLUMNS:
            op.add_column(table, sa.Column(name, sa.String(), nullable=True))


def downgrade() -> None:
    for table in ("history", "leases"):
        with op.batch_alter_table(table) as batch:
            for name in reversed(COLUMNS):
                batch.drop_column(name)
