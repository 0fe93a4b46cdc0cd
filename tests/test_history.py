"""History retention (revision 0007): ``ipamctl history prune``, ``ipam.historyRetention``,
the indexes that keep ``history --ip`` and ``--since`` off a full scan, and 64-bit ids on
PostgreSQL, with pools of revision 0006 upgraded in place on both engines."""
import os
import shutil
import sqlite3
import subprocess
import time

import pytest
from helpers import IPAMCTL, ipamctl, js, run_inprocess, run_plugin, upgrade_pg_to

from ipam import addr, config, paths
from ipam.admin import leases as admin
from ipam.errors import ConfigError
from ipam.lease import Lease
from ipam.store import migrate, schema_version
from ipam.store.sqlite import SqliteStore

DAY = 86400.0
SUBNET = {"subnet": "10.1.2.0/24"}
EVENT = ("INSERT INTO history (time, event, reason, network, ip, container_id, ifname, "
         "node) VALUES ({t}, 'allocate', 'add', 'mynet', '{ip}', '{cid}', 'eth0', 'n')")



def lease(ip, cid):
    return Lease("mynet", addr.parse_ip(ip), 0, cid, "eth0")


def db_of(data_dir):
    return paths.default_database(str(data_dir))


def sql(data_dir, statement, params=()):
    conn = sqlite3.connect(db_of(data_dir))
    try:
        with conn:
            return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def add_old_events(execute, n, age, start=0):
    """``n`` allocations stamped ``age`` seconds ago (the oldest first), as a long-lived
    pool has them."""
    now = time.time()
    for i in range(start, start + n):
        execute(EVENT.format(t=now - age - (n - i) * 0.001, ip="10.1.3.%d" % (i % 250),
                             cid="old%d" % i))


# -- the store methods ---------------------------------------------------------------
def test_prune_history_deletes_the_oldest_first_at_most_limit(store):
    with store.transaction():
        store.reserve(lease("10.1.2.2", "a"), "add")
        store.reserve(lease("10.1.2.3", "b"), "add")
    time.sleep(0.01)
    cutoff = time.time()
    time.sleep(0.01)
    with store.transaction():
        store.reserve(lease("10.1.2.4", "c"), "add")
    with store.transaction():
        assert store.count_history(cutoff) == 2
        assert store.count_history(0.0) == 0
        assert store.prune_history(cutoff, 1) == 1
    with store.transaction():
        assert [e.container_id for e in store.history()] == ["b", "c"]
        assert store.prune_history(cutoff, 10) == 1
        assert store.prune_history(cutoff, 10) == 0
        assert [e.container_id for e in store.history()] == ["c"]
        assert [x.container_id for x in store.leases()] == ["a", "b", "c"]  # never leases


def test_prune_runs_in_batches_each_its_own_transaction(tmp_path):
    store = SqliteStore(str(tmp_path / "ipam.db"))
    with store.transaction():
        for i in range(7):
            store.reserve(lease("10.1.2.%d" % (i + 2), "c%d" % i), "add")
    statements = []
    store.conn.set_trace_callback(statements.append)
    assert admin.prune_history(store, time.time() + 1, dry_run=True, batch=3) == 7
    assert not [s for s in statements if s.startswith("DELETE")]
    statements.clear()
    assert admin.prune_history(store, time.time() + 1, batch=3) == 7
    store.conn.set_trace_callback(None)
    txns = " ".join(s.split()[0] for s in statements
                    if s.split()[0] in ("BEGIN", "COMMIT", "DELETE"))
    # 3 + 3 + 1: the short batch ends it; each DELETE between its own BEGIN and COMMIT.
    assert txns == " ".join(["BEGIN DELETE COMMIT"] * 3)
    with store.transaction():
        assert store.history() == []
        assert len(store.leases()) == 7
    store.close()


