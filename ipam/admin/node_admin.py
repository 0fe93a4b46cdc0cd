"""``ipamctl node``: which hosts use each node name, and taking a name back.

The records are the plugin's (:mod:`ipam.node_boots`): one per name and boot of a host.
Reading them never writes. Taking a name back drops the records of every other boot of
the name, so that a conflict they were part of stops refusing GC; it is refused while
one of them is still active, since a host that is still running would only be taken
for gone (and its leases for leftovers) until its next call.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ipam import node_boots
from ipam.errors import IpamError
from ipam.lease import Boot

if TYPE_CHECKING:
    from ipam.node_boots import Conflict
    from ipam.store.protocol import AdminStore, Store


def boot_row(b: Boot, now: float, leases: int, me: Optional[str], conflict: bool
             ) -> dict[str, Any]:
    """A boot as ``ipamctl node list`` shows it (times as the database's clock gave
    them, seconds since the epoch)."""
    return {"node": b.node, "boot_id": b.boot_id, "host": b.host,
            "first_seen": b.first_seen, "last_seen": b.seen_at, "leases": leases,
            "this_host": b.boot_id == me,
            "active": b.boot_id == me or now - b.seen_at < node_boots.ACTIVE_WINDOW,
            "conflict": conflict}


def boots(store: Store, node: Optional[str], me: Optional[str]
          ) -> tuple[list[dict[str, Any]], list[Conflict]]:
    """Every recorded boot of ``node`` (None: of every name), and the conflicts that
    stand, seen from this host's boot ``me``."""
    with store.transaction():
        now, rows = store.boots(node)
        counts = store.boot_leases(node)
        found = node_boots.conflicts(store, node, me)
    involved = {(c.node, b.boot_id) for c in found for b in c.boots}
    return [boot_row(b, now, counts.get((b.node, b.boot_id), 0), me,
                     (b.node, b.boot_id) in involved) for b in rows], found


def claim(store: AdminStore, me: Optional[str], host: str) -> tuple[str, list[dict[str, Any]]]:
    """Take the store's node name back for this host's boot ``me``: the records of
    every other boot of the name go, and ``me`` is stamped as its latest. Returns the
    name and the boots dropped (with the leases they made, which stay: the name's GC
    judges them from now on). Refused while another boot was active within
    :data:`~ipam.node_boots.ACTIVE_WINDOW`."""
    node = store.node
    if me is None or node is None:
        raise IpamError("this host has no boot id (/proc/sys/kernel/random/boot_id) to "
                        "claim a node name with")
    with store.transaction():
        now, rows = store.boots(node)
        others = [b for b in rows if b.boot_id != me]
        busy = [b for b in others if now - b.seen_at < node_boots.ACTIVE_WINDOW]
        if busy:
            b = max(busy, key=lambda x: x.seen_at)
            wait = node_boots.ACTIVE_WINDOW - (now - b.seen_at)
            raise IpamError(
                "not claimed: boot %s (host name %s) used node name %s %ds ago. If its "
                "host is gone, try again in %ds; if it still runs, give one of the two "
                "another ipam.node" % (b.boot_id, b.host or "?", node, now - b.seen_at,
                                       wait + 1))
        counts = store.boot_leases(node)
        dropped = [boot_row(b, now, counts.get((node, b.boot_id), 0), me, False)
                   for b in others]
        store.forget_boots(node, me)
        mine = next((b for b in rows if b.boot_id == me), None)
        seq = max((b.last_seq for b in rows), default=0) + 1
        store.stamp_boot(Boot(node, me, host, seq if mine is None else mine.first_seq, seq,
                              now if mine is None else mine.first_seen, now))
    return node, dropped
