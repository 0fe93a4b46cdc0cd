"""ipamctl network list / network forget, counts in tables, on every Store, through
click's CliRunner in process and through the installed ipamctl on SQLite and PostgreSQL."""
import fcntl
import ipaddress
import json
import os
import re
import subprocess

import pytest
from helpers import (
    IPAMCTL,
    checked,
    events,
    held,
    ipamctl,
    note,
    owners,
    put,
    run_plugin,
    sql,
    wait_queued,
)
from prometheus_client.parser import text_string_to_metric_families

from host_local_sqlite_cli.main import cli
from host_local_sqlite_cli.output import count, iso, table
from ipam.admin import network_admin
from ipam.admin.leases import AdminError

NETWORK_KEYS = {"network", "data_dir", "export", "ranges", "size", "leases", "last_seen"}
V6 = {"subnet": "fd00::/64"}
V4 = {"subnet": "10.1.2.0/24"}


# -- counts in tables -----------------------------------------------------------------
@pytest.mark.parametrize("n, text", [
    (0, "0"), (253, "253"), (16777214, "16777214"), (2 ** 32, "4294967296"),
    (2 ** 34, "2^34"), (2 ** 64, "2^64"), (2 ** 64 - 2, "2^64-2"), (2 ** 64 - 59, "2^64-59"),
    (2 ** 64 + 3, "2^64+3"), (2 ** 128 - 2, "2^128-2"), (2 ** 64 - 10 ** 6 + 1, "2^64-999999"),
    (3 * 2 ** 63, "~2^64.6"), (12345678901234, "~2^43.5"), (-(2 ** 64), "-2^64"),
])
def test_big_counts_print_as_powers_of_two(n, text):
    assert count(n) == text


def test_tables_format_counts_only(tmp_path):
    lines = table([{"a": 2 ** 64, "b": "18446744073709551616", "c": True, "d": None}],
                  ["a", "b", "c", "d"]).splitlines()
    assert lines[1].split() == ["2^64", "18446744073709551616", "True", "-"]


def test_ipv6_stats_table_is_narrow_and_json_exact(ctl, ctl_json, add):
    add("a", network="v6", ipam=V6)
    add("b", network="v4", ipam=V4)
    text = ctl("stats").stdout
    lines = text.splitlines()
    assert not re.search(r"\d{11}", text), text  # no 20-digit count widens it
    assert lines[2].split()[3:7] == ["2^64-2", "1", "0", "2^64-3"]
    assert lines[1].split()[3:7] == ["253", "1", "0", "252"]  # small counts unchanged
    rows = {r["network"]: r for r in ctl_json("stats")}
    assert (rows["v6"]["size"], rows["v6"]["free"]) == (2 ** 64 - 2, 2 ** 64 - 3)
    text = ctl("network", "list").stdout
    assert text.splitlines()[2].split()[:3] == ["v6", "1", "2^64-2"]
    assert not re.search(r"\d{11}", text), text


# -- the library, on every Store -------------------------------------------------------
def test_store_counts_times_and_forgets(store, tmp_path):
    note(store, "n", tmp_path, "10.1.2.0/24")
    put(store, "n", "10.1.2.5", "a")
    put(store, "n", "10.1.2.6", "b")
    with store.transaction():
        store.set_last_reserved("n", 0, ipaddress.ip_address("10.1.2.6"))
        store.set_mirror_stamp("n", "1:2:3:4")
        assert store.lease_counts("n") == {store.node: 2}
        assert store.lease_counts("other") == {}
        recorded, newest = store.network_times("n")
        assert newest == max(e.time for e in store.history("n"))
        assert recorded is None or recorded <= newest
        assert store.network_times("other") == (None, None)
    with store.transaction():
        for lease in store.leases("n"):
            store.release(lease, "forget")
        store.forget_network("n")
    with store.transaction():
        assert list(store.networks()) == []
        assert store.network_info("n") is None
        assert store.cursors("n") == {}
        assert store.mirror_stamp("n") is None
        assert [e.reason for e in store.history("n")] == ["add", "add", "forget", "forget"]


