"""host-local's allocation rules as pure logic over the Store contract.

Round-robin per range set from a persistent cursor, so that a crash-looping container
does not get the same address straight back; the gateway and excluded addresses are
skipped; requested addresses are honoured; and (a deliberate difference) a repeated ADD
for the same attachment returns what it already holds. The caller wraps each command in
one store transaction, so a failure anywhere undoes every range set, cursors included.
"""
from ipam import addr
from ipam.errors import AllocationError, NotFound, Retry
from ipam.lease import NO_POD, Changes, Lease

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Iterable, Optional

    from ipam.addr import IP
    from ipam.lease import Pod
    from ipam.mirror.files import NetworkFiles
    from ipam.ranges import Range, RangeSet
    from ipam.store.protocol import Store


class Allocation:
    """One address of an ADD result: the address, its prefix length and its gateway."""

    __slots__ = ("ip", "prefixlen", "gateway", "lease")

    def __init__(self, ip: "IP", prefixlen: "int", gateway: "IP", lease: "Lease") -> "None":
        self.ip, self.prefixlen, self.gateway, self.lease = ip, prefixlen, gateway, lease

    def as_tuple(self) -> "tuple[IP, int, IP]":
        return (self.ip, self.prefixlen, self.gateway)


def add(store: "Store", network: "str", range_sets: "Iterable[RangeSet]",
        requested: "Iterable[IP]", container_id: "str", ifname: "str", now: "float" = 0.0,
        files: "Optional[NetworkFiles]" = None, pod: "Optional[Pod]" = None
        ) -> "tuple[list[Allocation], Changes]":
    """Allocate one address per range set; returns ``(allocations, changes)``.

    ``pod``: the identity the runtime sent, ``(namespace, name, uid)``, recorded with new
    leases, and with held ones that have none yet (adopted, imported, older): the first
    identity recorded stays, as the owner does.

    ``files`` (the network's mirror, or None) claims each new address's file before the
    lease is taken: an address whose file someone else holds is skipped, as host-local
    skips it. Raises AllocationError with host-local's messages; the transaction then
    rolls back.
    """
    changes = Changes(network)
    pending = list(requested)
    held = store.leases_of(network, container_id, ifname) + \
        store.leases_of(network, container_id, None)
    allocations = []
    for idx, rs in enumerate(range_sets):
        want = next((ip for ip in pending if rs.contains(ip)), None)
        try:
            if want is not None:
                pending.remove(want)
                lease = _get_requested(store, network, rs, idx, want, container_id, ifname,
                                       now, changes, files, pod)
            else:
                lease = _get_dynamic(store, network, rs, idx, held, container_id, ifname, now,
                                     changes, files, pod)
        except AllocationError as e:
            raise AllocationError("failed to allocate for range %d: %s" % (idx, e.msg)) from None
        r = rs.range_for(lease.ip)
        assert r is not None  # the lease was found or taken in rs
        allocations.append(Allocation(lease.ip, r.subnet.prefixlen, r.gateway, lease))
    if pending:
        raise AllocationError("failed to allocate all requested IPs: %s"
                              % " ".join(str(ip) for ip in pending))
    return allocations, changes


def _reserve(store: "Store", lease: "Lease", idx: "int", changes: "Changes") -> "Lease":
    if not store.reserve(lease, "add"):
        # Found free, yet taken at insert: only a writer outside the network's lock can
        # do that (another node's ipamctl mid-way); the whole command is tried again.
        raise Retry("address %s was taken while allocating it" % lease.ip)
    # host-local rewrites last_reserved_ip.N after every reserve, requested or not.
    store.set_last_reserved(lease.network, idx, lease.ip)
    changes.reserved.append(lease)
    changes.cursors[idx] = lease.ip
    return lease


def _claim(store: "Store", lease: "Lease", ifname: "str", changes: "Changes") -> "Lease":
    """A legacy ID-only lease (a pre-0.8 host-local file) goes to the first interface of
    its container that asks, and from then on to that one alone: a second interface
    gets an address of its own, and a DEL of one never frees the other's."""
    if lease.ifname is not None:
        return lease
    claimed = store.claim_legacy(lease, ifname)
    changes.claimed.append((lease, claimed))
    return claimed


def _new_lease(network: "str", ip: "IP", idx: "int", container_id: "str", ifname: "str",
               now: "float", pod: "Optional[Pod]") -> "Lease":
    return Lease(network, ip, idx, container_id, ifname, now, None, None, None, *(pod or NO_POD))


def _get_requested(store: "Store", network: "str", rs: "RangeSet", idx: "int", ip: "IP",
                   container_id: "str", ifname: "str", now: "float", changes: "Changes",
                   files: "Optional[NetworkFiles]", pod: "Optional[Pod]") -> "Lease":
    r = rs.range_for(ip)
    assert r is not None  # add() asks for an address only of the set that contains it
    if ip == r.gateway:
        raise AllocationError("requested ip %s is subnet's gateway" % ip)
    if r.excluded(ip):
        raise AllocationError("requested ip %s is excluded from range set %s" % (ip, rs))
    holder = store.lease_at(network, ip)
    if holder is not None:
        if holder.owned_by(container_id, ifname):
            store.renew(holder, pod)
            return _claim(store, holder, ifname, changes)  # a repeated ADD: it holds it
        raise AllocationError("requested IP address %s is not available in range set %s"
                              % (ip, rs))
    lease = _new_lease(network, ip, idx, container_id, ifname, now, pod)
    if files is not None and files.claim(lease) is not None:
        raise AllocationError("requested IP address %s is not available in range set %s"
                              % (ip, rs))
    return _reserve(store, lease, idx, changes)


