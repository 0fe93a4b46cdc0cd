"""The values that cross the store boundary. Plain classes: the hot path avoids dataclasses
(importing them costs more than sqlite3 and json together)."""
from ipam import system

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional

    from ipam.addr import IP

    # (namespace, name, uid) as the runtime sent them in CNI_ARGS, None where it did not.
    Pod = tuple[Optional[str], ...]


# The identity of a lease made without one (no K8S_POD_* in CNI_ARGS, imported, adopted,
# or made before schema revision 0006).
NO_POD = (None, None, None)

# The container ID of a reservation (``ipamctl reserve``): an address no one may be given.
# A reservation is a lease row with this owner, so the unique (network, ip) that makes
# every lease exclusive makes it exclusive too, and the allocator's one index probe for
# a free address skips it at no extra cost; its ifname column holds the operator's note
# (None: none), as its mirror file's second line does. The ':' is outside skel's
# container-ID characters (ours and Go's refuse it), so no runtime's ADD, DEL or GC can
# name this owner, and Go host-local, which takes any existing file as taken, skips the
# address too.
RESERVED_ID = "ipam:reserved"
# A note is one line of printable text: its file is read back line by line and trimmed
# (host-local's TrimSpace), and the importer reads at most 4 KiB of a file.
MAX_NOTE = 200


def note_problem(note: "str") -> "Optional[str]":
    """Why ``note`` cannot be a reservation's note (None: it can)."""
    if len(note) > MAX_NOTE:
        return "a note is at most %d characters" % MAX_NOTE
    if not note.isprintable():
        return "a note is one line of printable characters"
    if note != note.strip():
        return "a note does not start or end with white space"
    return None


class Lease:
    """One address held by one attachment. ``ifname`` is None for a legacy ID-only lease.

    ``node`` is where the attachment lives (None: the store's own node, or unrecorded).
    It is not part of equality: a lease is the same lease whichever node reads it; nor
    is ``boot_time``, a clock reading; nor the pod identity (``pod_namespace``,
    ``pod_name``, ``pod_uid``: what the runtime said in CNI_ARGS, None where it said
    nothing), a label for people that the owner (container ID, ifname) already fixes.
    """

    __slots__ = ("network", "ip", "range_set", "container_id", "ifname", "allocated_at",
                 "boot_id", "node", "boot_time", "pod_namespace", "pod_name", "pod_uid")
    _COMPARED = ("network", "ip", "range_set", "container_id", "ifname", "allocated_at",
                 "boot_id")

    def __init__(self, network: "str", ip: "IP", range_set: "int", container_id: "str",
                 ifname: "Optional[str]", allocated_at: "float" = 0.0,
                 boot_id: "Optional[str]" = None, node: "Optional[str]" = None,
                 boot_time: "Optional[float]" = None, pod_namespace: "Optional[str]" = None,
                 pod_name: "Optional[str]" = None, pod_uid: "Optional[str]" = None) -> "None":
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
        self.pod_namespace = pod_namespace
        self.pod_name = pod_name
        self.pod_uid = pod_uid

    def pod(self) -> "Pod":
        """``(pod_namespace, pod_name, pod_uid)``: :data:`NO_POD` when none was recorded."""
        return (self.pod_namespace, self.pod_name, self.pod_uid)

    def owned_by(self, container_id: "str", ifname: "Optional[str]") -> "bool":
        """host-local's match: ``ID\\r\\nifname``, or a legacy file holding the bare ID."""
        return self.container_id == container_id and self.ifname in (ifname, None)

    def is_reservation(self) -> "bool":
        """An address ``ipamctl reserve`` keeps out of the pool, not a container's lease."""
        return self.container_id == RESERVED_ID

    def with_ifname(self, ifname: "Optional[str]") -> "Lease":
        """The same lease, held by one interface (a legacy lease claimed by its first)."""
        return Lease(self.network, self.ip, self.range_set, self.container_id, ifname,
                     self.allocated_at, self.boot_id, self.node, self.boot_time, *self.pod())

    def mirror_content(self) -> "bytes":
        """The bytes host-local keeps in ``<dataDir>/<network>/<ip>``."""
        if self.ifname is None:
            return self.container_id.encode()
        return ("%s\r\n%s" % (self.container_id, self.ifname)).encode()

    def key(self) -> "tuple[str, IP]":
        return (self.network, self.ip)

    def __eq__(self, other: "object") -> "bool":
        return isinstance(other, Lease) and all(
            getattr(self, k) == getattr(other, k) for k in self._COMPARED)

    def __hash__(self) -> "int":
        return hash(self.key())

    def __repr__(self) -> "str":
        return "Lease(%s %s %s/%s set %s)" % (self.network, self.ip, self.container_id,
                                              self.ifname, self.range_set)


