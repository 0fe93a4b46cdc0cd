"""Opening the SQLite database with the pragmas every connection needs.

Stdlib only: used by the plugin's hot path and by the migration code alike, so that a
database is always created the same way (mode 0600, WAL).
"""
from ipam import system
from ipam.paths import SQLITE_SIDECARS, SQLITE_WAL
from ipam.store.sqlite_module import sqlite3

DEFAULT_BUSY_TIMEOUT = 10.0  # seconds
_MAGIC = b"SQLite format 3\0"
WAL_TRIM_BYTES = 256 * (24 + 4096)  # 256 frames of a 4 KiB page: 1 MiB, under 1 ms to read
# A kept connection's checkpoint, in frames (reuse_wal): the WAL's most, these and the
# last transaction's (a call writes about 10), stays under WAL_TRIM_BYTES, past which
# plugin processes beside the daemon would truncate it.
WAL_REUSE_FRAMES = 224


# Annotations are strings: nothing to evaluate when the plugin starts.
def connect(path: "str", busy_timeout: "float" = DEFAULT_BUSY_TIMEOUT,
            readonly: "bool" = False) -> "sqlite3.Connection":
    """Open ``path`` in autocommit mode; transactions are begun explicitly by the caller.

    The file is created with mode 0600 before SQLite sees it: leases name containers, and
    SQLite would otherwise create it with the process umask. The -wal and -shm files
    inherit the database file's mode.
    """
    for name in (path, *(path + suffix for suffix in SQLITE_SIDECARS)):
        if system.islink(name):  # never follow one out of dataDir (SQLite would)
            raise sqlite3.DatabaseError("%s is a symbolic link; refusing to follow it" % name)
    try:
        size = system.stat(path).st_size
    except FileNotFoundError:
        size = None
    if size is not None and 0 < size < len(_MAGIC):
        # SQLite takes a file shorter than its header for an empty database and would
        # write a new one over it: refuse it as what it is, not ours.
        with open(path, "rb") as f:
            if not _MAGIC.startswith(f.read(len(_MAGIC))):
                raise sqlite3.DatabaseError("file is not a database")
    if readonly:
        import os  # lazy, as the rest: only ipamctl opens read-only
        from urllib.parse import quote

        conn = sqlite3.connect("file:%s?mode=ro" % quote(os.path.abspath(path)), uri=True,
                               timeout=busy_timeout, isolation_level=None)
    else:
        if size is None:
            fd = system.open(path, system.O_WRONLY | system.O_CREAT | system.O_NOFOLLOW, 0o600)
            system.close(fd)
        # check_same_thread off: the node daemon's pool hands a store to one worker
        # thread at a time, not always the one that opened it (SQLite is serialized).
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                               check_same_thread=False)
    try:
        # synchronous=FULL: an address we report must survive a power cut. The first
        # statement is also where SQLite reads the file and finds it is not a database.
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()  # the caller never sees it (Python 3.13 warns of an unclosed one)
        raise
    return conn


def trim_wal(conn: "sqlite3.Connection", path: "str", busy_timeout: "float") -> "None":
    """Checkpoint the WAL and truncate it to nothing once it is longer than
    :data:`WAL_TRIM_BYTES`; call it after COMMIT, still in the writers' queue.

    Every plugin process is the only connection when it opens the database (unless a
    node daemon holds it: see :func:`reuse_wal`), so SQLite rebuilds the WAL index by
    reading the whole WAL, about 3 us a frame. Its own checkpoints cannot help here: a
    rebuilt index forgets what was checkpointed, so the WAL is never restarted and
    grows with every commit, forever. Truncating it keeps that read short, for one
    checkpoint fsync every few commits. A reader holding a snapshot (ipamctl) makes the
    truncation give up at once; a later commit retries.
    """
    try:
        if system.stat(path + SQLITE_WAL).st_size <= WAL_TRIM_BYTES:
            return
    except OSError:
        return
    try:
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass  # housekeeping only: the commit is done
    finally:
        try:
            conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout * 1000))
        except sqlite3.Error:
            pass


def reuse_wal(conn: "sqlite3.Connection") -> "None":
    """For a connection kept open across commits (the node daemon's stores): SQLite's
    own checkpoint every :data:`WAL_REUSE_FRAMES` frames, and no :func:`trim_wal`.

    A kept connection's WAL index remembers what was checkpointed, so the next writer
    restarts the WAL from its start, overwriting blocks the file already has: COMMIT's
    sync (synchronous=FULL all the same) then flushes data alone, where a write past the
    file's end also commits the file system's journal (its new size): 0.09 ms against
    0.19 ms on the test machine's ext4 (docs/performance.md), inside the writers'
    queue. Durable as before: the restarted WAL's header is synced before its first
    frame (SQLite does, under FULL), and recovery reads frames only while their salt
    and chained checksum match, so what an overwritten WAL holds after a power cut is a
    prefix of what was committed, each COMMIT answered only after the sync that covers
    it (tests/test_daemon_steps.py)."""
    conn.execute("PRAGMA wal_autocheckpoint=%d" % WAL_REUSE_FRAMES)


def enable_wal(conn: "sqlite3.Connection", attempts: "int" = 200) -> "None":
    """WAL lets readers (ipamctl) run beside writers; the mode persists in the file.

    The switch needs an exclusive lock. Two processes that both just created or checked
    the schema can each hold a shared lock while asking for it, and SQLite then answers
    one of them "locked" at once rather than deadlock: that one waits a little and tries
    again, unless the other has switched the mode meanwhile.
    """
    import time

    for _ in range(attempts - 1):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            time.sleep(0.01)
    conn.execute("PRAGMA journal_mode=WAL")