def test_networks_rows(store, tmp_path):
    note(store, "recorded", tmp_path, "10.1.2.0/29", export=False)
    put(store, "recorded", "10.1.2.2", "a")
    put(store, "imported", "10.9.0.2", "b")  # never ADDed by us: no ranges recorded
    rows = network_admin.networks(store)
    assert [set(r) for r in rows] == [NETWORK_KEYS] * 2
    imported, recorded = rows
    assert imported == {"network": "imported", "data_dir": None, "export": None,
                        "ranges": None, "size": None, "leases": 1,
                        "last_seen": imported["last_seen"]}
    assert recorded["ranges"] == ["10.1.2.1-10.1.2.6"]
    assert (recorded["data_dir"], recorded["export"], recorded["size"],
            recorded["leases"]) == (str(tmp_path), False, 5, 1)
    with store.transaction():
        newest = max(e.time for e in store.history("recorded"))
    assert recorded["last_seen"] >= newest


def test_forget_refuses_while_leases_are_held(store, tmp_path):
    note(store, "n", tmp_path, "10.1.2.0/24", export=False)
    put(store, "n", "10.1.2.5", "a")
    put(store, "n", "10.1.2.6", "b")
    with pytest.raises(AdminError, match="network n holds 2 leases; release them first, or "
                                         "forget it with --release"):
        network_admin.forget(store, "n", str(tmp_path))
    assert [r["leases"] for r in network_admin.networks(store)] == [2]
    with pytest.raises(AdminError, match="no network nosuch in the database"):
        network_admin.forget(store, "nosuch", str(tmp_path))
    released, removed, notes, others = network_admin.forget(store, "n", str(tmp_path),
                                                            release=True)
    assert owners([vars_of(x) for x in released]) == [("n", "10.1.2.5", "a", "eth0"),
                                                      ("n", "10.1.2.6", "b", "eth0")]
    assert (removed, notes, others) == ([], [], {})  # export off: no directory of ours
    assert network_admin.networks(store) == []


def vars_of(lease):
    return {"network": lease.network, "ip": str(lease.ip), "container_id": lease.container_id,
            "ifname": lease.ifname}


# -- ipamctl, in process ---------------------------------------------------------------
def test_network_list_table_and_json(ctl, ctl_json, add, delete, data_dir):
    add("a", network="v4", ipam=V4)
    add("b", network="v4", ipam=V4)
    add("c", network="v6", ipam=V6)
    delete("b", network="v4", ipam=V4)
    rows = ctl_json("network", "list")
    assert [set(r) for r in rows] == [NETWORK_KEYS] * 2
    v4, v6 = rows
    assert {k: v for k, v in v4.items() if k != "last_seen"} == {
        "network": "v4", "data_dir": str(data_dir), "export": True,
        "ranges": ["10.1.2.1-10.1.2.254"], "size": 253, "leases": 1}
    assert (v6["ranges"], v6["size"], v6["leases"]) == (
        ["fd00::1-fd00::ffff:ffff:ffff:ffff"], 2 ** 64 - 2, 1)
    # Last seen: the DEL, the network's newest event (later than its config's record).
    newest = sql(data_dir, "SELECT max(time) FROM history WHERE network = 'v4'")[0][0]
    assert v4["last_seen"] == iso(newest)
    lines = ctl("network", "list").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "LEASES", "SIZE", "RANGES", "EXPORT", "DATA_DIR",
                                "LAST_SEEN"]
    assert lines[1].split() == ["v4", "1", "253", "10.1.2.1-10.1.2.254", "yes", str(data_dir),
                                iso(newest)]


