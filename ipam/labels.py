"""Who holds a lease, as operators read it in ``ipamctl``'s tables and type it back into
its filters:

- a container ID longer than a table's column is shortened to its start, at least
  :data:`SHORT_ID` characters and as many more as make it the start of no other ID the
  database knows, followed by :data:`PREFIX`: exactly the form ``--container`` reads as
  "the one container whose ID starts with this". An ID without the mark is a whole ID;
- a pod reads ``NS/NAME``, or ``NAME`` where no namespace was sent (podman).

Only ipamctl loads this module; the plugin records values as sent.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional

from ipam.errors import IpamError

# podman and docker show container IDs in 12 characters; a table shows at least as many.
SHORT_ID = 12
# Marks the start of a container ID. CNI allows '.' in an ID, but no runtime makes IDs
# that end in three of them; '*' would be glob-expanded by the shell.
PREFIX = "..."


class BadLabel(IpamError):
    """Text that is not in the form a table prints (a usage error for ipamctl)."""


# -- container IDs -------------------------------------------------------------------
def container_ref(text: str) -> tuple[str, bool]:
    """``--container`` text -> ``(text, False)`` for a whole ID, ``(start, True)`` for
    one marked as the start of an ID (``3f2a9c...``)."""
    if not text.endswith(PREFIX):
        return text, False
    start = text[:-len(PREFIX)]
    if not start:
        raise BadLabel("%r names no container: put the first characters of an ID before "
                       "%s" % (text, PREFIX))
    return start, True


def short_ids(ids: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """``{id: how a table prints it}`` for the ``ids`` a table shows in short; the others
    print whole. ``known`` holds every ID the database knows that shares an ID's first
    :data:`SHORT_ID` characters (more do no harm). A short form is never longer than
    the whole ID."""
    long = {cid for cid in ids if len(cid) > SHORT_ID + len(PREFIX)}
    every = long.union(known)
    shared = Counter(cid[:SHORT_ID] for cid in every)
    out = {cid: cid[:SHORT_ID] + PREFIX for cid in long if shared[cid[:SHORT_ID]] == 1}
    groups: dict[str, list[str]] = {}  # the IDs that share their first SHORT_ID characters
    for cid in every:
        if shared[cid[:SHORT_ID]] > 1:
            groups.setdefault(cid[:SHORT_ID], []).append(cid)
    for group in groups.values():
        group.sort()  # an ID shares the most with its neighbours in sorted order
        for i, cid in enumerate(group):
            if cid not in long:
                continue
            n = 1 + max(_common(cid, group[j]) for j in (i - 1, i + 1) if 0 <= j < len(group))
            if n + len(PREFIX) < len(cid):
                out[cid] = cid[:n] + PREFIX
    return out


def _common(a: str, b: str) -> int:
    """How many first characters ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):  # as far as the shorter goes
        if x != y:
            break
        n += 1
    return n


# -- pods ----------------------------------------------------------------------------
def pod_label(namespace: Optional[str], name: Optional[str]) -> Optional[str]:
    """How people read an identity: ``NS/NAME``, or ``NAME`` where no namespace was sent
    (podman), or None. ``ipamctl --pod`` takes the same text."""
    if name is None:
        return None if namespace is None else namespace + "/"
    return name if namespace is None else "%s/%s" % (namespace, name)
