"""Backing up and restoring a SQLite database beside running plugin processes.

Both go through SQLite's online backup API in one step for the whole file: a copy of
the ``.db`` file alone is no backup, since the WAL holds the latest commits.

A backup reads in one read transaction, so the copy is the database as one commit left
it. It does not queue with the writers: in WAL mode a reader never blocks a writer nor
waits for one, and a burst of plugin processes would otherwise keep it waiting (the
kernel's flock queue is not first come, first served). A restore does queue
(:mod:`ipam.store.writer_lock`): no plugin is then half-way through a command or its mirror,
and the live database's pages are replaced in one write transaction, so every process
sees the old contents or the restored ones, never a mixture.

A server database (PostgreSQL) is backed up with the server's own tools: pg_dump and
pg_restore know its locks and its snapshots.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ipam import paths
from ipam.errors import ConfigError, IoFailure, SchemaError, TryAgain
from ipam.store import sqlite_db, writer_lock
from ipam.store.location import SQLITE, locate
from ipam.store.schema_version import HEAD, REVISIONS
from ipam.waits import Patience

_MAGIC = b"SQLite format 3\0"
_COMPANIONS = ("", *paths.SQLITE_SIDECARS, paths.WRITER_QUEUE_SUFFIX)
_PG_RESTORE = "restore it with pg_restore (from a pg_dump archive)"


def sqlite_file(database: str, advice: str) -> str:
    """The file of a SQLite ``database``; a server URL is refused with ``advice``."""
    kind, path = locate(database)
    if kind != SQLITE:
        raise ConfigError("the database is a %s URL, not a SQLite file: %s" % (kind, advice))
    return os.path.abspath(path)


def backup(database: str, dest: str, timeout: float = sqlite_db.DEFAULT_BUSY_TIMEOUT,
           force: bool = False) -> dict[str, Any]:
    """Copy ``database`` to ``dest`` as one self-contained file (rollback journal, mode
    0600), which appears under its name complete and checked, or not at all; ``dest``
    is replaced only with ``force``. ``timeout`` bounds the wait for SQLite's locks.
    Returns the copy's path, size, revision and lease count."""
    path = sqlite_file(database, "back it up with pg_dump, and restore it with pg_restore")
    if not os.path.exists(path):
        raise IoFailure("database %s does not exist" % path)
    dest = os.path.abspath(dest)
    _refuse_live(path, dest, "back up onto")
    if os.path.isdir(dest):
        raise IoFailure("%s is a directory" % dest)
    if not os.path.isdir(os.path.dirname(dest)):
        raise IoFailure("directory %s does not exist" % os.path.dirname(dest))
    if not force and os.path.lexists(dest):
        raise IoFailure("%s already exists; refusing to overwrite it (--force replaces it)"
                        % dest)
    tmp = _temp_beside(dest)
    try:
        src = sqlite_db.connect(path, timeout, readonly=True)
        try:
            if _known_revision(src, path) is None:
                raise SchemaError("database %s has no schema: nothing to back up" % path)
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                # One step: the whole copy is read in one read transaction, one snapshot.
                src.backup(dst, pages=-1, progress=_deadline(timeout, path))
            finally:
                dst.close()
        finally:
            src.close()
        info = _seal(tmp, path)
        _publish(tmp, dest, force)
    except BaseException:
        _remove(tmp)
        raise
    return dict(info, database=path, path=dest, bytes=os.stat(dest).st_size)


def plan_restore(database: str, source: str) -> dict[str, Any]:
    """What a restore of ``source`` would do, refusing what it would refuse: for the
    question asked before restoring. Reads only."""
    path = sqlite_file(database, _PG_RESTORE)
    source = os.path.abspath(source)
    _refuse_live(path, source, "restore from")
    info = inspect(source)
    return dict(info, database=path, live_leases=_lease_count(path))


def inspect(path: str) -> dict[str, Any]:
    """Check that ``path`` is a backup this version can restore: a SQLite database that
    passes its integrity check, with our schema at a revision we know. Reads only."""
    _check_header(path)
    conn = sqlite3.connect("file:%s?mode=ro" % quote(os.path.abspath(path)), uri=True,
                           isolation_level=None)
    try:
        return _validate(conn, path)
    except sqlite3.DatabaseError as e:
        raise IoFailure("%s is not a usable SQLite database: %s" % (path, e)) from None
    finally:
        conn.close()


