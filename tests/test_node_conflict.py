"""Two hosts given one node name are detected (docs/shared-pool.md, "Two hosts, one node name").

Real plugin, node daemon and ipamctl processes on a real database, SQLite and
PostgreSQL: one machine plays each host with a boot id file of its own
(``HOST_LOCAL_SQLITE_BOOT_ID_FILE``, read instead of /proc/sys/kernel/random/boot_id).
On PostgreSQL each host has its own dataDir, as two cloned VMs on a shared pool would;
on SQLite they share the dataDir that holds the file (a shared file system).

Time passing (a host gone quiet for longer than the active window) is played by aging
a boot's last stamp in the database, as test_gc.py plays earlier boots.
"""
import contextlib
import json
import sqlite3
import uuid

import pytest
from helpers import NodeDaemon, ipamctl, plugin_process

from ipam import node_boots
from ipam.system import BOOT_ID_FILE_ENV

NODE = "worker-7"
NET = "pool"


class Host:
    """One simulated host: its boot id file, its dataDir, the shared database."""

    def __init__(self, tmp_path, name, pool):
        self.name = name
        self.boot_file = tmp_path / ("%s.boot_id" % name)
        self.database, shared = pool
        self.data_dir = shared or tmp_path / name
        self.reboot()

    def reboot(self):
        self.boot_id = str(uuid.uuid4())
        self.boot_file.write_text(self.boot_id + "\n")

    @property
    def env(self):
        return {BOOT_ID_FILE_ENV: str(self.boot_file)}

    def conf(self, **extra):
        return dict({"cniVersion": "1.1.0", "name": NET, "type": "bridge",
                     "ipam": {"type": "host-local-sqlite", "subnet": "10.70.0.0/24",
                              "dataDir": str(self.data_dir), "database": self.database,
                              "node": NODE}}, **extra)

    def call(self, command, cid, daemon=None, **extra):
        """The plugin as this host's runtime runs it: (Outcome, stderr)."""
        env = dict(self.env)
        if daemon is not None:
            env["HOST_LOCAL_SQLITE_DAEMON"] = daemon.socket
        return plugin_process(command, self.conf(**extra), env_extra=env, container_id=cid)

    def add(self, cid, **kw):
        out, err = self.call("ADD", cid, **kw)
        assert out.status == 0, (out, err)
        return out.json["ips"][0]["address"].split("/")[0], err

    def cni_gc(self, *valid):
        return self.call("GC", "gc", **{"cni.dev/valid-attachments": [
            {"containerID": cid, "ifname": "eth0"} for cid in valid]})

    def ipamctl(self, *args, expect=0):
        """The installed ipamctl on this host's database, as its node."""
        return ipamctl(*args, data_dir=self.data_dir, database=self.database,
                       env=dict(self.env, IPAM_NODE=NODE), expect=expect)


def holders(host):
    rows = json.loads(host.ipamctl("-o", "json", "list").stdout)
    return sorted(r["container_id"] for r in rows)


def age(host, seconds):
    """``host``'s boot last stamped ``seconds`` earlier than it was."""
    query = "UPDATE node_boots SET seen_at = seen_at - %d WHERE boot_id = '%s'" % (
        seconds, host.boot_id)
    if host.database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(host.database.replace("+psycopg", ""), autocommit=True) as c:
            c.execute(query)
    else:
        with contextlib.closing(sqlite3.connect(host.database)) as conn, conn:
            conn.execute(query)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pool(request, tmp_path):
    """What two hosts share: ``(database, dataDir)``, a SQLite file in a dataDir both
    hosts use, or a PostgreSQL database (and no dataDir: each host has its own)."""
    if request.param == "sqlite":
        shared = tmp_path / "shared"
        return str(shared / "leases.db"), shared
    return request.getfixturevalue("pg_url"), None


def clones(tmp_path, pool):
    return Host(tmp_path, "vm-a", pool), Host(tmp_path, "vm-b", pool)


def in_conflict(a, b):
    """Each host has called after the other's first call: both know."""
    a.add("a1")
    b.add("b1")  # B's first call: A was last active before it, as before a reboot
    _, err = a.add("a2")
    assert a.boot_id in err and b.boot_id in err, err
    _, err = b.add("b2")
    assert a.boot_id in err and b.boot_id in err, err


