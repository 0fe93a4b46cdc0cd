"""Choosing the Store for a ``database`` value: a SQLite path, or a PostgreSQL URL."""
from ipam import system
from ipam.errors import ConfigError, IoFailure
from ipam.paths import makedirs, shared_queue

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    from typing import Optional, Union

    from ipam.store.postgres import PostgresStore
    from ipam.store.protocol import AdminStore

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
# The schemes a ``database`` URL may have, compared without case (RFC 3986). A SQLAlchemy
# driver suffix changes nothing: ``sqlite+<driver>`` names a file all the same (we open
# it with the stdlib) and ``postgresql+<driver>`` a server (we speak to it through
# psycopg 3), so a config written for SQLAlchemy (``postgresql+psycopg2://``) keeps
# working. ``postgres`` is libpq's other spelling.
_POSTGRESQL_SCHEMES = ("postgresql", "postgres")
_SUPPORTED = "a SQLite file path, sqlite:///path or a postgresql:// URL"


def locate(database: "str") -> "tuple[str, str]":
    """What a ``database`` value names: ``(SQLITE, file)`` or ``(POSTGRESQL, url)``,
    ``url`` in libpq's own ``postgresql://`` form (driver suffix and alias dropped).

    The one answer for the plugin, every ipamctl command and the migrations, so that
    ``ipamctl db upgrade`` prepares exactly the database the plugin will open. Refused
    with :class:`ConfigError` (code 7): an in-memory database (``:memory:``,
    ``sqlite://``; leases must outlive the process), a SQLite URL that cannot name one
    file plainly (a host part, parameters, no path), a SQLite URI filename (``file:``),
    and any other scheme."""
    scheme, sep, rest = database.partition("://")
    if not sep:
        kind, where = SQLITE, database
    elif scheme.lower().partition("+")[0] in _POSTGRESQL_SCHEMES:
        _check_server(rest)
        return POSTGRESQL, "postgresql://" + rest
    elif scheme.lower() == "sqlite" or scheme.lower().startswith("sqlite+"):
        if rest == "":  # SQLAlchemy's spelling of an in-memory database
            kind, where = SQLITE, ":memory:"
        elif not rest.startswith("/") or len(rest) < 2 or "?" in rest or "#" in rest:
            raise ConfigError("invalid SQLite URL %s: write sqlite:///relative/path or "
                              "sqlite:////absolute/path, without parameters" % database)
        else:
            kind, where = SQLITE, rest[1:]
    else:  # only the scheme: the rest of a URL may hold a password
        raise ConfigError("database URL scheme %r is not supported: use %s"
                          % (scheme, _SUPPORTED))
    if where in ("", ":memory:"):
        raise ConfigError("database %r is not a file: leases must persist; use %s"
                          % (database, _SUPPORTED))
    if where.startswith("file:"):
        # SQLite (built with SQLITE_USE_URI, as Debian's is) reads such a name as a URI
        # whatever the caller asks: ``file:x.db`` would open x.db, not the file we made.
        raise ConfigError("database %r is a SQLite URI filename, which is not supported: "
                          "use %s" % (database, _SUPPORTED))
    return kind, where


def _check_server(rest: "str") -> "None":
    """Refuse a port that is no number or a bracket left open, which the drivers answer
    with a bare ValueError, and port 0, where no server listens. libpq's
    ``host1:port1,host2:port2`` is checked host by host."""
    from urllib.parse import urlsplit  # a server URL only: SQLite's hot path never pays

    try:
        hosts = urlsplit("//" + rest).netloc.rpartition("@")[2].split(",")
        for host in hosts:
            if urlsplit("//" + host).port == 0:  # .port raises on what is no port
                raise ValueError("port 0 is no server's")
    except ValueError as e:  # its text holds no password: only the host part is parsed
        raise ConfigError("invalid PostgreSQL URL: %s" % e) from None


def busy_timeout(database: "str", configured: "Optional[float]" = None) -> "float":
    """Seconds a wait for a lock's holder may last for ``database``: the config's
    ``busyTimeout``, else its engine's default (what its store's ``timeout`` will be)."""
    if configured is not None:
        return configured
    if locate(database)[0] == POSTGRESQL:
        from ipam.store.postgres import DEFAULT_LOCK_TIMEOUT

        return DEFAULT_LOCK_TIMEOUT
    from ipam.sqlite_db import DEFAULT_BUSY_TIMEOUT

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
    reused in place: :func:`ipam.sqlite_db.reuse_wal`)."""
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