def test_network_list_empty(ctl, ctl_json, add, delete):
    add("a")
    delete("a")
    sql_free = ctl_json("network", "list")
    assert [r["leases"] for r in sql_free] == [0]  # still known: forget removes it
    ctl("network", "forget", "mynet")
    result = ctl("network", "list")
    assert (result.stdout, result.stderr) == ("", "(no networks)\n")
    assert ctl_json("network", "list") == []


def test_forget_refused_changes_nothing(ctl, add, data_dir):
    add("a")
    add("b")
    before = (sql(data_dir, "SELECT * FROM networks"), sql(data_dir, "SELECT * FROM cursors"),
              held(data_dir), events(data_dir), sorted(os.listdir(data_dir / "mynet")))
    result = ctl("network", "forget", "mynet", expect=1)
    assert result.stderr == ("Error: network mynet holds 2 leases; release them first, or "
                             "forget it with --release\n")
    assert (sql(data_dir, "SELECT * FROM networks"), sql(data_dir, "SELECT * FROM cursors"),
            held(data_dir), events(data_dir), sorted(os.listdir(data_dir / "mynet"))) == before
    result = ctl("network", "forget", "nosuch", expect=1)
    assert result.stderr == "Error: no network nosuch in the database\n"
    assert ctl("network", "forget", expect=2).stderr.startswith("Usage: ")


@pytest.mark.parametrize("args", [["network", "list"], ["network", "forget", "mynet"],
                                  ["network", "forget", "mynet", "--release", "--yes"]])
def test_network_commands_never_create_a_database(runner, tmp_path, args):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    for options in (["--data-dir", str(empty)], ["--data-dir", str(missing)]):
        result = checked(runner.invoke(cli, [*options, *args]))
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: database "), result.stderr
        assert "does not exist" in result.stderr
        assert os.listdir(empty) == []
        assert not missing.exists()


