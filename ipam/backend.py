"""Choosing the Store for a ``database`` value: a SQLite path, or a SQLAlchemy URL."""
import os

from ipam.errors import IoFailure
from ipam.paths import is_url


def open_store(database, busy_timeout=None, readonly=False):
    if is_url(database):
        from ipam.sql_store import SqlStore  # lazy: SQLAlchemy only for server databases

        return SqlStore(database, busy_timeout=busy_timeout, readonly=readonly)
    from ipam.sqlite_store import SqliteStore

    if not readonly:
        parent = os.path.dirname(database)
        if parent:
            try:
                os.makedirs(parent, mode=0o755, exist_ok=True)
            except OSError as e:
                raise IoFailure("cannot create %s: %s" % (parent, e.strerror or e)) from None
    return SqliteStore(database, busy_timeout=busy_timeout, readonly=readonly)
