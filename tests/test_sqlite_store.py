"""What only the SQLite store does: schema handling, history, index use, error mapping."""
import ipaddress
import os
import sqlite3

import pytest
from helpers import put, wait_queued

from ipam.errors import IoFailure, SchemaError
from ipam.lease import Lease
from ipam.store.schema_version import HEAD
from ipam.store.sqlite import SqliteStore

ip = ipaddress.ip_address


def test_creates_schema_once_and_records_history(tmp_path):
    path = str(tmp_path / "db")
    s = SqliteStore(path)
    with s.transaction():
        s.reserve(Lease("n", ip("10.0.0.2"), 0, "c", "eth0"), "add")
        s.release(s.lease_at("n", ip("10.0.0.2")), "del")
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    rows = db.execute("SELECT event, reason, network, ip, container_id, ifname FROM history "
                      "ORDER BY id").fetchall()
    assert rows == [("allocate", "add", "n", "10.0.0.2", "c", "eth0"),
                    ("release", "del", "n", "10.0.0.2", "c", "eth0")]
    lease_time = db.execute("SELECT time FROM history").fetchone()[0]
    db.close()
    assert lease_time > 1.7e9


def test_newer_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "db"
    s = SqliteStore(str(path))
    with s.transaction():  # creates the schema
        pass
    s.close()
    db = sqlite3.connect(str(path))
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.commit()
    db.close()
    before = path.read_bytes()
    s = SqliteStore(str(path))
    with pytest.raises(SchemaError, match="revision 9999, newer than"):
        with s.transaction():
            pass
    s.close()
    assert path.read_bytes() == before


