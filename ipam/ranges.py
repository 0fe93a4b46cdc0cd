"""Ranges and range sets: host-local's ``range.go`` and ``range_set.go``.

A range is a subnet with a first and last allocatable address and a gateway; a range set
is a pool of disjoint ranges that yields one address per ADD. The checks, their order and
their messages are host-local's, because operators and tests match on them.
"""
from ipam import addr
from ipam.errors import ConfigError


class Range:
    """One canonical range. ``exclude`` holds ``(first, last)`` integer pairs never handed out."""

    __slots__ = ("subnet", "start", "end", "gateway", "exclude")

    def __init__(self, subnet, start, end, gateway, exclude=()):
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway
        self.exclude = tuple(exclude)

    @property
    def version(self):
        return self.start.version

    def contains(self, ip):
        """host-local's Range.Contains: same family, inside the subnet and [start, end]."""
        return ip.version == self.start.version and self.start <= ip <= self.end

    def overlaps(self, other):
        return (
            self.version == other.version
            and self.start <= other.end
            and other.start <= self.end
        )

    def excluded(self, ip):
        """The ``(first, last)`` exclusion block holding ``ip``, or None."""
        n = int(ip)
        for first, last in self.exclude:
            if first <= n <= last:
                return first, last
        return None

    def size(self):
        """Addresses that can be handed out: the gateway and exclusions not counted."""
        lo, hi = int(self.start), int(self.end)
        taken = set()
        if self.gateway.version == self.version and lo <= int(self.gateway) <= hi:
            taken.add(int(self.gateway))
        total = hi - lo + 1
        for first, last in _merge(self.exclude):
            a, b = max(first, lo), min(last, hi)
            if a <= b:
                total -= b - a + 1
                taken = {g for g in taken if not a <= g <= b}
        return total - len(taken)

    def __str__(self):
        return "%s-%s" % (self.start, self.end)

    def __repr__(self):
        return "Range(%s, %s, gw %s)" % (self.subnet, self, self.gateway)

    def __eq__(self, other):
        return isinstance(other, Range) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __hash__(self):
        return hash((self.subnet, self.start, self.end))


def _merge(blocks):
    merged = []
    for first, last in sorted(blocks):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def canonicalize(subnet_text, start, end, gateway, exclude=()):
    """Build a Range from parsed config values, applying host-local's defaults and checks.

    ``subnet_text`` is the written CIDR (already syntax-checked), the others are addresses
    or None. Deliberate differences from host-local, listed in the README: host bits in
    the subnet are cleared instead of rejected, and a rangeStart beyond a defaulted
    rangeEnd is rejected instead of allocating outside the subnet.
    """
    ip, plen, mapped = addr.parse_cidr(subnet_text)
    bits = 128 if mapped else addr.max_prefix(ip)
    if plen > bits - 2:
        raise ConfigError("Network %s/%d too small to allocate from" % (ip, plen))
    if mapped:
        raise ConfigError("IPNet IP and Mask version mismatch")
    subnet = addr.network_of(ip, plen)
    net = subnet.network_address
    if gateway is None:
        gateway = addr.add(net, 1)
    if start is not None:
        if not (start.version == ip.version and start in subnet
                and (end is None or end.version == start.version and start <= end)):
            raise ConfigError("RangeStart %s not in network %s" % (start, subnet))
    else:
        start = addr.add(net, 1)
    if end is not None:
        if not (end.version == ip.version and end in subnet and start <= end):
            raise ConfigError("RangeEnd %s not in network %s" % (end, subnet))
    else:
        end = subnet.broadcast_address
        if ip.version == 4:
            end = addr.add(end, -1)
        if start > end:
            raise ConfigError(
                "RangeStart %s is beyond RangeEnd %s, the default for %s" % (start, end, subnet)
            )
    return Range(subnet, start, end, gateway, exclude)


class RangeSet(tuple):
    """An ordered pool of disjoint ranges of one family; ADD takes one address from it."""

    __slots__ = ()

    @property
    def version(self):
        return self[0].version

    def range_for(self, ip):
        for r in self:
            if r.contains(ip):
                return r
        return None

    def contains(self, ip):
        return self.range_for(ip) is not None

    def overlaps(self, other):
        return any(a.overlaps(b) for a in self for b in other)

    def size(self):
        return sum(r.size() for r in self)

    def __str__(self):
        return ",".join(str(r) for r in self)


def make_set(ranges):
    """host-local's RangeSet.Canonicalize overlap check, on canonical ranges of one family.

    The empty-set and mixed-family checks run in the config loader, interleaved with
    the per-range checks, to report the same first error as host-local.
    """
    for i, r1 in enumerate(ranges):
        for r2 in ranges[i + 1:]:
            if r1.overlaps(r2):
                raise ConfigError("subnets %s and %s overlap" % (r1, r2))
    return RangeSet(ranges)


def describe(range_sets):
    """Range sets as plain JSON-able data, for the ``networks`` table (ipamctl's view)."""
    return [[{"subnet": str(r.subnet), "start": str(r.start), "end": str(r.end),
              "gateway": str(r.gateway), "exclude": [list(b) for b in r.exclude]}
             for r in rs] for rs in range_sets]


def from_description(desc):
    """The inverse of :func:`describe`."""
    sets = []
    for raw_set in desc:
        sets.append(RangeSet(Range(addr.network_of(*addr.parse_cidr(r["subnet"])[:2]),
                                   addr.parse_ip(r["start"]), addr.parse_ip(r["end"]),
                                   addr.parse_ip(r["gateway"]),
                                   [tuple(b) for b in r["exclude"]]) for r in raw_set))
    return tuple(sets)
