"""The values that cross the store boundary. Plain classes: the hot path avoids dataclasses
(importing them costs more than sqlite3 and json together)."""


class Lease:
    """One address held by one attachment. ``ifname`` is None for a legacy ID-only lease.

    ``node`` is where the attachment lives (None: the store's own node, or unrecorded).
    It is not part of equality: a lease is the same lease whichever node reads it; nor
    is ``boot_time``, a clock reading.
    """

    __slots__ = ("network", "ip", "range_set", "container_id", "ifname", "allocated_at",
                 "boot_id", "node", "boot_time")
    _COMPARED = __slots__[:-2]

    def __init__(self, network, ip, range_set, container_id, ifname, allocated_at=0.0,
                 boot_id=None, node=None, boot_time=None):
        self.network = network
        self.ip = ip
        self.range_set = range_set
        self.container_id = container_id
        self.ifname = ifname
        self.allocated_at = allocated_at
        self.boot_id = boot_id
        self.node = node
        # CLOCK_BOOTTIME at allocation, in boot_id's boot; None where unknown (imported)
        self.boot_time = boot_time

    def owned_by(self, container_id, ifname):
        """host-local's match: ``ID\\r\\nifname``, or a legacy file holding the bare ID."""
        return self.container_id == container_id and self.ifname in (ifname, None)

    def with_ifname(self, ifname):
        """The same lease, held by one interface (a legacy lease claimed by its first)."""
        return Lease(self.network, self.ip, self.range_set, self.container_id, ifname,
                     self.allocated_at, self.boot_id, self.node, self.boot_time)

    def mirror_content(self):
        """The bytes host-local keeps in ``<dataDir>/<network>/<ip>``."""
        if self.ifname is None:
            return self.container_id.encode()
        return ("%s\r\n%s" % (self.container_id, self.ifname)).encode()

    def key(self):
        return (self.network, self.ip)

    def __eq__(self, other):
        return isinstance(other, Lease) and all(
            getattr(self, k) == getattr(other, k) for k in self._COMPARED)

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        return "Lease(%s %s %s/%s set %s)" % (self.network, self.ip, self.container_id,
                                              self.ifname, self.range_set)


class Changes:
    """What one command changed in a network: the exporter mirrors exactly these."""

    __slots__ = ("network", "reserved", "released", "claimed", "cursors")

    def __init__(self, network):
        self.network = network
        self.reserved = []
        self.released = []
        self.claimed = []  # (legacy lease, the same lease claimed by one interface)
        self.cursors = {}  # range set index -> address

    def __bool__(self):
        return bool(self.reserved or self.released or self.claimed or self.cursors)


class Event:
    """One row of the lease history: an allocation or a release, and why."""

    __slots__ = ("time", "event", "reason", "network", "ip", "container_id", "ifname", "node")

    def __init__(self, time, event, reason, network, ip, container_id, ifname, node=None):
        self.time = time
        self.event = event
        self.reason = reason
        self.network = network
        self.ip = ip
        self.container_id = container_id
        self.ifname = ifname
        self.node = node

    def __repr__(self):
        return "Event(%s %s %s %s %s %s/%s)" % (self.time, self.event, self.reason,
                                                self.network, self.ip, self.container_id,
                                                self.ifname)
