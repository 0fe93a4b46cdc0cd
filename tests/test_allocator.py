"""host-local's allocator rules as its own tests pin them (containernetworking/plugins,
plugins/ipam/host-local/backend/allocator/allocator_test.go), against the fake and
SQLite."""
import ipaddress

import pytest

from ipam import allocator
from ipam.errors import AllocationError, NotFound
from ipam.lease import Lease
from ipam.ranges import canonicalize, make_set

ip = ipaddress.ip_address
NET = "net"


def rset(*subnets, **kw):
    return make_set([canonicalize(s, kw.get("start") and ip(kw["start"]),
                                  kw.get("end") and ip(kw["end"]), None, kw.get("exclude", ()))
                     for s in subnets])


def take(store, address, cid="other", ifname="eth0", idx=0):
    assert store.reserve(Lease(NET, ip(address), idx, cid, ifname), "add")


def add(store, sets, cid="ID", ifname="eth0", requested=()):
    with store.transaction():
        allocs, changes = allocator.add(store, NET, sets, [ip(r) for r in requested], cid, ifname)
    return ["%s/%d" % (a.ip, a.prefixlen) for a in allocs]


@pytest.mark.parametrize("last,expected", [
    (None, [".2", ".3", ".4", ".5", ".6"]),
    ("192.168.1.6", [".2", ".3", ".4", ".5", ".6"]),
    ("192.168.1.3", [".4", ".5", ".6", ".2", ".3"]),
])
def test_iterator_order(store, last, expected):
    """Each candidate the iterator yields, in order, then exhaustion."""
    rs = rset("192.168.1.0/29")
    got = []
    with store.transaction():
        cursor = ip(last) if last else None
        while True:
            nxt = allocator.next_free(store, NET, rs, cursor)
            if nxt is None:
                break
            got.append("." + str(nxt).rsplit(".", 1)[1])
            take(store, str(nxt))
    assert got == expected