# -- ipamctl history prune -----------------------------------------------------------
def test_ipamctl_history_prune_dry_run_then_prune(netconf, data_dir):
    conf = netconf(SUBNET)
    for cid in ("a", "b", "c"):
        assert run_inprocess("ADD", conf, container_id=cid).status == 0
    sql(data_dir, "UPDATE history SET time = time - 100 * 86400 WHERE container_id != 'c'")
    before = sql(data_dir, "SELECT * FROM history ORDER BY id")
    answer = js("history", "prune", "--before", "90d", "--dry-run", data_dir=data_dir)
    assert answer["deleted"] == 2 and answer["dry_run"] is True
    assert answer["before"].endswith("Z")
    assert sql(data_dir, "SELECT * FROM history ORDER BY id") == before  # wrote nothing
    proc = ipamctl("history", "prune", "--before", "90d", data_dir=data_dir)
    assert proc.stdout.startswith("deleted 2 event(s) stamped before 20")
    assert [e["container_id"] for e in js("history", data_dir=data_dir)] == ["c"]
    assert len(js("list", data_dir=data_dir)) == 3
    answer = js("history", "prune", "--before", "2026-01-01T00:00:00Z", data_dir=data_dir)
    assert answer == {"before": "2026-01-01T00:00:00.000Z", "deleted": 0, "dry_run": False}


@pytest.mark.parametrize("args,msg", [
    (["history", "prune"], "Missing option '--before'"),
    (["history", "prune", "--before", "yesterday"], "is not a time"),
    (["history", "--ip", "10.1.2.2", "prune", "--before", "1d"], "the filters go without"),
    (["-o", "prometheus", "history", "prune", "--before", "1d"], "only for 'ipamctl stats'"),
])
def test_prune_usage_errors_change_nothing(netconf, data_dir, args, msg):
    assert run_inprocess("ADD", netconf(SUBNET), container_id="a").status == 0
    sql(data_dir, "UPDATE history SET time = 0")
    proc = ipamctl(*args, data_dir=data_dir, expect=2)
    assert msg in proc.stderr
    assert len(sql(data_dir, "SELECT * FROM history")) == 1



@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_prune_never_creates_a_database(tmp_path, dry_run):
    missing = tmp_path / "missing"
    proc = ipamctl("history", "prune", "--before", "1d", *dry_run, data_dir=missing, expect=1)
    assert proc.stderr.startswith("Error: database ") and "does not exist" in proc.stderr
    assert not missing.exists()

def test_history_filters_still_work_without_a_subcommand(netconf, data_dir):
    assert run_inprocess("ADD", netconf(SUBNET), container_id="a").status == 0
    rows = js("history", "--ip", "10.1.2.2", "--since", "1h", data_dir=data_dir)
    assert [(r["container_id"], r["event"]) for r in rows] == [("a", "allocate")]


# -- ipam.historyRetention -----------------------------------------------------------
@pytest.mark.parametrize("value,seconds", [
    ("90d", 90 * DAY), ("12h", 12 * 3600), ("30s", 30), ("15m", 900), ("2w", 14 * DAY),
    (None, None)])
def test_history_retention_parses(value, seconds):
    ipam = dict(SUBNET, historyretention=value)  # as decoded: keys lower-cased
    assert config.load({"name": "n", "ipam": ipam}).history_retention == seconds


@pytest.mark.parametrize("value", ["", "0d", "90", "d", "1.5d", "-1d", "90 d", " 90d", "90D",
                                   "90y", "\uff19\uff10d", 90, True, ["90d"]])
def test_bad_history_retention_is_a_config_error_that_changes_nothing(netconf, data_dir,
                                                                        value):
    with pytest.raises(ConfigError, match="historyRetention"):
        config.load({"name": "n", "ipam": dict(SUBNET, historyretention=value)})
    out = run_inprocess("ADD", netconf(dict(SUBNET, historyRetention=value)))
    assert out.error["code"] == 7 and "historyRetention" in out.error["msg"]
    assert os.listdir(data_dir) == []  # not even a database


