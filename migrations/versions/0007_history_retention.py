"""History that stays fast and can be pruned: indexes for ``ipamctl history --ip`` (no
network) and for time (``--since``, ``history prune``, the ``historyRetention`` trim),
and 64-bit ids on PostgreSQL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

On PostgreSQL, 0001's ``Integer`` primary keys became ``serial`` columns: a 32-bit
column fed by a sequence declared ``AS integer``, so nextval fails after 2^31-1 events
(every ADD and DEL writes one). Both the column and its sequence become 64-bit, for
``history`` and for ``leases`` (whose sequence grows with every ADD, even though the
rows go). Changing the column type rewrites the table under an exclusive lock, which
the pool's plugins wait out: 18 s for a million events (with the two new indexes) on
PostgreSQL 15 on a busy 2-core machine. The README says to run ``ipamctl db upgrade``
on a large pool before its nodes get this version. SQLite's ``INTEGER PRIMARY
KEY`` is already the 64-bit rowid: nothing to change there but the indexes, which need
no table copy (4 s for a million events).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("history", "leases")


def _widen(to: str) -> None:
    bind = op.get_bind()
    for table in TABLES:
        op.execute("ALTER TABLE %s ALTER COLUMN id TYPE %s" % (table, to))
        # serial named the sequence: ask PostgreSQL rather than guess.
        seq = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"),
                           {"t": table}).scalar()
        op.execute("ALTER SEQUENCE %s AS %s" % (seq, to))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _widen("bigint")
    op.create_index("ix_history_ip", "history", ["ip"])
    op.create_index("ix_history_time", "history", ["time"])


def downgrade() -> None:
    op.drop_index("ix_history_time", table_name="history")
    op.drop_index("ix_history_ip", table_name="history")
    if op.get_bind().dialect.name == "postgresql":
        _widen("integer")  # fails, as it should, once an id no longer fits
