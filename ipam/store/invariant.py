"""What the lease table keeps beside the leases, and the one check that it is right.

Besides each lease's address the table stores its sort key (``ip_key``: 16 bytes,
big-endian, IPv4 mapped into ``::ffff:0:0/96``) and a ``next_free`` flag: whether the
address right after it is free. Allocation trusts both (a free address is found with
two index probes), so a wrong flag would hand out a taken address or skip a free one.
``ipamctl check`` runs this on both engines; the tests' in-memory fake, which keeps no
flags, passes its derived rows through it too; the crash tests run it after every kill.
"""
from ipam import addr

TYPE_CHECKING = False  # typing costs a plugin call ~2 ms: read by type checkers only
if TYPE_CHECKING:
    from typing import Iterable

    # (network, ip, ip_key, next_free), as the lease table stores them
    Row = tuple[str, str, bytes, object]


def problems(rows: "Iterable[Row]") -> "list[str]":
    """Every broken invariant among ``rows``: ``(network, ip, ip_key, next_free)``
    sorted by network, then ip_key (as ``ORDER BY network, ip_key`` gives them)."""
    found = []
    prev = None
    for network, ip, key, next_free in rows:
        key = bytes(key)
        parsed = addr.parse_ip(ip)
        if parsed is None or addr.to_key(parsed) != key:
            found.append("lease %s/%s: address and key disagree" % (network, ip))
        if prev is not None and prev[0] == network:
            _check_flag(found, prev, addr.neighbour_key(prev[2], 1) == key)
        elif prev is not None:
            _check_flag(found, prev, False)
        prev = (network, ip, key, next_free)
    if prev is not None:
        _check_flag(found, prev, False)
    return found


def _check_flag(found: "list[str]", row: "Row", next_taken: "bool") -> "None":
    """The flag of ``row`` must say free exactly when the following address is not
    leased (the last lease of a network: the next address is free)."""
    if bool(row[3]) == next_taken:
        found.append("lease %s/%s: next_free flag is wrong" % row[:2])
