"""The Store on a PostgreSQL database shared by many nodes, through psycopg alone.

Selected by a server URL in ``database`` (``postgresql://user@host/db``; the SQLAlchemy
spelling ``postgresql+psycopg://`` works too): one pool shared by every node that names
the same database and network. The lease-table algorithm is
:class:`ipam.store.table.LeaseTable`'s, as on SQLite; this module adds the connection,
the transactions, the per-network lock and the error classification. SQLAlchemy is not
imported (it cost ~0.5 s per plugin call, and compiled every statement inside the
network's lock); only a missing or older schema loads :mod:`ipam.store.migrate`.

Correctness comes from the database alone, with nothing an engine that merely speaks
PostgreSQL's dialect would lack (no advisory locks, no SERIALIZABLE):

- READ COMMITTED transactions, one per command, as on SQLite.
- Every command that changes a network first locks the cursor rows of its range sets
  (``SELECT ... FOR UPDATE``: one statement once the rows exist). Every allocation,
  release and the ``next_free`` flags they keep are thereby serialized per network
  across nodes, for the few milliseconds one transaction lasts; a later statement sees
  what the previous holder committed.
- The unique constraint on (network, ip) is the backstop. A clash with it, a deadlock, a
  serialization failure (engines that always run SERIALIZABLE) or a lost connection
  raises :class:`~ipam.errors.Retry`; the command runs again from the start after a
  pause with jitter, a bounded number of times.
- A connection lost at COMMIT leaves the outcome unknown. The retried ADD looks the
  attachment's leases up first and returns them if that COMMIT did land (a repeated
  ADD returns what the attachment holds), so it never allocates twice.

Each lease records its node. This store's ``scope`` (its node, or None for all nodes)
filters :meth:`leases`, which is what the mirror, GC and ``ipamctl`` walk: each node
mirrors and collects only its own leases, while allocation sees the whole pool.
"""
import random
import time
from time import monotonic  # not time.monotonic: tests replace the module's clock
from urllib.parse import parse_qs, unquote, urlsplit

from ipam.errors import ConfigError, IoFailure, Retry, TryAgain
from ipam.paths import node_name
from ipam.store.location import POSTGRESQL, locate, redacted
from ipam.store.table import LeaseTable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator, Optional, Sequence

    from ipam.errors import IpamError

DEFAULT_CONNECT_TIMEOUT = 5  # seconds: an unreachable server must not hang a pod start
# Seconds to wait for the node's writers' queue and for the network's row locks. Longer
# than SQLite's 10 s: a burst of pods on one node queues behind one connection, and the
# holder of a network's lock may be another node. Well inside a runtime's CNI timeout.
DEFAULT_LOCK_TIMEOUT = 60.0
ATTEMPTS = 6
# SQLSTATEs another attempt can fix: serialization failure, deadlock, unique violation
# (another node took the address first), lock not available, too many connections,
# server starting up or shutting down, connection failures.
RETRY_STATES = frozenset({"40001", "40P01", "23505", "55P03", "53300", "57P01", "57P03",
                          "08000", "08003", "08006"})
_CONNECTION_STATES = frozenset({"08000", "08003", "08006"})
# feature_not_supported, which a prepared statement meets when a migration changed the
# type of a column it returns ("cached plan must not change result type"): statements
# are prepared on the node daemon's kept connections only, and a new one has none.
_STALE_PLAN = "0A000"
_LOCK = "SELECT range_set FROM cursors WHERE network = ? ORDER BY range_set FOR UPDATE"
# The schema revision, read with one probe of every table a command uses: a new server
# process (one per connection) loads each table's and index's catalog entries on first
# use, ~1-10 ms each, and that happened inside the network's lock, where every node's
# ADD to the network waits. Planning these probes loads them all before the lock.
_REVISION = ("SELECT version_num, (SELECT count(*) FROM networks WHERE network = ''), "
             "(SELECT count(*) FROM mirror_stamps WHERE network = ''), "
             "(SELECT count(*) FROM cursors WHERE network = ''), "
             "(SELECT count(*) FROM leases WHERE network = '' AND ip_key = ''::bytea), "
             "(SELECT count(*) FROM history WHERE id = 0) FROM alembic_version")


def conninfo(url: str) -> str:
    """The libpq connection URI for ``url``, as :func:`ipam.store.location.locate` gives it (a
    SQLAlchemy driver suffix dropped); anything else is a ConfigError."""
    kind, server = locate(url)
    if kind != POSTGRESQL:
        raise ConfigError("database %s is not a PostgreSQL URL" % redacted(url))
    return server


