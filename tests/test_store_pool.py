"""The node daemon's stores kept open across calls (ipam.daemon.pool.StorePool), in
process: what goes back, what is closed, what is opened anew; on PostgreSQL, statements
prepared at first use and one server connection for many calls."""
import os
import sqlite3
import threading

import psycopg
import pytest
from helpers import held, put, run_inprocess

from ipam import paths
from ipam.commands import CallContext
from ipam.daemon.pool import StorePool
from ipam.store.sqlite import SqliteStore
from ipam.waits import Patience

SUBNET = {"subnet": "10.7.0.0/24"}


def take(pool, data_dir, database=None):
    return pool.take(database or paths.default_database(str(data_dir)), None, None,
                     str(data_dir))


def closed(store):
    """Whether a SQLite store's connection was closed."""
    try:
        store.conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_store_given_back_is_taken_again(data_dir):
    pool = StorePool(2)
    store = take(pool, data_dir)
    assert isinstance(store, SqliteStore)
    put(store, "n", "10.7.0.2", "c1")
    pool.give(store, reuse=True)
    assert pool.idle() == 1
    assert take(pool, data_dir) is store and pool.opened == 1 and pool.idle() == 0
    pool.give(store, reuse=True)
    pool.close()
    assert closed(store) and pool.idle() == 0


def test_a_failed_call_closes_its_store(data_dir):
    pool = StorePool(2)
    store = take(pool, data_dir)
    pool.give(store, reuse=False)
    assert closed(store) and pool.idle() == 0
    again = take(pool, data_dir)
    assert again is not store and pool.opened == 2
    pool.give(again, reuse=True)
    pool.close()


def test_a_bursts_calls_have_one_store_made_ready_before_their_lock(data_dir):
    """ready(), which a call runs before it takes its network's lock: the first of a
    burst opens (and connects) a store, the others wait for it, holding no lock, and
    each finds it idle, for take() once it holds the lock."""
    pool = StorePool(2)
    db = paths.default_database(str(data_dir))
    found = []

    def call():
        pool.ready(db, None, None, str(data_dir), Patience(10.0, 60.0))
        found.append(pool.idle())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert found == [1] * 8 and pool.opened == 1
    store = take(pool, data_dir)
    assert pool.opened == 1 and pool.idle() == 0
    pool.give(store, reuse=True)
    pool.close()


def test_at_most_size_idle_stores_per_database(tmp_path):
    pool = StorePool(2)
    one, two = tmp_path / "one", tmp_path / "two"
    stores = [take(pool, one) for _ in range(3)]
    assert len({id(s) for s in stores}) == 3 and pool.opened == 3
    for s in stores:
        pool.give(s, reuse=True)
    assert pool.idle() == 2 and closed(stores[2]) and not closed(stores[0])
    others = [take(pool, two) for _ in range(2)]  # another database: a budget of its own
    for s in others:
        pool.give(s, reuse=True)
    assert pool.idle() == 4
    pool.close()
    assert all(closed(s) for s in stores + others)


def test_past_max_idle_the_least_recently_used_databases_stores_close(tmp_path):
    """A daemon that served many dataDirs (networks that came and went) keeps at most
    ``max_idle`` stores open, dropping the longest unused first."""
    pool = StorePool(1)
    pool.max_idle = 2
    dirs = [tmp_path / str(i) for i in range(4)]
    stores = [take(pool, d) for d in dirs]
    for s in stores[:3]:
        pool.give(s, reuse=True)
    assert pool.idle() == 2 and closed(stores[0]) and not closed(stores[1])
    assert take(pool, dirs[1]) is stores[1]  # used again: now the most recent
    pool.give(stores[1], reuse=True)
    pool.give(stores[3], reuse=True)
    assert closed(stores[2]) and not closed(stores[1]) and not closed(stores[3])
    pool.close()


def _replace_with_another_database(tmp_path, db):
    """os.replace a database made elsewhere (closed: its WAL checkpointed) over ``db``,
    and remove the old file's -wal and -shm, as one must: SQLite would pair the old
    file's WAL (the pool's open store keeps its frames) with the new file."""
    other = str(tmp_path / "other.db")
    store = SqliteStore(other)
    put(store, "n", "10.7.0.9", "elsewhere")
    store.close()
    os.replace(other, db)
    for suffix in (paths.SQLITE_WAL, paths.SQLITE_SHM):
        os.remove(db + suffix)


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_database_file_removed_or_replaced_is_opened_anew(tmp_path, data_dir, how):
    pool = StorePool(2)
    db = paths.default_database(str(data_dir))
    store = take(pool, data_dir)
    put(store, "n", "10.7.0.2", "before")
    pool.give(store, reuse=True)
    before = os.stat(db).st_ino
    if how == "removed":
        os.remove(db)
    else:
        _replace_with_another_database(tmp_path, db)
    assert not store.reusable()
    fresh = take(pool, data_dir)
    assert fresh is not store and closed(store) and pool.opened == 2 and fresh.reusable()
    put(fresh, "n", "10.7.0.3", "after")
    pool.give(fresh, reuse=True)
    pool.close()
    expected = {"removed": [("n", "10.7.0.3", "after", "eth0")],
                "replaced": [("n", "10.7.0.3", "after", "eth0"),
                             ("n", "10.7.0.9", "elsewhere", "eth0")]}[how]
    assert held(data_dir) == expected  # the file now at the path, not the old one
    assert how == "removed" or os.stat(db).st_ino != before


def test_commands_take_their_store_from_the_pool(netconf, data_dir):
    """A pool in the call's context (as the daemon gives it) serves every call; a call
    that fails closes its store, the next opens another."""
    pool = StorePool(2)
    context = CallContext(pool=pool)
    for i in range(3):
        out = run_inprocess("ADD", netconf(SUBNET), context, container_id="c%d" % i)
        assert out.status == 0, out.out
    assert pool.opened == 1 and pool.idle() == 1
    bad = run_inprocess("ADD", netconf(SUBNET), context, container_id="c0", ifname="eth1",
                        args="IP=10.7.0.2")  # c0 holds it: an error inside the transaction
    assert bad.status != 0 and pool.idle() == 0
    assert run_inprocess("DEL", netconf(SUBNET), context, container_id="c1").status == 0
    assert pool.opened == 2 and pool.idle() == 1
    pool.close()
    assert [r[2] for r in held(data_dir)] == ["c0", "c2"]


# -- PostgreSQL ---------------------------------------------------------------------------
def pg_conf(netconf, url):
    return netconf(dict(SUBNET, database=url, node="node-a"), name="pooled")


def test_postgres_statements_are_prepared_at_first_use(pg_url, data_dir):
    pool = StorePool(2)
    store = pool.take(pg_url, None, "node-a", str(data_dir))
    put(store, "n", "10.7.0.2", "c1")
    assert store.conn.prepare_threshold == 0
    prepared = store.conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert any("INSERT" in s.upper() for (s,) in prepared), prepared
    pool.give(store, reuse=True)
    pool.close()


def test_postgres_calls_through_the_pool_use_one_connection(pg_url, netconf):
    pool = StorePool(2)
    for i in range(6):
        command = "ADD" if i % 2 == 0 else "DEL"
        out = run_inprocess(command, pg_conf(netconf, pg_url), CallContext(pool=pool),
                            container_id="c%d" % (i // 2))
        assert out.status == 0, out.out
    with psycopg.connect(pg_url.replace("+psycopg", ""), application_name="test") as conn:
        count, = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'host-local-sqlite' AND datname = current_database()").fetchone()
    assert pool.opened == 1 and count == 1
    pool.close()
