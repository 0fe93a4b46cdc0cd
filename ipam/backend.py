"""Choosing the Store for a ``database`` value: a SQLite path, or a SQLAlchemy URL."""
import os

from ipam.errors import ConfigError, IoFailure
from ipam.paths import is_url, makedirs


def sqlite_path(database):
    """The file of a SQLite path or ``sqlite:///`` URL; None for a server URL."""
    if not is_url(database):
        return database
    if database.startswith("sqlite:///"):
        return database[len("sqlite:///"):] or None
    return None


def open_store(database, busy_timeout=None, readonly=False):
    path = sqlite_path(database)
    if path == ":memory:":
        raise ConfigError("database %s is not a file: leases must persist" % database)
    if path is None:
        scheme = database.split("://", 1)[0]
        raise ConfigError("database URL scheme %r is not supported: use a SQLite file path"
                          % scheme)
    from ipam.sqlite_store import SqliteStore

    if not readonly:
        parent = os.path.dirname(path)
        if parent:
            try:
                makedirs(parent, 0o755)
            except OSError as e:
                raise IoFailure("cannot create %s: %s" % (parent, e.strerror or e)) from None
    return SqliteStore(path, busy_timeout=busy_timeout, readonly=readonly)
