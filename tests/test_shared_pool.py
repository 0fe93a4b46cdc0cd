"""One pool on a real PostgreSQL server shared by simulated nodes: real plugin processes
started in bursts, each node with its own dataDir (its mirror) and its own node name.

No address twice across nodes, each mirror holding only its own node's leases, a
schema created by whoever comes first, and a server that stops mid-burst or is not there
at all answered with code 11 (try again later), never a traceback.
"""
import fcntl
import ipaddress
import json
import os
import subprocess
import threading
import time

import psycopg
import pytest
from helpers import NOT_THROUGH_THE_CHAOS_AT_110, ipamctl, run_plugin
from pgserver import free_port
from plugin_procs import (
    Invocation,
    all_succeeded,
    assert_clean,
    mirror,
    others,
    run_all,
    wait_reading_stdin,
)

NET = "shared"
SUBNET = "10.60.0.0/16"
BURST_TIMEOUT = 300  # seconds for a whole burst: ~0.4 s of CPU per process, 2 cores


def pool_conf(url, data_dir, node, busy_timeout=None):
    """A node's config; busyTimeout the pool's default (60 s) unless given."""
    ipam = {"type": "host-local-sqlite", "subnet": SUBNET, "dataDir": str(data_dir),
            "database": url, "node": node}
    if busy_timeout is not None:
        ipam["busyTimeout"] = busy_timeout
    return {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "ipam": ipam}


def node_dirs(tmp_path, names):
    return {name: tmp_path / name for name in names}


def listed(url):
    """``ipamctl -o json list``: every node's leases."""
    proc = ipamctl("-o", "json", "list", database=url, timeout=120)
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list), rows
    return rows


def check(url, node, data_dir, repair=False):
    """``ipamctl --node N --data-dir D -o json check [--repair]``: (status, output)."""
    proc = ipamctl("--node", node, "--data-dir", str(data_dir), "-o", "json", "check",
                   *(["--repair"] if repair else []), database=url, expect=None, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def burst(invocations, timeout=BURST_TIMEOUT, while_running=None):
    """Start every process, release them together, wait for all. ``while_running()`` is
    called right after the release. A watchdog kills whatever still runs at ``timeout``
    (the test then fails) rather than letting the session hang."""
    assert wait_reading_stdin(invocations, timeout=60), "processes did not start in time"
    expired = threading.Event()

    def kill_all():
        expired.set()
        for inv in invocations:
            inv.kill()

    watchdog = threading.Timer(timeout, kill_all)
    watchdog.start()
    try:
        for inv in invocations:
            inv.feed()
        if while_running is not None:
            while_running(invocations)
    finally:
        try:
            run_all(invocations, timeout=timeout)
        finally:
            watchdog.cancel()
    assert not expired.is_set(), "the burst did not finish within %d s" % timeout
    return invocations


def expected_files(rows):
    """A node's mirror as host-local writes it: ``<ip>`` holding ``<id>\\r\\n<ifname>``."""
    return {r["ip"]: ("%s\r\n%s" % (r["container_id"], r["ifname"])).encode() for r in rows}


def assert_mirrors_match(url, dirs, rows):
    """Each node's mirror holds exactly its own node's leases, and checks clean."""
    for node, data_dir in dirs.items():
        own = [r for r in rows if r["node"] == node]
        assert mirror(data_dir, NET) == expected_files(own), node
        assert set(others(data_dir, NET)) <= {"lock", "last_reserved_ip.0"}, node
        assert check(url, node, data_dir) == (0, {"ok": True, "problems": [], "findings": []}), node


def cid(node, i):
    return "%s-c%02d" % (node, i)


# -- many nodes at once ---------------------------------------------------------------
@pytest.mark.slow
def test_four_nodes_200_adds_then_200_dels_at_once(pg_url, tmp_path, through):
    """Each node's 50 calls queue for its host-local lock, the last behind all the others,
    and every node shares this machine's two cores: that queue moves, however slowly, so
    a busyTimeout of 10 s (SQLite's default) is enough."""
    per_node = 50
    dirs = node_dirs(tmp_path, ("node-a", "node-b", "node-c", "node-d"))
    ipamctl("db", "upgrade", database=pg_url, timeout=120)
    confs = {node: pool_conf(pg_url, d, node, busy_timeout=10) for node, d in dirs.items()}
    work = [(node, cid(node, i)) for i in range(per_node) for node in dirs]

    got = all_succeeded(burst([Invocation("ADD", c, confs[node]) for node, c in work]))
    assert len(got) == len(work)
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET)
               for ip in got.values())

    rows = listed(pg_url)
    assert sorted((r["network"], r["container_id"], r["ip"], r["node"], r["ifname"])
                  for r in rows) == sorted((NET, c, got[c], node, "eth0") for node, c in work)
    assert_mirrors_match(pg_url, dirs, rows)

    all_succeeded(burst([Invocation("DEL", c, confs[node]) for node, c in work]))
    assert listed(pg_url) == []
    assert_mirrors_match(pg_url, dirs, [])


