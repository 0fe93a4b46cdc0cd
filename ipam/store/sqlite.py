"""The Store on SQLite through the stdlib's C module: the default, one node's file.

The lease-table algorithm is :class:`ipam.store.table.LeaseTable`'s; this module adds the
engine: opening the file (:mod:`ipam.store.sqlite_db`) and knowing which file it opened,
``BEGIN IMMEDIATE`` on the file now at the path (every command is one, so concurrent
plugin processes serialize on SQLite's lock and a crash before COMMIT leaves no trace),
the WAL trim after COMMIT, and sqlite3's errors as CNI errors.
The tables are those :mod:`ipam.store.schema` declares and the alembic migrations create;
neither is imported here (they cost 200+ ms): only a missing or old schema loads
:mod:`ipam.store.migrate`, under the write lock.
"""
from ipam import system
from ipam.errors import IoFailure, TryAgain
from ipam.paths import node_name, writer_queue
from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT, connect, reuse_wal, trim_wal
from ipam.store.sqlite_module import sqlite3
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


# Opens of the path in a row that found another file there than before: a file replaced
# again and again while a call opens it is an operator's loop, answered with code 11.
OPEN_ATTEMPTS = 5


def _replaced_again(path: "str") -> "TryAgain":
    return TryAgain("database %s was replaced again each time it was opened (%d times); "
                    "try again later" % (path, OPEN_ATTEMPTS))


class SqliteStore(LeaseTable):
    ERROR = sqlite3.Error
    # DELETE ... RETURNING came with SQLite 3.35 (2021); older libraries take the
    # released lease's node and identity from the caller's copy.
    RETURNING = tuple(int(n) for n in sqlite3.sqlite_version.split(".")[:2]) >= (3, 35)

    def __init__(self, path: "str", busy_timeout: "Optional[float]" = None,
                 readonly: "bool" = False, node: "Optional[str]" = None,
                 queue: "Optional[bool]" = None, kept: "bool" = False) -> "None":
        self.path = path
        # Kept open across calls (the node daemon's pool): its WAL is reused in place
        # (sqlite_db.reuse_wal), not truncated after COMMIT.
        self.kept = kept
        # Recorded with every lease and event. One file is one node's: nothing filters on
        # it here (a renamed host still owns its leases).
        self.node = node or node_name()
        self.readonly = readonly
        # Readers that look at the mirror too (ipamctl check) queue like writers.
        if not readonly if queue is None else queue:
            self.queue_path = writer_queue(path)
        self.timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.conn, self._identity = self._connect()

    def _file(self) -> "Optional[tuple[int, int]]":
        """The device and inode of the file now at the path; None if there is none (or
        it cannot be reached: connecting then says why)."""
        try:
            st = system.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _connect(self) -> "tuple[sqlite3.Connection, tuple[int, int]]":
        """A connection to the file at the path, and that file's identity, which each
        transaction checks (:meth:`_begin`). SQLite opens the file by name, and the name
        may be given to another file meanwhile: the identity is taken only when the path
        named one file before connecting and after, so SQLite opened that one (short of
        two swaps in those microseconds, the second bringing the first file's inode
        back). A file that did not exist before is the one connecting created: the next
        attempt finds it."""
        path, readonly = self.path, self.readonly
        if readonly and not system.exists(path):
            from ipam import access  # a directory on the way may hide it

            raise access.denied(path) or IoFailure("database %s does not exist" % path)
        for _ in range(OPEN_ATTEMPTS):
            before = self._file()
            try:
                conn = connect(path, self.timeout, readonly=readonly)
            except sqlite3.Error as e:
                raise translate(e, path, write=not readonly) from None
            except OSError as e:
                from ipam import access

                raise (access.is_denied(e) and access.denied(path, write=not readonly)) or \
                    IoFailure("cannot open database %s: %s" % (path, e.strerror or e)) from None
            after = self._file()
            if after is not None and after == before:
                if self.kept and not readonly:
                    reuse_wal(conn)
                return conn, after
            conn.close()
        raise _replaced_again(path)

    def close(self) -> "None":
        self.conn.close()

    def reusable(self) -> "bool":
        """The file is still the one opened: an operator may have removed or replaced
        it since, and the old handle would write where no one reads. (A transaction
        checks again, in the writers' queue: see :meth:`_begin`.)"""
        return self._file() == self._identity

    def describe(self) -> "str":
        return self.path

    def translate(self, err: "Exception") -> "IpamError":
        return translate(err, self.path)

    def _begin(self) -> "None":
        """BEGIN, on the file now at the path. An operator may have replaced it since
        the connection opened it (a copy restored with ``mv``, the old -wal and -shm
        removed), or removed it, while the call waited in the writers' queue or while
        the node daemon kept the store: the old handle would commit into an unlinked
        file that no one reads again, and the next call would hand out the same address.
        Checked in the queue and inside the transaction (so after any wait for SQLite's
        own lock too), one ``stat``: from here on only an operator who ignores the
        queue can change the file. If it changed, the path is opened anew, still in the
        queue, and the transaction begins there; a removed file is created anew, as a
        call started after the removal would create it."""
        for _ in range(OPEN_ATTEMPTS):
            self._exec("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
            if self._file() == self._identity:
                return
            self.rollback()
            # Closed first: SQLite sees its file moved, so it neither checkpoints the
            # old WAL nor deletes the -wal and -shm now at the path (the new file's).
            self.conn.close()
            self.conn, self._identity = self._connect()
        raise _replaced_again(self.path)

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
        try:
            open_transaction = self.conn.in_transaction
        except sqlite3.ProgrammingError:  # closed: a reopen that failed (_begin)
            return
        if open_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def after_commit(self) -> "None":
        if not self.readonly and not self.kept:
            trim_wal(self.conn, self.path, self.timeout)

    def _no_such_table(self, err: "Exception") -> "bool":
        return isinstance(err, sqlite3.OperationalError) and "no such table" in str(err)

    def _upgrade(self) -> "None":
        from ipam.store import migrate  # lazy: alembic only when creating or upgrading

        migrate.upgrade_sqlite_connection(self.conn, self.path)  # commits
        self._begin()

    def _engine_problems(self) -> "list[str]":
        """SQLite's own consistency check of its pages and indexes."""
        rows = [r[0] for r in self._exec("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows
