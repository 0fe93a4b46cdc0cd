"""ipam.admin.leases, the library behind ipamctl, on both Store implementations."""
import ipaddress
import os
import time
import types

import fake_store
import pytest
from helpers import note, owners, put

from ipam import system
from ipam.admin import consistency
from ipam.admin import leases as admin
from ipam.store import table
from ipam.store.schema_version import HEAD

ip = ipaddress.ip_address


@pytest.fixture
def clock(monkeypatch):
    """The stores' clock, set by the test: ``clock[0] = t``."""
    now = [1_000_000.0]
    fake = types.SimpleNamespace(time=lambda: now[0], clock_gettime=lambda clock: now[0],
                                 CLOCK_BOOTTIME=time.CLOCK_BOOTTIME)
    for module in (table, fake_store, system):
        monkeypatch.setattr(module, "time", fake)
    return now


def test_list_leases_sorted_and_filtered(store):
    put(store, "beta", "10.1.2.10", "b")
    put(store, "alpha", "10.1.2.100", "a")
    put(store, "alpha", "10.1.2.10", "a", ifname="eth1")
    put(store, "alpha", "10.1.2.9", "c")
    assert [(x.network, str(x.ip)) for x in admin.list_leases(store)] == [
        ("alpha", "10.1.2.9"), ("alpha", "10.1.2.10"), ("alpha", "10.1.2.100"),
        ("beta", "10.1.2.10")]
    assert [str(x.ip) for x in admin.list_leases(store, network="beta")] == ["10.1.2.10"]
    assert [str(x.ip) for x in admin.list_leases(store, container_id="a")] == [
        "10.1.2.10", "10.1.2.100"]
    assert [x.network for x in admin.list_leases(store, ip=ip("10.1.2.10"))] == [
        "alpha", "beta"]
    assert admin.list_leases(store, "beta", "a") == []


def test_stats_counts_without_gateway_and_exclusions(store, tmp_path):
    note(store, "small", tmp_path, "10.1.2.0/29", exclude=[("10.1.2.3", "10.1.2.3")])
    note(store, "dual", tmp_path, "10.3.0.0/24", "2001:db8::/120")
    note(store, "empty", tmp_path, "10.4.0.0/30")
    put(store, "small", "10.1.2.2", "a")
    put(store, "small", "10.1.2.4", "b")
    put(store, "dual", "2001:db8::2", "c", range_set=1)
    put(store, "legacy", "10.9.0.5", "d")
    put(store, "legacy", "10.9.0.6", "e")
    assert admin.stats(store) == [
        {"network": "dual", "range_set": 0, "range": "10.3.0.1-10.3.0.254", "size": 253,
         "used": 0, "reserved": 0, "free": 253},
        {"network": "dual", "range_set": 1, "range": "2001:db8::1-2001:db8::ff", "size": 254,
         "used": 1, "reserved": 0, "free": 253},
        {"network": "empty", "range_set": 0, "range": "10.4.0.1-10.4.0.2", "size": 1,
         "used": 0, "reserved": 0, "free": 1},
        {"network": "legacy", "range_set": None, "range": None, "size": None, "used": 2,
         "reserved": 0, "free": None},
        {"network": "small", "range_set": 0, "range": "10.1.2.1-10.1.2.6", "size": 4,
         "used": 2, "reserved": 0, "free": 2},
    ]
    assert [r["network"] for r in admin.stats(store, "small")] == ["small"]
    assert admin.stats(store, "nosuch") == []


def test_history_is_in_commit_order_whatever_the_clock_did(store, clock):
    """The clock steps back after a release: --at still sees the release, and the
    events come in the order they were committed."""
    clock[0] = 1000.0
    a = put(store, "n", "10.1.2.10", "a", at=1000.0)
    clock[0] = 2000.0
    with store.transaction():
        store.release(a, "del")
    clock[0] = 1500.0  # stepped back
    put(store, "n", "10.1.2.11", "b", at=1600.0)
    events = admin.history(store, network="n")
    assert [(e.event, e.container_id) for e in events] == [
        ("allocate", "a"), ("release", "a"), ("allocate", "b")]
    held = [(e.ip, e.container_id) for e in admin.history(store, network="n", at=1700.0)]
    assert held == [("10.1.2.11", "b")]


def test_history_at_is_who_held_what_then(store, clock):
    def at(t, *args):
        clock[0] = t
        return args

    at(100.0)
    a = put(store, "n", "10.1.2.10", "a", at=100.0)
    put(store, "n", "10.1.2.9", "x", at=100.0)
    clock[0] = 200.0
    with store.transaction():
        store.release(a, "del")
    clock[0] = 300.0
    put(store, "n", "10.1.2.10", "b", at=300.0)
    put(store, "m", "10.1.2.10", "y", at=300.0)

    def holders(t, **kw):
        return [(e.network, e.ip, e.container_id) for e in admin.history(store, at=t, **kw)]

    assert holders(50.0) == []
    assert holders(150.0) == [("n", "10.1.2.9", "x"), ("n", "10.1.2.10", "a")]
    assert holders(250.0, ip=ip("10.1.2.10")) == []
    assert holders(200.0, ip=ip("10.1.2.10")) == []  # released at that very moment
    assert holders(350.0, ip=ip("10.1.2.10")) == [("m", "10.1.2.10", "y"),
                                                  ("n", "10.1.2.10", "b")]
    assert holders(350.0, network="n") == [("n", "10.1.2.9", "x"), ("n", "10.1.2.10", "b")]
    events = admin.history(store, ip=ip("10.1.2.10"), network="n")
    assert [(e.time, e.event, e.reason, e.container_id) for e in events] == [
        (100.0, "allocate", "add", "a"), (200.0, "release", "del", "a"),
        (300.0, "allocate", "add", "b")]
    assert [e.time for e in admin.history(store, network="n", since=200.0)] == [200.0, 300.0]
    assert [e.container_id for e in admin.history(store, container_id="x")] == ["x"]


# -- release --------------------------------------------------------------------------
def test_select_release(store):
    put(store, "one", "10.1.2.2", "a")
    put(store, "two", "10.1.2.2", "b")
    put(store, "two", "10.1.2.3", "b", ifname="eth1")
    assert owners(admin.select_release(store, [ip("10.1.2.3")])) == [
        ("two", "10.1.2.3", "b", "eth1")]
    assert owners(admin.select_release(store, [ip("10.1.2.2")], network="one")) == [
        ("one", "10.1.2.2", "a", "eth0")]
    assert owners(admin.select_release(store, container_id="b")) == [
        ("two", "10.1.2.2", "b", "eth0"), ("two", "10.1.2.3", "b", "eth1")]
    assert owners(admin.select_release(store, container_id="b", ifname="eth1")) == [
        ("two", "10.1.2.3", "b", "eth1")]
    with pytest.raises(admin.AdminError, match=r"^10\.1\.2\.2 is leased in several networks "
                                               r"\(one, two\): choose one with --network$"):
        admin.select_release(store, [ip("10.1.2.2")])
    with pytest.raises(admin.AdminError, match=r"^10\.1\.2\.9 is not leased$"):
        admin.select_release(store, [ip("10.1.2.3"), ip("10.1.2.9")])
    with pytest.raises(admin.AdminError, match=r"^10\.1\.2\.3 is not leased in network one$"):
        admin.select_release(store, [ip("10.1.2.3")], network="one")
    with pytest.raises(admin.AdminError,
                       match=r"^no lease held by container b interface eth9 in network two$"):
        admin.select_release(store, container_id="b", ifname="eth9", network="two")


def test_release_records_admin_and_updates_the_mirror(store, tmp_path):
    data_dir = tmp_path / "data"
    note(store, "n", data_dir, "10.1.2.0/24")
    put(store, "n", "10.1.2.2", "a")
    put(store, "n", "10.1.2.3", "b")
    (data_dir / "n").mkdir(parents=True)
    (data_dir / "n" / "10.1.2.2").write_bytes(b"a\r\neth0")
    chosen = admin.select_release(store, [ip("10.1.2.2")])
    released, problems = admin.release(store, chosen, str(data_dir))
    assert (owners(released), problems) == ([("n", "10.1.2.2", "a", "eth0")], [])
    assert owners(store.leases()) == [("n", "10.1.2.3", "b", "eth0")]
    assert not (data_dir / "n" / "10.1.2.2").exists()
    assert not [f for f in os.listdir(data_dir) if f.startswith(".host-local-sqlite-pending")]
    last = admin.history(store)[-1]
    assert (last.event, last.reason, last.ip, last.container_id) == (
        "release", "admin", "10.1.2.2", "a")


def test_release_leaves_a_lease_that_changed_since_it_was_chosen(store, tmp_path):
    put(store, "n", "10.1.2.2", "a")
    chosen = admin.select_release(store, [ip("10.1.2.2")])
    with store.transaction():
        store.release(chosen[0], "del")
    put(store, "n", "10.1.2.2", "b")
    assert admin.release(store, chosen, str(tmp_path)) == ([], [])
    assert owners(store.leases()) == [("n", "10.1.2.2", "b", "eth0")]


# gc: tests/test_gc.py


# -- the mirror -----------------------------------------------------------------------
def test_mirror_for(store, tmp_path):
    data_dir = tmp_path / "data"
    recorded = tmp_path / "recorded"
    note(store, "on", recorded, "10.1.2.0/24")
    note(store, "off", recorded, "10.1.2.0/24", export=False)
    (data_dir / "seen").mkdir(parents=True)
    with store.transaction():
        if store.shared:
            # Another node may have recorded its dataDir: a node mirrors into its own,
            # once it has a directory or leases there.
            assert admin.mirror_for(store, "on", str(data_dir)) is None
        else:
            assert admin.mirror_for(store, "on", str(data_dir)).data_dir == str(recorded)
        assert admin.mirror_for(store, "off", str(data_dir)) is None
        assert admin.mirror_for(store, "off", str(data_dir), to="/x").data_dir == "/x"
        assert admin.mirror_for(store, "seen", str(data_dir)).data_dir == str(data_dir)
        assert admin.mirror_for(store, "unseen", str(data_dir)) is None


