"""The Store contracts, run against the in-memory fake (tests/fake_store.py), SQLite and
PostgreSQL alike."""
import ipaddress
import random
import time

import pytest

from ipam.lease import Lease, NetworkRecord

ip = ipaddress.ip_address


def lease(address, cid="c", ifname="eth0", network="n", idx=0):
    return Lease(network, ip(address), idx, cid, ifname)


def test_reserve_is_unique_per_network(store):
    with store.transaction():
        assert store.reserve(lease("10.0.0.2"), "add")
        assert not store.reserve(lease("10.0.0.2", cid="other"), "add")
        assert store.reserve(lease("10.0.0.2", network="m"), "add")
        assert store.lease_at("n", ip("10.0.0.2")).container_id == "c"
        assert store.lease_at("n", ip("10.0.0.3")) is None


def test_leases_of_distinguishes_legacy(store):
    with store.transaction():
        store.reserve(lease("10.0.0.2"), "add")
        store.reserve(lease("10.0.0.3", ifname="eth1"), "add")
        store.reserve(lease("10.0.0.4", ifname=None), "import")
        assert [str(x.ip) for x in store.leases_of("n", "c", "eth0")] == ["10.0.0.2"]
        assert [str(x.ip) for x in store.leases_of("n", "c", None)] == ["10.0.0.4"]
        assert store.leases_of("n", "zz", "eth0") == []


def test_a_legacy_lease_is_claimed_by_one_interface(store):
    with store.transaction():
        store.reserve(lease("10.0.0.4", ifname=None), "import")
        claimed = store.claim_legacy(store.lease_at("n", ip("10.0.0.4")), "eth1")
        assert (claimed.container_id, claimed.ifname) == ("c", "eth1")
        assert store.leases_of("n", "c", None) == []
        assert store.leases_of("n", "c", "eth1") == [claimed]
    with store.transaction():
        assert store.lease_at("n", ip("10.0.0.4")).ifname == "eth1"


def test_the_mirror_stamp_is_per_network(store):
    with store.transaction():
        assert store.mirror_stamp("n") is None
        store.set_mirror_stamp("n", "1:2:3:4")
        store.set_mirror_stamp("m", "5:6:7:8")
        store.set_mirror_stamp("n", "1:2:3:9")
    with store.transaction():
        assert (store.mirror_stamp("n"), store.mirror_stamp("m")) == ("1:2:3:9", "5:6:7:8")


def test_leases_sorted_numerically(store):
    with store.transaction():
        for a in ("10.0.0.10", "10.0.0.9", "2001:db8::1", "10.0.0.100"):
            store.reserve(lease(a), "add")
        store.reserve(lease("10.0.0.1", network="a"), "add")
        assert [str(x.ip) for x in store.leases("n")] == ["10.0.0.9", "10.0.0.10", "10.0.0.100",
                                                         "2001:db8::1"]
        assert [x.network for x in store.leases()] == ["a", "n", "n", "n", "n"]
        assert list(store.networks()) == ["a", "n"]


def test_release(store):
    with store.transaction():
        store.reserve(lease("10.0.0.2"), "add")
        store.release(store.lease_at("n", ip("10.0.0.2")), "del")
        assert store.leases("n") == []
        store.release(lease("10.0.0.2"), "del")  # gone already: no error


def test_cursors(store):
    with store.transaction():
        assert store.last_reserved("n", 0) is None
        store.set_last_reserved("n", 0, ip("10.0.0.5"))
        store.set_last_reserved("n", 0, ip("10.0.0.6"))
        store.set_last_reserved("n", 1, ip("2001:db8::1"))
        assert store.last_reserved("n", 0) == ip("10.0.0.6")
        assert store.cursors("n") == {0: ip("10.0.0.6"), 1: ip("2001:db8::1")}


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.reserve(lease("10.0.0.2"), "add")
            store.set_last_reserved("n", 0, ip("10.0.0.2"))
            raise RuntimeError("boom")
    with store.transaction():
        assert store.leases() == [] and store.last_reserved("n", 0) is None


def test_first_free_matches_a_naive_scan(store):
    """Random reserve/release churn; first_free must always equal the naive answer."""
    rnd = random.Random(7)
    base = int(ip("10.0.0.0"))
    held = set()
    with store.transaction():
        for _ in range(600):
            n = rnd.randrange(64)
            if n in held:
                store.release(lease(str(ip(base + n))), "del")
                held.discard(n)
            else:
                store.reserve(lease(str(ip(base + n))), "add")
                held.add(n)
            lo, hi = sorted(rnd.sample(range(64), 2))
            expected = next((k for k in range(lo, hi + 1) if k not in held), None)
            got = store.first_free("n", ip(base + lo), ip(base + hi))
            assert (None if got is None else int(got) - base) == expected


