"""The Store on SQLite through the stdlib's C module: the default, one node's file.

The lease-table algorithm is :class:`ipam.store.table.LeaseTable`'s; this module adds the
engine: opening the file (:mod:`ipam.sqlite_db`), ``BEGIN IMMEDIATE`` (every command
is one, so concurrent plugin processes serialize on SQLite's lock and a crash before
COMMIT leaves no trace), the WAL trim after COMMIT, and sqlite3's errors as CNI errors.
The tables are those :mod:`ipam.schema` declares and the alembic migrations create;
neither is imported here (they cost 200+ ms): only a missing or old schema loads
:mod:`ipam.migrate`, under the write lock.
"""
from ipam import system
from ipam.errors import IoFailure, TryAgain
from ipam.paths import node_name, writer_queue
from ipam.sqlite_db import DEFAULT_BUSY_TIMEOUT, connect, trim_wal
from ipam.sqlite_module import sqlite3
from ipam.store.table import LeaseTable

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    from typing import Optional

    from ipam.errors import IpamError


def translate(err: "Exception", path: "str", write: "Optional[bool]" = None) -> "IpamError":
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


class SqliteStore(LeaseTable):
    ERROR = sqlite3.Error
    # DELETE ... RETURNING came with SQLite 3.35 (2021); older libraries take the
    # released lease's node and identity from the caller's copy.
    RETURNING = tuple(int(n) for n in sqlite3.sqlite_version.split(".")[:2]) >= (3, 35)

    def __init__(self, path: "str", busy_timeout: "Optional[float]" = None,
                 readonly: "bool" = False, node: "Optional[str]" = None,
                 queue: "Optional[bool]" = None) -> "None":
        self.path = path
        # Recorded with every lease and event. One file is one node's: nothing filters on
        # it here (a renamed host still owns its leases).
        self.node = node or node_name()
        self.readonly = readonly
        # Readers that look at the mirror too (ipamctl check) queue like writers.
        if not readonly if queue is None else queue:
            self.queue_path = writer_queue(path)
        self.timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        if readonly and not system.exists(path):
            from ipam import access  # a directory on the way may hide it

            raise access.denied(path) or IoFailure("database %s does not exist" % path)
        try:
            self.conn = connect(path, self.timeout, readonly=readonly)
            st = system.stat(path)
            self._identity = (st.st_dev, st.st_ino)
        except sqlite3.Error as e:
            raise translate(e, path, write=not readonly) from None
        except OSError as e:
            from ipam import access

            raise (access.is_denied(e) and access.denied(path, write=not readonly)) or \
                IoFailure("cannot open database %s: %s" % (path, e.strerror or e)) from None

    def close(self) -> "None":
        self.conn.close()

    def reusable(self) -> "bool":
        """The file is still the one opened: an operator may have removed or replaced
        it since, and the old handle would write where no one reads."""
        try:
            st = system.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def describe(self) -> "str":
        return self.path

    def translate(self, err: "Exception") -> "IpamError":
        return translate(err, self.path)

    def _begin(self) -> "None":
        self._exec("BEGIN" if self.readonly else "BEGIN IMMEDIATE")

    def commit(self) -> "None":
        try:
            self._exec("COMMIT")
        except sqlite3.Error as e:
            self.rollback()
            err = translate(e, self.path)
            # An I/O error (SQLITE_IOERR: a failed sync) may come after the commit frame
            # reached the WAL; a full disk stops it before.
            err.outcome_unknown = getattr(e, "sqlite_errorcode", 0) & 0xFF == 10
            raise err from None

    def rollback(self) -> "None":
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def after_commit(self) -> "None":
        if not self.readonly:
            trim_wal(self.conn, self.path, self.timeout)

    def _no_such_table(self, err: "Exception") -> "bool":
        return isinstance(err, sqlite3.OperationalError) and "no such table" in str(err)

    def _upgrade(self) -> "None":
        from ipam import migrate  # lazy: alembic only when creating or upgrading

        migrate.upgrade_sqlite_connection(self.conn, self.path)  # commits
        self._begin()

    def _engine_problems(self) -> "list[str]":
        """SQLite's own consistency check of its pages and indexes."""
        rows = [r[0] for r in self._exec("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows
