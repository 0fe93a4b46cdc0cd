"""``ipamctl reserve`` / ``unreserve``: an address the plugin never hands out.

A reservation is a lease row owned by ``ipam:reserved`` (ipam/admin/reservations.py says why),
so these tests prove each place that must know it from a container's lease: the
allocator (a /29 filled by real plugin processes, and by Go host-local beside us), list,
stats, check, history, release, gc (ipamctl's and CNI GC), the mirror read back
(adoption, export, import), on SQLite and on a PostgreSQL pool shared by nodes."""
import json
import os

import pytest
from click.testing import CliRunner
from cniexec import GO_HOST_LOCAL
from cniexec import run as run_binary
from helpers import checked, ipamctl, run_inprocess, run_plugin

from host_local_sqlite_cli.main import cli
from ipam.lease import RESERVED_ID, note_problem
from ipam.mirror.importer import parse_content

SMALL = {"subnet": "10.1.2.0/29"}  # .1 the gateway, .2-.6 handed out
RESERVED_FILE = b"ipam:reserved\r\nrouter vm"

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


class Pool:
    """One network on one engine: ipamctl and the plugin in process, on ``data_dir``."""

    def __init__(self, data_dir, netconf, database=None, node=None):
        self.data_dir = data_dir
        self.database = database
        self.node = node
        ipam = dict(SMALL, **({"database": database} if database else {}))
        if node:
            ipam["node"] = node
        self.conf = netconf(ipam, name="mynet")

    def ctl(self, *args, expect=0, node=None):
        options = ["--data-dir", str(self.data_dir)]
        if self.database:
            options += ["--database", self.database]
        if node or self.node:
            options += ["--node", node or self.node]
        result = checked(CliRunner().invoke(cli, [*options, *args]))
        assert result.exit_code == expect, result.output
        return result

    def json(self, *args, node=None):
        return json.loads(self.ctl("-o", "json", *args, node=node).stdout)

    def add(self, cid, expect=0, **kw):
        out = run_inprocess("ADD", self.conf, container_id=cid, **kw)
        assert out.status == expect, out.out
        return out.json["ips"][0]["address"].split("/")[0] if expect == 0 else out.json

    def file(self, ip):
        path = self.data_dir / "mynet" / ip
        return path.read_bytes() if path.exists() else None

    def state(self):
        """Everything a refused command must leave as it was."""
        return (self.json("list"), [{k: v for k, v in e.items()} for e in self.json("history")],
                sorted(os.listdir(self.data_dir / "mynet")),
                {n: self.file(n) for n in os.listdir(self.data_dir / "mynet") if n[0] == "1"})


@pytest.fixture(params=ENGINES)
def pool(request, data_dir, netconf):
    database = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return Pool(data_dir, netconf, database)


def test_a_reserved_address_is_never_handed_out_and_shows_everywhere(pool):
    assert pool.add("a") == "10.1.2.2"
    made = pool.json("reserve", "10.1.2.3", "--network", "mynet", "--note", "router vm")
    assert [(r["ip"], r["kind"], r["note"], r["container_id"], r["ifname"]) for r in made] == [
        ("10.1.2.3", "reservation", "router vm", RESERVED_ID, "router vm")]
    assert pool.file("10.1.2.3") == RESERVED_FILE
    # The /29 filled: every address but the reserved one, then exhausted.
    assert [pool.add(c) for c in "bcd"] == ["10.1.2.4", "10.1.2.5", "10.1.2.6"]
    assert "no IP addresses available" in pool.add("e", expect=1)["msg"]
    assert "requested IP address 10.1.2.3 is not available" in pool.add(
        "f", expect=1, args="IP=10.1.2.3")["msg"]
    rows = pool.json("list")
    assert [(r["ip"], r["kind"]) for r in rows] == [
        ("10.1.2.2", "lease"), ("10.1.2.3", "reservation"), ("10.1.2.4", "lease"),
        ("10.1.2.5", "lease"), ("10.1.2.6", "lease")]
    assert [r["note"] for r in rows if r["kind"] == "lease"] == [None] * 4
    assert "ipam:reserved  router vm" in pool.ctl("list", "--ip", "10.1.2.3").stdout
    stats = pool.json("stats")
    assert [(s["size"], s["used"], s["reserved"], s["free"]) for s in stats] == [(5, 4, 1, 0)]
    assert pool.json("check") == {"ok": True, "problems": [], "findings": []}
    reserve = [e for e in pool.json("history") if e["ip"] == "10.1.2.3"]
    assert [(e["event"], e["reason"], e["container_id"]) for e in reserve] == [
        ("allocate", "reserve", RESERVED_ID)]


