"""``ipamctl reserve`` and ``unreserve``: addresses the plugin never hands out (a VM, a
router, a static host), as library calls.

A reservation is a lease row whose owner is :data:`~ipam.lease.RESERVED_ID` and whose
ifname holds the note. So the unique (network, ip) that keeps two containers off one
address keeps a container off a reserved one, with no extra query on ADD (the allocator's
index probe for a free address skips it like any lease), and everything that reads
leases sees it: ``list``, ``stats`` (counted apart), ``check``, history (reasons
``reserve`` and ``unreserve``), the mirror. Its mirror file, ``ipam:reserved\\r\\nNOTE``,
is what keeps Go host-local beside us off the address (it takes any existing file as
taken), and what reconcile, ``export`` and ``import`` read back as a reservation. What
must never free one skips it: DEL and CNI GC (no runtime can name its owner), ``ipamctl
gc``, and ``release``, which refuses it.

Both commands take host-local's lock, then the writers' queue, like ``release``; a
request refused changes nothing, not even the mirror directory.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from ipam.admin.leases import AdminError, _Held, _mirrors, _release_all, range_sets_of
from ipam.lease import RESERVED_ID, Lease, note_problem

if TYPE_CHECKING:
    from ipam.addr import IP
    from ipam.store.protocol import AdminStore, Store

RESERVE = "reserve"  # the history reasons
UNRESERVE = "unreserve"


def clean_note(note: Optional[str]) -> Optional[str]:
    """``--note`` as stored (None: no note); one no file could carry is an error."""
    if not note:
        return None
    problem = note_problem(note)
    if problem is not None:
        raise AdminError("invalid note %r: %s" % (note, problem))
    return note


def _range_set(store: Store, network: str, ip: IP) -> int:
    """The index of the range set that could hand ``ip`` out, or why it is refused: the
    ranges are the ones the plugin last recorded (an ADD records its config), since
    ipamctl has no network config; an address no range could hand out needs no
    reservation, and one outside every range is most likely a typing error."""
    sets = range_sets_of(store, network)
    if sets is None:
        raise AdminError("network %s has no recorded ranges: the plugin records a network's "
                         "ranges on its first ADD, and only an address they could hand out "
                         "can be reserved" % network)
    for idx, rs in enumerate(sets):
        r = rs.range_for(ip)
        if r is None:
            continue
        if ip == r.gateway:
            raise AdminError("%s is the gateway of network %s: it is never handed out, "
                             "so it needs no reservation" % (ip, network))
        if r.excluded(ip) is not None:
            raise AdminError("%s is excluded in network %s's config: it is never handed "
                             "out, so it needs no reservation" % (ip, network))
        return idx
    raise AdminError("%s is in no range of network %s (%s)" % (
        ip, network, ", ".join(str(rs) for rs in sets)))


def _free(store: Store, network: str, ip: IP) -> int:
    """Refuse an address that is held; its range set's index otherwise."""
    idx = _range_set(store, network, ip)
    holder = store.lease_at(network, ip)
    if holder is not None and holder.is_reservation():
        raise AdminError("%s is already reserved in network %s%s" % (
            ip, network, "" if holder.ifname is None else " (%s)" % holder.ifname))
    if holder is not None:
        raise AdminError("%s is leased in network %s to %s%s: release it first" % (
            ip, network, holder.container_id,
            "" if holder.ifname is None else " interface " + holder.ifname))
    return idx


def reserve(store: Store, network: str, ip: IP, note: Optional[str], data_dir: str
            ) -> tuple[Lease, list[str]]:
    """Reserve ``ip`` in ``network``: refused while a lease holds it, or outside the
    network's ranges. Returns the reservation and what was left in the mirror (files of
    other writers, for stderr).

    Checked once before any file is touched (a refusal leaves even the directory as it
    was), then again inside the transaction, after host-local's files were reconciled:
    a Go lease made meanwhile is recorded first, and refuses the reservation.
    """
    note = clean_note(note)
    with store.transaction():
        _free(store, network, ip)
    held = _Held()
    try:
        held.open(store, _mirrors(store, [network], data_dir))
        files = held.files.get(network)
        with store.transaction(after_commit=held.committed):
            sets = range_sets_of(store, network)
            store.lock_network(network, len(sets or ()) or 1)  # as the plugin does
            if files is not None:
                files.reconcile_if_changed(sets)
            idx = _free(store, network, ip)
            # Of no boot (a boot's leases tell that it is alive: ipam.node_boots) and no
            # pod; the node is the store's, whose mirror gets the file.
            lease = Lease(network, ip, idx, RESERVED_ID, note, time.time())
            if files is not None:
                holder = files.claim(lease)
                if holder is not None:
                    raise AdminError("%s/%s exists and names %s: the address is taken" % (
                        files.d.path, ip, "no owner" if holder is False else "%s %s" % (
                            holder.container_id, holder.ifname or "")))
            if store.import_leases(network, [lease], RESERVE) != 1:
                raise AdminError("%s is already held in network %s" % (ip, network))
            if files is not None:
                files.record()
            made = store.lease_at(network, ip)
            assert made is not None  # inserted just above, in this transaction
    finally:
        held.close()
    return made, [p for f in held.files.values() for p in f.problems + f.notes]


def unreserve(store: AdminStore, network: str, ip: IP, data_dir: str) -> tuple[Lease, list[str]]:
    """Free a reserved address (history reason ``unreserve``, its file removed); an
    address that is not reserved is an error, a container's lease above all (``release``
    frees those). On a shared store only the node whose mirror has its file may: its
    file elsewhere would bring it back."""
    with store.transaction():
        lease = store.lease_at(network, ip)
        if lease is None or not lease.is_reservation():
            raise AdminError("%s is not reserved in network %s%s" % (
                ip, network, "" if lease is None else " (it is leased to %s: 'ipamctl "
                "release' frees a lease)" % lease.container_id))
        if store.shared and store.scope is not None and lease.node != store.scope:
            raise AdminError("%s is reserved by node %s: its mirror holds the file, so "
                             "unreserve it there (or with --node %s --data-dir DIR)" % (
                                 ip, lease.node, lease.node))
    held = _Held()
    try:
        held.open(store, _mirrors(store, [network], data_dir))
        with store.transaction(after_commit=held.committed):
            released, problems = _release_all(store, [lease], UNRESERVE, held)
    finally:
        held.close()
    if not released:
        raise AdminError("%s changed in network %s meanwhile; nothing was unreserved"
                         % (ip, network))
    return released[0], problems
