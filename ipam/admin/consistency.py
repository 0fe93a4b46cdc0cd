"""``ipamctl check``: the database's health and the mirror's agreement with it, as
findings a person reads and a program parses alike (``-o json``, a documented contract).

Each :class:`Finding` names where (network, address, path), what (``kind``), and what
``--repair`` does about it (``repair``: None where it never does anything, for the
database's own integrity and schema, and for files that are someone else's). A repair
never changes the database's leases except as the plugin itself would after a foreign
change (files naming owners it does not know are recorded, history reason ``adopt``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from ipam import addr
from ipam.admin.leases import _RECONCILED, AdminError, _Held, _mend, mirror_for
from ipam.mirror.contents import is_address_name, mirrored_cursors
from ipam.paths import is_cursor_name
from ipam.store.schema_version import HEAD

if TYPE_CHECKING:
    from types import ModuleType

    from ipam.mirror.files import NetworkFiles
    from ipam.store.protocol import AdminStore, Store


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem ``check`` found: ``kind`` (see :data:`REPAIR` and docs/ipamctl.md's JSON
    section), ``repair`` (what ``--repair`` does, or did when ``repaired``; None:
    nothing) and ``message`` (the line a table prints)."""

    network: Optional[str]
    ip: Optional[str]
    path: Optional[str]
    kind: str
    repair: Optional[str]
    repaired: bool
    message: str

    def __str__(self) -> str:
        return self.message


# What --repair does about each kind a check finds (and, for the kinds only a repair
# meets, what it did). Every other kind is left alone: someone else's file, or the
# database itself.
REPAIR = {
    "missing": "create",  # the lease's or cursor's file, never over another
    "wrong": "rewrite",  # our file, or a cursor file, in another spelling
    "stale": "remove",  # our leftover
    "temporary": "remove",
    "foreign": "adopt",  # record the file's owner as a lease (history 'adopt')
    "conflict": "reassign",  # release our lease ('reconcile'), adopt the file's owner
    "restored": "restore",  # an unfinished command's file, redone or undone
    "adopted": "adopt",
    "reassigned": "reassign",
    "interrupted": "restore",  # an unfinished command's change, finished or undone
}

# How check names each difference (see ipam.mirror.reconcile.differences).
_KIND = {
    "missing": "missing",
    "interrupted": "interrupted (an unfinished command's change, which the next call on "
                   "the network or --repair finishes or undoes)",
    "restored": "missing (an unfinished command's file, written back)",
    "foreign": "foreign (names an owner the database does not know)",
    "conflict": "conflict (names another owner than the database's lease)",
    "unreadable": "unreadable (names no owner; its address stays unused)",
    "blocked": "blocked (not a regular file; never followed or replaced)",
    "adopted": "adopted (another writer's lease, now recorded)",
    "reassigned": "reassigned (another writer reused the address; our lease released)",
}


def check(store: AdminStore, data_dir: str, repair: bool = False,
          networks: Optional[Iterable[str]] = None,
          confirm: Optional[Callable[[list[Finding]], bool]] = None) -> list[Finding]:
    """Integrity, schema revision and mirror consistency: the findings, empty when all
    is well. ``networks``: only these networks' mirrors (the database's integrity and
    revision are checked all the same: every network's leases live in it); a name the
    database does not know is an error.

    Read inside one transaction in the writers' queue, each network under host-local's
    lock, so a change in flight is never taken for a problem. With ``repair``, each
    network is first reconciled as the plugin would (foreign files recorded), then the
    files are made to show the database wherever that harms nobody. ``confirm``: with
    ``repair``, asked with what a check finds first, when a repair would do something;
    False repairs nothing and returns those findings.
    """
    if repair and confirm is not None:
        found = _check(store, data_dir, False, networks)
        if not any(f.repair for f in found) or not confirm(found):
            return found
    return _check(store, data_dir, repair, networks)


def _check(store: AdminStore, data_dir: str, repair: bool, networks: Optional[Iterable[str]]
           ) -> list[Finding]:
    from ipam.mirror import reconcile

    with store.transaction():
        known = list(store.networks())
        names = known if networks is None else list(dict.fromkeys(networks))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise AdminError("no network %s in the database" % ", ".join(unknown))
        targets = {}
        for name in names:
            mirror = mirror_for(store, name, data_dir)
            if mirror is not None and (os.path.isdir(os.path.join(mirror.data_dir, name))
                                       or store.leases(name)):
                targets[name] = mirror
    findings = []
    held = _Held()
    try:
        errors = held.open(store, targets, create=repair)
        for name, msg in sorted(errors.items()):
            path = os.path.join(targets[name].data_dir, name)
            findings.append(Finding(name, None, path, "directory",
                                    None if os.path.lexists(path) else "create", False,
                                    "%s: %s" % (name, msg)))
        with store.transaction(after_commit=held.committed):
            head = [Finding(None, None, None, "integrity", None, False,
                            "database integrity: %s" % p) for p in store.integrity()]
            revision = store.revision()
            if revision != HEAD:
                head.append(Finding(None, None, None, "revision", None, False,
                                    "schema revision %s, expected %s" % (revision, HEAD)))
            findings[:0] = head
            for name, files in sorted(held.files.items()):
                findings += _check_network(store, name, files, repair, reconcile)
    finally:
        held.close()
    return findings


def _check_network(store: Store, name: str, files: NetworkFiles, repair: bool,
                   reconcile: ModuleType) -> list[Finding]:
    if not repair:
        diffs = reconcile.differences(files.d, store.leases(name),
                                      mirrored_cursors(store, name), journal=files.pending)
        return [_finding(name, files.d.path, _interrupted(files, kind, f), f, False)
                for kind, f in diffs]
    return [_finding(name, files.d.path, kind, f, True) for kind, f in _mend(store, files, name)]


def _interrupted(files: NetworkFiles, kind: str, name: str) -> str:
    """``interrupted`` for a difference an unfinished command of ours left (a plugin or
    node daemon killed between its file changes and its COMMIT): a journaled address
    file missing, stale or rewritten, or a cursor file the command moved. It is real
    (Go host-local beside us reads these files) and its repair is known: the next call
    on the network redoes or undoes the journal. Else ``kind`` as found."""
    if files.pending is None or kind not in ("missing", "stale", "wrong"):
        return kind
    if is_cursor_name(name) or any(entry[0] == name for entry in files.pending):
        return "interrupted"
    return kind


def _finding(network: str, directory: str, kind: str, name: str, repair: bool
             ) -> Finding:
    """``repair``: a repair's finding, ``kind`` naming what it found or did."""
    ip = addr.parse_ip(name) if is_address_name(name) else None
    repaired = repair and kind in _RECONCILED
    return Finding(network, None if ip is None else str(ip), "%s/%s" % (directory, name),
                   kind, REPAIR.get(kind) if repaired or not repair else None, repaired,
                   "%s/%s: %s%s" % (directory, name, _KIND.get(kind, kind),
                                    " (repaired)" if repaired else ""))