def test_retention_trims_at_most_64_old_events_per_add_and_del(netconf, data_dir):
    plain = netconf(SUBNET)
    assert run_inprocess("ADD", plain, container_id="a").status == 0
    conn = sqlite3.connect(db_of(data_dir))
    with conn:
        add_old_events(conn.execute, 100, 2 * DAY)
    conn.close()
    assert run_inprocess("ADD", plain, container_id="b").status == 0
    assert len(sql(data_dir, "SELECT * FROM history")) == 102  # no key: kept for ever
    kept = netconf(dict(SUBNET, historyRetention="1d"))
    assert run_inprocess("ADD", kept, container_id="c").status == 0
    old = "SELECT container_id FROM history WHERE container_id LIKE 'old%' ORDER BY id"
    assert [r[0] for r in sql(data_dir, old)] == ["old%d" % i for i in range(64, 100)]
    assert run_inprocess("DEL", kept, container_id="a").status == 0
    assert sql(data_dir, old) == []
    assert [(e["container_id"], e["event"]) for e in js("history", data_dir=data_dir)] == [
        ("a", "allocate"), ("b", "allocate"), ("c", "allocate"), ("a", "release")]


def test_retention_on_a_shared_pool_trims_every_nodes_events(pg_url, pg_server, tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "subnet": "10.1.2.0/24", "database": pg_url,
                     "dataDir": str(tmp_path / "a"), "node": "node-a",
                     "historyRetention": "1d"}}
    assert run_inprocess("ADD", conf, container_id="a").status == 0
    add_old_events(lambda s: pg_server.sql(pg_url, s), 70, 2 * DAY)
    conf["ipam"].update(dataDir=str(tmp_path / "b"), node="node-b")
    assert run_inprocess("ADD", conf, container_id="b").status == 0
    assert pg_server.sql(pg_url, "SELECT count(*) FROM history WHERE node = 'n'") == [(6,)]
    assert run_inprocess("DEL", conf, container_id="b").status == 0
    assert pg_server.sql(pg_url, "SELECT container_id, node FROM history ORDER BY id") == [
        ("a", "node-a"), ("b", "node-b"), ("b", "node-b")]
    assert js("history", "prune", "--before", "now", "--dry-run", database=pg_url)[
        "deleted"] == 3
    answer = js("history", "prune", "--before", "now", database=pg_url)
    assert (answer["deleted"], answer["dry_run"]) == (3, False)  # the pool's, every node's
    assert pg_server.sql(pg_url, "SELECT count(*) FROM history") == [(0,)]
    assert len(js("list", database=pg_url)) == 1



def test_two_nodes_trimming_at_once_neither_waits_for_the_other(pg_url, pg_server, tmp_path):
    """SKIP LOCKED: the events one node's open transaction is deleting are left to it;
    the other deletes the next ones at once instead of waiting (a 2 s lock timeout here:
    waiting would fail the test)."""
    from ipam.store.postgres import PostgresStore

    a = PostgresStore(pg_url, node="a", lock_path=str(tmp_path / "a.lock"))
    b = PostgresStore(pg_url, node="b", lock_path=str(tmp_path / "b.lock"), busy_timeout=2)
    with a.transaction():
        pass  # creates the schema
    add_old_events(lambda s: pg_server.sql(pg_url, s), 4, 2 * DAY)
    cutoff = time.time() - DAY
    with a.transaction():
        assert a.prune_history(cutoff, 2) == 2
        started = time.monotonic()
        with b.transaction():
            assert b.prune_history(cutoff, 64) == 2
        assert time.monotonic() - started < 1.5
    assert pg_server.sql(pg_url, "SELECT count(*) FROM history") == [(0,)]
    a.close()
    b.close()