def test_first_free_ipv6_top_of_prefix(store):
    with store.transaction():
        store.reserve(lease("2001:db8::ffff:ffff:ffff:fffe"), "add")
        lo, hi = ip("2001:db8::ffff:ffff:ffff:fffe"), ip("2001:db8::ffff:ffff:ffff:ffff")
        assert store.first_free("n", lo, hi) == hi
        store.reserve(lease(str(hi)), "add")
        assert store.first_free("n", lo, hi) is None


@pytest.mark.parametrize("cls", ["fake_store.FakeStore", "ipam.store.sqlite.SqliteStore",
                                 "ipam.store.postgres.PostgresStore"])
def test_implementations_have_every_protocol_method(cls):
    import importlib

    from ipam.store.protocol import AdminStore, Store

    module, _, name = cls.rpartition(".")
    impl = getattr(importlib.import_module(module), name)
    wanted = [m for p in (Store, AdminStore) for m in vars(p) if not m.startswith("_")]
    assert wanted and all(callable(getattr(impl, m, None)) for m in wanted)


def test_renew_moves_a_lease_to_this_boot(store):
    from ipam.system import boot_id

    with store.transaction():
        old = Lease("n", ip("10.0.0.2"), 0, "c", "eth0", boot_id="an-earlier-boot")
        store.reserve(old, "add")
        assert store.lease_at("n", ip("10.0.0.2")).boot_id == "an-earlier-boot"
        store.renew(old)
        assert store.lease_at("n", ip("10.0.0.2")).boot_id == boot_id()


def test_network_info(store):
    with store.transaction():
        assert store.network_info("n") is None
        store.set_network_info("n", NetworkRecord("/d", True, "[]"))
        store.set_network_info("n", NetworkRecord("/e", False, "[[]]"))
        assert store.network_info("n") == NetworkRecord("/e", False, "[[]]")
        assert "n" in list(store.networks())


def test_import_leases_in_bulk_keeps_first_free_right(store):
    with store.transaction():
        store.reserve(lease("10.0.0.5"), "add")
        n = store.import_leases("n", [lease("10.0.0.%d" % k, cid="i%d" % k)
                                      for k in (2, 3, 4, 7)], "import")
        assert n == 4
        assert store.first_free("n", ip("10.0.0.2"), ip("10.0.0.9")) == ip("10.0.0.6")
        assert store.first_free("n", ip("10.0.0.7"), ip("10.0.0.9")) == ip("10.0.0.8")
        assert [e.reason for e in store.history("n")] == ["add"] + ["import"] * 4


def test_leases_and_events_record_the_node(store):
    with store.transaction():
        store.lock_network("n", 1)
        store.reserve(lease("10.0.0.2"), "add")
        store.reserve(Lease("n", ip("10.0.0.3"), 0, "c", "eth1", node=store.node), "add")
        assert {x.node for x in store.leases("n")} == {store.node}
        store.release(store.lease_at("n", ip("10.0.0.2")), "del")
        assert [e.node for e in store.history("n")] == [store.node] * 3


def test_lock_network_leaves_cursors_and_listing_alone(store):
    """A shared store creates placeholder cursor rows to lock: they are no cursor."""
    with store.transaction():
        store.lock_network("fresh", 2)
        assert store.last_reserved("fresh", 0) is None
        assert store.cursors("fresh") == {}
        store.set_last_reserved("fresh", 1, ip("10.0.0.9"))
        assert store.cursors("fresh") == {1: ip("10.0.0.9")}
    with store.transaction():
        store.lock_network("fresh", 2)
        assert store.last_reserved("fresh", 1) == ip("10.0.0.9")


def test_retry_delays_are_bounded(store):
    delays = store.retry_delays()
    assert len(delays) <= 10 and all(0 <= d <= 1 for d in delays)


POD = ("default", "web-0", "6d1c1e0a-96a4-4ad4-9d0c-3b9a2f0c1e11")


