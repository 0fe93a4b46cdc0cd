"""The Store on SQLite through the stdlib ``sqlite3`` module: the plugin's hot path.

It runs against the tables that :mod:`ipam.schema` declares and the alembic migrations
create, without importing either (they cost 200+ ms): one cheap query reads the schema
revision, and only a missing or old schema loads :mod:`ipam.migrate`, under the write lock.
Every command is one ``BEGIN IMMEDIATE`` transaction, so concurrent plugin processes
serialize on SQLite's lock and a crash before COMMIT leaves no trace.
"""
import time

from ipam import addr, system, writer_lock
from ipam.errors import IoFailure, SchemaError, TryAgain
from ipam.lease import NO_POD, Event, Lease
from ipam.paths import node_name
from ipam.schema_version import HEAD, REVISIONS
from ipam.sqlite_db import DEFAULT_BUSY_TIMEOUT, connect, trim_wal
from ipam.sqlite_module import sqlite3

_LEASE_COLS = ("network, ip, range_set, container_id, ifname, allocated_at, boot_id, node, "
               "boot_time, pod_namespace, pod_name, pod_uid")
_EVENT_COLS = ("time, event, reason, network, ip, container_id, ifname, node, pod_namespace, "
               "pod_name, pod_uid")
# Above every character: "ID >= p AND ID < p + _TOP" is "ID starts with p", on the index.
_TOP = "\U0010ffff"
_BOOT_ID: list = []


def boot_id():
    """The kernel's boot id: leases made before the current boot belong to dead netns."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


def boot_clock():
    """Seconds since this boot (CLOCK_BOOTTIME): ages that no clock step can change."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def translate(err, path, write=None):
    """sqlite3's exceptions as CNI errors naming the file; the store's job, not cni.py's.
    ``write``: whether the opener needs to write (None: only if SQLite says so)."""
    code = getattr(err, "sqlite_errorcode", 0) & 0xFF
    text = str(err)
    if code in (5, 6) or "locked" in text or "busy" in text:
        return TryAgain("database %s is locked by another process past the busy timeout; "
                        "try again later" % path)
    if code in (8, 14):  # SQLITE_READONLY, SQLITE_CANTOPEN: say if permissions are why
        from ipam import access

        denial = access.denied(path, write=code == 8 if write is None else write)
        if denial is not None:
            return denial
    if code == 26 or "not a database" in text:
        return IoFailure("database %s is not a SQLite database: %s" % (path, text))
    if code == 11 or "malformed" in text:
        return IoFailure("database %s is corrupt: %s" % (path, text))
    return IoFailure("database %s: %s" % (path, text))


