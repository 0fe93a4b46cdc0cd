"""The installed ``host-local-sqlite`` run as a runtime runs it, across every cniVersion."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from helpers import (
    PLUGIN,
    VERSIONS,
    cni_env,
    note_plugin_run,
    plugin_program,
    run_inprocess,
    run_plugin,
)

from ipam import paths, system

DUAL = {"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
                   [{"subnet": "2001:db8:1::0/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"},
                   {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
                   {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"}]}


def leases(data_dir):
    db = sqlite3.connect(str(data_dir / paths.DB_NAME))
    try:
        return db.execute("SELECT network, ip, container_id, ifname FROM leases "
                          "ORDER BY network, ip_key").fetchall()
    finally:
        db.close()


# The tests that start plugin processes run through each entry path (conftest's through).
through_daemon = pytest.mark.usefixtures("through")


@through_daemon
@pytest.mark.not_through("daemon-stopped-and-killed", why=(
    "one call at a time, for each version's answer: a call the chaos sends back in "
    "process answers as the in-process path does"))
@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_every_version(version, data_dir, netconf, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.3\n")
    single = {"subnet": "10.1.2.0/24", "resolvConf": str(resolv),
              "routes": [{"dst": "0.0.0.0/0"}]}
    ipam = single if version in ("0.1.0", "0.2.0") else dict(DUAL, resolvConf=str(resolv))
    conf = netconf(ipam, version=version)
    add = run_plugin("ADD", conf)
    assert add.status == 0, add.out
    assert not add.out.endswith("\n") and add.out.startswith('{\n    "cniVersion": ')
    res = add.json
    assert res["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert res["ip4"] == {"ip": "10.1.2.2/24", "gateway": "10.1.2.1",
                              "routes": [{"dst": "0.0.0.0/0"}]}
    else:
        assert [i["address"] for i in res["ips"]] == ["10.1.2.2/24", "2001:db8:1::2/64"]
        assert [i["gateway"] for i in res["ips"]] == ["10.1.2.1", "2001:db8:1::1"]
        assert ("version" in res["ips"][0]) == (version < "1.0.0")
        assert len(res["routes"]) == 4
    assert res["dns"] == {"nameservers": ["192.0.2.3"]}
    net = data_dir / "mynet"
    assert (net / "10.1.2.2").read_bytes() == b"dummy\r\neth0"
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
    assert (net / "lock").exists()
    assert oct((net / "10.1.2.2").stat().st_mode & 0o777) == "0o600"
    if version >= "0.4.0":
        assert run_plugin("CHECK", conf).status == 0
        assert run_plugin("CHECK", conf, container_id="zz").json == {
            "code": 999, "msg": "host-local: Failed to find address added by container zz"}
    assert (run_plugin("DEL", conf).status, run_plugin("DEL", conf).out) == (0, "")
    assert leases(data_dir) == []
    assert sorted(p.name for p in net.iterdir()) == sorted(
        ["lock", "last_reserved_ip.0"] + ([] if version < "0.3.0" else ["last_reserved_ip.1"]))


def test_database_file_mode_and_location(data_dir, netconf, tmp_path):
    run_inprocess("ADD", netconf({"subnet": "10.1.2.0/24"}))
    db = data_dir / paths.DB_NAME
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    other = tmp_path / "elsewhere" / "pool.db"
    out = run_inprocess("ADD", netconf({"subnet": "10.1.2.0/24", "database": str(other),
                                        "adopt": False, "export": False}), container_id="b")
    assert out.json["ips"][0]["address"] == "10.1.2.2/24"  # a separate pool
    assert other.exists()
    # With the shared mirror, the other pool's file for .2 names another owner: skipped.
    out = run_inprocess("ADD", netconf({"subnet": "10.1.2.0/24", "database": str(other),
                                        "adopt": False}), container_id="c")
    assert out.json["ips"][0]["address"] == "10.1.2.3/24"


def test_export_false_writes_no_mirror(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24", "export": False})
    assert run_inprocess("ADD", conf).status == 0
    assert run_inprocess("CHECK", conf).status == 0
    assert run_inprocess("DEL", conf).status == 0
    assert not (data_dir / "mynet").exists()


def test_del_frees_lease_whatever_the_current_ranges(data_dir, netconf):
    run_inprocess("ADD", netconf({"subnet": "10.1.2.0/24"}))
    assert run_inprocess("DEL", netconf({"subnet": "10.7.0.0/16"})).status == 0
    assert leases(data_dir) == []
    assert not (data_dir / "mynet" / "10.1.2.2").exists()


def test_repeated_add_returns_the_same_result(data_dir, netconf):
    conf = netconf(DUAL)
    first = run_inprocess("ADD", conf)
    again = run_inprocess("ADD", conf)
    assert again.status == 0 and again.out == first.out
    assert len(leases(data_dir)) == 2


def test_requested_ips_from_all_sources(data_dir, netconf):
    conf = netconf({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]},
                   args={"cni": {"ips": ["2001:db8::99"]}})
    out = run_inprocess("ADD", conf, args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.60")
    assert [i["address"] for i in out.json["ips"]] == ["10.1.2.60/24", "2001:db8::99/64"]
    conf2 = netconf({"subnet": "10.1.2.0/24"}, name="other", runtimeConfig={"ips": ["10.1.2.62"]},
                    args={"cni": {"ips": ["10.1.2.61"]}})
    out = run_inprocess("ADD", conf2, container_id="c", args="IP=10.1.2.60")
    assert out.json["msg"] == "failed to allocate all requested IPs: 10.1.2.61 10.1.2.62"
    assert [row[1] for row in leases(data_dir)] == ["10.1.2.60", "2001:db8::99"]


def test_check_with_prev_result(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24"})
    add = run_inprocess("ADD", conf)
    good = dict(conf, prevResult=add.json)
    assert run_inprocess("CHECK", good).status == 0
    wrong = dict(conf, prevResult={"cniVersion": "1.0.0",
                                   "ips": [{"address": "10.1.2.77/24"}]})
    out = run_inprocess("CHECK", wrong)
    assert out.status == 1 and "10.1.2.77 in prevResult" in out.json["msg"]
    for bad in ("nope", {"ips": "x"}, {"ips": [{"address": "10.1.2"}]}, {"ips": [5]}):
        out = run_inprocess("CHECK", dict(conf, prevResult=bad))
        assert out.status == 1 and out.json["code"] == 7, out


def test_gc(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24"}, version="1.1.0")
    for cid in ("a", "b", "c"):
        assert run_inprocess("ADD", conf, container_id=cid).status == 0
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]})
    assert run_inprocess("GC", gc, container_id=None, ifname=None, netns=None).status == 0
    assert [row[2] for row in leases(data_dir)] == ["b"]
    assert sorted(p.name for p in (data_dir / "mynet").iterdir()) == [
        "10.1.2.3", "last_reserved_ip.0", "lock"]
    old_key = dict(conf, **{"cni.dev/attachments": []})
    assert run_inprocess("GC", old_key).status == 0
    assert leases(data_dir) == []
    assert run_inprocess("GC", conf).json["code"] == 7  # no list at all: refuse, release nothing


def test_status(data_dir, netconf):
    conf = netconf({"ranges": [[{"subnet": "10.1.2.0/24"}],
                               [{"subnet": "10.9.0.0/30"}]]}, version="1.1.0")
    assert run_inprocess("STATUS", conf).status == 0
    assert run_inprocess("ADD", conf).status == 0
    out = run_inprocess("STATUS", conf)
    assert out.json == {"code": 50, "msg": "no IP addresses available in range set 1: "
                                           "10.9.0.1-10.9.0.2"}


@through_daemon
def test_locked_database_is_code_11(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 0.2})
    assert run_inprocess("ADD", conf).status == 0
    holder = sqlite3.connect(str(data_dir / paths.DB_NAME), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        out = run_plugin("ADD", conf, container_id="b")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.status == 1 and out.json["code"] == 11
    assert "locked" in out.json["msg"] and paths.DB_NAME in out.json["msg"]
    assert run_plugin("ADD", conf, container_id="b").json["ips"][0]["address"] == "10.1.2.3/24"


def test_mirror_is_repaired_after_a_crash_between_commit_and_mirror(data_dir, netconf):
    conf = netconf({"subnet": "10.1.2.0/24"})
    run_inprocess("ADD", conf, container_id="a")
    net = data_dir / "mynet"
    # Simulate a process that died after writing files but before its COMMIT, and one
    # that died after COMMIT but before mirroring: a stale file, a missing file, a temp,
    # each in the journal (pending marker) the dead processes left.
    (data_dir / ".host-local-sqlite-pending-mynet").write_bytes(
        b"10.1.2.9 - %s\n10.1.2.2 %s -\n" % (b"ghost\r\neth0".hex().encode(),
                                           b"a\r\neth0".hex().encode()))
    (net / "10.1.2.9").write_bytes(b"ghost\r\neth0")
    (net / "10.1.2.2").unlink()
    (net / ".host-local-sqlite.tmp.10.1.2.7.1.1").write_bytes(b"x")
    (net / "notes.txt").write_bytes(b"a\r\neth0")  # foreign: left alone
    run_inprocess("ADD", conf, container_id="b")
    assert sorted(p.name for p in net.iterdir()) == [
        "10.1.2.2", "10.1.2.3", "last_reserved_ip.0", "lock", "notes.txt"]
    assert not (data_dir / ".host-local-sqlite-pending-mynet").exists()
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"


HEAVY = ("sqlalchemy", "alembic", "click")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL", "STATUS", "VERSION"])
def test_hot_path_imports_no_heavy_library(command, engine, data_dir, netconf, request):
    """No plugin call imports SQLAlchemy, alembic or click, on either engine, once the
    schema exists (the first call on a new database runs the migrations)."""
    ipam = {"subnet": "10.1.2.0/24"}
    if engine == "postgresql":
        ipam["database"] = request.getfixturevalue("pg_url")
    conf = netconf(ipam, version="1.1.0")
    assert run_inprocess("ADD", conf, container_id="warm").status == 0  # schema exists
    if command in ("CHECK", "DEL"):
        assert run_inprocess("ADD", conf).status == 0
    code = ("import sys, runpy; sys.argv=['host-local-sqlite']\n"
            "from ipam.cni import main\n"
            "status = main()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
            "sys.exit(status)\n" % (HEAVY,))
    env = dict(os.environ, **cni_env(command))
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(conf).encode(),
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert proc.stderr.decode().rsplit("HEAVY=", 1)[1] == ""


def test_console_script_has_no_metadata_lookup():
    with open(PLUGIN) as f:
        text = f.read()
    assert "importlib.metadata" not in text and "pkg_resources" not in text


def test_gc_goes_on_past_a_mirror_failure_and_reports_it(data_dir, netconf, monkeypatch):
    conf = netconf({"subnet": "10.1.2.0/24"}, version="1.1.0")
    for cid in ("a", "b", "c"):
        run_inprocess("ADD", conf, container_id=cid)
    real_unlink = system.unlink

    def failing_unlink(path, *a, **kw):
        if path == "10.1.2.2":
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(system, "unlink", failing_unlink)
    out = run_inprocess("GC", dict(conf, **{"cni.dev/valid-attachments": []}))
    monkeypatch.undo()
    assert out.status == 1 and out.json["code"] == 5
    assert "10.1.2.2" in out.json["msg"] and "Permission denied" in out.json["msg"]
    assert leases(data_dir) == []  # every lease released despite the failure
    net = data_dir / "mynet"
    assert not (net / "10.1.2.3").exists() and not (net / "10.1.2.4").exists()
    # The marker stays, so the next command repairs the file that could not go.
    assert (data_dir / ".host-local-sqlite-pending-mynet").exists()
    assert run_inprocess("ADD", conf, container_id="d").status == 0
    assert sorted(p.name for p in net.iterdir()) == ["10.1.2.5", "last_reserved_ip.0", "lock"]


@through_daemon
def test_concurrent_first_invocations_create_the_schema_once(data_dir, netconf):
    conf = json.dumps(netconf({"subnet": "10.1.2.0/24"})).encode()
    procs = []
    for n in range(12):
        env = dict(os.environ, **cni_env("ADD", container_id="c%d" % n))
        procs.append(subprocess.Popen([plugin_program()], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    for p in procs:
        p.stdin.write(conf)
        p.stdin.close()
    ended = []  # every process waited for before any is checked: none left running
    for p in procs:
        out = p.stdout.read()
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        ended.append((p.wait(60), out, err))
    outs = []
    for status, out, err in ended:
        assert status == 0, (out, err)
        note_plugin_run(os.environ, "ADD", err)
        outs.append(json.loads(out)["ips"][0]["address"])
    assert len(set(outs)) == 12
    assert len(leases(data_dir)) == 12
