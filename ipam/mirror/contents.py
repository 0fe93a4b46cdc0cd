"""What the layout's files say, read the one way every reader reads them: which names
are address files, whose lease a file's bytes name, and which cursors a network's
mirror shows.

A leaf of the mirror: the files' writer (:mod:`ipam.mirror.files`), the reconcile after a
foreign change (:mod:`ipam.mirror.reconcile`) and ``ipamctl check`` all import it, and it
imports none of them.
"""
from ipam import addr

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional

    from ipam.addr import IP
    from ipam.lease import Lease
    from ipam.store.protocol import Store


def owner_of(data: "Optional[bytes]") -> "Optional[tuple[str, Optional[str]]]":
    """``(container_id, ifname or None)`` that a file's bytes name, or None (empty,
    garbage). Parsed only when the bytes are not what we would write ourselves."""
    from ipam.mirror.importer import parse_content  # lazy: re, off the common path

    owner, _ = parse_content(data) if data is not None else (None, None)
    return owner


def same_owner(data: "Optional[bytes]", lease: "Lease") -> "bool":
    """Does a file's content name ``lease``'s owner (in any host-local spelling)?"""
    if data is None:
        return False
    return data == lease.mirror_content() or \
        owner_of(data) == (lease.container_id, lease.ifname)


def mirrored_cursors(store: "Store", network: "str") -> "Optional[dict[int, IP]]":
    """The cursors a network's mirror must show, or None to leave its cursor files alone.

    None on a shared store: there the pool's cursor moves with every node's allocations,
    while a node's ``last_reserved_ip.N`` means what host-local's does, the last address
    this node reserved, which its own ADDs write.
    """
    return None if store.shared else store.cursors(network)


def is_address_name(name: "str") -> "bool":
    """A name the mirror can own: a canonical address (as Go's net.IP String() writes)."""
    ip = addr.parse_ip(name)
    return ip is not None and str(ip) == name