def test_garbage_file_is_an_io_error_naming_it(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(IoFailure) as e:
        s = SqliteStore(str(path))
        with s.transaction():
            pass
    assert str(path) in e.value.msg and "not a SQLite database" in e.value.msg
    assert path.read_bytes() == before


def test_readonly_missing_file_is_not_created(tmp_path):
    with pytest.raises(IoFailure, match="does not exist"):
        SqliteStore(str(tmp_path / "nope"), readonly=True)
    assert not (tmp_path / "nope").exists()


def test_next_free_flags_stay_consistent(tmp_path):
    s = SqliteStore(str(tmp_path / "db"))
    with s.transaction():
        for n in (2, 3, 4, 6, 7, 9):
            s.reserve(Lease("n", ip("10.0.0.%d" % n), 0, "c%d" % n, "eth0"), "add")
        s.release(s.lease_at("n", ip("10.0.0.6")), "del")
        s.reserve(Lease("n", ip("10.0.0.5"), 0, "c5", "eth0"), "add")
        rows = dict(s.conn.execute("SELECT ip, next_free FROM leases"))
    s.close()
    held = {2, 3, 4, 5, 7, 9}
    assert rows == {"10.0.0.%d" % n: int(n + 1 not in held) for n in held}


@pytest.mark.parametrize("sql", [
    "SELECT 1 FROM leases WHERE network = ? AND ip_key = ?",
    "SELECT ip FROM leases WHERE network = ? AND next_free = 1 AND ip_key >= ? "
    "ORDER BY ip_key LIMIT 1",
])
def test_allocation_queries_use_an_index(tmp_path, sql):
    s = SqliteStore(str(tmp_path / "db"))
    with s.transaction():
        pass
    plan = " ".join(str(r) for r in s.conn.execute("EXPLAIN QUERY PLAN " + sql, ("n", b"x")))
    s.close()
    assert "USING" in plan and "INDEX" in plan and "SCAN leases" not in plan.replace(
        "SCAN leases USING", "")


def test_owner_lookup_uses_an_index(tmp_path):
    s = SqliteStore(str(tmp_path / "db"))
    with s.transaction():
        pass
    plan = " ".join(str(r) for r in s.conn.execute(
        "EXPLAIN QUERY PLAN SELECT ip FROM leases WHERE network = ? AND container_id = ? "
        "AND ifname = ?", ("n", "c", "eth0")))
    s.close()
    assert "ix_leases_owner" in plan


def test_plugin_upgrades_an_old_schema_keeping_leases(tmp_path):
    """A database from the previous release (0001) is upgraded in place by the first
    invocation, under the write lock, and its leases survive."""
    from alembic import command

    from ipam.store import migrate
    from ipam.store.sqlite_db import connect

    path = str(tmp_path / "db")
    conn = connect(path)
    conn.execute("BEGIN IMMEDIATE")
    conn.close()
    command.upgrade(migrate.alembic_config("sqlite:///" + path), "0001")
    db = sqlite3.connect(path)
    db.execute("INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, "
               "ifname, allocated_at) VALUES ('n', '10.0.0.2', ?, 1, 0, 'c', 'eth0', 1.0)",
               (b"\0" * 10 + b"\xff\xff" + bytes([10, 0, 0, 2]),))
    db.commit()
    db.close()
    s = SqliteStore(path)
    with s.transaction():
        assert [str(x.ip) for x in s.leases("n")] == ["10.0.0.2"]
        assert s.revision() == HEAD
        assert s.network_info("n") is None
    s.close()


# A second writer in a process of its own, as the plugin's calls are (a thread would poll
# the lock: only the main thread gets the signal that ends a wait in the kernel's queue):
# it prints when its transaction began.
SECOND_WRITER = """
import sys, time
from %s import SqliteStore
c = SqliteStore(sys.argv[1], busy_timeout=5)
with c.transaction():
    print(time.monotonic())
c.close()
""" % SqliteStore.__module__


def test_writers_queue_on_a_lock_file_with_a_timeout(tmp_path):
    """A second writer waits in the kernel's queue, and gives up with code 11 after the
    busy timeout; the lock file is 0600 and does not block readers."""
    import subprocess
    import sys
    import time

    from ipam.errors import TryAgain

    path = str(tmp_path / "db")
    a = SqliteStore(path, busy_timeout=5)
    b = SqliteStore(path, busy_timeout=0.3)
    with a.transaction():
        assert oct(os.stat(path + ".lock").st_mode & 0o777) == "0o600"
        t = time.monotonic()
        with pytest.raises(TryAgain):
            with b.transaction():
                pass
        assert 0.25 < time.monotonic() - t < 3
        reader = SqliteStore(path, readonly=True)
        with reader.transaction():
            assert reader.leases() == []
        reader.close()
    second = subprocess.Popen([sys.executable, "-c", SECOND_WRITER, path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with a.transaction():
            wait_queued(path + ".lock", second.pid)
            released = time.monotonic()
    finally:
        out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert float(out) >= released
    a.close()
    b.close()


def test_hot_path_loads_sqlite_without_functools_and_leaves_the_real_one(tmp_path):
    """ipam.store.sqlite_module lends _sqlite3 a stand-in functools only while it loads."""
    import subprocess
    import sys

    from ipam.install import launcher

    # As the launcher runs the plugin: an editable install's import finder, which site
    # would install, imports functools itself.
    code = (
        "import sys\n"
        "sys.path += %r\n"
        "from ipam.store.sqlite import SqliteStore\n"
        "assert 'functools' not in sys.modules, 'functools imported'\n"
        "s = SqliteStore(sys.argv[1])\n"
        "for _ in range(3):\n"
        "    with s.transaction():\n"
        "        assert s.leases('n') == []\n"
        "import functools\n"
        "assert hasattr(functools, 'partial') and hasattr(functools, 'reduce')\n"
        "print('ok')\n") % launcher.install_paths()
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(tmp_path / "db")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


# -- a database replaced or removed under an open store ---------------------------------
def _rows(path):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute("SELECT ip, container_id FROM leases ORDER BY ip").fetchall()
    finally:
        conn.close()


def _database_elsewhere(tmp_path, cid):
    """A database with one lease, made at another path and closed (WAL checkpointed):
    what an operator restores over ours."""
    other = str(tmp_path / "other.db")
    store = SqliteStore(other)
    put(store, "n", "10.0.0.9", cid)
    store.close()
    return other


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_a_database_replaced_under_an_open_store_takes_the_next_write(tmp_path, how):
    """A store opened before an operator replaced its file (a restore with ``mv``, the
    old -wal and -shm removed) or removed it writes its next transaction into the file
    now at the path, never through the old handle into an unlinked file no one reads.
    A removed file is created anew, as a call started after the removal would; a reader
    opened before reads the file now at the path too."""
    path = str(tmp_path / "db")
    store = SqliteStore(path)
    put(store, "n", "10.0.0.2", "before")
    reader = SqliteStore(path, readonly=True)
    if how == "replaced":
        os.replace(_database_elsewhere(tmp_path, "elsewhere"), path)
    else:
        os.remove(path)
    for suffix in ("-wal", "-shm"):
        os.remove(path + suffix)
    put(store, "n", "10.0.0.3", "after")
    assert store.reusable() and not reader.reusable()
    store.close()
    expected = {"replaced": [("10.0.0.3", "after"), ("10.0.0.9", "elsewhere")],
                "removed": [("10.0.0.3", "after")]}[how]
    assert _rows(path) == expected
    with reader.transaction():
        assert [(str(x.ip), x.container_id) for x in reader.leases("n")] == expected
    assert reader.reusable()
    reader.close()


def test_a_database_replaced_while_the_store_opens_it_is_opened_again(tmp_path,
                                                                      monkeypatch):
    """The file can change between the stat and SQLite's open: the store keeps a
    connection only when the path named the same file before and after connecting, so
    the identity it checks each transaction against is that of the file it has open."""
    from ipam.store import sqlite as module

    path = str(tmp_path / "db")
    store = SqliteStore(path)
    put(store, "n", "10.0.0.2", "before")
    store.close()
    other = _database_elsewhere(tmp_path, "elsewhere")
    real_connect, opened = module.connect, []

    def connect_then_replace(*args, **kw):
        conn = real_connect(*args, **kw)
        if not opened:
            os.replace(other, path)
        opened.append(conn)
        return conn

    monkeypatch.setattr(module, "connect", connect_then_replace)
    store = SqliteStore(path)
    put(store, "n", "10.0.0.3", "after")
    store.close()
    assert _rows(path) == [("10.0.0.3", "after"), ("10.0.0.9", "elsewhere")]