def test_leases_and_events_carry_the_pod_identity(store):
    with store.transaction():
        store.lock_network("n", 1)
        store.reserve(Lease("n", ip("10.0.0.2"), 0, "c", "eth0", 0.0, None, None, None, *POD),
                      "add")
        store.reserve(Lease("n", ip("10.0.0.3"), 0, "p", "eth0", pod_name="nginx"), "add")
        store.reserve(lease("10.0.0.4", cid="none"), "add")
        got = store.lease_at("n", ip("10.0.0.2"))
        assert got.pod() == POD
        # Not part of equality: the owner is (container ID, ifname).
        assert got == Lease("n", ip("10.0.0.2"), 0, "c", "eth0", got.allocated_at, got.boot_id)
        assert [x.pod() for x in store.leases("n")] == [POD, (None, "nginx", None),
                                                         (None, None, None)]
        assert store.leases_of("n", "p", "eth0")[0].pod_name == "nginx"
        claimed_from = Lease("n", ip("10.0.0.5"), 0, "c", None, pod_name="legacy")
        store.reserve(claimed_from, "import")
        assert store.claim_legacy(store.lease_at("n", ip("10.0.0.5")), "eth1").pod_name == \
            "legacy"
        assert store.lease_at("n", ip("10.0.0.5")).pod_name == "legacy"
        store.release(store.lease_at("n", ip("10.0.0.2")), "del")
        assert [(e.event, e.pod_namespace, e.pod_name, e.pod_uid)
                for e in store.history("n", ip=ip("10.0.0.2"))] == [
            ("allocate", *POD), ("release", *POD)]


def test_import_leases_keeps_what_identity_they_have(store):
    with store.transaction():
        store.import_leases("n", [lease("10.0.0.2"),
                                  Lease("n", ip("10.0.0.3"), 0, "d", "eth0", pod_name="x")],
                            "import")
        assert [x.pod_name for x in store.leases("n")] == [None, "x"]
        assert [e.pod_name for e in store.history("n")] == [None, "x"]


def test_renew_records_an_identity_only_where_there_is_none(store):
    with store.transaction():
        store.reserve(lease("10.0.0.2", cid="old"), "adopt")
        store.reserve(Lease("n", ip("10.0.0.3"), 0, "new", "eth0", pod_name="first"), "add")
        store.renew(store.lease_at("n", ip("10.0.0.2")), POD)
        store.renew(store.lease_at("n", ip("10.0.0.3")), POD)
        store.renew(store.lease_at("n", ip("10.0.0.2")), None)
    with store.transaction():
        assert store.lease_at("n", ip("10.0.0.2")).pod() == POD
        assert store.lease_at("n", ip("10.0.0.3")).pod() == (None, "first", None)


def test_history_by_container_prefix_and_pod_name(store):
    with store.transaction():
        for k, (cid, name) in enumerate((("3f2a9c01", "web"), ("3f2ab7", "db"),
                                         ("3f2", "web"), ("a_%3f2", None))):
            store.reserve(Lease("n", ip("10.0.0.%d" % (k + 2)), 0, cid, "eth0",
                                pod_name=name), "add")
        assert [e.container_id for e in store.history(container_prefix="3f2a")] == [
            "3f2a9c01", "3f2ab7"]
        assert [e.container_id for e in store.history(container_prefix="3f2")] == [
            "3f2a9c01", "3f2ab7", "3f2"]
        assert [e.container_id for e in store.history(container_prefix="a_%")] == ["a_%3f2"]
        assert store.history(container_prefix="a%") == []
        assert store.history(container_prefix="_") == []
        assert [e.container_id for e in store.history(pod_name="web")] == ["3f2a9c01", "3f2"]
        assert [e.container_id for e in store.history(pod_name="web",
                                                      container_prefix="3f2a")] == ["3f2a9c01"]


@pytest.mark.parametrize("probes", [True, False], ids=["probes", "many-at-once"])
def test_container_ids_of_every_node_and_the_history(store, probes, monkeypatch):
    """What a container ID's start may name (ipamctl release, gc): every ID the database
    knows, a lease's of any node whatever the store's scope, or only the history's."""
    if hasattr(store, "PROBES"):  # the engines' two paths: a probe per start, or many at once
        monkeypatch.setattr(store, "PROBES", 100 if probes else 0)
    with store.transaction():
        store.reserve(lease("10.0.0.2", cid="3f2a9c01"), "add")
        store.reserve(Lease("n", ip("10.0.0.3"), 0, "3f2ab7", "eth0", node="elsewhere"),
                      "add")
        store.reserve(lease("10.0.0.4", cid="3f2gone"), "add")
        store.release(store.lease_at("n", ip("10.0.0.4")), "del")
        store.reserve(lease("10.0.0.5", cid="a_%3f2"), "add")
        assert store.container_ids(["3f2a"]) == {"3f2a9c01", "3f2ab7"}
        assert store.container_ids(["3f2"]) == {"3f2a9c01", "3f2ab7", "3f2gone"}
        assert store.container_ids(["3f2gone", "a_%"]) == {"3f2gone", "a_%3f2"}
        assert store.container_ids(["3f2a9c01", "3f2a9c012"]) == {"3f2a9c01"}
        assert store.container_ids(["a%", "_", "3f2a9c012"]) == set()
        assert store.container_ids([]) == set()