@pytest.mark.slow
@NOT_THROUGH_THE_CHAOS_AT_110
def test_110_pods_starting_at_once_on_a_node_of_the_pool(pg_url, tmp_path, through):
    """kubelet's default maxPods, 110, starting at once on one node of a pool: each call
    connects before it takes host-local's lock, the last waits for all the others, and
    with a busyTimeout of 10 s every ADD, then every DEL, succeeds."""
    n = 110
    data_dir = tmp_path / "node-a"
    ipamctl("db", "upgrade", database=pg_url, timeout=120)
    conf = pool_conf(pg_url, data_dir, "node-a", busy_timeout=10)
    got = all_succeeded(burst([Invocation("ADD", cid("node-a", i), conf) for i in range(n)]))
    assert len(got) == n
    rows = listed(pg_url)
    assert sorted((r["container_id"], r["ip"]) for r in rows) == sorted(got.items())
    assert_mirrors_match(pg_url, {"node-a": data_dir}, rows)
    all_succeeded(burst([Invocation("DEL", cid("node-a", i), conf) for i in range(n)]))
    assert listed(pg_url) == []
    assert_mirrors_match(pg_url, {"node-a": data_dir}, [])


def test_first_adds_on_an_empty_database_create_the_schema_once(pg_url, tmp_path, through):
    """No `db upgrade`: eight first ADDs race to create the schema; the losers' DDL rolls
    back and their retry finds the winner's tables."""
    dirs = node_dirs(tmp_path, ("node-a", "node-b"))
    work = [(node, cid(node, i)) for i in range(4) for node in dirs]
    got = all_succeeded(burst([Invocation("ADD", c, pool_conf(pg_url, dirs[node], node))
                               for node, c in work]))
    assert len(got) == len(work)
    rows = listed(pg_url)
    assert sorted((r["container_id"], r["ip"], r["node"]) for r in rows) == sorted(
        (c, got[c], node) for node, c in work)
    assert_mirrors_match(pg_url, dirs, rows)
    proc = ipamctl("db", "current", database=pg_url, timeout=120)
    assert proc.stdout.strip(), proc.stderr


def test_a_call_connects_before_it_takes_host_locals_lock(pg_server, pg_url, tmp_path,
                                                          through):
    """A call holds host-local's lock for its transaction only: its connect (a new
    server process) is made before, while it may still wait, so that the calls queued
    behind it do not wait for that too. In the node daemon, its pool has a store
    connected by then, which the call takes once it holds the lock. The database is
    new to the daemon: no call of ours has connected to it before."""
    data_dir = tmp_path / "node-a"
    ipamctl("db", "upgrade", database=pg_url, timeout=120)
    conf = pool_conf(pg_url, data_dir, "node-a")
    lock = data_dir / NET / "lock"
    lock.parent.mkdir(parents=True)
    since = pg_server.sql(pg_url, "SELECT clock_timestamp()")[0][0]
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a Go host-local would, mid-call
        inv = Invocation("ADD", "c1", conf)
        inv.feed()
        through.wait_queued(lock, inv.proc, polling=True)
        connected = pg_server.sql(
            pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name = 'host-local-sqlite' AND "
            "backend_start > %s", (since,))[0][0]
    finally:
        os.close(fd)
    inv.finish()
    assert connected >= 1, "the call waiting for host-local's lock had not connected"
    assert inv.rc == 0, inv


# -- the server goes away ---------------------------------------------------------------
def _accepts(server):
    try:
        with psycopg.connect("host=127.0.0.1 port=%d user=postgres dbname=postgres "
                             "connect_timeout=5" % server.port):
            return True
    except psycopg.OperationalError:
        return False


