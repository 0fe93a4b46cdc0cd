"""The lease table: every Store operation, written once in SQL that SQLite and
PostgreSQL both speak, over their DB-API connections.

An engine (:mod:`ipam.store.sqlite`, :mod:`ipam.store.postgres`) subclasses
:class:`LeaseTable` and supplies only what differs: opening the connection, BEGIN,
COMMIT and ROLLBACK, how its errors map to CNI errors, schema creation, and the
spellings below (``TRUE``, ``DISTINCT``, ``RETURNING``, :meth:`_sql`, :meth:`_prefix`).
The statements are plain strings with ``?`` placeholders, built when this module loads:
nothing is compiled per call, so a plugin process pays for neither an SQL toolkit's
import nor its statement compilation, and a transaction holding a network's lock runs
only statements the server can plan at once.

Two structures let allocation avoid walks at any pool size: ``ip_key`` (an address as
16 sortable bytes, on both engines) and the ``next_free`` flag with its partial index
(see :mod:`ipam.store.invariant`). :meth:`reserve` and :meth:`release` keep the flags of
the lease and of its predecessor right in the same transaction.
"""
import time
from time import monotonic  # not time.monotonic: tests replace the module's clock

from ipam import addr, system
from ipam.errors import SchemaError
from ipam.lease import NO_POD, Boot, Event, Lease, NetworkRecord, new_boot_time
from ipam.store import writer_lock
from ipam.store.schema_version import HEAD, REVISIONS
from ipam.waits import Patience

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional, Sequence

    from ipam.addr import IP
    from ipam.errors import IpamError

LEASE_COLS = ("network, ip, range_set, container_id, ifname, allocated_at, boot_id, node, "
              "boot_time, pod_namespace, pod_name, pod_uid")
EVENT_COLS = ("time, event, reason, network, ip, container_id, ifname, node, pod_namespace, "
              "pod_name, pod_uid")
