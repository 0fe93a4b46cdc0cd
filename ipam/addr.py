"""IP addresses with Go's rules, without the ``ipaddress`` module on the hot path.

Importing ``ipaddress`` costs the plugin about as much as sqlite3 (measured: 2 to 5 ms of
a 25 ms invocation), and Go's ``net`` package differs from it anyway: Go refuses scoped
IPv6 (``fe80::1%eth0``) and netmask CIDRs, and turns IPv4-mapped IPv6 into IPv4. So the
plugin has its own small value type. It prints exactly as Go and ``ipaddress`` do
(RFC 5952), and it compares and hashes equal to ``ipaddress`` objects of the same address,
so the two mix freely in tests and in the admin tools.
"""

_V4_MAPPED = 0xFFFF << 32
_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Optional


class IP:
    """An IPv4 or IPv6 address. The slot names match ``ipaddress``'s internals, which is
    what lets ``==`` work both ways between the two."""

    __slots__ = ("_version", "_ip")

    def __init__(self, version: "int", n: "int") -> "None":
        self._version = version
        self._ip = n

    @property
    def version(self) -> "int":
        return self._version

    def __int__(self) -> "int":
        return self._ip

    __index__ = __int__

    # ``other``: anything with ``_version`` and ``_ip`` (this class, ipaddress's).
    def __eq__(self, other: "Any") -> "bool":
        try:
            return self._ip == other._ip and self._version == other._version
        except AttributeError:
            return NotImplemented

    def __hash__(self) -> "int":
        # As ipaddress hashes, so that the two mix as dict keys.
        return hash(hex(self._ip)) if self._version == 4 else hash((self._ip, None))

    def _key(self, other: "Any") -> "int":
        try:
            if self._version != other._version:
                raise TypeError("%s and %s are not of the same version" % (self, other))
            return other._ip
        except AttributeError:
            return NotImplemented

    def __lt__(self, other: "Any") -> "bool":
        o = self._key(other)
        return o if o is NotImplemented else self._ip < o

    def __le__(self, other: "Any") -> "bool":
        o = self._key(other)
        return o if o is NotImplemented else self._ip <= o

    def __gt__(self, other: "Any") -> "bool":
        o = self._key(other)
        return o if o is NotImplemented else self._ip > o

    def __ge__(self, other: "Any") -> "bool":
        o = self._key(other)
        return o if o is NotImplemented else self._ip >= o

    def __add__(self, k: "int") -> "IP":
        if not isinstance(k, int):
            return NotImplemented
        n = self._ip + k
        if not 0 <= n <= _MAX[self._version]:
            raise ValueError("%s + %d is out of range" % (self, k))
        return IP(self._version, n)

    def __sub__(self, k: "int") -> "IP":
        if not isinstance(k, int):
            return NotImplemented
        return self + (-k)

    def __str__(self) -> "str":
        if self._version == 4:
            n = self._ip
            return "%d.%d.%d.%d" % (n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255)
        return _format6(self._ip)

    def __repr__(self) -> "str":
        return "IP('%s')" % self


