"""The alembic revisions this version knows, oldest first.

Stdlib only, so the hot path can compare the database's ``alembic_version`` against it
without importing alembic. A test proves it equals the migration history.
"""
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
HEAD = REVISIONS[-1]
