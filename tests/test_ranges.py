"""host-local's range and range-set rules, as its own tests pin them
(containernetworking/plugins, plugins/ipam/host-local/backend/allocator/range_test.go and
range_set_test.go)."""
import ipaddress

import pytest

from ipam.errors import ConfigError
from ipam.ranges import canonicalize, make_set

ip = ipaddress.ip_address


def rng(subnet, start=None, end=None, gw=None, exclude=()):
    return canonicalize(subnet, start and ip(start), end and ip(end), gw and ip(gw), exclude)


@pytest.mark.parametrize("subnet,start,end,gw", [
    ("192.0.2.0/24", "192.0.2.1", "192.0.2.254", "192.0.2.1"),
    ("192.0.2.0/25", "192.0.2.1", "192.0.2.126", "192.0.2.1"),
    ("2001:DB8:1::/64", "2001:db8:1::1", "2001:db8:1::ffff:ffff:ffff:ffff", "2001:db8:1::1"),
    ("10.1.2.0/30", "10.1.2.1", "10.1.2.2", "10.1.2.1"),
])
def test_defaults(subnet, start, end, gw):
    r = rng(subnet)
    assert (r.start, r.end, r.gateway) == (ip(start), ip(end), ip(gw))


@pytest.mark.parametrize("subnet,net", [
    ("192.0.2.12/24", "192.0.2.0/24"),
    ("2001:DB8:1::24:19ff:fee1:c44a/64", "2001:db8:1::/64"),
    ("2001:DB8:24:19ff::/63", "2001:db8:24:19fe::/63"),
    ("192.168.127.0/23", "192.168.126.0/23"),
    ("203.0.113.1/24", "203.0.113.0/24"),
])
def test_host_bits_are_cleared_not_rejected(subnet, net):
    # Deliberate difference (docs/differences.md): host-local rejects these with "Network
    # has host bits set".
    r = rng(subnet)
    assert str(r.subnet) == net
    assert r.start == r.subnet.network_address + 1


@pytest.mark.parametrize("subnet,msg", [
    ("192.0.2.0/31", "Network 192.0.2.0/31 too small to allocate from"),
    ("192.0.2.0/32", "Network 192.0.2.0/32 too small to allocate from"),
    ("10.1.2.5/31", "Network 10.1.2.5/31 too small to allocate from"),
    ("2001:db8::/127", "Network 2001:db8::/127 too small to allocate from"),
    ("::ffff:10.1.2.0/120", "IPNet IP and Mask version mismatch"),
])
def test_bad_subnets(subnet, msg):
    with pytest.raises(ConfigError) as e:
        rng(subnet)
    assert e.value.msg == msg


@pytest.mark.parametrize("start,end,msg", [
    ("192.0.3.0", None, "RangeStart 192.0.3.0 not in network 192.0.2.0/24"),
    (None, "192.0.4.0", "RangeEnd 192.0.4.0 not in network 192.0.2.0/24"),
    ("192.0.2.50", "192.0.2.40", "RangeStart 192.0.2.50 not in network 192.0.2.0/24"),
    ("2001:db8::1", None, "RangeStart 2001:db8::1 not in network 192.0.2.0/24"),
])
def test_bad_bounds(start, end, msg):
    with pytest.raises(ConfigError) as e:
        rng("192.0.2.0/24", start, end)
    assert e.value.msg == msg


def test_start_beyond_defaulted_end_is_rejected():
    # Deliberate difference: host-local accepts it and allocates outside the subnet.
    with pytest.raises(ConfigError, match="RangeStart 10.1.2.255 is beyond RangeEnd 10.1.2.254"):
        rng("10.1.2.0/24", "10.1.2.255")


def test_explicit_values_kept_and_not_validated_further():
    r = rng("192.0.2.0/24", "192.0.2.40", "192.0.2.50", "192.0.2.254")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("192.0.2.40", "192.0.2.50",
                                                          "192.0.2.254")
    assert str(rng("10.1.2.0/24", "10.1.2.0", gw="10.1.2.254").start) == "10.1.2.0"
    assert str(rng("10.1.2.0/24", "10.1.2.255", "10.1.2.255").end) == "10.1.2.255"
    assert str(rng("10.1.2.0/24", gw="192.168.1.1").gateway) == "192.168.1.1"


@pytest.mark.parametrize("addr,inside", [
    ("192.0.3.0", False), ("192.0.2.39", False), ("192.0.2.40", True), ("192.0.2.50", True),
    ("192.0.2.51", False), ("2001:db8::1", False)])
def test_contains_v4(addr, inside):
    assert rng("192.0.2.0/24", "192.0.2.40", "192.0.2.50").contains(ip(addr)) is inside


@pytest.mark.parametrize("addr,inside", [
    ("2001:db8:2::", False), ("2001:db8:1::39", False), ("2001:db8:1::40", True),
    ("2001:db8:1::50", True), ("2001:db8:1::51", False)])
def test_contains_v6(addr, inside):
    r = rng("2001:db8:1::/64", "2001:db8:1::40", "2001:db8:1::50")
    assert r.contains(ip(addr)) is inside


@pytest.mark.parametrize("a,b,overlap", [
    (("10.0.0.0/24",), ("10.0.1.0/24",), False),
    (("0.0.0.0/24",), ("::/24",), False),
    (("10.0.0.0/24",), ("10.0.0.0/24",), True),
    (("10.0.0.0/20",), ("10.0.1.0/24",), True),
    (("10.0.0.0/24", None, "10.0.0.127"), ("10.0.0.0/24", "10.0.0.128"), False),
    (("10.0.0.0/24", None, "10.0.0.127"), ("10.0.0.0/24", "10.0.0.127"), True),
])
def test_overlaps_both_ways(a, b, overlap):
    ra, rb = rng(*a), rng(*b)
    assert ra.overlaps(rb) is overlap and rb.overlaps(ra) is overlap


def test_range_set():
    rs = make_set([rng("192.168.0.0/24"), rng("172.16.1.0/24")])
    assert rs.contains(ip("192.168.0.55"))
    assert rs.range_for(ip("192.168.0.55")) is rs[0]
    assert rs.range_for(ip("192.168.99.99")) is None
    assert str(rs) == "192.168.0.1-192.168.0.254,172.16.1.1-172.16.1.254"
    with pytest.raises(ConfigError) as e:
        make_set([rng("192.168.0.0/20"), rng("192.168.2.0/24")])
    assert e.value.msg == ("subnets 192.168.0.1-192.168.15.254 and 192.168.2.1-192.168.2.254 "
                           "overlap")
    s1, s2 = make_set([rng("192.168.0.0/20")]), make_set([rng("192.168.2.0/24")])
    assert s1.overlaps(s2) and s2.overlaps(s1)


def test_size_excludes_gateway_and_exclusions():
    assert rng("10.0.0.0/29").size() == 5  # .1 (gateway) to .6
    assert rng("10.0.0.0/24", gw="192.168.0.1").size() == 254
    r = rng("10.0.0.0/24", exclude=[(int(ip("10.0.0.1")), int(ip("10.0.0.10"))),
                                    (int(ip("10.0.0.5")), int(ip("10.0.0.20")))])
    assert r.size() == 254 - 20