def _format6(n: "int") -> "str":
    """RFC 5952, as Go and ipaddress print: lower-case, the longest run (two groups or
    more, the first on a tie) of zero groups as '::'."""
    groups = [(n >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_start, best_len, start = -1, 1, -1
    for i, g in enumerate(groups + [1]):
        if g == 0 and i < 8:
            if start < 0:
                start = i
        elif start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    text = ["%x" % g for g in groups]
    if best_start < 0:
        return ":".join(text)
    return ":".join(text[:best_start]) + "::" + ":".join(text[best_start + best_len:])


class Net:
    """A subnet: its network address and prefix length."""

    __slots__ = ("network_address", "prefixlen")

    def __init__(self, ip: "IP", prefixlen: "int") -> "None":
        bits = 32 if ip.version == 4 else 128
        mask = _MAX[ip.version] ^ ((1 << (bits - prefixlen)) - 1)
        self.network_address = IP(ip.version, int(ip) & mask)
        self.prefixlen = prefixlen

    @property
    def version(self) -> "int":
        return self.network_address.version

    @property
    def broadcast_address(self) -> "IP":
        bits = 32 if self.version == 4 else 128
        return IP(self.version, int(self.network_address) | ((1 << (bits - self.prefixlen)) - 1))

    def __contains__(self, ip: "IP") -> "bool":
        return (ip.version == self.version
                and int(self.network_address) <= int(ip) <= int(self.broadcast_address))

    def __eq__(self, other: "object") -> "bool":
        return isinstance(other, Net) and (self.network_address, self.prefixlen) == (
            other.network_address, other.prefixlen)

    def __hash__(self) -> "int":
        return hash((self.network_address, self.prefixlen))

    def __str__(self) -> "str":
        return "%s/%d" % (self.network_address, self.prefixlen)

    __repr__ = __str__


def _parse4(text: "str") -> "Optional[int]":
    parts = text.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for p in parts:
        # Go (since 1.17) refuses leading zeros, as they once meant octal.
        if not 1 <= len(p) <= 3 or not _DIGITS.issuperset(p) or (len(p) > 1
                                                                        and p[0] == "0"):
            return None
        v = int(p)
        if v > 255:
            return None
        n = (n << 8) | v
    return n


def _groups(text: "str") -> "Optional[list[int]]":
    out = []
    for g in text.split(":") if text else []:
        if not g or len(g) > 4 or not _HEX.issuperset(g):
            return None
        out.append(int(g, 16))
    return out


def _parse6(text: "str") -> "Optional[int]":
    if "." in text:  # an embedded IPv4 address in the last 32 bits: make it two groups
        cut = text.rfind(":")
        n4 = _parse4(text[cut + 1:])
        if n4 is None:
            return None
        text = "%s%x:%x" % (text[:cut + 1], n4 >> 16, n4 & 0xFFFF)
    if text.count("::") > 1:
        return None
    groups: Optional[list[int]]
    if "::" in text:
        left, _, right = text.partition("::")
        lg, rg = _groups(left), _groups(right)
        if lg is None or rg is None or len(lg) + len(rg) > 7:
            return None
        groups = lg + [0] * (8 - len(lg) - len(rg)) + rg
    else:
        groups = _groups(text)
        if groups is None or len(groups) != 8:
            return None
    n = 0
    for g in groups:
        n = (n << 16) | g
    return n


def parse_ip(text: "object") -> "Optional[IP]":
    """Go's ``net.ParseIP`` then ``To4()``: an IP, or None where Go would say nil."""
    if not isinstance(text, str) or not text:
        return None
    if ":" in text:
        n = _parse6(text)
        if n is None:
            return None
        if n >> 32 == 0xFFFF:
            return IP(4, n & 0xFFFFFFFF)
        return IP(6, n)
    n = _parse4(text)
    return None if n is None else IP(4, n)


def parse_cidr(text: "object") -> "Optional[tuple[IP, int, bool]]":
    """Parse like Go's ``net.ParseCIDR`` keeping the host bits (``types.IPNet``).

    Returns ``(ip, prefixlen, mapped)`` or None. ``mapped`` tells that the address was
    written as IPv4-mapped IPv6 with an IPv6 prefix (Go then reports a version mismatch).
    """
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    addr, _, prefix = text.partition("/")
    if not 1 <= len(prefix) <= 3 or not _DIGITS.issuperset(prefix):
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


def max_prefix(ip: "IP") -> "int":
    return 32 if ip.version == 4 else 128


def network_of(ip: "IP", plen: "int") -> "Net":
    """The network containing ``ip`` with prefix ``plen``."""
    return Net(ip, plen)


def to_key(ip: "IP") -> "bytes":
    """16 bytes big-endian, IPv4 as ::ffff:a.b.c.d: one sortable space for both families."""
    n = int(ip)
    if ip.version == 4:
        n |= _V4_MAPPED
    return n.to_bytes(16, "big")


def neighbour_key(key: "bytes", delta: "int") -> "Optional[bytes]":
    """The sort key ``delta`` addresses away from ``key`` in the same 128-bit space, or None
    past either end: how the stores find the address right before or after a lease."""
    n = int.from_bytes(key, "big") + delta
    if n < 0 or n >= 1 << 128:
        return None
    return n.to_bytes(16, "big")


def from_int(version: "int", n: "int") -> "IP":
    return IP(version, n)


def add(ip: "IP", delta: "int") -> "Optional[IP]":
    """``ip + delta``, or None when it leaves the address family."""
    n = int(ip) + delta
    if n < 0 or n > _MAX[ip.version]:
        return None
    return IP(ip.version, n)