def restore(database: str, source: str,
            timeout: float = sqlite_db.DEFAULT_BUSY_TIMEOUT) -> dict[str, Any]:
    """Replace the contents of ``database`` with those of the backup ``source``, in one
    write transaction of the live database. ``source`` is checked as :func:`inspect`
    does, copied beside the database and brought to the current schema there first, so
    the live database goes from its old contents to current ones in one step; ``source``
    itself is never changed. ``timeout`` bounds the wait in the writers' queue and for
    SQLite's locks."""
    path = sqlite_file(database, _PG_RESTORE)
    source = os.path.abspath(source)
    _refuse_live(path, source, "restore from")
    _check_header(source)
    paths.makedirs(os.path.dirname(path), 0o755)  # restoring a node that lost its dataDir
    stage = _temp_beside(path)
    try:
        info = _stage(source, stage, _page_size(path))
        copy = sqlite3.connect(stage, isolation_level=None)
        try:
            _replace(copy, path, timeout)
        finally:
            copy.close()
    finally:
        _remove(stage)
    return dict(info, database=path, source=source, revision=HEAD)


# -- the copies ---------------------------------------------------------------------
def _replace(copy: sqlite3.Connection, path: str, timeout: float) -> None:
    """Copy ``copy`` over the live database in the writers' queue: one write
    transaction, which running processes see whole or not at all."""
    live = sqlite_db.connect(path, timeout)
    try:
        queue = writer_lock.acquire(paths.writer_queue(path), Patience.each(timeout))
        try:
            _known_revision(live, path)  # never write over a foreign or newer one
            copy.backup(live, progress=_deadline(timeout, path))
            sqlite_db.enable_wal(live)  # a new database; a no-op on a live one
            sqlite_db.trim_wal(live, path, timeout)
        finally:
            writer_lock.release(queue)
    finally:
        live.close()


def _stage(source: str, stage: str, page_size: int | None) -> dict[str, Any]:
    """Copy ``source`` into the file ``stage``, check it, give it the live database's
    ``page_size`` and migrate it to head."""
    try:
        src = sqlite3.connect("file:%s?mode=ro" % quote(source), uri=True,
                              isolation_level=None)
        try:
            conn = sqlite3.connect(stage, isolation_level=None)
            try:
                src.backup(conn)
            finally:
                conn.close()
        finally:
            src.close()
        conn = _reopen_rollback(stage)
        try:
            info = _validate(conn, source)
            _drop_statistics(conn)
            if page_size and conn.execute("PRAGMA page_size").fetchone()[0] != page_size:
                # The backup API cannot change a WAL database's page size.
                conn.execute("PRAGMA page_size=%d" % page_size)
                conn.execute("VACUUM")
            if info["revision"] != HEAD:
                from ipam.store import migrate

                conn.execute("BEGIN IMMEDIATE")
                migrate.upgrade_sqlite_connection(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise IoFailure("%s is not a usable SQLite database: %s" % (source, e)) from None
    return {"source_revision": info["revision"], "leases": info["leases"],
            "migrated": info["revision"] != HEAD}


def _drop_statistics(conn: sqlite3.Connection) -> None:
    """Drop ANALYZE's ``sqlite_stat*`` tables from the staged copy: no revision creates
    them and this tool never writes them, and false ones would steer every query plan
    (the restored database plans as a new one does)."""
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                 "AND name LIKE 'sqlite\\_stat%' ESCAPE '\\'").fetchall():
        conn.execute("DROP TABLE %s" % table)


def _seal(tmp: str, path: str) -> dict[str, Any]:
    """Make the copy self-contained and check it before it takes its name."""
    conn = _reopen_rollback(tmp)
    try:
        problems = _integrity(conn)
        if problems:
            raise IoFailure("database %s fails SQLite's integrity check; no backup written"
                            % path, "\n".join(problems[:20]))
        revision = _known_revision(conn, path)
        leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    finally:
        conn.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    return {"revision": revision, "leases": leases}