# -- revision 0007 upgrades a pool in place -------------------------------------------
def test_a_0006_sqlite_pool_upgrades_in_place(netconf, data_dir):
    from alembic import command

    db = db_of(data_dir)
    command.upgrade(migrate.alembic_config("sqlite:///" + db), "0006")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO leases (network, ip, ip_key, next_free, range_set, "
                     "container_id, ifname, allocated_at, node, pod_name) VALUES ('mynet', "
                     "'10.1.2.9', ?, 1, 0, 'old', 'eth0', 1.0, 'n', 'web-0')",
                     (addr.to_key(addr.parse_ip("10.1.2.9")),))
        conn.execute(EVENT.format(t=1.0, ip="10.1.2.9", cid="old"))
    conn.close()
    history = sql(data_dir, "SELECT * FROM history")
    leases = sql(data_dir, "SELECT * FROM leases")
    assert migrate.current(db) == "0006"
    assert run_plugin("ADD", netconf(SUBNET), container_id="new").status == 0  # upgrades
    assert migrate.current(db) == schema_version.HEAD
    assert {"ix_history_ip", "ix_history_time"} <= {r[0] for r in sql(
        data_dir, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert sql(data_dir, "SELECT * FROM history")[:1] == history
    assert sql(data_dir, "SELECT * FROM leases WHERE container_id = 'old'") == leases
    assert [r["container_id"] for r in js("history", "--ip", "10.1.2.9", data_dir=data_dir)
            ] == ["old"]
    assert [r["container_id"] for r in js("list", data_dir=data_dir)] == ["new", "old"]


def test_a_0006_postgresql_pool_upgrades_to_64_bit_ids(pg_url, pg_server, tmp_path):
    upgrade_pg_to(pg_url, "0006")
    q = lambda s: pg_server.sql(pg_url, s)  # noqa: E731
    types = ("SELECT table_name, data_type FROM information_schema.columns "
             "WHERE column_name = 'id' AND table_name IN ('history', 'leases') ORDER BY 1")
    seqs = "SELECT sequencename, data_type::text FROM pg_sequences ORDER BY 1"
    assert q(types) == [("history", "integer"), ("leases", "integer")]
    q("INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, ifname, "
      "allocated_at, node) VALUES ('mynet', '10.1.2.9', '\\x%s', true, 0, 'old', 'eth0', 1.0, "
      "'n')" % addr.to_key(addr.parse_ip("10.1.2.9")).hex())
    q(EVENT.format(t=1.0, ip="10.1.2.9", cid="old"))
    old = q("SELECT * FROM history"), q("SELECT * FROM leases")
    conf = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "subnet": "10.1.2.0/24", "database": pg_url,
                     "dataDir": str(tmp_path / "a"), "node": "node-a"}}
    assert run_plugin("ADD", conf, container_id="a").status == 0  # upgrades the pool
    assert migrate.current(pg_url) == schema_version.HEAD
    assert q(types) == [("history", "bigint"), ("leases", "bigint")]
    assert q(seqs) == [("history_id_seq", "bigint"), ("leases_id_seq", "bigint")]
    assert q("SELECT * FROM history ORDER BY id")[:1] == old[0]
    assert q("SELECT * FROM leases WHERE container_id = 'old'") == old[1]
    beyond = 2 ** 31 + 5
    for table in ("history", "leases"):
        q("SELECT setval(pg_get_serial_sequence('%s', 'id'), %d)" % (table, beyond))
    out = run_plugin("ADD", conf, container_id="b")
    assert out.status == 0, out
    assert q("SELECT id FROM leases WHERE container_id = 'b'") == [(beyond + 1,)]
    assert q("SELECT id, container_id FROM history ORDER BY id DESC LIMIT 1") == [
        (beyond + 1, "b")]
    ip = out.json["ips"][0]["address"].split("/")[0]
    assert [(r["container_id"], r["event"]) for r in js("history", "--ip", ip,
                                                        database=pg_url)] == [("b", "allocate")]
    assert run_plugin("DEL", conf, container_id="b").status == 0
    assert q("SELECT max(id) FROM history") == [(beyond + 2,)]


# -- the query plans use the indexes ---------------------------------------------------
def _queries(store, now):
    """Run the store's own history --ip, --since, prune and count: what it executes."""
    with store.transaction():
        store.history(ip=addr.parse_ip("10.1.3.7"))
        store.history(since=now - 3600)
        store.prune_history(now - 30 * DAY, 64)
        store.count_history(now - 30 * DAY)


