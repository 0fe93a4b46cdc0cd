"""Choosing the Store for a ``database`` value: a SQLite path, or a PostgreSQL URL (what
the value names: :mod:`ipam.store.location`)."""
from ipam import system
from ipam.errors import IoFailure
from ipam.paths import makedirs, shared_queue
from ipam.store.location import POSTGRESQL, locate

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    from typing import Optional, Union

    from ipam.store.postgres import PostgresStore
    from ipam.store.protocol import AdminStore


def busy_timeout(database: "str", configured: "Optional[float]" = None) -> "float":
    """Seconds a wait for a lock's holder may last for ``database``: the config's
    ``busyTimeout``, else its engine's default (what its store's ``timeout`` will be)."""
    if configured is not None:
        return configured
    if locate(database)[0] == POSTGRESQL:
        from ipam.store.postgres import DEFAULT_LOCK_TIMEOUT

        return DEFAULT_LOCK_TIMEOUT
    from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT

    return DEFAULT_BUSY_TIMEOUT


def open_store(database: "str", busy_timeout: "Optional[float]" = None,
               readonly: "bool" = False, node: "Optional[str]" = None,
               data_dir: "Optional[str]" = None, scope: "Union[bool, str, None]" = True,
               queue: "Optional[bool]" = None, kept: "bool" = False) -> "AdminStore":
    """The Store for ``database``. ``node``/``data_dir``/``scope`` matter only to a
    shared (server) database: this node's name, its mirror directory (where its writers
    queue), and whose leases :meth:`leases` walks (True: this node's; None: all).
    ``queue``: take the writers' queue (default: unless ``readonly``). ``kept``: the
    store stays open across calls (the node daemon's pool; on SQLite its WAL is then
    reused in place: :func:`ipam.store.sqlite_db.reuse_wal`)."""
    queue = not readonly if queue is None else queue
    kind, path = locate(database)
    if kind == POSTGRESQL:
        return _open_server(path, busy_timeout, readonly, node, data_dir, scope, queue)
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
                       queue=queue, kept=kept)


def _open_server(url: "str", busy_timeout: "Optional[float]", readonly: "bool",
                 node: "Optional[str]", data_dir: "Optional[str]",
                 scope: "Union[bool, str, None]", queue: "bool") -> "PostgresStore":
    """A shared database (``url`` from :func:`locate`): its driver, imported only here."""
    from ipam.store.postgres import PostgresStore

    lock_path = shared_queue(data_dir) if data_dir and queue else None
    store = PostgresStore(url, node=node, scope=scope, readonly=readonly,
                          busy_timeout=busy_timeout, lock_path=lock_path)
    if data_dir and not readonly:
        try:
            makedirs(data_dir, 0o755)
        except OSError as e:
            store.close()
            raise IoFailure("cannot create %s: %s" % (data_dir, e.strerror or e)) from None
    return store
