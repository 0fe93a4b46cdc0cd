"""Who holds a lease, as operators read it in ``ipamctl``'s tables and type it back into
its filters. Each printed form is one that no other value prints as, and the filters
read back every form the tables print:

- a pod reads ``NS/NAME``, or ``NAME`` where no namespace was sent (podman); a part that
  holds ``/``, ``"``, a backslash, whitespace or an unprintable character, or is ``-``
  (a table's "none"), is JSON-quoted, so a pod named ``kube-system/coredns`` with no namespace
  reads ``"kube-system/coredns"``, never ``kube-system/coredns``;
- a container ID longer than a table's column is shortened to its start, at least
  :data:`SHORT_ID` characters (of the runtime's digits, after a prefix such as
  nerdctl's namespace: :func:`least`) and as many more as make it the start of no other
  ID the database knows, followed by :data:`PREFIX`: exactly the form ``--container``
  reads as "the one container whose ID starts with this". An ID without the mark is a
  whole ID.

Only ipamctl loads this module (it imports json); the plugin records values as sent.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

from ipam.errors import IpamError

# podman and docker show container IDs in 12 characters; a table shows at least as many.
SHORT_ID = 12
# The length of the IDs docker, podman, containerd and CRI-O make: 64 hex digits.
RUNTIME_ID = 64
_HEX = frozenset("0123456789abcdef")
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


def least(cid: str) -> int:
    """How many characters a table shows of ``cid`` at least: :data:`SHORT_ID`, or, for
    an ID that ends in a runtime's 64 hexadecimal digits after a prefix of its own
    (nerdctl's ``<namespace>-``), the prefix and :data:`SHORT_ID` of those digits: the
    12 characters ``nerdctl ps`` prints, so that ``default-3f2a9c01b2c4...`` matches
    what the runtime shows (``default-3f2a...`` would show 4 of them)."""
    tail = cid[-RUNTIME_ID:]
    if len(cid) > RUNTIME_ID and len(tail) == RUNTIME_ID and all(c in _HEX for c in tail):
        return len(cid) - RUNTIME_ID + SHORT_ID
    return SHORT_ID


def short_ids(ids: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """``{id: how a table prints it}`` for the ``ids`` a table shows in short; the others
    print whole. A short form is an ID's first :func:`least` characters, or as many more
    as make it the start of no other ID in ``known``, followed by :data:`PREFIX`; it is
    never longer than the whole ID. ``known`` holds every ID the database knows that
    starts with an ID's first :func:`least` characters (more do no harm)."""
    long = {cid for cid in ids if len(cid) > least(cid) + len(PREFIX)}
    every = sorted(long.union(known))  # an ID shares the most with its neighbours here
    out = {}
    for i, cid in enumerate(every):
        if cid not in long:
            continue
        shared = max((_common(cid, every[j]) for j in (i - 1, i + 1) if 0 <= j < len(every)),
                     default=0)
        n = max(least(cid), shared + 1)
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
    """How people read an identity: ``NS/NAME``, ``NAME`` where no namespace was sent,
    ``NS/`` where no name was, or None; each part quoted where it must be (see the
    module's docstring). ``--pod`` takes the same text back (:func:`parse_pod`)."""
    if name is None:
        return None if namespace is None else quoted(namespace) + "/"
    return quoted(name) if namespace is None else quoted(namespace) + "/" + quoted(name)


def quoted(part: str) -> str:
    """``part`` as a label prints it: as it is, or JSON-quoted when it could be read as
    something else (it holds '/', '"', a backslash, whitespace or an unprintable
    character, or is '-' or empty). Inside the quotes every unprintable character is
    escaped, so what prints is only ever what the value holds, and ``json.loads`` reads
    it back."""
    if part and part != "-" and not any(c in '/"\\' or c.isspace() or not c.isprintable()
                                        for c in part):
        return part
    return '"%s"' % "".join(_escaped(c) for c in part)


def _escaped(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if c.isprintable():  # a space included
        return c
    if ord(c) < 0x20:
        return json.dumps(c)[1:-1]  # \n, \t, \u0001
    n = ord(c)
    if n < 0x10000:
        return "\\u%04x" % n
    n -= 0x10000  # as JSON writes it: a surrogate pair
    return "\\u%04x\\u%04x" % (0xD800 + (n >> 10), 0xDC00 + (n & 0x3FF))


def parse_pod(text: str) -> tuple[Optional[str], str]:
    """``--pod`` text, as :func:`pod_label` prints it -> ``(namespace or None, name)``."""
    first, rest = _part(text, text)
    if not rest:
        return None, first
    if not rest.startswith("/") or len(rest) == 1:
        raise BadLabel("%r is not NAMESPACE/NAME or NAME" % text)
    name, rest = _part(rest[1:], text)
    if rest:
        raise BadLabel("%r is not NAMESPACE/NAME or NAME" % text)
    return first, name


def parse_name(text: str) -> str:
    """``--name`` text: a name as :func:`pod_label` prints it."""
    name, rest = _part(text, text)
    if rest:
        raise BadLabel("%r is not a NAME (quote one that holds '/': '\"a/b\"')" % text)
    return name


def _part(text: str, whole: str) -> tuple[str, str]:
    """One part at the start of ``text`` -> ``(value, what follows)``: a JSON string,
    or the text up to the next '/'."""
    if text.startswith('"'):
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            raise BadLabel("%r: a quoted part must be a JSON string" % whole) from None
        if not value:
            raise BadLabel("%r: a part must not be empty" % whole)
        return value, text[end:]
    value, slash, rest = text.partition("/")
    if not value:
        raise BadLabel("%r is not NAMESPACE/NAME or NAME" % whole)
    return value, slash + rest