def new_boot_time(lease):
    """The boot clock a new lease records: its own (a copy), or now when the lease is of
    this boot; None for a lease of an earlier boot (imported), aged by its wall clock."""
    if lease.boot_time is not None:
        return lease.boot_time
    return system.boot_clock() if lease.boot_id in (None, system.boot_id()) else None


class NetworkRecord:
    """A network as the last ADD saw its config: where its mirror is (``data_dir``),
    whether it is mirrored (``export``) and its ranges (``range_sets``: JSON, as
    :func:`ipam.ranges.describe` gives them). ipamctl has no network config: this is what
    stats, export, check and gc know of a network. A config key ipamctl must see is one
    more field here and one more column in the ``networks`` table."""

    __slots__ = ("data_dir", "export", "range_sets")

    def __init__(self, data_dir, export, range_sets):
        self.data_dir = data_dir
        self.export = bool(export)
        self.range_sets = range_sets

    def same_config(self, other, shared):
        """Whether ``other`` needs no write over this record. On a shared database every
        node has its own dataDir: a node's differing from the last writer's is no change
        (ipamctl there uses its own --data-dir)."""
        return (other is not None and self.export == other.export
                and self.range_sets == other.range_sets
                and (shared or self.data_dir == other.data_dir))

    def __eq__(self, other):
        return isinstance(other, NetworkRecord) and self.same_config(other, False)

    def __repr__(self):
        return "NetworkRecord(%r, %r, %r)" % (self.data_dir, self.export, self.range_sets)


class Changes:
    """What one command changed in a network: the exporter mirrors exactly these."""

    __slots__ = ("network", "reserved", "released", "claimed", "cursors")

    def __init__(self, network: "str") -> "None":
        self.network = network
        self.reserved: list[Lease] = []
        self.released: list[Lease] = []
        # (legacy lease, the same lease claimed by one interface)
        self.claimed: list[tuple[Lease, Lease]] = []
        self.cursors: dict[int, IP] = {}  # range set index -> address

    def __bool__(self) -> "bool":
        return bool(self.reserved or self.released or self.claimed or self.cursors)


class Event:
    """One row of the lease history: an allocation or a release, and why; with the
    lease's pod identity as it was at that moment."""

    __slots__ = ("time", "event", "reason", "network", "ip", "container_id", "ifname", "node",
                 "pod_namespace", "pod_name", "pod_uid")

    # ``ip`` is the address's text, as the history table holds it.
    def __init__(self, time: "float", event: "str", reason: "str", network: "str", ip: "str",
                 container_id: "str", ifname: "Optional[str]", node: "Optional[str]" = None,
                 pod_namespace: "Optional[str]" = None, pod_name: "Optional[str]" = None,
                 pod_uid: "Optional[str]" = None) -> "None":
        self.time = time
        self.event = event
        self.reason = reason
        self.network = network
        self.ip = ip
        self.container_id = container_id
        self.ifname = ifname
        self.node = node
        self.pod_namespace = pod_namespace
        self.pod_name = pod_name
        self.pod_uid = pod_uid

    def __repr__(self) -> "str":
        return "Event(%s %s %s %s %s %s/%s)" % (self.time, self.event, self.reason,
                                                self.network, self.ip, self.container_id,
                                                self.ifname)


class Boot:
    """One boot of a host under a node name, as the ``node_boots`` table records it: the
    kernel's ``boot_id``, the ``host`` name then, the stamps' order numbers
    (``first_seq``..``last_seq``: per name, each stamp one more than any before it) and
    the database clock's ``first_seen`` and ``seen_at``."""

    __slots__ = ("node", "boot_id", "host", "first_seq", "last_seq", "first_seen", "seen_at")

    def __init__(self, node: "str", boot_id: "str", host: "Optional[str]", first_seq: "int",
                 last_seq: "int", first_seen: "float", seen_at: "float") -> "None":
        self.node = node
        self.boot_id = boot_id
        self.host = host
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.first_seen = first_seen
        self.seen_at = seen_at

    def row(self) -> "tuple":
        return (self.node, self.boot_id, self.host, self.first_seq, self.last_seq,
                self.first_seen, self.seen_at)

    def __eq__(self, other: "object") -> "bool":
        return isinstance(other, Boot) and self.row() == other.row()

    def __repr__(self) -> "str":
        return "Boot(%s %s %s..%s)" % (self.node, self.boot_id, self.first_seq, self.last_seq)
