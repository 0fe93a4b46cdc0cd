"""What a ``database`` value names: a SQLite file, or a PostgreSQL server's URL.

The one reading of the value for the plugin, every ipamctl command, the migrations and
both engines, and the one way a URL is shown (its password hidden). A leaf: the store's
modules and :mod:`ipam.store.migrate` import it, and it imports none of them.
"""
from ipam.errors import ConfigError

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    pass

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


def redacted(url: "str") -> "str":
    """``url`` for messages: the password hidden."""
    from urllib.parse import urlsplit, urlunsplit  # a server URL only, as above

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc="%s:***@%s" % (user.partition(":")[0], host)))