def _reopen_rollback(path: str) -> sqlite3.Connection:
    """A connection to a fresh copy, switched to a rollback journal.

    The backup API copies page 1 as it is, WAL flag included, into a destination that is
    not in WAL mode: only a new connection sees the flag, and can clear it.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    if mode.lower() != "delete":
        conn.close()
        raise IoFailure("cannot switch %s to a rollback journal (%s)" % (path, mode))
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _publish(tmp: str, dest: str, force: bool) -> None:
    """Give ``tmp`` the name ``dest``: a link fails if ``dest`` appeared meanwhile."""
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise IoFailure("%s already exists; refusing to overwrite it" % dest) from None
        except OSError:  # a file system without hard links
            if os.path.lexists(dest):
                raise IoFailure("%s already exists; refusing to overwrite it" % dest) from None
            os.replace(tmp, dest)
        else:
            os.unlink(tmp)
    fd = os.open(os.path.dirname(dest), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the new name survives a power cut
    finally:
        os.close(fd)


# -- checks -------------------------------------------------------------------------
def _validate(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    problems = _integrity(conn)
    if problems:
        raise SchemaError("%s fails SQLite's integrity check" % name, "\n".join(problems[:20]))
    revision = _known_revision(conn, name)
    if revision is None:
        raise SchemaError("%s has no schema: not a host-local-sqlite backup" % name)
    _check_schema(conn, revision, name)
    leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    return {"path": name, "revision": revision, "leases": leases}


def _check_schema(conn: sqlite3.Connection, revision: str, name: str) -> None:
    """Refuse a backup whose schema objects (tables, indexes, triggers, views) are not
    exactly those its revision creates, as a new database migrated to that revision
    holds them: a trigger, a dropped unique index or a changed table would go on acting
    on every later ADD and DEL. Checked at the backup's own revision, before any
    migration, so an older backup is held to what its version created."""
    from ipam.store import migrate  # alembic: an admin command, off the plugin's path

    have, want = migrate.sqlite_schema(conn), migrate.fresh_sqlite_schema(revision)
    problems = []
    for kind, obj in sorted(have.keys() | want.keys()):
        if (kind, obj) not in want:
            problems.append("%s %s: not created by revision %s" % (kind, obj, revision))
        elif (kind, obj) not in have:
            problems.append("%s %s: missing" % (kind, obj))
        elif have[kind, obj] != want[kind, obj]:
            problems.append("%s %s: differs from revision %s: %s" % (
                kind, obj, revision, have[kind, obj][1]))
    if problems:
        more = " and %d more" % (len(problems) - 1) if len(problems) > 1 else ""
        raise SchemaError("%s does not hold the schema revision %s creates (%s%s); "
                          "refusing it" % (name, revision, problems[0], more),
                          "\n".join(problems))


def _check_header(path: str) -> None:
    """SQLite takes an empty or short file for an empty database: refuse what is not
    one by its first bytes."""
    if not os.path.isfile(path):
        raise IoFailure("%s is not a file" % path)
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise IoFailure("%s is not a SQLite database" % path)


def _integrity(conn: sqlite3.Connection) -> list[str]:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


def _known_revision(conn: sqlite3.Connection, name: str) -> str | None:
    """The schema revision; None for an empty database. A database with other tables
    and no revision, or one written by a newer version, is refused."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")]
    if "alembic_version" not in tables:
        if tables:
            raise SchemaError("%s has tables but no schema revision: not a host-local-sqlite "
                              "database" % name, "tables: " + ", ".join(sorted(tables)))
        return None
    rows = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    if len(rows) != 1 or rows[0] not in REVISIONS:
        raise SchemaError("%s is at schema revision %s, which this version does not know "
                          "(written by a newer version?); refusing it"
                          % (name, ", ".join(rows) or "(none)"),
                          "known revisions: " + ", ".join(REVISIONS))
    return rows[0]


def _page_size(path: str) -> int | None:
    """The page size in a database file's header; None for a missing or empty file,
    whose page size the backup sets."""
    try:
        with open(path, "rb") as f:
            header = f.read(18)
    except FileNotFoundError:
        return None
    if len(header) < 18 or not header.startswith(_MAGIC):
        return None
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def _lease_count(path: str) -> int | None:
    """The live database's lease count, None when it does not exist or has no leases
    table (read-only)."""
    if not os.path.exists(path):
        return None
    conn = sqlite_db.connect(path, readonly=True)
    try:
        return conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _refuse_live(path: str, other: str, verb: str) -> None:
    """Never take the live database or its companion files for the backup file."""
    real = os.path.realpath(other)
    if real in {os.path.realpath(path) + suffix for suffix in _COMPANIONS}:
        raise ConfigError("cannot %s %s: it is the live database or one of its files"
                          % (verb, other))


# -- helpers ------------------------------------------------------------------------
def _deadline(timeout: float, path: str) -> Callable[[int, int, int], None]:
    """A backup ``progress`` callback that gives up once SQLite has reported the
    database busy for longer than ``timeout`` (Python's loop would retry forever)."""
    end = time.monotonic() + timeout

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > end:
            raise TryAgain("database %s is locked by another process past the busy timeout "
                           "(%gs); try again later" % (path, timeout))

    return progress


def _temp_beside(path: str) -> str:
    """A new empty file, mode 0600, in ``path``'s directory (a hidden name)."""
    prefix, suffix = paths.temp_affixes(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=os.path.dirname(path))
    os.close(fd)
    return tmp


def _remove(path: str) -> None:
    for suffix in ("", *paths.SQLITE_SIDECARS):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
