"""The Store on a shared server database (PostgreSQL) through SQLAlchemy Core.

Selected by a server URL in ``database`` (``postgresql+psycopg://user@host/db``): one pool
shared by every node that names the same database and network. SQLAlchemy and the
driver cost a few hundred milliseconds to import, which is why the SQLite hot path never
reaches this module.

Correctness comes from the database alone, with nothing an engine that merely speaks
PostgreSQL's dialect would lack (no advisory locks, no SERIALIZABLE):

- READ COMMITTED transactions, one per command, as on SQLite.
- Every command that changes a network first locks the cursor rows of its range sets
  (``SELECT ... FOR UPDATE``, in range-set order, the rows created on first use). Every
  allocation, release and the ``next_free`` flags they keep are thereby serialized per
  network across nodes, for the few milliseconds one transaction lasts; a later
  statement sees what the previous holder committed.
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

from sqlalchemy import (
    and_,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ipam import addr, migrate, writer_lock
from ipam.errors import ConfigError, IoFailure, Retry, SchemaError, TryAgain
from ipam.lease import NO_POD, Event, Lease
from ipam.paths import node_name
from ipam.schema import cursors as C
from ipam.schema import history as H
from ipam.schema import leases as L
from ipam.schema import mirror_stamps as M
from ipam.schema import networks as N
from ipam.schema_version import HEAD, REVISIONS
from ipam.sqlite_store import boot_clock, boot_id, new_boot_time

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
_LEASE_COLS = (L.c.network, L.c.ip, L.c.range_set, L.c.container_id, L.c.ifname,
               L.c.allocated_at, L.c.boot_id, L.c.node, L.c.boot_time, L.c.pod_namespace,
               L.c.pod_name, L.c.pod_uid)
_EVENT_COLS = (H.c.time, H.c.event, H.c.reason, H.c.network, H.c.ip, H.c.container_id,
               H.c.ifname, H.c.node, H.c.pod_namespace, H.c.pod_name, H.c.pod_uid)


def _lease(row):
    return Lease(row[0], addr.parse_ip(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                 row[8], row[9], row[10], row[11])


def server_name(url):
    """``host:port`` of a URL, for messages (never the password)."""
    u = make_url(url)
    host = u.host or u.query.get("host") or "local socket"
    return "%s:%s" % (host, u.port or 5432)


def retry_delays(attempts=ATTEMPTS, base=0.02, cap=0.5):
    """Pauses before attempts 2..n: exponential with full jitter, so nodes that clashed
    do not clash again in step."""
    return [random.uniform(0, min(cap, base * 2 ** k)) for k in range(attempts - 1)]


class _Txn:
    """One transaction: commit (or roll back), then ``after_commit``, then unlock."""

    def __init__(self, store, after_commit=None):
        self.store = store
        self.after_commit = after_commit

    def __enter__(self):
        self.store.begin()

    def __exit__(self, exc_type, exc, tb):
        store = self.store
        try:
            if exc_type is None:
                try:
                    store.trans.commit()
                except SQLAlchemyError as e:
                    store.discard()
                    raise store.translate(e, at_commit=True) from None
                if self.after_commit is not None:
                    self.after_commit()
            else:
                store.discard()
                if isinstance(exc, SQLAlchemyError):
                    raise store.translate(exc) from None
        finally:
            store.discard()  # one connection per transaction: nothing idles on the server
            store.end()
        return False


class SqlStore:
    shared = True  # one database, many nodes: mirror, GC and ipamctl follow ``scope``

    def __init__(self, url, node=None, scope=True, lock_path=None, readonly=False,
                 busy_timeout=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT):
        """``scope``: True for this node's leases, None for every node's, or a node
        name. ``lock_path``: the node-local writers' queue (see :mod:`writer_lock`)
        that keeps this node's mirror and its pending marker consistent."""
        try:
            u = make_url(url)
        except ArgumentError as e:
            raise ConfigError("invalid database URL: %s" % e) from None
        if u.get_backend_name() != "postgresql":
            raise ConfigError("database URL scheme %r is not supported: use a SQLite file "
                              "path or a postgresql:// URL" % u.drivername)
        self.url = url
        self.node = node or node_name()
        self.scope = self.node if scope is True else scope
        self.lock_path = lock_path
        self.readonly = readonly
        self.timeout = DEFAULT_LOCK_TIMEOUT if busy_timeout is None else busy_timeout
        args = {}
        if "options" not in u.query:
            # A holder that hangs (a stopped process on another node) must not hang us:
            # waiting past this is lock_not_available, retried, then code 11.
            args["options"] = "-c lock_timeout=%d" % max(1, int(self.timeout * 1000))
        if "connect_timeout" not in u.query:
            args["connect_timeout"] = connect_timeout
        if "application_name" not in u.query:
            args["application_name"] = "host-local-sqlite"
        try:
            self.engine = create_engine(u, poolclass=NullPool,
                                        isolation_level="READ COMMITTED", connect_args=args)
        except ImportError as e:
            raise ConfigError("database %s needs a driver that is not installed (%s): "
                              "pip install 'host-local-sqlite[postgresql]'"
                              % (migrate.redacted(url), e)) from None
        self.conn = None
        self.trans = None
        self._idle = None
        self._queue = None

    def close(self):
        self.discard()
        if self._idle is not None:
            self._idle.close()
            self._idle = None
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    # -- transactions and schema ------------------------------------------------------
    def transaction(self, after_commit=None):
        return _Txn(self, after_commit)

    def retry_delays(self):
        return retry_delays()

    def begin(self):
        """Queue locally, connect, begin, and make sure the schema is current."""
        if self.lock_path is not None:
            self._queue = writer_lock.acquire(self.lock_path, self.timeout,
                                              create=not self.readonly)
        try:
            self._connect()
            revision = self._revision()
            if revision != HEAD:
                self.discard()
                self._upgrade(revision)
                self._connect()
        except SQLAlchemyError as e:
            self.discard()
            self.end()
            raise self.translate(e) from None
        except BaseException:
            self.discard()
            self.end()
            raise

    def _connect(self):
        try:
            self.conn = self.engine.connect()
        except DBAPIError as e:
            state = _sqlstate(e)
            if state in RETRY_STATES and state not in ("08000", "08003", "08006"):
                raise Retry("database %s refused the connection (%s); try again later"
                            % (server_name(self.url), _first_line(e))) from None
            raise TryAgain("cannot reach database server %s: %s"
                           % (server_name(self.url), _first_line(e)),
                           migrate.redacted(self.url)) from None
        self.trans = self.conn.begin()

    def _revision(self):
        """The schema revision in one query; a missing table (new database) is None."""
        exists = self._db().execute(text("SELECT to_regclass('alembic_version')")).scalar()
        if exists is None:
            return None
        rows = self._db().execute(text("SELECT version_num FROM alembic_version")).all()
        return rows[0][0] if rows else None

    def _upgrade(self, revision):
        """Create or upgrade the schema with the shipped alembic migrations.

        Nodes starting at once may all find a new database: PostgreSQL's DDL is
        transactional, so the losers' CREATE TABLE fails on the catalog's unique index
        and rolls back whole; they then find the winner's schema.
        """
        if revision is not None and revision not in REVISIONS:
            raise SchemaError("database %s has schema revision %s, newer than this version "
                              "of host-local-sqlite knows (%s); refusing to touch it"
                              % (migrate.redacted(self.url), revision, HEAD))
        if self.readonly:
            raise SchemaError("database %s has no current schema (revision %s); run "
                              "'ipamctl db upgrade'" % (migrate.redacted(self.url), revision))
        for delay in retry_delays() + [None]:
            try:
                migrate.upgrade(self.url)
                return
            except IoFailure as e:
                cause = e.__cause__
                if delay is None or not isinstance(cause, DBAPIError) or \
                        _sqlstate(cause) not in RETRY_STATES | {"42P07", "42710"}:
                    raise
                time.sleep(delay)

    def _db(self):
        """The transaction's connection; outside one (a read by a test or a tool), an
        autocommit connection kept until :meth:`close`, as sqlite3 would read."""
        if self.conn is not None:
            return self.conn
        if self._idle is None:
            try:
                self._idle = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            except DBAPIError as e:
                raise self.translate(e) from None
        return self._idle

    def discard(self):
        """Roll back and drop the connection (a rollback on a dead one is ignored)."""
        conn, self.conn, self.trans = self.conn, None, None
        if conn is None:
            return
        try:
            conn.rollback()
        except SQLAlchemyError:
            pass
        try:
            conn.close()
        except SQLAlchemyError:
            pass

    def end(self):
        """Leave the node's writers' queue."""
        if self._queue is not None:
            writer_lock.release(self._queue)
            self._queue = None

    def translate(self, err, at_commit=False):
        """SQLAlchemy's errors as CNI errors naming the server: retryable ones as
        :class:`Retry`, an unreachable server as code 11, the rest as code 5."""
        server = server_name(self.url)
        state = _sqlstate(err)
        lost = isinstance(err, DBAPIError) and err.connection_invalidated
        if state in RETRY_STATES or lost:
            what = "connection lost at COMMIT" if at_commit and lost else _first_line(err)
            return Retry("database %s: %s; try again later" % (server, what))
        if isinstance(err, OperationalError):
            return TryAgain("database server %s failed: %s" % (server, _first_line(err)),
                            migrate.redacted(self.url))
        return IoFailure("database %s: %s" % (server, _first_line(err)), migrate.redacted(self.url))

    # -- locks ------------------------------------------------------------------------
    def lock_network(self, network, n_sets):
        """Lock the cursor rows of ``network`` (range sets 0..n_sets-1 created if new) in
        range-set order: the short per-range lock every changing command takes first."""
        conn = self._db()
        if n_sets:
            conn.execute(pg_insert(C).values(
                [{"network": network, "range_set": i, "ip": ""} for i in range(n_sets)]
            ).on_conflict_do_nothing())
        conn.execute(select(C.c.range_set).where(C.c.network == network)
                     .order_by(C.c.range_set).with_for_update()).all()

    # -- leases -----------------------------------------------------------------------
    def lease_at(self, network, ip):
        row = self._db().execute(select(*_LEASE_COLS).where(
            L.c.network == network, L.c.ip_key == addr.to_key(ip))).first()
        return _lease(row) if row else None

    def leases_of(self, network, container_id, ifname):
        owner = L.c.ifname.is_(None) if ifname is None else L.c.ifname == ifname
        rows = self._db().execute(select(*_LEASE_COLS).where(
            L.c.network == network, L.c.container_id == container_id, owner)
            .order_by(L.c.ip_key))
        return [_lease(r) for r in rows]

    def leases(self, network=None):
        q = select(*_LEASE_COLS)
        if network is not None:
            q = q.where(L.c.network == network)
        if self.scope is not None:
            q = q.where(L.c.node == self.scope)
        return [_lease(r) for r in self._db().execute(q.order_by(L.c.network, L.c.ip_key))]

    def _taken(self, network, key):
        return self._db().execute(select(L.c.id).where(
            L.c.network == network, L.c.ip_key == key)).first() is not None

    def reserve(self, lease, reason):
        key = addr.to_key(lease.ip)
        succ = addr.neighbour_key(key, 1)
        taken_after = succ is not None and self._taken(lease.network, succ)
        now = lease.allocated_at or time.time()
        node = lease.node or self.node
        done = self._db().execute(pg_insert(L).values(
            network=lease.network, ip=str(lease.ip), ip_key=key, next_free=not taken_after,
            range_set=lease.range_set, container_id=lease.container_id,
            ifname=lease.ifname, allocated_at=now, boot_id=lease.boot_id or boot_id(),
            node=node, boot_time=new_boot_time(lease), pod_namespace=lease.pod_namespace,
            pod_name=lease.pod_name, pod_uid=lease.pod_uid).on_conflict_do_nothing()
            .returning(L.c.id)).first()
        if done is None:
            return False
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            self._db().execute(update(L).where(L.c.network == lease.network,
                                              L.c.ip_key == pred).values(next_free=False))
        self._log(now, "allocate", reason, lease, node)
        return True

    def import_leases(self, network, leases, reason):
        """Many leases of one network at once: one pass sets every ``next_free`` flag."""
        if not leases:
            return 0
        conn = self._db()
        existing = {bytes(r[0]) for r in conn.execute(
            select(L.c.ip_key).where(L.c.network == network))}
        new = {}
        for lease in leases:
            new[addr.to_key(lease.ip)] = lease
        keys = existing | set(new)
        rows = []
        for key, lease in new.items():
            if key in existing:
                continue
            rows.append(dict(network=network, ip=str(lease.ip), ip_key=key,
                             next_free=addr.neighbour_key(key, 1) not in keys,
                             range_set=lease.range_set, container_id=lease.container_id,
                             ifname=lease.ifname, allocated_at=lease.allocated_at,
                             boot_id=lease.boot_id, node=lease.node or self.node,
                             pod_namespace=lease.pod_namespace, pod_name=lease.pod_name,
                             pod_uid=lease.pod_uid))
        if not rows:
            return 0
        conn.execute(insert(L), rows)
        preds = [p for p in (addr.neighbour_key(k, -1) for k in new)
                 if p is not None and p in existing]
        if preds:
            conn.execute(update(L).where(L.c.network == network, L.c.ip_key.in_(preds))
                         .values(next_free=False))
        now = time.time()
        conn.execute(insert(H), [dict(time=now, event="allocate", reason=reason,
                                      network=network, ip=r["ip"],
                                      container_id=r["container_id"], ifname=r["ifname"],
                                      node=r["node"], pod_namespace=r["pod_namespace"],
                                      pod_name=r["pod_name"], pod_uid=r["pod_uid"])
                                 for r in rows])
        return len(rows)

    def renew(self, lease, pod=None):
        self._db().execute(update(L).where(
            L.c.network == lease.network, L.c.ip_key == addr.to_key(lease.ip),
            L.c.boot_id.is_distinct_from(boot_id())).values(boot_id=boot_id(),
                                                            boot_time=boot_clock()))
        if pod and lease.pod() == NO_POD:
            self._db().execute(update(L).where(
                L.c.network == lease.network, L.c.ip_key == addr.to_key(lease.ip),
                L.c.pod_namespace.is_(None), L.c.pod_name.is_(None), L.c.pod_uid.is_(None))
                .values(pod_namespace=pod[0], pod_name=pod[1], pod_uid=pod[2]))

    def claim_legacy(self, lease, ifname):
        self._db().execute(update(L).where(
            L.c.network == lease.network, L.c.ip_key == addr.to_key(lease.ip),
            L.c.ifname.is_(None)).values(ifname=ifname))
        return lease.with_ifname(ifname)

    def release(self, lease, reason):
        key = addr.to_key(lease.ip)
        gone = self._db().execute(delete(L).where(
            L.c.network == lease.network, L.c.ip_key == key).returning(
                L.c.node, L.c.pod_namespace, L.c.pod_name, L.c.pod_uid)).first()
        if gone is None:
            return
        pred = addr.neighbour_key(key, -1)
        if pred is not None:
            self._db().execute(update(L).where(L.c.network == lease.network,
                                              L.c.ip_key == pred).values(next_free=True))
        self._log(time.time(), "release", reason, lease, gone[0], tuple(gone[1:]))

    def _log(self, now, event, reason, lease, node, pod=None):
        """One history row; ``pod`` is the identity as the database had it (a release's
        deleted row), else the lease's own."""
        ns, name, uid = pod or lease.pod()
        self._db().execute(insert(H).values(
            time=now, event=event, reason=reason, network=lease.network, ip=str(lease.ip),
            container_id=lease.container_id, ifname=lease.ifname, node=node,
            pod_namespace=ns, pod_name=name, pod_uid=uid))

    def first_free(self, network, lo, hi):
        """Two index probes, as on SQLite: is ``lo`` free; else where does its run end."""
        key = addr.to_key(lo)
        if not self._taken(network, key):
            return lo
        row = self._db().execute(
            select(L.c.ip).where(L.c.network == network, L.c.next_free.is_(True),
                                 L.c.ip_key >= key).order_by(L.c.ip_key).limit(1)).first()
        if row is None:
            return None
        ip = addr.add(addr.parse_ip(row[0]), 1)
        return ip if ip is not None and ip <= hi else None

    def history(self, network=None, ip=None, container_id=None, since=None, until=None,
                container_prefix=None, pod_name=None):
        q = select(*_EVENT_COLS)
        conds = []
        if container_prefix is not None:
            conds.append(H.c.container_id.startswith(container_prefix, autoescape=True))
        if pod_name is not None:
            conds.append(H.c.pod_name == pod_name)
        if network is not None:
            conds.append(H.c.network == network)
        if ip is not None:
            conds.append(H.c.ip == str(ip))
        if container_id is not None:
            conds.append(H.c.container_id == container_id)
        if since is not None:
            conds.append(H.c.time >= since)
        if until is not None:
            conds.append(H.c.time <= until)
        if conds:
            q = q.where(and_(*conds))
        return [Event(*row) for row in self._db().execute(q.order_by(H.c.id))]

    def integrity(self):
        """PostgreSQL checks its own pages; what it cannot know is our invariant: every
        ``next_free`` flag and ``ip_key`` agree with the leases (checked in one pass)."""
        problems = []
        prev = None
        rows = self._db().execute(select(L.c.network, L.c.ip, L.c.ip_key, L.c.next_free)
                                 .order_by(L.c.network, L.c.ip_key))
        for network, ip, key, next_free in rows:
            key = bytes(key)
            parsed = addr.parse_ip(ip)
            if parsed is None or addr.to_key(parsed) != key:
                problems.append("lease %s/%s: address and key disagree" % (network, ip))
            if prev is not None and prev[0] == network:
                adjacent = addr.neighbour_key(prev[2], 1) == key
                if prev[3] == adjacent:
                    problems.append("lease %s/%s: next_free flag is wrong" % prev[:2])
            prev = (network, ip, key, next_free)
        if prev is not None and not prev[3]:
            problems.append("lease %s/%s: next_free flag is wrong" % prev[:2])
        return problems

    def revision(self):
        return self._revision()

    # -- cursors and networks ---------------------------------------------------------
    def last_reserved(self, network, range_set):
        row = self._db().execute(select(C.c.ip).where(
            C.c.network == network, C.c.range_set == range_set)).first()
        return addr.parse_ip(row[0]) if row else None

    def set_last_reserved(self, network, range_set, ip):
        stmt = pg_insert(C).values(network=network, range_set=range_set, ip=str(ip))
        self._db().execute(stmt.on_conflict_do_update(
            index_elements=[C.c.network, C.c.range_set], set_={"ip": stmt.excluded.ip}))

    def cursors(self, network):
        rows = self._db().execute(select(C.c.range_set, C.c.ip).where(C.c.network == network))
        parsed = {idx: addr.parse_ip(ip) for idx, ip in rows}
        return {idx: ip for idx, ip in parsed.items() if ip is not None}

    def network_info(self, network):
        row = self._db().execute(select(N.c.data_dir, N.c.export, N.c.range_sets).where(
            N.c.network == network)).first()
        return (row[0], bool(row[1]), row[2]) if row else None

    def set_network_info(self, network, data_dir, export, range_sets_json):
        stmt = pg_insert(N).values(network=network, data_dir=data_dir, export=bool(export),
                                   range_sets=range_sets_json, updated_at=time.time())
        self._db().execute(stmt.on_conflict_do_update(index_elements=[N.c.network], set_={
            "data_dir": stmt.excluded.data_dir, "export": stmt.excluded.export,
            "range_sets": stmt.excluded.range_sets, "updated_at": stmt.excluded.updated_at}))

    def mirror_stamp(self, network):
        row = self._db().execute(select(M.c.stamp).where(
            M.c.network == network, M.c.node == self.node)).first()
        return row[0] if row else None

    def set_mirror_stamp(self, network, stamp):
        stmt = pg_insert(M).values(network=network, node=self.node, stamp=stamp)
        self._db().execute(stmt.on_conflict_do_update(
            index_elements=[M.c.network, M.c.node], set_={"stamp": stmt.excluded.stamp}))

    def networks(self):
        q = union(select(L.c.network), select(C.c.network), select(N.c.network))
        return sorted(r[0] for r in self._db().execute(q))

    def lease_counts(self, network):
        rows = self._db().execute(select(L.c.node, func.count()).where(
            L.c.network == network).group_by(L.c.node))
        return {node: n for node, n in rows}

    def network_times(self, network):
        row = self._db().execute(select(
            select(N.c.updated_at).where(N.c.network == network).scalar_subquery(),
            select(func.max(H.c.time)).where(H.c.network == network).scalar_subquery(),
        )).first()
        return row[0], row[1]

    def forget_network(self, network):
        for table in (N, C, M):
            self._db().execute(delete(table).where(table.c.network == network))


def _sqlstate(err):
    orig = getattr(err, "orig", err)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _first_line(err):
    orig = getattr(err, "orig", None) or err
    text_ = str(orig).strip().splitlines()
    return text_[0] if text_ else err.__class__.__name__