def _get_dynamic(store: "Store", network: "str", rs: "RangeSet", idx: "int",
                 held: "list[Lease]", container_id: "str", ifname: "str", now: "float",
                 changes: "Changes", files: "Optional[NetworkFiles]", pod: "Optional[Pod]"
                 ) -> "Lease":
    for lease in held:
        if rs.contains(lease.ip):
            store.renew(lease, pod)
            # host-local: "duplicate allocation is not allowed"; we return it
            return _claim(store, lease, ifname, changes)
    cursor = store.last_reserved(network, idx)
    skipped = set()
    while True:
        ip = next_free(store, network, rs, cursor)
        # Back at an address skipped before: the iterator went all the way round.
        if ip is None or ip in skipped:
            raise AllocationError("no IP addresses available in range set: %s" % (rs,))
        lease = _new_lease(network, ip, idx, container_id, ifname, now, pod)
        if files is None or files.claim(lease) is None:
            return _reserve(store, lease, idx, changes)
        # Its file names someone else (now recorded, if it named anyone): go on from it.
        skipped.add(ip)
        cursor = ip


def segments(rs: "RangeSet", cursor: "Optional[IP]") -> "list[tuple[Range, IP, IP]]":
    """The address intervals in host-local's iterator order.

    From the address after the cursor to the end of its range, through the following
    ranges, wrapping round, and ending with the cursor itself: the last address handed
    out is reused only when nothing else is free. A cursor outside the set (config
    changed, garbage) starts at range 0, as host-local does.
    """
    pos = next((i for i, r in enumerate(rs) if r.contains(cursor)), None) \
        if cursor is not None else None
    if cursor is None or pos is None:
        return [(r, r.start, r.end) for r in rs]
    here = rs[pos]
    out = []
    if cursor < here.end:
        out.append((here, cursor + 1, here.end))
    n = len(rs)
    out.extend((rs[(pos + k) % n], rs[(pos + k) % n].start, rs[(pos + k) % n].end)
               for k in range(1, n))
    out.append((here, here.start, cursor))
    return out


def next_free(store: "Store", network: "str", rs: "RangeSet", cursor: "Optional[IP]"
              ) -> "Optional[IP]":
    """The next address host-local's iterator would hand out, by index probes, not a walk."""
    for r, lo, hi in segments(rs, cursor):
        ip = first_allowed(store, network, r, lo, hi)
        if ip is not None:
            return ip
    return None


def first_allowed(store: "Store", network: "str", r: "Range", lo: "Optional[IP]", hi: "IP"
                  ) -> "Optional[IP]":
    """The lowest free address in [lo, hi] that is neither the gateway nor excluded."""
    while lo is not None and lo <= hi:
        ip = store.first_free(network, lo, hi)
        if ip is None:
            return None
        if ip == r.gateway:
            lo = addr.add(ip, 1)
            continue
        block = r.excluded(ip)
        if block is not None:
            lo = addr.from_int(ip.version, block[1] + 1) if block[1] < int(hi) else None
            continue
        return ip
    return None


def release(store: "Store", network: "str", container_id: "str", ifname: "str",
            n_sets: "int", reason: "str" = "del") -> "Changes":
    """DEL: free the attachment's leases in the network, whatever the current ranges.

    host-local releases per range set: the first pass frees ``ID\\r\\nifname`` files, and
    a pass that finds none frees legacy files holding only the ID. With two or more range
    sets the second pass always finds none, so legacy leases of the ID go too.
    """
    changes = Changes(network)
    doomed = store.leases_of(network, container_id, ifname)
    if not doomed or n_sets >= 2:
        doomed += store.leases_of(network, container_id, None)
    for lease in doomed:
        store.release(lease, reason)
        changes.released.append(lease)
    return changes


def check(store: "Store", network: "str", container_id: "str", ifname: "str",
          prev_ips: "Optional[Iterable[IP]]" = None) -> "None":
    """CHECK: the attachment holds a lease; with a prevResult, it holds every address in it."""
    held = store.leases_of(network, container_id, ifname) or \
        store.leases_of(network, container_id, None)
    if not held:
        raise NotFound("host-local: Failed to find address added by container %s"
                       % container_id)
    for ip in prev_ips or ():
        lease = store.lease_at(network, ip)
        if lease is None or not lease.owned_by(container_id, ifname):
            raise NotFound("host-local: address %s in prevResult is not leased to container "
                           "%s interface %s" % (ip, container_id, ifname))


def gc(store: "Store", network: "str", valid: "set[tuple[str, str]]") -> "Changes":
    """CNI GC: release every lease of the network not in ``valid`` ((id, ifname) pairs).

    A legacy ID-only lease matches on the container ID alone, so an upgrade from old
    host-local files does not wipe them; an empty list releases every lease. A
    reservation (``ipamctl reserve``) is no attachment: no list names it, and it stays.
    """
    changes = Changes(network)
    ids = {cid for cid, _ in valid}
    for lease in store.leases(network):
        if lease.is_reservation():
            continue
        keep = (lease.container_id, lease.ifname) in valid if lease.ifname is not None \
            else lease.container_id in ids
        if not keep:
            store.release(lease, "gc")
            changes.released.append(lease)
    return changes


def exhausted(store: "Store", network: "str", range_sets: "Iterable[RangeSet]"
              ) -> "Optional[tuple[int, RangeSet]]":
    """STATUS: the first range set with no free address, as ``(index, set)``, or None."""
    for idx, rs in enumerate(range_sets):
        if next_free(store, network, rs, None) is None:
            return idx, rs
    return None
