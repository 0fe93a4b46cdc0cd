"""Choosing leases and history events by who holds them, as operators name them: a
container ID, a pod (``NS/NAME``) or a name. Shared by ``ipamctl list``, ``history``,
``release`` and ``gc``; it works on anything with ``container_id``, ``pod_namespace``
and ``pod_name`` (:class:`~ipam.lease.Lease`, :class:`~ipam.lease.Event`).

A container ID is taken whole unless the operator marks it as the start of one
(``3f2a9c...``, :data:`ipam.admin.labels.PREFIX`). What a start may choose depends on the
command:

- reading (``list``, ``history``): a whole ID selects only itself, even where it starts
  another and even when it holds nothing now; an unmarked text that is no ID the
  database knows, or a marked start, chooses the one container among the items the
  other filters keep whose ID it starts, and says so (:attr:`Found.note`);
- changing (``release``, ``gc``'s lists): an unmarked text is a whole ID, never a start;
  a marked start must fit exactly one container the whole database knows (leases of
  every node, and the history), whatever the other options select.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Optional, TypeVar

from ipam.admin.labels import PREFIX, container_ref, least, pod_label, short_ids
from ipam.errors import IpamError
from ipam.lease import Event, Lease

if TYPE_CHECKING:
    from ipam.store.protocol import AdminStore

Held = TypeVar("Held", Lease, Event)
T = TypeVar("T")


class AmbiguousContainer(IpamError):
    """A container ID's start that fits more than one ID: nothing is chosen."""


class Found(list[T]):
    """Leases or events chosen for ipamctl to show. ``note``: how a container ID's start
    was read, for the operator (None: it was not). ``shown``: ``{container ID: the
    short form a table prints}`` for the IDs a table shortens (see
    :func:`ipam.admin.labels.short_ids`); the others print whole."""

    def __init__(self, items: Iterable[T] = (), note: Optional[str] = None,
                 shown: Optional[dict[str, str]] = None) -> None:
        super().__init__(items)
        self.note = note
        self.shown = shown if shown is not None else {}


def found(store: AdminStore, items: Iterable[Held], note: Optional[str] = None) -> Found[Held]:
    """``items`` with the short form of each ID, unique among every ID the database
    knows (inside the caller's transaction): a table's ID works as ``--container``."""
    items = list(items)
    long = {x.container_id for x in items if len(x.container_id) > least(x.container_id)
            + len(PREFIX)}
    known = store.container_ids({cid[:least(cid)] for cid in long}) if long else set()
    return Found(items, note, short_ids(long, known))


def of_container(items: Iterable[Held], text: str, known: Iterable[str]
                 ) -> tuple[list[Held], Optional[str]]:
    """For a read-only command: the items of the container ``text`` names, and a note
    when a start chose it. ``known``: the IDs the database knows that start with
    ``text`` (``store.container_ids``), to tell a whole ID from a start."""
    start, marked = container_ref(text)
    if not marked:
        exact = [x for x in items if x.container_id == start]
        if exact or start in set(known):
            return exact, None
    ids: dict[str, list[Held]] = {}
    for x in items:
        if x.container_id.startswith(start):
            ids.setdefault(x.container_id, []).append(x)
    if len(ids) > 1:
        raise _ambiguous(text, ids, "")
    if not ids:
        return [], None
    [(cid, chosen)] = ids.items()
    return chosen, "--container %s chose container %s: the start of its ID" % (text, cid)


def the_container(text: str, known: Iterable[str], leases: Iterable[Lease] = ()
                  ) -> Optional[str]:
    """For a command that changes something: the one whole ID ``text`` names. An
    unmarked text is that ID; a marked start must fit exactly one of ``known`` (every ID
    the database knows that starts with it), else it names none (None) or is ambiguous
    (raised, with the pods of ``leases``)."""
    start, marked = container_ref(text)
    if not marked:
        return start
    ids = sorted({cid for cid in known if cid.startswith(start)})
    if len(ids) > 1:
        named: dict[str, list[Lease]] = {cid: [] for cid in ids}
        for lease in leases:
            if lease.container_id in named:
                named[lease.container_id].append(lease)
        raise _ambiguous(text, named, " in the database")
    return ids[0] if ids else None


def _ambiguous(text: str, ids: Mapping[str, Iterable[Lease | Event]], where: str
               ) -> AmbiguousContainer:
    return AmbiguousContainer(
        "container ID prefix %s is ambiguous: %d containers%s match; give more characters"
        % (text, len(ids), where),
        "\n".join("  %s%s" % (cid, _names(items)) for cid, items in sorted(ids.items())))


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
