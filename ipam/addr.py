"""Address parsing and arithmetic with Go's rules, on top of :mod:`ipaddress`.

host-local parses with Go's ``net`` package; Python's ``ipaddress`` accepts a few spellings
Go refuses (scoped IPv6 ``fe80::1%eth0``, netmask CIDRs ``10.0.0.0/255.0.0.0``) and keeps
IPv4-mapped IPv6 as IPv6 where Go turns it into IPv4. These helpers close those gaps, so
the same text means the same address in both plugins.
"""
import ipaddress
import re

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address

_PREFIX = re.compile(r"^[0-9]{1,3}$")
_V4_MAPPED = 0xFFFF << 32


def parse_ip(text):
    """Parse like Go's ``net.ParseIP`` then ``To4()``; None when Go would say nil."""
    if not isinstance(text, str) or not text or "%" in text or "/" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_cidr(text):
    """Parse like Go's ``net.ParseCIDR`` keeping the host bits (``types.IPNet``).

    Returns ``(ip, prefixlen, mapped)`` or None. ``mapped`` tells that the address was
    written as IPv4-mapped IPv6 with an IPv6 prefix (Go then reports a version mismatch).
    """
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    addr, _, prefix = text.partition("/")
    if not _PREFIX.match(prefix):
        return None
    ip = parse_ip(addr)
    if ip is None:
        return None
    mapped = ":" in addr and ip.version == 4
    bits = 128 if ":" in addr else 32
    plen = int(prefix)
    if plen > bits:
        return None
    return ip, plen, mapped


def max_prefix(ip):
    return 32 if ip.version == 4 else 128


def network_of(ip, plen):
    """The network containing ``ip`` with prefix ``plen``."""
    cls = ipaddress.IPv4Network if ip.version == 4 else ipaddress.IPv6Network
    return cls((int(ip), plen), strict=False)


def to_key(ip):
    """16 bytes big-endian, IPv4 as ::ffff:a.b.c.d: one sortable space for both families."""
    n = int(ip)
    if ip.version == 4:
        n |= _V4_MAPPED
    return n.to_bytes(16, "big")


def from_int(version, n):
    return IPv4Address(n) if version == 4 else IPv6Address(n)


def add(ip, delta):
    """``ip + delta``, or None when it leaves the address family."""
    n = int(ip) + delta
    if n < 0 or n > (0xFFFFFFFF if ip.version == 4 else (1 << 128) - 1):
        return None
    return from_int(ip.version, n)
