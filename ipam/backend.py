"""Choosing the Store for a ``database`` value: a SQLite path, or a SQLAlchemy URL."""
from ipam import system
from ipam.errors import ConfigError, IoFailure
from ipam.paths import is_url, makedirs


def sqlite_path(database):
    """The file a ``database`` value names: a path, or a SQLite URL of any driver
    (``sqlite:///relative.db``, ``sqlite+pysqlite:////abs.db``); None for a server URL.

    The one answer for the plugin, ipamctl and the migrations alike. A SQLite URL that
    cannot name one file plainly (a host part, query parameters, no path) is refused,
    rather than read as some other file."""
    if not is_url(database):
        return database
    scheme, _, rest = database.partition("://")
    if scheme != "sqlite" and not scheme.startswith("sqlite+"):
        return None
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest or "#" in rest:
        raise ConfigError("invalid SQLite URL %s: write sqlite:///relative/path or "
                          "sqlite:////absolute/path, without parameters" % database)
    return rest[1:]


# The node-local writers' queue beside a shared database's mirror (dataDir). A leading
# dot: no network directory can take this name.
SHARED_LOCK = ".host-local-sqlite-shared.lock"


def open_store(database, busy_timeout=None, readonly=False, node=None, data_dir=None,
               scope=True, queue=None):
    """The Store for ``database``. ``node``/``data_dir``/``scope`` matter only to a
    shared (server) database: this node's name, its mirror directory (where its writers
    queue), and whose leases :meth:`leases` walks (True: this node's; None: all).
    ``queue``: take the writers' queue (default: unless ``readonly``)."""
    queue = not readonly if queue is None else queue
    path = sqlite_path(database)
    if path == ":memory:":
        raise ConfigError("database %s is not a file: leases must persist" % database)
    if path is None:
        return _open_server(database, busy_timeout, readonly, node, data_dir, scope, queue)
    from ipam.store.sqlite import SqliteStore

    if not readonly:
        parent = system.dirname(path)
        if parent:
            try:
                makedirs(parent, 0o755)
            except OSError as e:
                from ipam import access  # only after a failure

                raise (access.is_denied(e) and access.denied(path, write=True)) or IoFailure(
                    "cannot create %s: %s" % (parent, e.strerror or e)) from None
    return SqliteStore(path, busy_timeout=busy_timeout, readonly=readonly, node=node,
                       queue=queue)


def _open_server(url, busy_timeout, readonly, node, data_dir, scope, queue):
    """A shared database: its driver, imported only here. PostgresStore refuses what is
    not PostgreSQL before anything is created."""
    from ipam.store.postgres import PostgresStore

    store = PostgresStore(url, node=node, scope=scope, readonly=readonly, busy_timeout=busy_timeout,
                     lock_path=system.join(data_dir, SHARED_LOCK) if data_dir and queue
                     else None)
    if data_dir and not readonly:
        try:
            makedirs(data_dir, 0o755)
        except OSError as e:
            store.close()
            raise IoFailure("cannot create %s: %s" % (data_dir, e.strerror or e)) from None
    return store
