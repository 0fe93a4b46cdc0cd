"""Leases that say whose they are: the identity runtimes send in CNI_ARGS, recorded by the
installed plugin and shown, filtered and found by prefix through the installed ipamctl;
on SQLite and on a shared PostgreSQL pool, and through the upgrade of a 0005 database.
Usage errors that need no database run in process (CliRunner)."""
import json
import os
import sqlite3
import subprocess

import pytest
from click.testing import CliRunner
from helpers import PLUGIN, cni_env, ipamctl, js, run_plugin, upgrade_pg_to

from host_local_sqlite_cli.main import cli
from ipam import addr, paths
from ipam.store import migrate, schema_version

SUBNET = {"subnet": "10.1.2.0/24"}
CRI = ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
       "K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=6d1c1e0a-96a4-4ad4-9d0c-3b9a2f0c1e11")
PODMAN = "IgnoreUnknown=1;K8S_POD_NAME={name}"
UID = "6d1c1e0a-96a4-4ad4-9d0c-3b9a2f0c1e11"
# Runtime-sized IDs: 64 hex characters; the first two share their first 12.
WEB = "3f2a9c01b2c4" + "0" * 52
NGINX = "3f2a9c01b2c4" + "1" * 52
DB = "77d1e5" + "2" * 58



def add(conf, cid, args=None, ifname="eth0"):
    out = run_plugin("ADD", conf, container_id=cid, ifname=ifname, args=args)
    assert out.status == 0, out
    return out


def pods(rows):
    return [(r["container_id"], r["pod_namespace"], r["pod_name"], r["pod_uid"]) for r in rows]


@pytest.fixture
def pool(netconf, data_dir):
    """Three leases by the installed plugin: a CRI pod, a podman container, and one
    whose runtime sent no identity."""
    conf = netconf(SUBNET)
    add(conf, WEB, CRI.format(cid=WEB))
    add(conf, NGINX, PODMAN.format(name="nginx"))
    add(conf, DB)
    return conf


def test_add_records_the_identity_and_list_shows_and_filters_it(pool, data_dir):
    assert pods(js("list", data_dir=data_dir)) == [
        (WEB, "default", "web-0", UID), (NGINX, None, "nginx", None), (DB, None, None, None)]
    lines = ipamctl("list", data_dir=data_dir).stdout.splitlines()
    assert lines[0].split()[-1] == "POD"
    # Each ID's start, marked: 12 characters as podman shows them, 13 where 12 start two
    # IDs; the pod as NS/NAME, NAME or -.
    assert [(line.split()[2], line.split()[-1]) for line in lines[1:]] == [
        (WEB[:13] + "...", "default/web-0"), (NGINX[:13] + "...", "nginx"),
        (DB[:12] + "...", "-")]

    def ids(*args):
        return [r["container_id"] for r in js("list", *args, data_dir=data_dir)]

    assert ids("--pod", "default/web-0") == [WEB]
    assert ids("--pod", "nginx") == [NGINX]          # as the POD column shows it
    assert ids("--pod", "other/web-0") == []
    assert ids("--pod", "web-0") == []               # web-0 has a namespace
    assert ids("--name", "web-0") == [WEB]           # whatever the namespace
    assert ids("--name", "nginx") == [NGINX]
    assert ids("--name", "nginx", "--network", "other") == []
    proc = ipamctl("list", "--name", "nosuch", data_dir=data_dir)
    assert (proc.stdout, proc.stderr) == ("", "(no leases)\n")


def test_history_carries_the_identity_on_allocate_and_release(pool, data_dir):
    assert run_plugin("DEL", pool, container_id=WEB).status == 0  # DEL sends no identity
    ipamctl("release", "--container", NGINX, "--yes", data_dir=data_dir)
    # the list names no lease: gc's guard wants --force to release the network's last one
    ipamctl("gc", "--network", "mynet", "--valid", "nothing", "--grace", "0", "--apply",
            "--force", data_dir=data_dir)
    rows = js("history", data_dir=data_dir)
    assert [(r["event"], r["reason"], r["container_id"], r["pod_namespace"], r["pod_name"],
             r["pod_uid"]) for r in rows] == [
        ("allocate", "add", WEB, "default", "web-0", UID),
        ("allocate", "add", NGINX, None, "nginx", None),
        ("allocate", "add", DB, None, None, None),
        ("release", "del", WEB, "default", "web-0", UID),
        ("release", "admin", NGINX, None, "nginx", None),
        ("release", "gc", DB, None, None, None)]
    assert [r["event"] for r in js("history", "--pod", "default/web-0", data_dir=data_dir)] == [
        "allocate", "release"]
    assert [r["reason"] for r in js("history", "--name", "nginx", data_dir=data_dir)] == [
        "add", "admin"]
    lines = ipamctl("history", "--name", "web-0", data_dir=data_dir).stdout.splitlines()
    assert lines[0].split()[-1] == "POD"
    assert [line.split()[-1] for line in lines[1:]] == ["default/web-0"] * 2


