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