def _ensure_running(server, attempts=10):
    """Start the session's server again on its port (it is shared with other tests),
    retrying while the port or the old postmaster is not yet free."""
    for _ in range(attempts):
        if _accepts(server):
            return
        try:
            server.start()
        except subprocess.CalledProcessError:
            time.sleep(1)
    assert _accepts(server), "the PostgreSQL server did not come back on port %d" % server.port


def _stop_after(server, mode, done_first):
    """``while_running`` for :func:`burst`: stop the server once ``done_first`` of the
    processes have ended, the rest still running."""
    def stop(invocations):
        deadline = time.monotonic() + BURST_TIMEOUT
        while time.monotonic() < deadline:
            if sum(inv.proc.poll() is not None for inv in invocations) >= done_first:
                break
            time.sleep(0.01)
        server.stop(mode)
    return stop


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_stopped_mid_burst_gives_code_11_and_leaves_a_consistent_pool(
        pg_server, pg_url, tmp_path, mode, through):
    dirs = node_dirs(tmp_path, ("node-a", "node-b"))
    confs = {node: pool_conf(pg_url, d, node) for node, d in dirs.items()}
    ipamctl("db", "upgrade", database=pg_url, timeout=120)
    work = [(node, cid(node, i)) for i in range(20) for node in dirs]
    invs = [Invocation("ADD", c, confs[node]) for node, c in work]
    try:
        burst(invs, while_running=_stop_after(pg_server, mode, done_first=5))
        assert not _accepts(pg_server)
    finally:
        _ensure_running(pg_server)

    node_of = dict((c, node) for node, c in work)
    ok = {}
    for inv in invs:
        assert_clean(inv)
        if inv.rc == 0:
            ok[inv.container_id] = inv.address
        else:
            assert inv.json["code"] == 11, inv
            assert "127.0.0.1:%d" % pg_server.port in inv.json["msg"], inv
    assert len(ok) >= 5, "too few ADDs succeeded before the stop: %r" % invs
    assert len(ok) < len(invs), "the server stopped after the burst, not during it"

    # The database: no address twice, no container twice, every answered ADD held.
    rows = listed(pg_url)
    ips = [r["ip"] for r in rows]
    assert len(ips) == len(set(ips)), rows
    holders = [r["container_id"] for r in rows]
    assert len(holders) == len(set(holders)), rows
    held = {r["container_id"]: (r["ip"], r["node"]) for r in rows}
    for c, ip in ok.items():
        assert held.get(c) == (ip, node_of[c]), (c, ip, held.get(c))
    # A failed ADD may still hold a lease (its COMMIT landed, the answer was lost): the
    # runtime DELs a failed ADD. Anything else is a lease nobody asked for.
    assert set(held) <= set(node_of), held
    assert pg_server.sql(pg_url, "SELECT network, ip FROM leases GROUP BY network, ip "
                                 "HAVING count(*) > 1") == []

    # Each node's mirror: repaired if a process died between its files and its COMMIT,
    # then clean.
    for node, data_dir in dirs.items():
        status, out = check(pg_url, node, data_dir, repair=True)
        assert status == 0, out
        assert all(p.endswith("(repaired)") for p in out["problems"]), out
    assert_mirrors_match(pg_url, dirs, rows)

    # The pool works again, from both nodes.
    for node in dirs:
        out = run_plugin("ADD", confs[node], container_id="%s-after" % node)
        assert out.status == 0, out
        ip = out.json["ips"][0]["address"].split("/")[0]
        assert ip not in ips, (ip, ips)
        ips.append(ip)
    rows = listed(pg_url)
    assert len(rows) == len(held) + 2
    assert_mirrors_match(pg_url, dirs, rows)


def test_unreachable_server_is_code_11_naming_it(tmp_path, through):
    port = free_port()  # nothing listens there: connection refused
    url = "postgresql+psycopg://postgres@127.0.0.1:%d/ipam" % port
    conf = pool_conf(url, tmp_path / "node-a", "node-a")
    for command in ("ADD", "DEL", "CHECK"):
        t0 = time.monotonic()
        out = run_plugin(command, conf, container_id="c1")
        waited = time.monotonic() - t0
        assert out.status == 1 and out.json["code"] == 11, (command, out)
        assert "127.0.0.1:%d" % port in out.json["msg"], (command, out)
        assert waited < 10, (command, waited)