def test_container_prefix_unique_ambiguous_and_none(pool, data_dir):
    def ids(command, *args, expect=0):
        return [r["container_id"] for r in js(command, *args, data_dir=data_dir,
                                              expect=expect)]

    # Reading: unique among the items, marked or not; podman's 12 characters are not
    # enough here, 13 are; a full ID works. An unmarked start is said on stderr.
    assert ids("list", "--container", "77d1e5") == [DB]
    assert ids("list", "--container", "77d1e5...") == [DB]
    assert ids("list", "--container", WEB[:13]) == [WEB]
    assert ids("list", "--container", NGINX) == [NGINX]
    assert ids("history", "--container", "77d1") == [DB]
    proc = ipamctl("list", "--container", "77d1", data_dir=data_dir)
    assert proc.stderr == "note: --container 77d1 chose container %s: the start of its ID\n" % DB
    assert ipamctl("list", "--container", DB, data_dir=data_dir).stderr == ""
    # Unique among what the other options keep.
    assert ids("list", "--container", "3f2a", "--name", "nginx") == [NGINX]
    # None: an empty answer, as for an unknown full ID.
    assert ids("list", "--container", "ffff") == []
    assert ids("history", "--container", "ffff") == []

    for command, text, where in (
            (["list"], WEB[:12], ""), (["history"], WEB[:12], ""),
            (["list"], WEB[:12] + "...", ""), (["history"], WEB[:12] + "...", ""),
            (["release", "--yes"], WEB[:12] + "...", " in the database"),
            (["release", "--dry-run"], WEB[:12] + "...", " in the database"),
            (["release", "--yes", "--ifname", "eth0", "--network", "mynet"],
             WEB[:12] + "...", " in the database")):
        proc = ipamctl(*command, "--container", text, data_dir=data_dir, expect=1)
        assert proc.stderr.splitlines() == [
            "Error: container ID prefix %s is ambiguous: 2 containers%s match; give more "
            "characters" % (text, where),
            "  %s  (default/web-0)" % WEB,
            "  %s  (nginx)" % NGINX], command
    # Changing: an unmarked start is no ID, and says how to mark one.
    proc = ipamctl("release", "--container", "77d", "--yes", data_dir=data_dir, expect=1)
    assert proc.stderr.splitlines() == [
        "Error: no lease held by container 77d",
        "  an ID is taken whole; to name the one container whose ID starts with 77d, "
        "write 77d... (IDs that start with it: %s)" % DB]
    # Nothing was released by the refused releases.
    assert len(js("list", data_dir=data_dir)) == 3
    assert sorted(os.listdir(data_dir / "mynet")) == sorted(
        ["10.1.2.2", "10.1.2.3", "10.1.2.4", "last_reserved_ip.0", "lock"])

    proc = ipamctl("release", "--container", "ffff", "--yes", data_dir=data_dir, expect=1)
    assert proc.stderr == "Error: no lease held by container ffff\n"
    proc = ipamctl("release", "--container", "ffff...", "--yes", data_dir=data_dir, expect=1)
    assert proc.stderr == "Error: no container ID starts with ffff\n"
    released = js("release", "--container", "77d...", "--yes", data_dir=data_dir)
    assert pods(released) == [(DB, None, None, None)]
    assert not (data_dir / "mynet" / "10.1.2.4").exists()
    assert [r["container_id"] for r in js("list", data_dir=data_dir)] == [WEB, NGINX]
    # A released container's history is still found by its prefix.
    assert [r["event"] for r in js("history", "--container", "77d", data_dir=data_dir)] == [
        "allocate", "release"]