_INSERT_LEASE = (
    "INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, ifname, "
    "allocated_at, boot_id, node, boot_time, pod_namespace, pod_name, pod_uid) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_EVENT = "INSERT INTO history (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % EVENT_COLS
_TAKEN = "SELECT 1 FROM leases WHERE network = ? AND ip_key = ?"
_BOOTS = ("SELECT %s, b.node, b.boot_id, b.host, b.first_seq, b.last_seq, b.first_seen, "
          "b.seen_at FROM (SELECT 1 AS one) AS o LEFT JOIN node_boots AS b ON %s")
_STAMP_BOOT = (
    "INSERT INTO node_boots (node, boot_id, host, first_seq, last_seq, first_seen, seen_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, boot_id) DO UPDATE SET "
    "host = excluded.host, last_seq = excluded.last_seq, seen_at = excluded.seen_at")
_SET_FLAG = "UPDATE leases SET next_free = ? WHERE network = ? AND ip_key = ?"


def _ip(text: "str") -> "IP":
    """An address as the table stores it: canonical text that only we write. A row
    written by hand with garbage in it reads as None, as it always has (``ipamctl
    check`` reports it through the invariant, which reads the raw rows)."""
    return addr.parse_ip(text)  # type: ignore[return-value]


def _lease(row: "Sequence[Any]") -> "Lease":
    return Lease(row[0], _ip(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                 row[8], row[9], row[10], row[11])


class Transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any exception, the engine's errors translated.

    ``patience`` bounds the wait in the writers' queue (:mod:`ipam.waits`: a plugin
    call's, shared by all its waits; without one, the store's busy timeout).
    ``before_commit`` runs last inside the transaction and may still stop it by raising:
    the node daemon's check that its client is still waiting for the answer.
    ``after_commit`` runs after a successful COMMIT but before the writers' queue is
    left: the mirror's pending marker must go while no other writer can have started.
    """

    def __init__(self, store: "LeaseTable",
                 after_commit: "Optional[Callable[[], None]]" = None,
                 patience: "Optional[Patience]" = None,
                 before_commit: "Optional[Callable[[], None]]" = None) -> "None":
        self.store = store
        self.after_commit = after_commit
        self.patience = patience
        self.before_commit = before_commit

    def __enter__(self) -> "None":
        self.store.begin(self.patience)

    def __exit__(self, exc_type: "Optional[type[BaseException]]",
                 exc: "Optional[BaseException]", tb: "Any") -> "None":
        store = self.store
        try:
            if exc_type is None and self.before_commit is not None:
                try:
                    self.before_commit()
                except BaseException:
                    store.rollback()
                    raise
            if exc_type is None:
                store.commit()
                if self.after_commit is not None:
                    self.after_commit()
                store.after_commit()
            else:
                store.rollback()
                if isinstance(exc, store.ERROR):
                    raise store.translate(exc) from None
        finally:
            store.end()


class LeaseTable:
    """The Store contract's algorithm. Subclasses set ``conn`` (a DB-API connection in
    autocommit mode: transactions are begun explicitly), ``node``, ``readonly``,
    ``queue_path`` and ``timeout``, and the engine hooks at the end of this class."""

    shared = False
    scope: "Optional[str]" = None  # leases() walks every node's leases, or this node's
    # -- spellings: SQLite's here, PostgreSQL overrides
    TRUE = "1"  # the literal that the partial index's predicate (next_free = 1) matches
    DISTINCT = "IS NOT"  # null-safe "differs from"
    RETURNING = False  # DELETE ... RETURNING
    SKIP_LOCKED = ""  # what lets concurrent prunes pass each other's rows (one writer here)
    # The database's clock, in seconds since the epoch (this host's, for SQLite's file)
    NOW = "(julianday('now') - 2440587.5) * 86400.0"

    conn: "Any" = None  # the DB-API connection
    node: "Optional[str]" = None
    readonly = False
    queue_path: "Optional[str]" = None
    timeout = 10.0
    round_trips = 0  # statements sent, BEGIN and COMMIT included (bench reports it)
    lock_hold: "Optional[float]" = None  # seconds from the lock to COMMIT, last transaction
    _locked_at: "Optional[float]" = None
    _queue: "Any" = None

    def reusable(self) -> "bool":
        return True

    def prepare_statements(self) -> "None":
        pass  # sqlite3 caches each connection's prepared statements already (128)

    def connect(self) -> "None":
        pass  # SQLite's file is opened with the store

    def __enter__(self) -> "LeaseTable":
        return self

    def __exit__(self, *exc: "Any") -> "None":
        self.close()

    # -- statements -------------------------------------------------------------------
    def _sql(self, sql: "str") -> "str":
        """``sql`` in the driver's placeholder style (written with ``?``)."""
        return sql

    def _exec(self, sql: "str", params: "Sequence[Any]" = ()) -> "Any":
        self.round_trips += 1
        return self.conn.execute(self._sql(sql), params)

    def _exec_many(self, sql: "str", rows: "list[tuple[Any, ...]]") -> "None":
        if rows:
            self.round_trips += 1
            self.conn.cursor().executemany(self._sql(sql), rows)

    def _prefix(self, column: "str", prefix: "str") -> "tuple[str, list[Any]]":
        """A condition and its parameters: ``column`` starts with ``prefix``. Above every
        character: on a binary collation ``>= p AND < p + U+10FFFF`` is "starts with p",
        on the index."""
        return "%s >= ? AND %s < ?" % (column, column), [prefix, prefix + "\U0010ffff"]

    # -- transactions and schema ------------------------------------------------------
    def transaction(self, after_commit: "Optional[Callable[[], None]]" = None,
                    patience: "Optional[Patience]" = None,
                    before_commit: "Optional[Callable[[], None]]" = None) -> "Transaction":
        return Transaction(self, after_commit, patience, before_commit)

    def retry_delays(self) -> "list[float]":
        return []  # one writer at a time: an attempt never needs repeating

    def begin(self, patience: "Optional[Patience]" = None) -> "None":
        """Queue (node-local writers, :mod:`ipam.store.writer_lock`; as long as ``patience``
        allows, else the busy timeout), BEGIN on the database the store names now
        (:meth:`_begin`), and make sure the schema is current: one
        cheap read in the steady state; alembic only for a missing or older schema."""
        if self.queue_path is not None:
            self._queue = writer_lock.acquire(
                self.queue_path, patience or Patience.each(self.timeout),
                create=not self.readonly)
        try:
            self._begin()
            self._locked_at = monotonic()
            revision = self._revision()
            if revision != HEAD:
                if revision is not None and revision not in REVISIONS:
                    raise SchemaError(
                        "database %s has schema revision %s, newer than this version of "
                        "host-local-sqlite knows (%s); refusing to touch it"
                        % (self.describe(), revision, HEAD))
                if self.readonly:
                    raise SchemaError("database %s has no current schema (revision %s); "
                                      "run 'ipamctl db upgrade'" % (self.describe(), revision))
                self._upgrade()
        except self.ERROR as e:
            self.rollback()
            self.end()
            raise self.translate(e) from None
        except BaseException:
            self.rollback()
            self.end()
            raise

    def end(self) -> "None":
        """Leave the writers' queue (after COMMIT or ROLLBACK)."""
        if self._locked_at is not None:
            self.lock_hold = monotonic() - self._locked_at
            self._locked_at = None
        if self._queue is not None:
            writer_lock.release(self._queue)
            self._queue = None

    def _revision(self) -> "Optional[str]":
        """The schema revision; None for a database without one (new)."""
        try:
            row = self._exec("SELECT version_num FROM alembic_version").fetchone()
        except self.ERROR as e:
            if not self._no_such_table(e):
                raise
            self._recover()
            return None
        return row[0] if row else None

    def revision(self) -> "Optional[str]":
        return self._revision()

    def lock_network(self, network: "str", n_sets: "int") -> "None":
        pass  # the store's single write lock already covers every network

    # -- leases -----------------------------------------------------------------------
    def lease_at(self, network: "str", ip: "IP") -> "Optional[Lease]":
        row = self._exec("SELECT %s FROM leases WHERE network = ? AND ip_key = ?"
                         % LEASE_COLS, (network, addr.to_key(ip))).fetchone()
        return _lease(row) if row else None

    def leases_of(self, network: "str", container_id: "str",
                  ifname: "Optional[str]") -> "list[Lease]":
        if ifname is None:
            rows = self._exec("SELECT %s FROM leases WHERE network = ? AND container_id = ? "
                              "AND ifname IS NULL" % LEASE_COLS, (network, container_id))
        else:
            rows = self._exec("SELECT %s FROM leases WHERE network = ? AND container_id = ? "
                              "AND ifname = ?" % LEASE_COLS, (network, container_id, ifname))
        # Sorted here, not by ORDER BY ip_key: that would lead SQLite's planner to walk
        # the network's address index (every lease) instead of the owner index.
        return sorted((_lease(r) for r in rows), key=lambda lease: addr.to_key(lease.ip))

    def leases(self, network: "Optional[str]" = None) -> "list[Lease]":
        where: "list[str]" = []
        params: "list[Any]" = []
        if network is not None:
            where.append("network = ?")
            params.append(network)
        if self.scope is not None:
            where.append("node = ?")
            params.append(self.scope)
        rows = self._exec("SELECT %s FROM leases%s ORDER BY network, ip_key" % (
            LEASE_COLS, " WHERE " + " AND ".join(where) if where else ""), params)
        return [_lease(r) for r in rows]

    def _taken(self, network: "str", key: "bytes") -> "bool":
        return self._exec(_TAKEN, (network, key)).fetchone() is not None

    def reserve(self, lease: "Lease", reason: "str") -> "bool":
        key = addr.to_key(lease.ip)
        succ = addr.neighbour_key(key, 1)
        taken_after = succ is not None and self._taken(lease.network, succ)
        now = lease.allocated_at or time.time()
        node = lease.node or self.node
        cur = self._exec(_INSERT_LEASE + " ON CONFLICT DO NOTHING", (
            lease.network, str(lease.ip), key, not taken_after, lease.range_set,
            lease.container_id, lease.ifname, now, lease.boot_id or system.boot_id(), node,
            new_boot_time(lease), *lease.pod()))
        if cur.rowcount != 1:
            return False
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            self._exec(_SET_FLAG, (False, lease.network, pred))
        self._log(now, "allocate", reason, lease, node, lease.pod())
        return True

    def import_leases(self, network: "str", leases: "list[Lease]", reason: "str") -> "int":
        """Insert many leases of one network at once (import): one pass over the
        network's keys sets every ``next_free`` flag, where one reserve() per lease
        would cost three statements each."""
        if not leases:
            return 0
        existing = {bytes(row[0]) for row in self._exec(
            "SELECT ip_key FROM leases WHERE network = ?", (network,))}
        new = {}
        for lease in leases:
            new[addr.to_key(lease.ip)] = lease
        keys = existing | set(new)
        rows = []
        for key, lease in new.items():
            if key not in existing:
                rows.append((network, str(lease.ip), key, addr.neighbour_key(key, 1) not in keys,
                             lease.range_set, lease.container_id, lease.ifname,
                             lease.allocated_at, lease.boot_id, lease.node or self.node,
                             lease.boot_time, *lease.pod()))
        self._exec_many(_INSERT_LEASE, rows)
        self._exec_many(_SET_FLAG, [(False, network, p) for p in (
            addr.neighbour_key(k, -1) for k in new) if p is not None and p in existing])
        now = time.time()
        self._exec_many(_INSERT_EVENT, [(now, "allocate", reason, r[0], r[1], r[5], r[6], r[9],
                                         *r[11:]) for r in rows])
        return len(rows)

    def renew(self, lease: "Lease", pod: "Optional[tuple[Optional[str], ...]]" = None) -> "None":
        """A repeated ADD found the attachment alive: its lease belongs to this boot; one
        with no pod identity yet (adopted, imported, older) takes ``pod``'s."""
        this_boot = system.boot_id()
        self._exec("UPDATE leases SET boot_id = ?, boot_time = ? WHERE network = ? "
                   "AND ip_key = ? AND boot_id %s ?" % self.DISTINCT,
                   (this_boot, system.boot_clock(), lease.network, addr.to_key(lease.ip),
                    this_boot))
        if pod and lease.pod() == NO_POD:  # one more statement only for such a lease
            self._exec("UPDATE leases SET pod_namespace = ?, pod_name = ?, pod_uid = ? "
                       "WHERE network = ? AND ip_key = ? AND pod_namespace IS NULL "
                       "AND pod_name IS NULL AND pod_uid IS NULL",
                       (*pod, lease.network, addr.to_key(lease.ip)))

    def claim_legacy(self, lease: "Lease", ifname: "str") -> "Lease":
        self._exec("UPDATE leases SET ifname = ? WHERE network = ? AND ip_key = ? "
                   "AND ifname IS NULL", (ifname, lease.network, addr.to_key(lease.ip)))
        return lease.with_ifname(ifname)

    def release(self, lease: "Lease", reason: "str") -> "None":
        """Delete the lease; its history row takes the node and pod identity the database
        had for it (where the engine can say so in the same statement)."""
        key = addr.to_key(lease.ip)
        sql = "DELETE FROM leases WHERE network = ? AND ip_key = ?"
        if self.RETURNING:
            gone = self._exec(sql + " RETURNING node, pod_namespace, pod_name, pod_uid",
                              (lease.network, key)).fetchone()
            if gone is None:
                return
            node, pod = gone[0], tuple(gone[1:])
        else:
            if self._exec(sql, (lease.network, key)).rowcount != 1:
                return
            node, pod = lease.node or self.node, lease.pod()
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            self._exec(_SET_FLAG, (True, lease.network, pred))
        self._log(time.time(), "release", reason, lease, node, pod)

    def _log(self, now: "float", event: "str", reason: "str", lease: "Lease", node: "Optional[str]",
             pod: "tuple[Optional[str], ...]") -> "None":
        self._exec(_INSERT_EVENT, (now, event, reason, lease.network, str(lease.ip),
                                   lease.container_id, lease.ifname, node, *pod))

    def first_free(self, network: "str", lo: "IP", hi: "IP") -> "Optional[IP]":
        """Two index probes whatever the pool size: is ``lo`` free; else where does the run
        of leases that holds ``lo`` end (the partial index on ``next_free``)."""
        key = addr.to_key(lo)
        if not self._taken(network, key):
            return lo
        row = self._exec("SELECT ip FROM leases WHERE network = ? AND next_free = %s "
                         "AND ip_key >= ? ORDER BY ip_key LIMIT 1" % self.TRUE,
                         (network, key)).fetchone()
        if row is None:
            return None
        ip = addr.add(_ip(row[0]), 1)
        return ip if ip is not None and ip <= hi else None

    def history(self, network: "Optional[str]" = None, ip: "Optional[IP]" = None,
                container_id: "Optional[str]" = None, since: "Optional[float]" = None,
                until: "Optional[float]" = None, container_prefix: "Optional[str]" = None,
                pod_name: "Optional[str]" = None) -> "list[Event]":
        """Lease events in commit order, filtered on any of the arguments."""
        where: "list[str]" = []
        params: "list[Any]" = []
        for column, value in (("network", network), ("ip", ip and str(ip)),
                              ("container_id", container_id), ("pod_name", pod_name)):
            if value is not None:
                where.append("%s = ?" % column)
                params.append(value)
        if container_prefix is not None:
            cond, values = self._prefix("container_id", container_prefix)
            where.append(cond)
            params += values
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time <= ?")
            params.append(until)
        # "+id" under a time filter: ORDER BY id would lead SQLite's planner to walk the
        # whole table in id order instead of ix_history_time and a sort of the few rows
        # found (200 ms against 5 ms for "--since 1h" at 1 M events).
        sql = ("SELECT %s FROM history%s ORDER BY %s"
               % (EVENT_COLS, " WHERE " + " AND ".join(where) if where else "",
                  "+id" if since is not None or until is not None else "id"))
        return [Event(*row) for row in self._exec(sql, params)]

    def events_after(self, after: "int", limit: "int") -> "list[tuple[int, Event]]":
        """``(id, event)`` of at most ``limit`` events with an id above ``after``, in id
        order: one probe of the primary key (``history --follow``)."""
        return [(row[0], Event(*row[1:])) for row in self._exec(
            "SELECT id, %s FROM history WHERE id > ? ORDER BY id LIMIT ?" % EVENT_COLS,
            (after, limit))]

    def last_event_id(self) -> "int":
        return self._exec("SELECT coalesce(max(id), 0) FROM history").fetchone()[0]

    # Above this many starts, one read of every history ID costs less than a probe each
    # (measured at 1 M events and 200,000 IDs: 0.12 s for the read, 9 us a probe).
    PROBES = 10000

    def container_ids(self, starts: "Iterable[str]") -> "set[str]":
        """The leases' IDs are read whole (no index leads with container_id there, and
        the table is the size of a pool); the history's are found on
        ix_history_container_id, a probe per start, or in one read above :data:`PROBES`."""
        starts = set(starts)
        if not starts:
            return set()
        ids = {row[0] for row in self._exec("SELECT DISTINCT container_id FROM leases")}
        if len(starts) > self.PROBES:
            ids.update(self._history_ids(starts))
        else:
            for start in starts:
                cond, params = self._prefix("container_id", start)
                ids.update(row[0] for row in self._exec(
                    "SELECT DISTINCT container_id FROM history WHERE " + cond, params))
        return _starting(ids, starts)

    def _history_ids(self, starts: "set[str]") -> "Iterable[str]":
        """The history's IDs, for many ``starts`` at once (a superset will do)."""
        return (row[0] for row in self._exec("SELECT DISTINCT container_id FROM history"))

    def prune_history(self, before: "float", limit: "int") -> "int":
        """Delete at most ``limit`` of the oldest events stamped before ``before``; the
        count. Found on ix_history_time, so a call with nothing to delete is one index
        probe: cheap enough for every ADD and DEL (``historyRetention``)."""
        return self._exec("DELETE FROM history WHERE id IN (SELECT id FROM history WHERE "
                          "time < ? ORDER BY time LIMIT ?%s)" % self.SKIP_LOCKED,
                          (before, limit)).rowcount

    def count_history(self, before: "float") -> "int":
        """How many events are stamped before ``before`` (prune's dry run)."""
        return self._exec("SELECT count(*) FROM history WHERE time < ?",
                          (before,)).fetchone()[0]

    def integrity(self) -> "list[str]":
        """What the engine finds wrong in itself, then the lease table's invariant."""
        from ipam.store import invariant

        rows = self._exec("SELECT network, ip, ip_key, next_free FROM leases "
                          "ORDER BY network, ip_key")
        return self._engine_problems() + invariant.problems(rows)

    # -- cursors and networks ---------------------------------------------------------
    def last_reserved(self, network: "str", range_set: "int") -> "Optional[IP]":
        row = self._exec("SELECT ip FROM cursors WHERE network = ? AND range_set = ?",
                         (network, range_set)).fetchone()
        return addr.parse_ip(row[0]) if row else None

    def set_last_reserved(self, network: "str", range_set: "int", ip: "IP") -> "None":
        self._exec("INSERT INTO cursors (network, range_set, ip) VALUES (?, ?, ?) "
                   "ON CONFLICT (network, range_set) DO UPDATE SET ip = excluded.ip",
                   (network, range_set, str(ip)))

    def cursors(self, network: "str") -> "dict[int, IP]":
        rows = self._exec("SELECT range_set, ip FROM cursors WHERE network = ?", (network,))
        parsed = {idx: addr.parse_ip(ip) for idx, ip in rows}
        return {idx: ip for idx, ip in parsed.items() if ip is not None}  # garbage: none

    def network_info(self, network: "str") -> "Optional[NetworkRecord]":
        row = self._exec("SELECT data_dir, export, range_sets FROM networks WHERE network = ?",
                         (network,)).fetchone()
        return NetworkRecord(*row) if row else None

    def set_network_info(self, network: "str", record: "NetworkRecord") -> "None":
        self._exec("INSERT INTO networks (network, data_dir, export, range_sets, updated_at) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (network) DO UPDATE SET "
                   "data_dir = excluded.data_dir, export = excluded.export, "
                   "range_sets = excluded.range_sets, updated_at = excluded.updated_at",
                   (network, record.data_dir, record.export, record.range_sets, time.time()))

    def mirror_stamp(self, network: "str") -> "Optional[str]":
        row = self._exec("SELECT stamp FROM mirror_stamps WHERE network = ? AND node = ?",
                         (network, self.node)).fetchone()
        return row[0] if row else None

    def set_mirror_stamp(self, network: "str", stamp: "str") -> "None":
        self._exec("INSERT INTO mirror_stamps (network, node, stamp) VALUES (?, ?, ?) "
                   "ON CONFLICT (network, node) DO UPDATE SET stamp = excluded.stamp",
                   (network, self.node, stamp))

    def networks(self) -> "Iterable[str]":
        return [r[0] for r in self._exec(
            "SELECT network FROM leases UNION SELECT network FROM cursors "
            "UNION SELECT network FROM networks ORDER BY 1")]

    def lease_counts(self, network: "str") -> "dict[Optional[str], int]":
        rows = self._exec("SELECT node, count(*) FROM leases WHERE network = ? GROUP BY node",
                          (network,))
        return {node: n for node, n in rows}

    def network_times(self, network: "str") -> "tuple[Optional[float], Optional[float]]":
        row = self._exec("SELECT (SELECT updated_at FROM networks WHERE network = ?), "
                         "(SELECT max(time) FROM history WHERE network = ?)",
                         (network, network)).fetchone()
        return row[0], row[1]

    def forget_network(self, network: "str") -> "None":
        for table in ("networks", "cursors", "mirror_stamps"):
            self._exec("DELETE FROM %s WHERE network = ?" % table, (network,))

    # -- the hosts using each node name (ipam.node_boots) ------------------------------
    def boots(self, node: "Optional[str]" = None) -> "tuple[float, list[Boot]]":
        """The database clock's now, and the recorded boots of ``node`` (None: of every
        name): one statement, which answers the clock even where no row matches."""
        sql = _BOOTS % (self.NOW, "b.node = ?" if node is not None else "b.node IS NOT NULL")
        rows = self._exec(sql, (node,) if node is not None else ()).fetchall()
        boots = [Boot(*r[1:]) for r in rows if r[1] is not None]
        boots.sort(key=lambda b: (b.node, b.first_seq, b.boot_id))
        return rows[0][0], boots

    def stamp_boot(self, boot: "Boot", prune_before: "Optional[float]" = None) -> "None":
        """Insert or refresh ``boot``'s row; with ``prune_before``, drop its name's other
        boots last seen before then that hold no lease they made."""
        self._exec(_STAMP_BOOT, boot.row())
        if prune_before is not None:
            self._exec("DELETE FROM node_boots WHERE node = ? AND boot_id <> ? AND seen_at < ? "
                       "AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.node = node_boots.node "
                       "AND leases.boot_id = node_boots.boot_id)",
                       (boot.node, boot.boot_id, prune_before))

    def boot_leases(self, node: "Optional[str]" = None, boot_id: "Optional[str]" = None
                    ) -> "dict[tuple[str, str], int]":
        """``{(node, boot id): leases made in that boot under that name}`` (of one name,
        one boot). No index serves it (every ADD would pay for one): it walks the leases,
        which only ipamctl and a call that finds a standing conflict do."""
        where = ["node IS NOT NULL", "boot_id IS NOT NULL"]
        params: "list[Any]" = []
        for column, value in (("node", node), ("boot_id", boot_id)):
            if value is not None:
                where.append("%s = ?" % column)
                params.append(value)
        rows = self._exec("SELECT node, boot_id, count(*) FROM leases WHERE %s "
                          "GROUP BY node, boot_id" % " AND ".join(where), params)
        return {(r[0], r[1]): r[2] for r in rows}

    def forget_boots(self, node: "str", keep: "Optional[str]") -> "int":
        """Drop the records of every boot of ``node`` but ``keep``; how many went."""
        return self._exec("DELETE FROM node_boots WHERE node = ? AND boot_id %s ?"
                          % self.DISTINCT, (node, keep)).rowcount

    # -- engine hooks -----------------------------------------------------------------
    ERROR: "type[Exception]" = Exception  # the driver's base exception class

    def describe(self) -> "str":
        """The database, for messages (a path, or a server without its password)."""
        raise NotImplementedError

    def translate(self, err: "Exception") -> "IpamError":
        """The driver's error ``err`` as the CNI error to answer with."""
        raise NotImplementedError

    def _begin(self) -> "None":
        """BEGIN, in the writers' queue, on the database the store names now: an engine
        whose database can be replaced under an open connection (SQLite's file, by an
        operator's ``mv``) checks that here and opens it anew."""
        raise NotImplementedError

    def commit(self) -> "None":
        """COMMIT; on failure roll back and raise the translated error."""
        raise NotImplementedError

    def rollback(self) -> "None":
        """ROLLBACK if a transaction is open; never raises."""
        raise NotImplementedError

    def after_commit(self) -> "None":
        """Housekeeping after a COMMIT, still in the writers' queue."""

    def _no_such_table(self, err: "Exception") -> "bool":
        raise NotImplementedError

    def _recover(self) -> "None":
        """Make the transaction usable again after a statement failed in it."""

    def _upgrade(self) -> "None":
        """Create or upgrade the schema, then be in a new transaction again."""
        raise NotImplementedError

    def _engine_problems(self) -> "list[str]":
        return []

    def close(self) -> "None":
        raise NotImplementedError


def _starting(ids: "Iterable[str]", starts: "set[str]") -> "set[str]":
    """The ``ids`` that begin with one of ``starts``."""
    lengths = {len(s) for s in starts}
    if len(lengths) == 1:  # a table's starts are all as long: one slice per ID
        [n] = lengths
        return {i for i in ids if i[:n] in starts}
    return {i for i in ids if any(i[:n] in starts for n in lengths)}