@pytest.mark.parametrize("subnets,taken,last,expected", [
    (["10.0.0.0/29"], [], None, "10.0.0.2"),
    (["2001:db8:1::0/64"], [], None, "2001:db8:1::2"),
    (["10.0.0.0/30"], [], None, "10.0.0.2"),
    (["10.0.0.0/29"], ["10.0.0.2"], None, "10.0.0.3"),
    (["10.0.0.0/29"], [], "10.0.0.5", "10.0.0.6"),
    (["10.0.0.0/29"], ["10.0.0.4", "10.0.0.5"], "10.0.0.3", "10.0.0.6"),
    (["10.0.0.0/29"], ["10.0.0.6"], "10.0.0.5", "10.0.0.2"),
    (["10.0.0.0/29"], ["10.0.0.2"], "10.0.0.128", "10.0.0.3"),
    (["10.0.0.0/29"], ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"], "10.0.0.3", "10.0.0.3"),
    (["10.0.0.0/30", "10.0.1.0/30"], [], None, "10.0.0.2"),
    (["10.0.0.0/30", "10.0.1.0/30"], [], "10.0.0.2", "10.0.1.2"),
    (["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"], [], "10.0.2.2", "10.0.0.2"),
])
def test_round_robin_table(store, subnets, taken, last, expected):
    rs = rset(*subnets)
    with store.transaction():
        for t in taken:
            take(store, t)
        if last:
            store.set_last_reserved(NET, 0, ip(last))
    assert add(store, [rs])[0].split("/")[0] == expected


def test_no_broadcast_then_exhausted(store):
    rs = rset("192.168.1.0/29")
    for n in range(2, 7):
        assert add(store, [rs], cid="ID%d" % n) == ["192.168.1.%d/29" % n]
    with pytest.raises(AllocationError) as e:
        add(store, [rs], cid="ID8")
    assert e.value.msg == ("failed to allocate for range 0: no IP addresses available in range "
                           "set: 192.168.1.1-192.168.1.6")


def test_round_robin_after_release(store):
    rs = rset("192.168.1.0/29")
    assert add(store, [rs]) == ["192.168.1.2/29"]
    with store.transaction():
        allocator.release(store, NET, "ID", "eth0", 1)
    assert add(store, [rs]) == ["192.168.1.3/29"]


def test_requested(store):
    rs = rset("192.168.1.0/29")
    assert add(store, [rs], requested=["192.168.1.5"]) == ["192.168.1.5/29"]
    with pytest.raises(AllocationError) as e:
        add(store, [rs], cid="ID2", requested=["192.168.1.5"])
    assert e.value.msg == ("failed to allocate for range 0: requested IP address 192.168.1.5 is "
                           "not available in range set 192.168.1.1-192.168.1.6")
    with pytest.raises(AllocationError) as e:
        add(store, [rs], cid="ID3", requested=["192.168.1.1"])
    assert e.value.msg == "failed to allocate for range 0: requested ip 192.168.1.1 is " \
        "subnet's gateway"


@pytest.mark.parametrize("kw,req", [({"end": "192.168.1.4"}, "192.168.1.5"),
                                    ({"start": "192.168.1.3"}, "192.168.1.2")])
def test_requested_outside_range(store, kw, req):
    with pytest.raises(AllocationError) as e:
        add(store, [rset("192.168.1.0/29", **kw)], requested=[req])
    assert e.value.msg == "failed to allocate all requested IPs: %s" % req
    assert store.leases(NET) == []


@pytest.mark.parametrize("subnets,taken", [
    (["10.0.0.0/30"], ["10.0.0.2"]),
    (["10.0.0.0/29"], ["10.0.0.%d" % n for n in range(2, 7)]),
    (["10.0.0.0/30", "10.0.1.0/30"], ["10.0.0.2", "10.0.1.2"]),
])
def test_out_of_ips(store, subnets, taken):
    with store.transaction():
        for t in taken:
            take(store, t)
    with pytest.raises(AllocationError, match="no IP addresses available in range set"):
        add(store, [rset(*subnets)])


def test_repeated_add_returns_existing(store):
    rs = [rset("10.1.2.0/24"), rset("2001:db8::/64")]
    first = add(store, rs)
    assert add(store, rs) == first
    assert add(store, rs, ifname="eth1") == ["10.1.2.3/24", "2001:db8::3/64"]
    assert len(store.leases(NET)) == 4


def test_repeated_add_with_same_request_returns_it(store):
    rs = [rset("10.1.2.0/24")]
    assert add(store, rs, requested=["10.1.2.9"]) == ["10.1.2.9/24"]
    assert add(store, rs, requested=["10.1.2.9"]) == ["10.1.2.9/24"]


def test_multi_set_failure_changes_nothing(store):
    """One transaction: set 0's lease and cursor vanish when set 1 fails."""
    sets = [rset("10.1.2.0/24"), rset("10.9.9.0/24", start="10.9.9.1", end="10.9.9.1")]
    with store.transaction():
        store.set_last_reserved(NET, 0, ip("10.1.2.7"))
    with pytest.raises(AllocationError) as e:
        add(store, sets)
    assert e.value.msg == ("failed to allocate for range 1: no IP addresses available in range "
                           "set: 10.9.9.1-10.9.9.1")
    with store.transaction():
        assert store.leases(NET) == []
        assert store.last_reserved(NET, 0) == ip("10.1.2.7")


def test_exclusions_are_skipped(store):
    r = rset("10.1.2.0/29", exclude=[(int(ip("10.1.2.2")), int(ip("10.1.2.3"))),
                                     (int(ip("10.1.2.5")), int(ip("10.1.2.5")))])
    got = [add(store, [r], cid="c%d" % n)[0] for n in range(2)]
    assert got == ["10.1.2.4/29", "10.1.2.6/29"]
    with pytest.raises(AllocationError):
        add(store, [r], cid="c9")
    with pytest.raises(AllocationError, match="requested ip 10.1.2.5 is excluded"):
        add(store, [r], cid="c10", requested=["10.1.2.5"])


def test_release_rules(store):
    rs = [rset("10.1.2.0/24")]
    add(store, rs, cid="a", ifname="eth0")
    add(store, rs, cid="a", ifname="eth1")
    with store.transaction():
        take(store, "10.1.2.50", cid="a", ifname=None)  # legacy, ID only
        changes = allocator.release(store, NET, "a", "eth0", 1)
    assert [str(lease.ip) for lease in changes.released] == ["10.1.2.2"]
    with store.transaction():
        changes = allocator.release(store, NET, "a", "eth9", 1)
    assert [str(lease.ip) for lease in changes.released] == ["10.1.2.50"]  # legacy fallback
    with store.transaction():
        assert not allocator.release(store, NET, "zz", "eth0", 1)  # idempotent


def test_release_with_two_sets_also_frees_legacy(store):
    with store.transaction():
        take(store, "10.1.2.2", cid="a", ifname="eth0")
        take(store, "10.1.2.3", cid="a", ifname=None)
        changes = allocator.release(store, NET, "a", "eth0", 2)
    assert sorted(str(lease.ip) for lease in changes.released) == ["10.1.2.2", "10.1.2.3"]


def test_check(store):
    rs = [rset("10.1.2.0/24")]
    add(store, rs, cid="a")
    with store.transaction():
        allocator.check(store, NET, "a", "eth0")
        allocator.check(store, NET, "a", "eth0", [ip("10.1.2.2")])
        with pytest.raises(NotFound) as e:
            allocator.check(store, NET, "zz", "eth0")
        assert e.value.msg == "host-local: Failed to find address added by container zz"
        with pytest.raises(NotFound, match="10.1.2.3 in prevResult"):
            allocator.check(store, NET, "a", "eth0", [ip("10.1.2.3")])


def test_gc(store):
    rs = [rset("10.1.2.0/24")]
    for cid in ("a", "b", "c"):
        add(store, rs, cid=cid)
    with store.transaction():
        take(store, "10.1.2.90", cid="d", ifname=None)
        take(store, "10.1.2.91", cid="e", ifname=None)
        changes = allocator.gc(store, NET, {("a", "eth0"), ("d", "eth3")})
    assert sorted(str(x.ip) for x in changes.released) == ["10.1.2.3", "10.1.2.4", "10.1.2.91"]
    with store.transaction():
        allocator.gc(store, NET, set())
        assert store.leases(NET) == []


def test_exhausted(store):
    rs = [rset("10.1.2.0/24"), rset("10.9.0.0/30")]
    with store.transaction():
        assert allocator.exhausted(store, NET, rs) is None
        take(store, "10.9.0.2", idx=1)
        assert allocator.exhausted(store, NET, rs) == (1, rs[1])