def test_a_whole_id_is_never_ambiguous(netconf, data_dir):
    conf = netconf(SUBNET)
    add(conf, "abc")
    add(conf, "abcd")
    assert [r["container_id"] for r in js("list", "--container", "abc",
                                          data_dir=data_dir)] == ["abc"]
    assert [r["container_id"] for r in js("list", "--container", "abcd",
                                          data_dir=data_dir)] == ["abcd"]
    ipamctl("list", "--container", "ab", data_dir=data_dir, expect=1)


def test_the_plugin_output_is_the_same_byte_for_byte(netconf, tmp_path):
    """The identity is for ipamctl: no runtime sees a difference in the CNI result."""
    outs = []
    for args in (None, "IgnoreUnknown=1", CRI.format(cid=WEB), PODMAN.format(name="nginx")):
        data_dir = tmp_path / str(len(outs))
        conf = netconf(dict(SUBNET, dataDir=str(data_dir)))
        outs.append([run_plugin(cmd, conf, container_id=WEB, args=args).out
                     for cmd in ("ADD", "ADD", "CHECK", "DEL")])
    assert outs[0][0].startswith("{") and all(out == outs[0] for out in outs)


def test_a_repeated_add_gives_an_unnamed_lease_the_identity_it_brings(netconf, data_dir):
    conf = netconf(SUBNET)
    # A lease host-local wrote (adopted on first contact), and one made without identity.
    (data_dir / "mynet").mkdir()
    (data_dir / "mynet" / "10.1.2.7").write_bytes(WEB.encode() + b"\r\neth0")
    add(conf, DB)
    assert pods(js("list", data_dir=data_dir)) == [(DB, None, None, None),
                                                   (WEB, None, None, None)]
    add(conf, WEB, CRI.format(cid=WEB))
    add(conf, DB, PODMAN.format(name="db"))
    add(conf, DB, PODMAN.format(name="renamed"))  # the first identity recorded stays
    assert pods(js("list", data_dir=data_dir)) == [(DB, None, "db", None),
                                                   (WEB, "default", "web-0", UID)]
    assert [r["reason"] for r in js("history", data_dir=data_dir)] == ["adopt", "add"]
    assert run_plugin("DEL", conf, container_id=WEB).status == 0
    assert pods(js("history", "--container", WEB, data_dir=data_dir)) == [
        (WEB, None, None, None), (WEB, "default", "web-0", UID)]


def test_unknown_pod_keys_without_ignore_unknown_are_code_4_and_change_nothing(
        netconf, data_dir):
    conf = netconf(SUBNET)
    add(conf, DB)
    before = sorted(os.listdir(data_dir / "mynet"))
    out = run_plugin("ADD", conf, container_id=WEB, args="K8S_POD_NAME=web-0")
    assert (out.status, out.json["code"], out.json["msg"]) == (
        1, 4, 'ARGS: unknown args ["K8S_POD_NAME=web-0"]'), out
    assert [r["container_id"] for r in js("list", data_dir=data_dir)] == [DB]
    assert sorted(os.listdir(data_dir / "mynet")) == before