def _lease(row):
    return Lease(row[0], addr.parse_ip(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                 row[8], row[9], row[10], row[11])


def new_boot_time(lease):
    """The boot clock a new lease records: its own, or now when it is of this boot."""
    if lease.boot_time is not None:
        return lease.boot_time
    return boot_clock() if lease.boot_id in (None, boot_id()) else None


class _Txn:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    ``after_commit`` runs after a successful COMMIT but before the writers' queue is
    left: the mirror's pending marker must go while no other writer can have started.
    """

    def __init__(self, store, after_commit=None):
        self.store = store
        self.after_commit = after_commit

    def __enter__(self):
        self.store.begin()

    def __exit__(self, exc_type, exc, tb):
        conn = self.store.conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    err = translate(e, self.store.path)
                    # An I/O error (SQLITE_IOERR: a failed sync) may come after the
                    # commit frame reached the WAL; a full disk stops it before.
                    err.outcome_unknown = getattr(e, "sqlite_errorcode", 0) & 0xFF == 10
                    raise err from None
                if self.after_commit is not None:
                    self.after_commit()
                if not self.store.readonly:
                    trim_wal(conn, self.store.path, self.store.timeout)
            else:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, self.store.path) from None
        finally:
            self.store.end()
        return False

    def _rollback(self):
        if self.store.conn.in_transaction:
            try:
                self.store.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


class SqliteStore:
    shared = False  # one node's store

    def __init__(self, path, busy_timeout=None, readonly=False, node=None, queue=None):
        self.path = path
        # Recorded with every lease and event. One file is one node's: nothing filters on
        # it here (a renamed host still owns its leases).
        self.node = node or node_name()
        self.readonly = readonly
        # Readers that look at the mirror too (ipamctl check) queue like writers.
        self.queue = not readonly if queue is None else queue
        self._queue = None
        timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.timeout = timeout
        if readonly and not system.exists(path):
            from ipam import access  # a directory on the way may hide it

            raise access.denied(path) or IoFailure("database %s does not exist" % path)
        try:
            self.conn = connect(path, timeout, readonly=readonly)
        except sqlite3.Error as e:
            raise translate(e, path, write=not readonly) from None
        except OSError as e:
            from ipam import access

            raise (access.is_denied(e) and access.denied(path, write=not readonly)) or \
                IoFailure("cannot open database %s: %s" % (path, e.strerror or e)) from None

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    # -- transactions and schema ------------------------------------------------------
    def transaction(self, after_commit=None):
        return _Txn(self, after_commit)

    def retry_delays(self):
        return []  # one writer at a time: an attempt never needs repeating

    def lock_network(self, network, n_sets):
        pass  # the store's single write lock already covers every network

    def begin(self):
        """Take the write lock (or a read snapshot) and make sure the schema is current.

        Writers first queue on :mod:`ipam.writer_lock`, then take SQLite's own lock.
        """
        conn = self.conn
        if self.queue:
            self._queue = writer_lock.acquire(self.path + ".lock", self.timeout,
                                              create=not self.readonly)
        try:
            conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
            revision = self._revision()
            if revision == HEAD:
                return
            if revision is not None and revision not in REVISIONS:
                raise SchemaError("database %s has schema revision %s, newer than this version "
                                  "of host-local-sqlite knows (%s); refusing to touch it"
                                  % (self.path, revision, HEAD))
            if self.readonly:
                raise SchemaError("database %s has no current schema (revision %s); run "
                                  "'ipamctl db upgrade'" % (self.path, revision))
            from ipam import migrate  # lazy: alembic only when creating or upgrading

            migrate.upgrade_sqlite_connection(conn, self.path)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.end()
            raise translate(e, self.path) from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.end()
            raise

    def end(self):
        """Leave the writers' queue (after COMMIT or ROLLBACK)."""
        if self._queue is not None:
            writer_lock.release(self._queue)
            self._queue = None

    def _revision(self):
        try:
            row = self.conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None
            raise
        return row[0] if row else None

    # -- leases -----------------------------------------------------------------------
    def lease_at(self, network, ip):
        row = self.conn.execute(
            "SELECT %s FROM leases WHERE network = ? AND ip_key = ?" % _LEASE_COLS,
            (network, addr.to_key(ip))).fetchone()
        return _lease(row) if row else None

    def leases_of(self, network, container_id, ifname):
        if ifname is None:
            sql = ("SELECT %s FROM leases WHERE network = ? AND container_id = ? "
                   "AND ifname IS NULL" % _LEASE_COLS)
            params = (network, container_id)
        else:
            sql = ("SELECT %s FROM leases WHERE network = ? AND container_id = ? "
                   "AND ifname = ?" % _LEASE_COLS)
            params = (network, container_id, ifname)
        # Sorted here, not by ORDER BY ip_key: that would lead SQLite's planner to walk
        # the network's address index (every lease) instead of the owner index.
        return sorted((_lease(r) for r in self.conn.execute(sql, params)),
                      key=lambda lease: addr.to_key(lease.ip))

    def leases(self, network=None):
        if network is None:
            rows = self.conn.execute(
                "SELECT %s FROM leases ORDER BY network, ip_key" % _LEASE_COLS)
        else:
            rows = self.conn.execute(
                "SELECT %s FROM leases WHERE network = ? ORDER BY ip_key" % _LEASE_COLS,
                (network,))
        return [_lease(r) for r in rows]

    def reserve(self, lease, reason):
        key = addr.to_key(lease.ip)
        conn = self.conn
        succ = addr.neighbour_key(key, 1)
        taken_after = succ is not None and conn.execute(
            "SELECT 1 FROM leases WHERE network = ? AND ip_key = ?",
            (lease.network, succ)).fetchone() is not None
        now = lease.allocated_at or time.time()
        cur = conn.execute(
            "INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, "
            "ifname, allocated_at, boot_id, node, boot_time, pod_namespace, pod_name, pod_uid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (lease.network, str(lease.ip), key, not taken_after, lease.range_set,
             lease.container_id, lease.ifname, now, lease.boot_id or boot_id(),
             lease.node or self.node, new_boot_time(lease), *lease.pod()))
        if cur.rowcount != 1:
            return False
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            conn.execute("UPDATE leases SET next_free = 0 WHERE network = ? AND ip_key = ?",
                         (lease.network, pred))
        self._log(now, "allocate", reason, lease)
        return True

    def import_leases(self, network, leases, reason):
        """Insert many leases of one network at once (import): one pass over the
        network's keys sets every ``next_free`` flag, where one reserve() per lease
        would cost three statements each."""
        if not leases:
            return 0
        conn = self.conn
        existing = {row[0] for row in conn.execute(
            "SELECT ip_key FROM leases WHERE network = ?", (network,))}
        new_keys = {}
        for lease in leases:
            new_keys[addr.to_key(lease.ip)] = lease
        keys = existing | set(new_keys)
        rows = []
        for key, lease in new_keys.items():
            if key in existing:
                continue
            succ = addr.neighbour_key(key, 1)
            rows.append((network, str(lease.ip), key, succ not in keys, lease.range_set,
                         lease.container_id, lease.ifname, lease.allocated_at,
                         lease.boot_id, lease.node or self.node, *lease.pod()))
        conn.executemany(
            "INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, "
            "ifname, allocated_at, boot_id, node, pod_namespace, pod_name, pod_uid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        preds = [(network, p) for p in (addr.neighbour_key(k, -1) for k in new_keys)
                 if p is not None and p in existing]
        conn.executemany("UPDATE leases SET next_free = 0 WHERE network = ? AND ip_key = ?",
                         preds)
        now = time.time()
        conn.executemany(
            "INSERT INTO history (%s) VALUES (?, 'allocate', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            % _EVENT_COLS,
            [(now, reason, r[0], r[1], r[5], r[6], *r[9:]) for r in rows])
        return len(rows)

    def renew(self, lease, pod=None):
        """A repeated ADD found the attachment alive: its lease belongs to this boot."""
        self.conn.execute("UPDATE leases SET boot_id = ?, boot_time = ? WHERE network = ? "
                          "AND ip_key = ? AND boot_id IS NOT ?",
                          (boot_id(), boot_clock(), lease.network, addr.to_key(lease.ip),
                           boot_id()))
        if pod and lease.pod() == NO_POD:  # one more statement only for such a lease
            self.conn.execute(
                "UPDATE leases SET pod_namespace = ?, pod_name = ?, pod_uid = ? "
                "WHERE network = ? AND ip_key = ? AND pod_namespace IS NULL "
                "AND pod_name IS NULL AND pod_uid IS NULL",
                (*pod, lease.network, addr.to_key(lease.ip)))

    def claim_legacy(self, lease, ifname):
        self.conn.execute("UPDATE leases SET ifname = ? WHERE network = ? AND ip_key = ? "
                          "AND ifname IS NULL", (ifname, lease.network, addr.to_key(lease.ip)))
        return lease.with_ifname(ifname)

    def release(self, lease, reason):
        key = addr.to_key(lease.ip)
        cur = self.conn.execute("DELETE FROM leases WHERE network = ? AND ip_key = ?",
                                (lease.network, key))
        if cur.rowcount != 1:
            return
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            self.conn.execute("UPDATE leases SET next_free = 1 WHERE network = ? AND ip_key = ?",
                              (lease.network, pred))
        self._log(time.time(), "release", reason, lease)

    def _log(self, now, event, reason, lease):
        self.conn.execute(
            "INSERT INTO history (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % _EVENT_COLS,
            (now, event, reason, lease.network, str(lease.ip), lease.container_id, lease.ifname,
             lease.node or self.node, *lease.pod()))

    def first_free(self, network, lo, hi):
        """Two index probes whatever the pool size: is ``lo`` free; else where does the run
        of leases that holds ``lo`` end (the partial index on ``next_free``)."""
        conn = self.conn
        key = addr.to_key(lo)
        if conn.execute("SELECT 1 FROM leases WHERE network = ? AND ip_key = ?",
                        (network, key)).fetchone() is None:
            return lo
        row = conn.execute(
            "SELECT ip FROM leases WHERE network = ? AND next_free = 1 AND ip_key >= ? "
            "ORDER BY ip_key LIMIT 1", (network, key)).fetchone()
        if row is None:
            return None
        ip = addr.add(addr.parse_ip(row[0]), 1)
        return ip if ip is not None and ip <= hi else None

    def history(self, network=None, ip=None, container_id=None, since=None, until=None,
                container_prefix=None, pod_name=None):
        """Lease events, oldest first, filtered on any of the arguments."""
        where, params = [], []
        for column, value in (("network", network), ("ip", ip and str(ip)),
                              ("container_id", container_id), ("pod_name", pod_name)):
            if value is not None:
                where.append("%s = ?" % column)
                params.append(value)
        if container_prefix is not None:
            where.append("container_id >= ? AND container_id < ?")
            params += [container_prefix, container_prefix + _TOP]
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time <= ?")
            params.append(until)
        sql = ("SELECT %s FROM history%s ORDER BY id"
               % (_EVENT_COLS, " WHERE " + " AND ".join(where) if where else ""))
        return [Event(*row) for row in self.conn.execute(sql, params)]

    def integrity(self):
        """SQLite's own consistency check: an empty list when all is well."""
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def revision(self):
        return self._revision()

    # -- cursors ----------------------------------------------------------------------
    def last_reserved(self, network, range_set):
        row = self.conn.execute("SELECT ip FROM cursors WHERE network = ? AND range_set = ?",
                                (network, range_set)).fetchone()
        return addr.parse_ip(row[0]) if row else None

    def set_last_reserved(self, network, range_set, ip):
        self.conn.execute(
            "INSERT INTO cursors (network, range_set, ip) VALUES (?, ?, ?) "
            "ON CONFLICT (network, range_set) DO UPDATE SET ip = excluded.ip",
            (network, range_set, str(ip)))

    def cursors(self, network):
        rows = self.conn.execute("SELECT range_set, ip FROM cursors WHERE network = ?",
                                 (network,))
        parsed = {idx: addr.parse_ip(ip) for idx, ip in rows}
        return {idx: ip for idx, ip in parsed.items() if ip is not None}  # garbage: no cursor

    def network_info(self, network):
        """``(data_dir, export, range_sets_json)`` as the last ADD saw them, or None."""
        row = self.conn.execute(
            "SELECT data_dir, export, range_sets FROM networks WHERE network = ?",
            (network,)).fetchone()
        return (row[0], bool(row[1]), row[2]) if row else None

    def set_network_info(self, network, data_dir, export, range_sets_json):
        self.conn.execute(
            "INSERT INTO networks (network, data_dir, export, range_sets, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (network) DO UPDATE SET "
            "data_dir = excluded.data_dir, export = excluded.export, "
            "range_sets = excluded.range_sets, updated_at = excluded.updated_at",
            (network, data_dir, bool(export), range_sets_json, time.time()))

    def mirror_stamp(self, network):
        row = self.conn.execute(
            "SELECT stamp FROM mirror_stamps WHERE network = ? AND node = ?",
            (network, self.node)).fetchone()
        return row[0] if row else None

    def set_mirror_stamp(self, network, stamp):
        self.conn.execute(
            "INSERT INTO mirror_stamps (network, node, stamp) VALUES (?, ?, ?) "
            "ON CONFLICT (network, node) DO UPDATE SET stamp = excluded.stamp",
            (network, self.node, stamp))

    def networks(self):
        rows = self.conn.execute(
            "SELECT network FROM leases UNION SELECT network FROM cursors "
            "UNION SELECT network FROM networks ORDER BY 1")
        return [r[0] for r in rows]

    def lease_counts(self, network):
        rows = self.conn.execute("SELECT node, count(*) FROM leases WHERE network = ? "
                                 "GROUP BY node", (network,))
        return {node: n for node, n in rows}

    def network_times(self, network):
        row = self.conn.execute(
            "SELECT (SELECT updated_at FROM networks WHERE network = ?), "
            "(SELECT max(time) FROM history WHERE network = ?)", (network, network)).fetchone()
        return row[0], row[1]

    def forget_network(self, network):
        for table in ("networks", "cursors", "mirror_stamps"):
            self.conn.execute("DELETE FROM %s WHERE network = ?" % table, (network,))
