"""``ipamctl gc --cri``'s question to the node's CRI runtime: which pod sandboxes live,
and which networks their list can judge. The HTTP/2 library is imported only when asked,
so a host without the ``cri`` extra learns what to install instead of a traceback.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from ipam.cri.defaults import DEFAULT_ENDPOINT, TIMEOUT
from ipam.errors import CriError


class Live(NamedTuple):
    """What the runtime says: its ``sandboxes`` (IDs, ready or not) and the ``networks``
    whose leases they judge."""

    sandboxes: list[str]
    networks: list[str]


def live(endpoint: str = DEFAULT_ENDPOINT, networks: Optional[Sequence[str]] = None,
         timeout: float = TIMEOUT) -> Live:
    """The runtime's pod sandboxes, and the networks to judge by them: ``networks`` when
    given, else the CNI networks the runtime loaded (never every network of the
    database: a node may also run podman, whose containers CRI does not list).
    Sandboxes are listed first: one finished after that is younger than any grace."""
    try:
        import h2.connection  # noqa: F401  (the one dependency of ipam.cri.grpc_call)
    except ImportError as e:
        raise CriError("ipamctl gc --cri needs the h2 library (%s): install "
                       "host-local-sqlite[cri], or use the self-contained build" % e) from None
    from ipam.cri import client

    ids = client.sandbox_ids(endpoint, timeout)
    names = list(networks) if networks else client.cni_networks(endpoint, timeout)
    return Live(ids, names)