@pytest.mark.parametrize("args,pod,warning", [
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + "n" * 2000,
     ("default", None), "K8S_POD_NAME not recorded: 2000 characters long"),
    ("IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_UID=a\tb", (None, "web-0"),
     'K8S_POD_UID not recorded: unprintable characters: "a\\tb"'),
])
def test_a_value_no_runtime_sends_is_not_recorded_and_the_add_succeeds(
        netconf, data_dir, args, pod, warning):
    """host-local ignores the keys, so the ADD gives the same result as without them;
    only the value we cannot keep is left out, said on stderr."""
    conf = netconf(SUBNET)
    env = dict({"PATH": os.environ.get("PATH", "")},
               **cni_env("ADD", container_id=WEB, args=args))
    proc = subprocess.run([PLUGIN], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc
    assert warning in proc.stderr.decode()
    plain = run_plugin("ADD", netconf(SUBNET, name="other"), container_id=WEB)
    assert json.loads(proc.stdout)["ips"] == plain.json["ips"]
    row, = js("list", "--network", "mynet", data_dir=data_dir)
    assert (row["pod_namespace"], row["pod_name"]) == pod
    assert run_plugin("DEL", conf, container_id=WEB, args=args).status == 0
    assert js("list", "--network", "mynet", data_dir=data_dir) == []


@pytest.mark.parametrize("args,msg", [
    (["list", "--pod", "/web"], "is not NAMESPACE/NAME or NAME"),
    (["list", "--pod", "default/"], "is not NAMESPACE/NAME or NAME"),
    (["history", "--pod", ""], "is not NAMESPACE/NAME or NAME"),
    (["list", "--name", ""], "must not be empty"),
    (["list", "--container", ""], "must not be empty"),
    (["history", "--container", ""], "must not be empty"),
    (["release", "--container", ""], "must not be empty"),
    (["list", "--container", "..."], "names no container"),
    (["release", "--container", "..."], "names no container"),
    (["list", "--pod", '"web'], "a quoted part must be a JSON string"),
    (["list", "--pod", 'default/"web"x'], "is not NAMESPACE/NAME or NAME"),
    (["list", "--name", "kube-system/coredns"], "is not a NAME"),
])
def test_empty_or_malformed_filters_are_usage_errors(tmp_path, args, msg):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert msg in result.stderr and "Traceback" not in result.output


# -- a database of revision 0005 -------------------------------------------------------
def _old_lease(execute, ip, cid):
    """A lease as revision 0005 wrote it: no identity columns exist yet."""
    execute("INSERT INTO leases (network, ip, ip_key, next_free, range_set, container_id, "
            "ifname, allocated_at) VALUES ('mynet', '%s', %s, true, 0, '%s', 'eth0', 1.0)"
            % (ip, "X'%s'" % addr.to_key(addr.parse_ip(ip)).hex(), cid))


def test_a_0005_sqlite_database_upgrades_in_place_and_reads_nulls(netconf, data_dir):
    from alembic import command

    db = paths.default_database(str(data_dir))
    migrate.upgrade(db)  # creates the file as the plugin would, then back to 0005
    command.downgrade(migrate.alembic_config("sqlite:///" + db), "0005")
    assert migrate.current(db) == "0005"
    conn = sqlite3.connect(db)
    with conn:
        _old_lease(conn.execute, "10.1.2.9", "old")
    conn.close()
    ipamctl("list", data_dir=data_dir, expect=1)  # read-only: says to upgrade, writes nothing
    assert migrate.current(db) == "0005"
    add(netconf(SUBNET), WEB, CRI.format(cid=WEB))  # the plugin upgrades it itself
    assert migrate.current(db) == schema_version.HEAD
    assert pods(js("list", data_dir=data_dir)) == [(WEB, "default", "web-0", UID),
                                                   ("old", None, None, None)]
    assert pods(js("history", data_dir=data_dir)) == [(WEB, "default", "web-0", UID)]


def test_a_0005_postgresql_pool_upgrades_and_a_shared_add_records_the_identity(
        pg_url, pg_server, tmp_path):
    upgrade_pg_to(pg_url, "0005")
    _old_lease(lambda sql: pg_server.sql(pg_url, sql.replace("X'", "'\\x")), "10.1.2.9", "old")
    conf = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "subnet": "10.1.2.0/24", "database": pg_url,
                     "dataDir": str(tmp_path / "a"), "node": "node-a"}}
    add(conf, WEB, CRI.format(cid=WEB))
    conf["ipam"].update(dataDir=str(tmp_path / "b"), node="node-b")
    add(conf, NGINX, PODMAN.format(name="nginx"))
    assert migrate.current(pg_url) == schema_version.HEAD
    rows = js("list", database=pg_url, data_dir=tmp_path / "a")
    assert [(r["node"], *p) for r, p in zip(rows, pods(rows), strict=True)] == [
        ("node-a", WEB, "default", "web-0", UID), ("node-b", NGINX, None, "nginx", None),
        (None, "old", None, None, None)]
    assert [r["container_id"] for r in js("list", "--name", "nginx", database=pg_url)] == [
        NGINX]
    proc = ipamctl("history", "--container", "3f2a", database=pg_url, expect=1)
    assert "(default/web-0)" in proc.stderr and "(nginx)" in proc.stderr
    assert run_plugin("DEL", conf, container_id=NGINX).status == 0
    assert pods(js("history", "--name", "nginx", database=pg_url)) == [
        (NGINX, None, "nginx", None)] * 2
