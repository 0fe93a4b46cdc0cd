"""Cost per invocation does not grow with the pool: index use and bounded work.

No timing here (benchmarks live in ``make bench``): SQLite's own counters say how much
work a statement did, which is repeatable on any machine.
"""
import pytest

from ipam import addr, allocator
from ipam.lease import Lease
from ipam.ranges import canonicalize, make_set
from ipam.store.sqlite import SqliteStore

SUBNET = "10.128.0.0/16"


@pytest.fixture
def pool(tmp_path):
    """``pool(n, name)``: a SQLite store with ``n`` leases from .0.2 upwards and the
    cursor at the last, closed after the test."""
    stores = []

    def make(n, name):
        s = SqliteStore(str(tmp_path / name))
        stores.append(s)
        base = int(addr.parse_ip("10.128.0.2"))
        with s.transaction():
            s.import_leases("net", [Lease("net", addr.IP(4, base + i), 0, "pod%d" % i,
                                          "eth0", 1.0) for i in range(n)], "import")
            if n:
                s.set_last_reserved("net", 0, addr.IP(4, base + n - 1))
        return s

    yield make
    for s in stores:
        s.close()


def measure(store, action):
    """(statements run, SQLite VM steps) for ``action`` inside one transaction."""
    statements, steps = [], [0]

    def tick():
        steps[0] += 1
        return 0

    store.conn.set_trace_callback(statements.append)
    store.conn.set_progress_handler(tick, 1)
    try:
        with store.transaction():
            action()
    finally:
        store.conn.set_trace_callback(None)
        store.conn.set_progress_handler(None, 1)
    return len(statements), steps[0]


RANGES = [make_set([canonicalize(SUBNET, None, None, None)])]


def add(store, cid):
    return lambda: allocator.add(store, "net", RANGES, [], cid, "eth0")


def release(store, cid):
    return lambda: allocator.release(store, "net", cid, "eth0", 1)


def check(store, cid):
    return lambda: allocator.check(store, "net", cid, "eth0")


@pytest.mark.parametrize("op", [add, release, check])
def test_work_is_the_same_at_100_and_50000_leases(pool, op):
    small, big = pool(100, "small.db"), pool(50000, "big.db")
    if op is not add:
        for s in (small, big):
            with s.transaction():
                allocator.add(s, "net", RANGES, [], "probe", "eth0")
    small_stmts, small_steps = measure(small, op(small, "probe"))
    big_stmts, big_steps = measure(big, op(big, "probe"))
    assert big_stmts == small_stmts
    # VM steps of the index probes grow with the B-tree's depth only (log n): allow 2x.
    assert big_steps <= 2 * small_steps + 50, (small_steps, big_steps)


def test_add_after_wrapping_into_a_long_run_is_still_bounded(pool):
    """The cursor at the start of 50,000 contiguous leases: the partial index on
    ``next_free`` jumps to the end of the run instead of walking it."""
    small, big = pool(100, "small.db"), pool(50000, "big.db")
    for s in (small, big):
        with s.transaction():
            s.set_last_reserved("net", 0, addr.parse_ip("10.128.0.1"))
    _, small_steps = measure(small, add(small, "wrap"))
    _, big_steps = measure(big, add(big, "wrap"))
    assert big_steps <= 2 * small_steps + 50, (small_steps, big_steps)


@pytest.mark.parametrize("sql,params", [
    ("SELECT ip FROM leases WHERE network = ? AND container_id = ? AND ifname = ?",
     ("n", "c", "eth0")),
    ("SELECT ip FROM leases WHERE network = ? AND container_id = ? AND ifname IS NULL",
     ("n", "c")),
    ("SELECT 1 FROM leases WHERE network = ? AND ip_key = ?", ("n", b"k")),
    ("SELECT ip FROM leases WHERE network = ? AND next_free = 1 AND ip_key >= ? "
     "ORDER BY ip_key LIMIT 1", ("n", b"k")),
    ("DELETE FROM leases WHERE network = ? AND ip_key = ?", ("n", b"k")),
    ("UPDATE leases SET next_free = 1 WHERE network = ? AND ip_key = ?", ("n", b"k")),
    ("SELECT ip FROM cursors WHERE network = ? AND range_set = ?", ("n", 0)),
    ("SELECT data_dir FROM networks WHERE network = ?", ("n",)),
])
def test_hot_path_statements_use_an_index(pool, sql, params):
    s = pool(0, "db")
    plan = " | ".join(r[3] for r in s.conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "USING" in plan and "SCAN" not in plan, plan


@pytest.mark.parametrize("op", [add, release, check])
def test_no_statement_of_add_del_check_scans_a_table(pool, op):
    """Every statement ADD, DEL and CHECK actually run, as traced, plans index lookups."""
    s = pool(1000, "db")
    with s.transaction():
        allocator.add(s, "net", RANGES, [], "probe", "eth0")
    statements = []
    s.conn.set_trace_callback(statements.append)
    with s.transaction():
        op(s, "probe" if op is not add else "new")()
    s.conn.set_trace_callback(None)
    checked = 0
    for sql in statements:
        if sql.split()[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            continue
        if sql.upper().startswith("INSERT INTO HISTORY"):
            continue  # an append: no lookup
        plan = " | ".join(r[3] for r in s.conn.execute("EXPLAIN QUERY PLAN " + sql))
        if plan == "SCAN alembic_version":
            continue  # the one-row schema revision
        assert "SCAN" not in plan, (sql, plan)
        checked += 1
    assert checked >= 1


def test_the_wal_stays_short_across_plugin_processes(tmp_path):
    """Each plugin process opens the database alone, so SQLite rebuilds the WAL index by
    reading every frame of the WAL; and a rebuilt index forgets what was checkpointed,
    so without our truncation the WAL grew by every commit, forever (about 80 KB per
    ADD and DEL here). Real processes, as a runtime starts them."""
    from helpers import run_plugin

    from ipam.store.sqlite_db import WAL_TRIM_BYTES

    conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "subnet": SUBNET,
                     "dataDir": str(tmp_path)}}
    wal = tmp_path / ".host-local-sqlite.db-wal"
    sizes = []
    for i in range(60):
        assert run_plugin("ADD", conf, container_id="c%d" % i).status == 0
        assert run_plugin("DEL", conf, container_id="c%d" % i).status == 0
        sizes.append(wal.stat().st_size if wal.exists() else 0)
    # Past the trim size by at most one command's frames, whatever the number of commits.
    assert max(sizes) <= WAL_TRIM_BYTES + 32 * (24 + 4096)
    assert max(sizes) > 0 and min(sizes[-20:]) < max(sizes)