def texts(findings):
    """What check's table prints of each finding."""
    return [str(f) for f in findings]


def test_export_and_check(store, tmp_path):
    data_dir = tmp_path / "data"
    note(store, "n", data_dir, "10.1.2.0/24")
    note(store, "quiet", data_dir, "10.1.2.0/24", export=False)
    put(store, "n", "10.1.2.2", "a")
    put(store, "n", "10.1.2.3", "legacy", None)
    put(store, "quiet", "10.1.2.2", "q")
    with store.transaction():
        store.set_last_reserved("n", 0, ip("10.1.2.3"))
    net = data_dir / "n"
    # A shared pool's cursor moves with every node: a node's cursor files are its own
    # ADDs' to write, and export/check leave them be.
    cursor_files = [] if store.shared else ["last_reserved_ip.0"]
    assert texts(consistency.check(store, str(data_dir))) == [
        "n: mirror cannot open %s: No such file or directory" % net]
    assert not net.exists()

    assert admin.export(store, str(data_dir)) == {"n": [
        ("missing", "10.1.2.2"), ("missing", "10.1.2.3")] + [("missing", f)
                                                           for f in cursor_files]}
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (net / "10.1.2.3").read_bytes() == b"legacy"
    if cursor_files:
        assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.2.3"
    assert (net / "lock").exists()
    assert not (data_dir / "quiet").exists()
    assert texts(consistency.check(store, str(data_dir))) == []

    (net / "10.1.2.2").write_bytes(b"x\r\neth0")
    (net / "10.1.2.9").write_bytes(b"y\r\neth0")
    (net / "notes").write_bytes(b"foreign")
    (net / ".host-local-sqlite.tmp.10.1.2.2.1.1").write_bytes(b"half")
    (net / "10.1.2.3").write_bytes(b"legacy\r\n")  # the same owner, spelled otherwise
    # Files that name other owners are someone else's leases: reported, never rewritten.
    problems = ["%s/.host-local-sqlite.tmp.10.1.2.2.1.1: temporary" % net,
                "%s/10.1.2.9: foreign (names an owner the database does not know)" % net,
                "%s/10.1.2.2: conflict (names another owner than the database's lease)" % net,
                "%s/10.1.2.3: wrong" % net]
    assert texts(consistency.check(store, str(data_dir))) == problems
    # The repair reconciles as the plugin would: they are recorded, ours is rewritten.
    assert texts(consistency.check(store, str(data_dir), repair=True)) == [
        "%s/.host-local-sqlite.tmp.10.1.2.2.1.1: temporary (repaired)" % net,
        "%s/10.1.2.2: reassigned (another writer reused the address; our lease released) "
        "(repaired)" % net,
        "%s/10.1.2.2: adopted (another writer's lease, now recorded) (repaired)" % net,
        "%s/10.1.2.9: adopted (another writer's lease, now recorded) (repaired)" % net,
        "%s/10.1.2.3: wrong (repaired)" % net]
    assert texts(consistency.check(store, str(data_dir))) == []
    assert (net / "10.1.2.2").read_bytes() == b"x\r\neth0"
    assert (net / "10.1.2.3").read_bytes() == b"legacy"
    assert owners(store.leases("n")) == [("n", "10.1.2.2", "x", "eth0"),
                                         ("n", "10.1.2.3", "legacy", None),
                                         ("n", "10.1.2.9", "y", "eth0")]
    assert sorted(os.listdir(net)) == sorted(["10.1.2.2", "10.1.2.3", "10.1.2.9", "lock",
                                              "notes"] + cursor_files)

    copy = tmp_path / "copy"
    calls = []

    def progress(total):
        calls.append(("total", total))
        return lambda n: calls.append(("step", n))

    assert set(admin.export(store, str(data_dir), network="quiet", to=str(copy),
                            progress=progress)) == {"quiet"}
    assert calls == [("total", 1), ("step", 1)]
    calls.clear()
    assert admin.export(store, str(data_dir), progress=progress) == {"n": []}
    files = 3 + len(cursor_files)  # a, legacy and the adopted y
    assert calls == [("total", files)] + [("step", 1)] * files
    assert (copy / "quiet" / "10.1.2.2").read_bytes() == b"q\r\neth0"
    assert not (copy / "n").exists()


def test_check_reports_integrity_and_schema(store, tmp_path, monkeypatch):
    assert texts(consistency.check(store, str(tmp_path))) == []
    monkeypatch.setattr(store, "integrity", lambda: ["row 1 missing from index ix"])
    monkeypatch.setattr(store, "revision", lambda: "0001")
    assert texts(consistency.check(store, str(tmp_path))) == [
        "database integrity: row 1 missing from index ix",
        "schema revision 0001, expected %s" % HEAD]
    # The database's own problems: no network, address or file; no repair touches them.
    assert [(f.network, f.ip, f.path, f.kind, f.repair, f.repaired)
            for f in consistency.check(store, str(tmp_path), repair=True)] == [
        (None, None, None, "integrity", None, False), (None, None, None, "revision", None, False)]