def test_two_hosts_with_one_name_are_told_apart_and_gc_is_refused(tmp_path, pool):
    a, b = clones(tmp_path, pool)
    in_conflict(a, b)
    _, err = a.add("a3")
    assert "node name %s is used by 2 hosts at once" % NODE in err
    assert "GC for this name is refused" in err

    # CNI GC on A, which knows only A's containers: refused, naming both hosts
    out, err = a.cni_gc("a1", "a2", "a3")
    assert out.status == 1 and out.error["code"] == 999, (out, err)
    assert out.error["msg"].startswith("GC refused, nothing released: ")
    assert a.boot_id in out.error["msg"] and b.boot_id in out.error["msg"]
    # ipamctl gc on A, --force or not, dry run or not
    for extra in ((), ("--apply",), ("--apply", "--force"), ("--previous-boots",)):
        proc = a.ipamctl("gc", "--grace", "0", "--ignore-netns", "--valid", "a1", "--valid",
                         "a2", "--valid", "a3", *extra, expect=1 if "--apply" in extra else 0)
        assert b.boot_id in proc.stdout + proc.stderr, (extra, proc.stdout, proc.stderr)
    report = json.loads(a.ipamctl("-o", "json", "gc", "--grace", "0", "--ignore-netns",
                                  "--valid", "a1", "--apply", expect=1).stdout)
    assert report["released"] == []
    assert [(c["node"], sorted(c["boots"])) for c in report["conflicts"]] == [
        (NODE, sorted([a.boot_id, b.boot_id]))]
    assert holders(a) == ["a1", "a2", "a3", "b1", "b2"]  # B's leases live on

    # ipamctl shows it, from either host and from a third machine
    for viewer in (a, b, Host(tmp_path, "admin", pool)):
        proc = viewer.ipamctl("-o", "json", "node", "list")
        rows = {r["boot_id"]: r for r in json.loads(proc.stdout)}
        assert set(rows) >= {a.boot_id, b.boot_id}
        assert rows[a.boot_id]["conflict"] and rows[b.boot_id]["conflict"]
        assert rows[b.boot_id]["leases"] == 2 and rows[a.boot_id]["leases"] == 3
        assert [r["this_host"] for r in rows.values()].count(True) == (viewer.name != "admin")
        assert "used by 2 hosts at once" in proc.stderr
    table = a.ipamctl("node", "list").stdout
    assert "conflict, this host" in table and "vm-a" not in table  # host names are uname's


def test_a_reboot_is_no_conflict_and_gc_takes_its_leftovers(tmp_path, pool):
    (a, _) = clones(tmp_path, pool)
    a.add("old1")
    a.add("old2")
    a.reboot()  # at once: no window to wait out
    _, err = a.add("new1")
    assert err == ""
    out, err = a.cni_gc("new1")
    assert (out.status, err) == (0, ""), (out, err)
    assert holders(a) == ["new1"]
    # and after another reboot, gc --previous-boots at boot works as docs/gc.md says
    a.add("new2")
    a.reboot()
    a.ipamctl("gc", "--previous-boots", "--grace", "0", "--ignore-netns", "--apply")
    assert holders(a) == []


def test_the_conflict_stands_while_the_quiet_host_holds_leases_until_claimed(tmp_path, pool):
    a, b = clones(tmp_path, pool)
    in_conflict(a, b)
    # B stops calling: its pods (and leases) may still live, so the conflict stands
    age(b, node_boots.ACTIVE_WINDOW + 60)
    _, err = a.add("a3")
    assert b.boot_id in err
    out, _ = a.cni_gc("a1", "a2", "a3")
    assert out.status == 1 and b.boot_id in out.error["msg"]
    # B was reinstalled elsewhere: A takes the name back, and GC works again
    report = json.loads(a.ipamctl("-o", "json", "node", "claim").stdout)
    assert report["node"] == NODE and report["boot_id"] == a.boot_id
    assert [(x["boot_id"], x["leases"]) for x in report["dropped"]] == [(b.boot_id, 2)]
    _, err = a.add("a4")
    assert err == ""
    out, err = a.cni_gc("a1", "a2", "a3", "a4")
    assert (out.status, err) == (0, ""), (out, err)
    assert holders(a) == ["a1", "a2", "a3", "a4"]


def test_claim_is_refused_while_the_other_host_is_active(tmp_path, pool):
    a, b = clones(tmp_path, pool)
    in_conflict(a, b)
    proc = a.ipamctl("node", "claim", "--yes", expect=1)
    assert "not claimed" in proc.stderr and b.boot_id in proc.stderr
    # and a claim does not hide a host that is still running: its next call shows it
    age(b, node_boots.ACTIVE_WINDOW + 60)
    a.ipamctl("node", "claim", "--yes")
    b.add("b3")  # B's record is new again: as at its first call, A is the one to see
    out, _ = a.cni_gc("a1", "a2")
    assert out.status == 1 and b.boot_id in out.error["msg"]
    _, err = b.add("b4")
    assert a.boot_id in err and b.boot_id in err
    assert holders(a) == ["a1", "a2", "b1", "b2", "b3", "b4"]


def test_a_conflict_ends_once_the_other_host_is_gone_and_holds_nothing(tmp_path, pool):
    a, b = clones(tmp_path, pool)
    in_conflict(a, b)
    for cid in ("b1", "b2"):
        out, _ = b.call("DEL", cid)
        assert out.status == 0
    age(b, node_boots.ACTIVE_WINDOW + 60)
    _, err = a.add("a3")
    assert err == ""
    out, err = a.cni_gc("a1", "a2", "a3")
    assert (out.status, err) == (0, ""), (out, err)


def test_a_host_served_by_its_node_daemon_is_told_apart_too(tmp_path, pool):
    """The daemon stamps its own host's boot: B's calls go through B's daemon."""
    a, b = clones(tmp_path, pool)
    daemon = NodeDaemon(tmp_path, socket=tmp_path / "b.sock", env_extra=b.env)
    try:
        daemon.wait_ready()
        a.add("a1")
        b.add("b1", daemon=daemon)
        _, err = a.add("a2")
        assert b.boot_id in err
        _, err = b.add("b2", daemon=daemon)
        assert a.boot_id in err and "running the call in process" not in err
        out, err = b.call("GC", "gc", daemon=daemon, **{"cni.dev/valid-attachments": [
            {"containerID": "b1", "ifname": "eth0"}]})
        assert out.status == 1 and a.boot_id in out.error["msg"], (out, err)
        assert daemon.calls_served(3) >= 3
    finally:
        daemon.stop()
    assert holders(a) == ["a1", "a2", "b1", "b2"]