def server_name(url: str) -> str:
    """``host:port`` of a URL, for messages (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", [None])[0] or "local socket"
    try:
        port = str(parts.port or 5432)
    except ValueError:
        port = "?"
    return "%s:%s" % (unquote(host), port)


def retry_delays(attempts: int = ATTEMPTS, base: float = 0.02, cap: float = 0.5
                 ) -> "list[float]":
    """Pauses before attempts 2..n: exponential with full jitter, so nodes that clashed
    do not clash again in step."""
    return [random.uniform(0, min(cap, base * 2 ** k)) for k in range(attempts - 1)]


def sqlstate(err: "Optional[BaseException]") -> "Optional[str]":
    """The SQLSTATE of a psycopg error (or of one SQLAlchemy wrapped, from migrate)."""
    orig = getattr(err, "orig", err)
    return getattr(orig, "sqlstate", None)


def first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else err.__class__.__name__


class PostgresStore(LeaseTable):
    shared = True  # one database, many nodes: mirror, GC and ipamctl follow ``scope``
    TRUE = "true"
    DISTINCT = "IS DISTINCT FROM"
    RETURNING = True
    # Events another node's transaction is deleting are left to it: two nodes trimming
    # history at once neither wait on nor deadlock with each other.
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    # The server's clock: one clock for every node of the pool, whatever theirs say.
    NOW = "extract(epoch from clock_timestamp())::float8"

    def __init__(self, url: str, node: "Optional[str]" = None, scope: "bool | str | None" = True,
                 lock_path: "Optional[str]" = None, readonly: bool = False,
                 busy_timeout: "Optional[float]" = None,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> None:
        """``scope``: True for this node's leases, None for every node's, or a node
        name. ``lock_path``: the node-local writers' queue (see :mod:`writer_lock`)
        that keeps this node's mirror and its pending marker consistent."""
        self._conninfo = conninfo(url)
        try:
            import psycopg
        except ImportError as e:
            raise ConfigError("database %s needs a driver that is not installed (%s): "
                              "pip install 'host-local-sqlite[postgresql]'"
                              % (redacted(url), e)) from None
        self._psycopg = psycopg
        self.ERROR = psycopg.Error
        self.url = url
        self.node = node or node_name()
        self.scope = self.node if scope is True else (scope or None)
        self.queue_path = lock_path
        self.readonly = readonly
        self.timeout = DEFAULT_LOCK_TIMEOUT if busy_timeout is None else busy_timeout
        query = parse_qs(urlsplit(self._conninfo).query)
        self._args: "dict[str, Any]" = {}
        if "options" not in query:
            # A holder that hangs (a stopped process on another node) must not hang us:
            # waiting past this is lock_not_available, retried, then code 11.
            self._args["options"] = "-c lock_timeout=%d" % max(1, int(self.timeout * 1000))
        if "connect_timeout" not in query:
            self._args["connect_timeout"] = connect_timeout
        if "application_name" not in query:
            self._args["application_name"] = "host-local-sqlite"
        self._sql_cache: "dict[str, str]" = {}
        self._prepare_threshold: "Optional[int]" = 5  # psycopg's default

    def close(self) -> None:
        self._discard()

    def prepare_statements(self) -> None:
        """psycopg prepares a statement on the server after its fifth run on one
        connection by default; a store that serves many calls prepares each at its
        first (every statement here is a fixed string: a few dozen per connection)."""
        self._prepare_threshold = 0
        if self.conn is not None:
            self.conn.prepare_threshold = 0

    def describe(self) -> str:
        return redacted(self.url)

    # -- connection -------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        text = self._sql_cache.get(sql)
        if text is None:
            text = self._sql_cache[sql] = sql.replace("?", "%s")
        return text

    def _exec(self, sql: str, params: "Sequence[Any]" = ()) -> "Any":
        if self.conn is None:  # connected on first use, again after a lost connection
            self._connect()
        return super()._exec(sql, params)

    def _exec_many(self, sql: str, rows: "list[tuple[Any, ...]]") -> None:
        if self.conn is None:
            self._connect()
        super()._exec_many(sql, rows)

    # LIKE finds a start on the index only where the database's collation is C, and is a
    # scan of the history elsewhere: more than one start is found in one scan.
    PROBES = 1

    def _history_ids(self, starts: "set[str]") -> "Iterator[str]":
        """One pass over the history per length of start, sending back only the IDs
        that begin with one of them."""
        lengths: dict[int, list[str]] = {}
        for start in starts:
            lengths.setdefault(len(start), []).append(start)
        for n, group in sorted(lengths.items()):
            for row in self._exec("SELECT DISTINCT container_id FROM history "
                                  "WHERE left(container_id, ?) = ANY(?)", (n, group)):
                yield row[0]

    def _prefix(self, column: str, prefix: str) -> "tuple[str, list[Any]]":
        """``LIKE``: text comparisons follow the database's collation, not bytes."""
        escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        return "%s LIKE ? ESCAPE '!'" % column, [escaped + "%"]

    def _connect(self) -> None:
        """A connection in autocommit mode (transactions are begun explicitly), kept
        until :meth:`close` or until it fails."""
        psycopg = self._psycopg
        try:
            self.conn = psycopg.connect(self._conninfo, autocommit=True,
                                        prepare_threshold=self._prepare_threshold, **self._args)
        except psycopg.Error as e:
            state = sqlstate(e)
            if state in RETRY_STATES and state not in _CONNECTION_STATES:
                raise Retry("database %s refused the connection (%s); try again later"
                            % (server_name(self.url), first_line(e))) from None
            raise TryAgain("cannot reach database server %s: %s"
                           % (server_name(self.url), first_line(e)), redacted(self.url)) from None
        self.round_trips += 1

    def connect(self) -> None:
        """Connect now, before the command takes its network's lock: a new server
        process (forked, authenticated) takes milliseconds, tens on a busy node, and
        paid inside the lock it made every call queued behind it wait that much more
        (50 calls on one network, a convoy). Likewise the revision probe's first run,
        which loads the tables' catalog entries into the new server process
        (``_REVISION``): the transaction's own run of it is then one round trip. A kept
        connection is left as it is."""
        if self.conn is not None:
            return
        self._connect()
        try:
            self._exec(_REVISION).fetchone()
        except self.ERROR as e:
            if not self._no_such_table(e):  # a new database: begin() creates the schema
                raise self.translate(e) from None

    def _discard(self) -> None:
        """Drop the connection (the server rolls back whatever it held)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except self.ERROR:
                pass

    def _in_transaction(self) -> bool:
        conn = self.conn
        return conn is not None and not conn.closed and \
            conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE

    # -- transactions -----------------------------------------------------------------
    def retry_delays(self) -> "list[float]":
        return retry_delays()

    def _begin(self) -> None:
        self._exec("BEGIN ISOLATION LEVEL READ COMMITTED%s"
                   % (" READ ONLY" if self.readonly else ""))

    def commit(self) -> None:
        try:
            self._exec("COMMIT")
        except self.ERROR as e:
            err = self.translate(e, at_commit=True)
            self.rollback()
            raise err from None

    def rollback(self) -> None:
        if self._in_transaction():
            try:
                self.conn.execute("ROLLBACK")
            except self.ERROR:
                self._discard()
        elif self.conn is not None and self.conn.broken:
            self._discard()

    def _revision(self) -> "Optional[str]":
        """The schema revision, the tables warmed (see ``_REVISION``). A schema that
        lacks one of those tables (new, or older) is read plainly."""
        try:
            row = self._exec(_REVISION).fetchone()
        except self.ERROR as e:
            if not self._no_such_table(e):
                raise
            self._recover()
            return super()._revision()
        return row[0] if row else None

    def _no_such_table(self, err: Exception) -> bool:
        return sqlstate(err) == "42P01"

    def _recover(self) -> None:
        if self._in_transaction():
            self.rollback()
            self._begin()

    def _upgrade(self) -> None:
        """Create or upgrade the schema with the shipped alembic migrations.

        Nodes starting at once may all find a new database: PostgreSQL's DDL is
        transactional, so the losers' CREATE TABLE fails on the catalog's unique index
        and rolls back whole; they then find the winner's schema.
        """
        from ipam.store import migrate

        self.rollback()
        for delay in retry_delays() + [None]:
            try:
                migrate.upgrade(self.url)
                break
            except IoFailure as e:
                if delay is None or sqlstate(e.__cause__) not in RETRY_STATES | {"42P07",
                                                                                "42710"}:
                    raise
                time.sleep(delay)
        self._begin()

    def translate(self, err: Exception, at_commit: bool = False) -> "IpamError":
        """psycopg's errors as CNI errors naming the server: retryable ones as
        :class:`Retry`, an unreachable server as code 11, the rest as code 5."""
        server = server_name(self.url)
        state = sqlstate(err)
        lost = self.conn is None or self.conn.closed or self.conn.broken or (
            state == _STALE_PLAN and self._prepare_threshold == 0)
        if lost:
            self._discard()
        if state in RETRY_STATES or lost:
            what = "connection lost at COMMIT" if at_commit and lost else first_line(err)
            return Retry("database %s: %s; try again later" % (server, what))
        if isinstance(err, self._psycopg.OperationalError):
            return TryAgain("database server %s failed: %s" % (server, first_line(err)),
                            redacted(self.url))
        return IoFailure("database %s: %s" % (server, first_line(err)), redacted(self.url))

    # -- the per-network lock ---------------------------------------------------------
    def lock_network(self, network: str, n_sets: int) -> None:
        """Lock the cursor rows of ``network`` in range-set order: the short per-network
        lock every changing command takes first. One statement once the rows exist;
        a range set seen for the first time gets its row, locked by the insert."""
        held = {row[0] for row in self._exec(_LOCK, (network,))}
        missing = [(network, i) for i in range(n_sets) if i not in held]
        if missing:
            self._exec_many("INSERT INTO cursors (network, range_set, ip) VALUES (?, ?, '') "
                            "ON CONFLICT DO NOTHING", missing)
            self._exec(_LOCK, (network,)).fetchall()
        self._locked_at = monotonic()