def test_release_and_gc_never_free_a_reservation_unreserve_does(pool):
    pool.add("a")
    pool.ctl("reserve", "10.1.2.4", "--network", "mynet")  # no note: a bare owner
    assert pool.file("10.1.2.4") == RESERVED_ID.encode()
    assert "is reserved in network mynet" in pool.ctl("release", "10.1.2.4", "--yes",
                                                      expect=1).output
    pool.ctl("release", "--container", RESERVED_ID, "--yes", expect=1)
    # ipamctl gc: a list naming no reservation, applied, forced past every guard.
    gone = pool.json("gc", "--valid", "zz", "--grace", "0", "--ignore-netns", "--apply",
                     "--force")
    assert [r["container_id"] for r in gone["released"]] == ["a"]
    # CNI GC with an empty list of attachments: every lease goes, no reservation.
    pool.add("b")
    conf = dict(pool.conf, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []})
    assert run_inprocess("GC", conf).status == 0
    assert [(r["ip"], r["kind"]) for r in pool.json("list")] == [("10.1.2.4", "reservation")]
    assert pool.file("10.1.2.4") == RESERVED_ID.encode()
    # unreserve: the file goes, the history says so, and the address is handed out again.
    assert "is not reserved" in pool.ctl("unreserve", "10.1.2.5", "--network", "mynet",
                                         expect=1).output
    pool.add("c", args="IP=10.1.2.5")
    assert "'ipamctl release' frees a lease" in pool.ctl(
        "unreserve", "10.1.2.5", "--network", "mynet", expect=1).output
    went = pool.json("unreserve", "10.1.2.4", "--network", "mynet")
    assert [(r["ip"], r["kind"]) for r in went] == [("10.1.2.4", "reservation")]
    assert pool.file("10.1.2.4") is None
    assert [(e["event"], e["reason"]) for e in pool.json("history", "--ip", "10.1.2.4")] == [
        ("allocate", "reserve"), ("release", "unreserve")]
    assert pool.add("d", args="IP=10.1.2.4") == "10.1.2.4"


def test_a_refused_reservation_changes_nothing(pool, netconf):
    pool.add("a")
    pool.ctl("reserve", "10.1.2.5", "--network", "mynet", "--note", "vm")
    before = pool.state()
    refusals = [
        (["10.1.2.2"], "is leased in network mynet to a interface eth0"),
        (["10.1.2.5"], "is already reserved in network mynet (vm)"),
        (["10.1.2.1"], "is the gateway of network mynet"),
        (["10.1.2.7"], "is in no range of network mynet (10.1.2.1-10.1.2.6)"),
        (["10.9.9.9"], "is in no range"),
        (["10.1.2.3", "--note", "two\nlines"], "one line of printable characters"),
        (["10.1.2.3", "--note", "x" * 201], "at most 200 characters"),
    ]
    for args, message in refusals:
        out = pool.ctl("reserve", *args, "--network", "mynet", expect=1).output
        assert out.startswith("Error: ") and message in out, (args, out)
        assert pool.state() == before
    unknown = pool.ctl("reserve", "10.1.2.3", "--network", "nosuch", expect=1).output
    assert "network nosuch has no recorded ranges" in unknown
    assert not (pool.data_dir / "nosuch").exists()
    pool.ctl("reserve", "not-an-ip", "--network", "mynet", expect=2)
    # An address the config excludes is never handed out: nothing to reserve.
    excluded = Pool(pool.data_dir, netconf, pool.database)
    excluded.conf = netconf(dict(excluded.conf["ipam"], exclude=["10.1.2.6"]), name="mynet")
    excluded.add("b")
    assert "is excluded in network mynet's config" in pool.ctl(
        "reserve", "10.1.2.6", "--network", "mynet", expect=1).output


def test_the_mirror_reads_a_reservation_back(pool, tmp_path, netconf):
    """A reservation file is one: adopted as a reservation from the mirror (an operator
    or a restore wrote it), never as a lease or removed; written back when removed;
    exported and imported as one."""
    pool.add("a")
    (pool.data_dir / "mynet" / "10.1.2.3").write_bytes(RESERVED_FILE)
    assert pool.add("b") == "10.1.2.4"  # reconciled first: .3 adopted, skipped
    row = [r for r in pool.json("list") if r["ip"] == "10.1.2.3"]
    assert [(r["kind"], r["note"]) for r in row] == [("reservation", "router vm")]
    assert pool.json("check") == {"ok": True, "problems": [], "findings": []}
    (pool.data_dir / "mynet" / "10.1.2.3").unlink()
    problems = json.loads(pool.ctl("-o", "json", "check", expect=1).stdout)["problems"]
    assert len(problems) == 1 and problems[0].endswith("/mynet/10.1.2.3: missing"), problems
    pool.ctl("check", "--repair")
    assert pool.file("10.1.2.3") == RESERVED_FILE
    # export to a directory, import it into another database: still a reservation.
    pool.ctl("export", "--to", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "mynet" / "10.1.2.3").read_bytes() == RESERVED_FILE
    other = tmp_path / "other"
    other.mkdir()
    fresh = Pool(other, netconf)
    fresh.ctl("import", "--from", str(tmp_path / "copy"))
    rows = fresh.json("list")
    assert [(r["ip"], r["kind"], r["note"]) for r in rows] == [
        ("10.1.2.2", "lease", None), ("10.1.2.3", "reservation", "router vm"),
        ("10.1.2.4", "lease", None)]
    assert fresh.json("gc", "--valid", "a", "--valid", "b", "--grace", "0",
                      "--ignore-netns")["candidates"] == []