def test_forget_release_removes_records_files_and_gauges(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    add("c", network="other")
    answer = ctl_json("network", "forget", "mynet", "--release")
    assert owners(answer["released"]) == [("mynet", "10.1.2.2", "a", "eth0"),
                                          ("mynet", "10.1.2.3", "b", "eth0")]
    mine = data_dir / "mynet"
    assert (answer["network"], answer["forgotten"], answer["others"]) == ("mynet", True, {})
    assert sorted(answer["removed"]) == sorted([str(mine / "last_reserved_ip.0"),
                                                str(mine / "lock"), str(mine)])
    assert not mine.exists()
    assert not [n for n in os.listdir(data_dir) if "pending" in n]
    for table_ in ("networks", "cursors", "mirror_stamps", "leases"):
        assert sql(data_dir, f"SELECT * FROM {table_} WHERE network = 'mynet'") == [], table_
    # The history stays: the audit log says who held what, and that it was forgotten.
    assert [e[:2] for e in events(data_dir) if e[2] == "mynet"] == [
        ("allocate", "add"), ("allocate", "add"), ("release", "forget"), ("release", "forget")]
    assert [r["network"] for r in ctl_json("stats")] == ["other"]
    assert [r["network"] for r in ctl_json("network", "list")] == ["other"]
    text = ctl("-o", "prometheus", "stats").stdout
    assert {s.labels["network"] for f in text_string_to_metric_families(text)
            for s in f.samples} == {"other"}
    assert ctl_json("check") == {"ok": True, "problems": [], "findings": []}
    # A network of the same name later is a new one: the plugin starts it afresh.
    assert add("d") == ["10.1.2.2"]


def test_forget_leaves_what_is_not_ours(ctl, add, delete, data_dir):
    add("a")
    delete("a")
    mine = data_dir / "mynet"
    (mine / "README").write_text("an operator's note")
    result = ctl("network", "forget", "mynet")
    assert f"warning: left {mine}: it holds files that are not ours (README)" in result.stderr
    assert sorted(os.listdir(mine)) == ["README", "lock"]
    assert sql(data_dir, "SELECT * FROM networks") == []


def test_forget_adopts_a_foreign_lease_first_and_is_refused(ctl, add, delete, data_dir):
    """A file naming an owner (another writer's lease, e.g. Go host-local's) is a lease
    like any other: forgetting is refused, and with --release it goes as release would."""
    add("a")
    delete("a")
    foreign = data_dir / "mynet" / "10.1.2.50"
    foreign.write_bytes(b"gocontainer\r\neth0")
    result = ctl("network", "forget", "mynet", expect=1)
    assert "network mynet holds 1 lease;" in result.stderr
    assert foreign.read_bytes() == b"gocontainer\r\neth0"
    assert held(data_dir) == []  # the adoption rolled back with the refusal
    result = ctl("-o", "json", "network", "forget", "mynet", "--release")
    assert owners(json.loads(result.stdout)["released"]) == [
        ("mynet", "10.1.2.50", "gocontainer", "eth0")]
    assert not (data_dir / "mynet").exists()


def test_forget_asks_on_a_terminal_unless_yes(ctl, add, data_dir, monkeypatch):
    monkeypatch.setattr("host_local_sqlite_cli.network.is_terminal", lambda: True)
    add("a")
    result = ctl("network", "forget", "mynet", "--release", input="n\n", expect=1)
    assert "Forget network mynet and release its 1 lease(s)?" in result.output
    assert held(data_dir) == [("mynet", "10.1.2.2", "a", "eth0")]
    result = ctl("network", "forget", "mynet", "--release", "--yes", input="")
    assert "?" not in result.output
    assert held(data_dir) == []
    assert sql(data_dir, "SELECT * FROM networks") == []


# -- the installed ipamctl --------------------------------------------------------------
def test_installed_ipamctl_network_list_and_forget(data_dir, netconf):
    conf = netconf(V6, name="v6")
    assert run_plugin("ADD", conf, container_id="a").status == 0
    rows = json.loads(ipamctl("-o", "json", "network", "list", data_dir=data_dir).stdout)
    assert [(r["network"], r["size"], r["leases"]) for r in rows] == [("v6", 2 ** 64 - 2, 1)]
    assert "2^64-2" in ipamctl("stats", data_dir=data_dir).stdout
    proc = ipamctl("network", "forget", "v6", data_dir=data_dir, expect=1)
    assert proc.stderr.startswith("Error: network v6 holds 1 lease; ")
    proc = ipamctl("network", "forget", "v6", "--release", data_dir=data_dir)
    assert proc.stdout.endswith("forgot network v6\n")
    proc = ipamctl("network", "list", data_dir=data_dir)
    assert (proc.stdout, proc.stderr) == ("", "(no networks)\n")
    assert ipamctl("-o", "prometheus", "stats", data_dir=data_dir).stdout.count("v6") == 0
    assert not (data_dir / "v6").exists()


def test_installed_ipamctl_network_forget_on_postgresql(pg_server, pg_url, tmp_path):
    """A shared pool's records are every node's, and each node's mirror its own: each
    node releases its own leases, and the last one's run removes the records."""
    dirs = {n: tmp_path / n for n in ("a", "b")}

    def conf(node):
        return {"cniVersion": "1.0.0", "name": "shared", "type": "bridge",
                "ipam": {"type": "host-local-sqlite", "subnet": "10.60.0.0/16",
                         "dataDir": str(dirs[node]), "database": pg_url, "node": node}}

    for node, cid in (("a", "a1"), ("a", "a2"), ("b", "b1")):
        assert run_plugin("ADD", conf(node), container_id=cid).status == 0
    rows = json.loads(ipamctl("-o", "json", "network", "list", database=pg_url).stdout)
    assert [(r["network"], r["leases"], r["size"]) for r in rows] == [("shared", 3, 65533)]
    rows = json.loads(ipamctl("--node", "b", "-o", "json", "network", "list",
                              database=pg_url).stdout)
    assert [r["leases"] for r in rows] == [1]

    a = ["--node", "a", "--data-dir", str(dirs["a"])]
    b = ["--node", "b", "--data-dir", str(dirs["b"])]
    proc = ipamctl(*a, "network", "forget", "shared", database=pg_url, expect=1)
    assert proc.stderr == ("Error: network shared holds 2 leases here; release them first, "
                           "or forget it with --release\n")
    rows = json.loads(ipamctl("-o", "json", "list", database=pg_url).stdout)
    assert len(rows) == 3  # nothing changed
    assert sorted(os.listdir(dirs["a"] / "shared")) == [
        "10.60.0.2", "10.60.0.3", "last_reserved_ip.0", "lock"]

    # a's part: its leases and its directory go; b's lease keeps the records.
    proc = ipamctl(*a, "-o", "json", "network", "forget", "shared", "--release", database=pg_url)
    answer = json.loads(proc.stdout)
    assert (answer["forgotten"], answer["others"]) == (False, {"b": 1})
    assert owners(answer["released"]) == [("shared", "10.60.0.2", "a1", "eth0"),
                                          ("shared", "10.60.0.3", "a2", "eth0")]
    assert "network shared still holds leases of other nodes: b (1)" in proc.stderr
    assert not (dirs["a"] / "shared").exists()
    rows = json.loads(ipamctl("-o", "json", "network", "list", database=pg_url).stdout)
    assert [(r["network"], r["leases"]) for r in rows] == [("shared", 1)]
    proc = ipamctl(*a, "network", "forget", "shared", database=pg_url, expect=1)
    assert proc.stderr == ("Error: network shared holds leases of other nodes: b (1); run "
                           "'ipamctl network forget shared --release' on each of them (the "
                           "last one removes the records)\n")

    # b's part, the last: the records go, from every view.
    answer = json.loads(ipamctl(*b, "-o", "json", "network", "forget", "shared", "--release",
                                database=pg_url).stdout)
    assert (answer["forgotten"], answer["others"]) == (True, {})
    assert owners(answer["released"]) == [("shared", "10.60.0.4", "b1", "eth0")]
    assert not (dirs["b"] / "shared").exists()
    assert json.loads(ipamctl("-o", "json", "network", "list", database=pg_url).stdout) == []
    assert json.loads(ipamctl("-o", "json", "stats", database=pg_url).stdout) == []
    assert "shared" not in ipamctl("-o", "prometheus", "stats", database=pg_url).stdout
    for table_ in ("networks", "cursors", "mirror_stamps", "leases"):
        assert pg_server.sql(pg_url, f"SELECT count(*) FROM {table_}") == [(0,)], table_
    reasons = pg_server.sql(pg_url, "SELECT reason, container_id FROM history "
                                    "WHERE event = 'release' ORDER BY id")
    assert reasons == [("forget", "a1"), ("forget", "a2"), ("forget", "b1")]


def test_installed_forget_waits_for_host_locals_lock(data_dir, netconf):
    """While someone holds ``<network>/lock`` (as Go host-local does for a whole
    command), forget changes nothing; when the holder lets go, it carries on."""
    assert run_plugin("ADD", netconf(V4), container_id="a").status == 0
    mine = data_dir / "mynet"
    before = sorted(os.listdir(mine))
    fd = os.open(mine / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen([IPAMCTL, "--data-dir", str(data_dir), "network", "forget",
                                 "mynet", "--release"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        wait_queued(mine / "lock", proc.pid, polling=True)
        assert proc.poll() is None, proc.communicate()
        assert sorted(os.listdir(mine)) == before
        assert held(data_dir) == [("mynet", "10.1.2.2", "a", "eth0")]
    finally:
        os.close(fd)  # closing drops the flock
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.endswith("forgot network mynet\n")
    assert held(data_dir) == [] and not mine.exists()
