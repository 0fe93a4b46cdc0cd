"""Choosing leases and history events by who holds them, as operators name them: a
container ID or the start of one, a pod (``NS/NAME``) or a name. Shared by ``ipamctl
list``, ``history`` and ``release``; it works on anything with ``container_id``,
``pod_namespace`` and ``pod_name`` (:class:`~ipam.lease.Lease`, :class:`~ipam.lease.Event`).
"""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from ipam.errors import IpamError
from ipam.lease import Event, Lease, pod_label

Held = TypeVar("Held", Lease, Event)


class AmbiguousContainer(IpamError):
    """A container ID prefix that starts more than one ID: nothing is chosen."""


def of_container(items: Iterable[Held], container: str) -> list[Held]:
    """The leases (or events) of the container ``container`` names: its whole ID, or the
    start of exactly one ID among ``items`` (podman and crictl show 12 characters).

    An ambiguous prefix is an error listing the IDs it matches; a whole ID is never
    ambiguous, even where it starts another."""
    ids: dict[str, list[Held]] = {}
    for x in items:
        if x.container_id.startswith(container):
            ids.setdefault(x.container_id, []).append(x)
    if container in ids or len(ids) < 2:
        return ids.get(container) or next(iter(ids.values()), [])
    raise AmbiguousContainer(
        "container ID prefix %s is ambiguous: %d containers match; give more characters"
        % (container, len(ids)),
        "\n".join("  %s%s" % (cid, _names(found)) for cid, found in sorted(ids.items())))


def _names(items: Iterable[Lease | Event]) -> str:
    labels = sorted(label for label in {pod_label(x.pod_namespace, x.pod_name) for x in items}
                    if label is not None)
    return "  (%s)" % ", ".join(labels) if labels else ""


def of_pod(items: Iterable[Held], pod: Optional[tuple[Optional[str], str]] = None,
           name: Optional[str] = None) -> list[Held]:
    """``items`` whose identity matches: ``pod`` is ``(namespace, name)``, a None
    namespace meaning that none was sent; ``name`` is the name in any namespace."""
    return [x for x in items
            if (pod is None or (x.pod_namespace, x.pod_name) == pod)
            and (name is None or x.pod_name == name)]
