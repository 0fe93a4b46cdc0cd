"""Address parsing with Go's rules where Python's ipaddress differs."""
import ipaddress

import pytest

from ipam import addr


@pytest.mark.parametrize("text,expected", [
    ("10.1.2.3", "10.1.2.3"), ("2001:DB8::1", "2001:db8::1"), ("::ffff:10.1.2.9", "10.1.2.9"),
    ("fe80::1%eth0", None), ("10.1.2", None), ("010.1.2.3", None), ("", None),
    ("10.1.2.3/24", None), (None, None), (5, None)])
def test_parse_ip(text, expected):
    got = addr.parse_ip(text)
    assert (str(got) if got is not None else None) == expected


@pytest.mark.parametrize("text,expected", [
    ("10.1.2.5/24", ("10.1.2.5", 24, False)), ("2001:db8::/64", ("2001:db8::", 64, False)),
    ("::ffff:10.1.2.0/120", ("10.1.2.0", 120, True)), ("10.1.2.0/33", None),
    ("10.1.2.0/255.255.255.0", None), ("10.1.2.0", None), ("10.1.2.0/+8", None),
    ("10.1.2.0/24/1", None)])
def test_parse_cidr(text, expected):
    got = addr.parse_cidr(text)
    assert (None if got is None else (str(got[0]), got[1], got[2])) == expected


def test_keys_sort_numerically_and_keep_families_apart():
    ips = [ipaddress.ip_address(a) for a in ("10.0.0.10", "10.0.0.9", "9.255.255.255", "::1",
                                             "2001:db8::1")]
    ordered = sorted(ips, key=addr.to_key)
    assert [str(i) for i in ordered] == ["::1", "9.255.255.255", "10.0.0.9", "10.0.0.10",
                                         "2001:db8::1"]
    assert all(len(addr.to_key(i)) == 16 for i in ips)


def test_add_stays_in_family():
    assert str(addr.add(ipaddress.ip_address("10.0.0.255"), 1)) == "10.0.1.0"
    assert addr.add(ipaddress.ip_address("255.255.255.255"), 1) is None
    assert addr.add(ipaddress.ip_address("0.0.0.0"), -1) is None


def _random_addresses(count, seed=5):
    rnd = __import__("random").Random(seed)
    for _ in range(count):
        version = rnd.choice((4, 6))
        n = rnd.getrandbits(32 if version == 4 else 128)
        if version == 6 and rnd.random() < 0.6:  # zero groups, to exercise '::'
            groups = [0 if rnd.random() < 0.5 else (n >> (112 - 16 * k)) & 0xFFFF
                      for k in range(8)]
            n = 0
            for g in groups:
                n = (n << 16) | g
        yield version, n


def test_same_text_and_value_as_ipaddress():
    """Our address type prints, parses, compares and hashes like ipaddress (RFC 5952)."""
    for version, n in _random_addresses(20000):
        ours = addr.IP(version, n)
        ref = ipaddress.IPv4Address(n) if version == 4 else ipaddress.IPv6Address(n)
        if version == 6 and ref.ipv4_mapped is not None:
            continue  # Go and we read those as IPv4
        assert str(ours) == str(ref)
        assert addr.parse_ip(str(ref)) == ref and addr.parse_ip(ref.exploded) == ref
        assert ours == ref and ref == ours and hash(ours) == hash(ref)
        assert {ref: 1}[ours] == 1


@pytest.mark.parametrize("text,expected", [
    ("::", "::"), ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"), ("::1.2.3.4", "::102:304"),
    ("2001:db8:0:1::1:0", "2001:db8:0:1::1:0"), ("2001:db8:1:0:ffff:ffff:ffff:fffe",
                                                 "2001:db8:1:0:ffff:ffff:ffff:fffe"),
    ("fd00:0:0:0:0:0:0:ff", "fd00::ff"), ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),
    ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
    ("1:2:3:4:5:6:7:8:9", None), ("1:::2", None), ("1::2::3", None), ("::1.2.3", None),
    ("12345::", None), ("1:2:3:4:5:6:7:1.2.3.4", None), ("1::2:3:4:5:6:7:8", None),
    ("1.2.3.4 ", None), ("\u0661.2.3.4", None), ("256.1.1.1", None)])
def test_go_parsing_edge_cases(text, expected):
    got = addr.parse_ip(text)
    assert (None if got is None else str(got)) == expected


def test_ordering_arithmetic_and_networks():
    a, b = addr.parse_ip("10.0.0.9"), addr.parse_ip("10.0.0.10")
    assert a < b and b > a and a <= a and a < ipaddress.ip_address("10.0.0.10")
    with pytest.raises(TypeError):
        assert a < addr.parse_ip("::1")
    assert str(a + 1) == "10.0.0.10" and str(b - 1) == "10.0.0.9"
    with pytest.raises(ValueError):
        addr.parse_ip("255.255.255.255") + 1
    net = addr.network_of(addr.parse_ip("10.1.2.77"), 23)
    assert str(net) == "10.1.2.0/23" and str(net.broadcast_address) == "10.1.3.255"
    assert addr.parse_ip("10.1.3.9") in net and addr.parse_ip("10.1.4.0") not in net
    assert addr.parse_ip("::1") not in net
    v6 = addr.network_of(addr.parse_ip("2001:db8:24:19ff::"), 63)
    assert str(v6.network_address) == "2001:db8:24:19fe::"


def test_neighbour_key_steps_within_the_128_bit_space():
    from ipam import addr

    key = addr.to_key(addr.parse_ip("10.0.0.255"))
    assert addr.neighbour_key(key, 1) == addr.to_key(addr.parse_ip("10.0.1.0"))
    assert addr.neighbour_key(key, -1) == addr.to_key(addr.parse_ip("10.0.0.254"))
    assert addr.neighbour_key(bytes(16), -1) is None
    assert addr.neighbour_key(b"\xff" * 16, 1) is None