PLANNED = [("history WHERE ip", "ix_history_ip"), ("history WHERE time >=", "ix_history_time"),
           ("DELETE", "ix_history_time"), ("count(*)", "ix_history_time")]


def test_sqlite_plans_use_the_history_indexes(tmp_path):
    store = SqliteStore(str(tmp_path / "ipam.db"))
    with store.transaction():
        add_old_events(store.conn.execute, 1000, 10 * DAY)
    statements = []
    store.conn.set_trace_callback(statements.append)
    _queries(store, time.time())
    store.conn.set_trace_callback(None)
    for marker, index in PLANNED:
        [statement] = [s for s in statements if marker in s]
        plan = " | ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + statement))
        assert "USING INDEX %s" % index in plan or "COVERING INDEX %s" % index in plan, plan
        assert "SCAN history" not in plan, plan
    store.close()


def test_postgresql_plans_use_the_history_indexes(pg_url, pg_server, tmp_path):
    from ipam.store.postgres import PostgresStore

    store = PostgresStore(pg_url, lock_path=str(tmp_path / "writers.lock"))
    with store.transaction():
        pass  # creates the schema
    now = time.time()
    # 50,000 events over the last ten days: a table where a scan is the planner's
    # choice unless an index serves the query.
    pg_server.sql(pg_url, "INSERT INTO history (time, event, reason, network, ip, "
                  "container_id, ifname, node) SELECT %s - 10 * 86400 + i * 17, 'allocate', "
                  "'add', 'mynet', '10.1.' || (i %% 250) || '.' || (i / 250 %% 250), "
                  "'c' || i, 'eth0', 'n' FROM generate_series(1, 50000) AS i" % now)
    pg_server.sql(pg_url, "VACUUM ANALYZE history")
    statements = []
    real_exec = store._exec

    def spy(sql, params=()):
        if not sql.startswith("SELECT version_num"):  # the schema check's table probes
            statements.append((store._sql(sql), params))
        return real_exec(sql, params)

    store._exec = spy
    _queries(store, now)
    store.close()
    for marker, index in PLANNED:
        [(statement, params)] = [s for s in statements if marker in s[0]]
        plan = " | ".join(r[0] for r in pg_server.sql(pg_url, "EXPLAIN " + statement, params))
        assert index in plan, plan
        assert "Seq Scan" not in plan, plan


# -- the systemd timer -----------------------------------------------------------------
SYSTEMD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy",
                       "systemd")
UNITS = ("ipamctl-history-prune.service", "ipamctl-history-prune.timer")


def unit_text(name):
    with open(os.path.join(SYSTEMD, name)) as f:
        return f.read().replace("/usr/local/bin/ipamctl", IPAMCTL)


def test_prune_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    for name in UNITS:  # ipamctl where this venv has it, as systemd-analyze checks paths
        (tmp_path / name).write_text(unit_text(name))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                           *[str(tmp_path / n) for n in UNITS]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ipamctl-history" not in proc.stderr, proc.stderr  # not one warning about ours


def test_prune_unit_deletes_what_is_older_than_keep(netconf, data_dir):
    for cid in ("a", "b"):
        assert run_inprocess("ADD", netconf(SUBNET), container_id=cid).status == 0
    sql(data_dir, "UPDATE history SET time = time - 91 * 86400 WHERE container_id = 'a'")
    lines = unit_text(UNITS[0]).splitlines()
    [keep] = [x.split("=", 2)[2] for x in lines if x.startswith("Environment=KEEP=")]
    [command] = [x[len("ExecStart="):] for x in lines if x.startswith("ExecStart=")]
    argv = [keep if word == "${KEEP}" else word for word in command.split()]
    env = {"PATH": os.environ.get("PATH", ""), "IPAM_DATA_DIR": str(data_dir)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deleted 1 event(s)")
    assert [r[0] for r in sql(data_dir, "SELECT container_id FROM history")] == ["b"]