def test_a_reservation_file_parses_as_its_owner():
    assert parse_content(b"ipam:reserved\r\nrouter vm\n") == ((RESERVED_ID, "router vm"), None)
    assert parse_content(b"ipam:reserved") == ((RESERVED_ID, None), None)
    assert parse_content(b"ipam:reserved\r\n\x01bad") == ((RESERVED_ID, None), None)
    assert parse_content(b"ipam:other\r\neth0") == (None, "content is not a container ID")
    assert note_problem("a router, rack 4") is None
    assert note_problem(" padded") and note_problem("tab\there") and note_problem("x" * 201)


@pytest.mark.postgres
def test_a_shared_pool_never_hands_a_reservation_out_on_any_node(pg_url, tmp_path, netconf):
    """Node a reserves; node b's ADDs fill the /29 around it. Only node a, whose mirror
    holds the file, may unreserve it."""
    nodes = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes[name] = Pool(tmp_path / name, lambda ipam, name_=name, **kw: netconf(
            dict(ipam, dataDir=str(tmp_path / name_)), **kw), pg_url, node=name)
    nodes["a"].add("a1")
    nodes["a"].ctl("reserve", "10.1.2.4", "--network", "mynet", "--note", "vm")
    got = [nodes["b"].add("b%d" % i) for i in range(3)]
    assert sorted(got) == ["10.1.2.3", "10.1.2.5", "10.1.2.6"]
    assert "no IP addresses available" in nodes["b"].add("b9", expect=1)["msg"]
    every_node = Pool(tmp_path / "b", netconf, pg_url)
    assert [s["reserved"] for s in every_node.json("stats")] == [1]
    assert "reserved by node a" in nodes["b"].ctl("unreserve", "10.1.2.4", "--network",
                                                  "mynet", expect=1).output
    nodes["a"].ctl("unreserve", "10.1.2.4", "--network", "mynet")
    assert not (tmp_path / "a" / "mynet" / "10.1.2.4").exists()


def test_installed_plugin_processes_never_get_a_reserved_address(data_dir, netconf):
    """The installed ipamctl reserves; real plugin processes fill the /29 around it."""
    conf = netconf(SMALL)
    assert run_plugin("ADD", conf, container_id="first").status == 0
    ipamctl("reserve", "10.1.2.5", "--network", "mynet", "--note", "vm", data_dir=data_dir)
    got = []
    for cid in ("p1", "p2", "p3"):
        out = run_plugin("ADD", conf, container_id=cid)
        assert out.status == 0, out.out
        got.append(json.loads(out.out)["ips"][0]["address"])
    assert got == ["10.1.2.3/29", "10.1.2.4/29", "10.1.2.6/29"]
    assert run_plugin("ADD", conf, container_id="p4").status != 0
    rows = json.loads(ipamctl("-o", "json", "list", data_dir=data_dir).stdout)
    assert [r["ip"] for r in rows if r["kind"] == "reservation"] == ["10.1.2.5"]


@pytest.mark.reference
def test_go_host_local_beside_us_never_hands_it_out(data_dir, netconf):
    """Go host-local on the same dataDir and network takes the reservation's file for
    taken (it creates address files with O_EXCL), and leaves it as it was."""
    conf = netconf(SMALL)
    assert run_plugin("ADD", conf, container_id="ours").status == 0  # .2; records ranges
    ipamctl("reserve", "10.1.2.3", "--network", "mynet", "--note", "router vm", data_dir=data_dir)
    go_conf = dict(conf, ipam=dict(conf["ipam"], type="host-local"))
    got = []
    for i in range(5):
        out = run_binary(GO_HOST_LOCAL, "ADD", go_conf, container_id="go%d" % i)
        if out.status != 0:
            assert b"no IP addresses available" in out.stdout, out
            break
        got.append(out.json["ips"][0]["address"])
    assert got == ["10.1.2.4/29", "10.1.2.5/29", "10.1.2.6/29"]
    assert (data_dir / "mynet" / "10.1.2.3").read_bytes() == RESERVED_FILE
    # Go's DEL of every container it knows leaves it too.
    for i in range(3):
        assert run_binary(GO_HOST_LOCAL, "DEL", go_conf, container_id="go%d" % i).status == 0
    assert (data_dir / "mynet" / "10.1.2.3").read_bytes() == RESERVED_FILE
    rows = json.loads(ipamctl("-o", "json", "list", data_dir=data_dir).stdout)
    assert [(r["ip"], r["kind"]) for r in rows] == [("10.1.2.2", "lease"),
                                                    ("10.1.2.3", "reservation")]