def test_integrity_holds_through_churn(store):
    """The lease table's invariant (ipam.store.invariant) after reserve/release churn,
    on both engines and the fake: every flag and key as allocation trusts them."""
    rnd = random.Random(11)
    with store.transaction():
        held = set()
        for _ in range(300):
            n = rnd.randrange(40)
            address = str(ip(int(ip("10.0.0.0")) + n))
            if n in held:
                store.release(lease(address), "del")
            else:
                store.reserve(lease(address, network=rnd.choice("ab")), "add")
            held ^= {n}
        assert store.integrity() == []


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_integrity_finds_a_wrong_flag_on_every_engine(engine, tmp_path, request):
    """``ipamctl check`` runs the same invariant on SQLite as on PostgreSQL."""
    from ipam.store.backend import open_store

    database = (str(tmp_path / "leases.db") if engine == "sqlite"
                else request.getfixturevalue("pg_url"))
    with open_store(database, data_dir=str(tmp_path)) as store:
        with store.transaction():
            for k in (2, 3, 5):
                store.reserve(lease("10.0.0.%d" % k), "add")
            assert store.integrity() == []
            store._exec("UPDATE leases SET next_free = NOT next_free WHERE ip = '10.0.0.2'")
            store._exec("UPDATE leases SET ip = '10.0.0.9' WHERE ip = '10.0.0.5'")
            assert store.integrity() == ["lease n/10.0.0.2: next_free flag is wrong",
                                         "lease n/10.0.0.9: address and key disagree"]
    if engine == "postgresql":
        assert store.conn is None  # closed, and nothing left open on the server


def test_a_sqlite_store_closes_as_a_context_manager(tmp_path):
    from ipam.store.sqlite import SqliteStore
    from ipam.store.sqlite_module import sqlite3

    with SqliteStore(str(tmp_path / "leases.db")) as store:
        with store.transaction():
            store.reserve(lease("10.0.0.2"), "add")
    with pytest.raises(sqlite3.ProgrammingError):
        store.conn.execute("SELECT 1")


def test_boots_are_recorded_per_name_and_boot(store):
    """The hosts behind each node name (ipam.node_boots): a stamp keeps its first fields,
    the clock is the database's, leases count per boot, and forgetting keeps one."""
    from ipam.lease import Boot

    with store.transaction():
        now, boots = store.boots("w7")
        assert boots == [] and abs(now - time.time()) < 60
        store.stamp_boot(Boot("w7", "b1", "vm", 1, 1, 100.0, 100.0))
        store.stamp_boot(Boot("w7", "b1", "vm-renamed", 9, 3, 500.0, 200.0))
        store.stamp_boot(Boot("w7", "b2", "vm", 2, 2, 150.0, 150.0))
        store.stamp_boot(Boot("other", "b1", "x", 1, 1, 100.0, 100.0))
        assert store.boots("w7")[1] == [Boot("w7", "b1", "vm-renamed", 1, 3, 100.0, 200.0),
                                        Boot("w7", "b2", "vm", 2, 2, 150.0, 150.0)]
        assert [b.node for b in store.boots()[1]] == ["other", "w7", "w7"]
        store.reserve(Lease("n", ip("10.0.0.2"), 0, "c", "eth0", boot_id="b2", node="w7"), "add")
        store.reserve(Lease("n", ip("10.0.0.3"), 0, "d", "eth0", boot_id="b2", node="w7"), "add")
        store.reserve(Lease("n", ip("10.0.0.4"), 0, "e", "eth0", boot_id="b1", node="x"), "add")
        assert store.boot_leases("w7") == {("w7", "b2"): 2}
        assert store.boot_leases("w7", "b1") == {}
        assert store.boot_leases() == {("w7", "b2"): 2, ("x", "b1"): 1}
        # a new boot's stamp prunes the name's old boots that hold no lease, only those
        store.stamp_boot(Boot("w7", "b3", "vm", 4, 4, 300.0, 300.0), prune_before=250.0)
        assert [b.boot_id for b in store.boots("w7")[1]] == ["b2", "b3"]
        assert store.forget_boots("w7", "b3") == 1
        assert [b.boot_id for b in store.boots("w7")[1]] == ["b3"]
        assert [b.boot_id for b in store.boots("other")[1]] == ["b1"]
