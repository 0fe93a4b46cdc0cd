"""``ipamctl network``: the networks the database knows, and forgetting one.

A network stays in the database (``stats``, ``network list``, the Prometheus gauges) as
long as it has a lease, a round-robin cursor or a ``networks`` row: nothing the plugin
does ever removes the last two, since host-local never learns that a network is gone.
:func:`forget` removes them, with the same locks as every other writer of ours.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from ipam.admin.leases import AdminError, _Held, _mirrors, range_sets_in, range_sets_of
from ipam.admin.selection import Found, found
from ipam.errors import IoFailure
from ipam.paths import MIRROR_LOCK, TMP_PREFIX, is_cursor_name

if TYPE_CHECKING:
    from ipam.lease import Lease
    from ipam.mirror.files import NetworkFiles
    from ipam.store.protocol import AdminStore

FORGET = "forget"  # the history reason of a lease released by ``network forget --release``


def networks(store: AdminStore) -> list[dict[str, Any]]:
    """One row per network, in name order: where and how the plugin last saw it, its
    leases (in the store's scope, as ``list`` and ``stats`` count them) and when it was
    last seen: the later of that record's time (an ADD that found the config changed)
    and the network's newest history event (any node's allocation or release)."""
    rows = []
    with store.transaction():
        for name in store.networks():
            info = store.network_info(name)
            sets = range_sets_in(info)
            seen = [t for t in store.network_times(name) if t is not None]
            rows.append({
                "network": name,
                "data_dir": info.data_dir if info else None,
                "export": info.export if info else None,
                "ranges": [str(rs) for rs in sets] if sets is not None else None,
                "size": sum(rs.size() for rs in sets) if sets is not None else None,
                "leases": len(store.leases(name)),
                "last_seen": max(seen) if seen else None,
            })
    return rows


def find(store: AdminStore, network: str) -> dict[str, Any]:
    """The :func:`networks` row of ``network``; an unknown one is an error."""
    for row in networks(store):
        if row["network"] == network:
            return row
    raise AdminError("no network %s in the database" % network)


def _listed(counts: dict[Optional[str], int]) -> str:
    return ", ".join("%s (%d)" % (node or "no node recorded", n)
                     for node, n in sorted(counts.items(), key=lambda x: str(x[0])))


def _others(store: AdminStore, network: str, leases: list[Lease]) -> dict[Optional[str], int]:
    """``{node: leases}`` that other nodes hold in ``network`` (a shared store's
    ``leases`` are this node's; its records are the whole pool's)."""
    counts = store.lease_counts(network)
    for lease in leases:
        counts[lease.node] -= 1
    return {node: n for node, n in counts.items() if n > 0}


def forget(store: AdminStore, network: str, data_dir: str, release: bool = False
           ) -> tuple[Found[Lease], list[str], list[str], dict[Optional[str], int]]:
    """Remove ``network``'s records: its ``networks`` row, cursors and every node's
    mirror stamp. The history stays (it is the audit log). Refused while it holds
    leases, unless ``release``: this node's are then released first, as ``ipamctl
    release`` would, with reason ``forget``.

    On a shared store each node releases its own leases (its mirror is its own): while
    other nodes still hold some, this node's part is done and the records stay, for
    the last node to remove. Returns ``(released, removed, notes, others)``: the
    released leases, the paths removed, what was left and why, and ``{node: leases}``
    still held elsewhere (empty: forgotten).

    This node's mirror directory loses what was ours in it: the cursor files (the next
    reconcile would otherwise take them for host-local's and bring the network back),
    our temporary files, and then ``lock`` and the directory itself if nothing else is
    left. Anything else, above all a file naming an owner, stays and is reported."""
    with store.transaction():
        if network not in store.networks():
            raise AdminError("no network %s in the database" % network)
    mirrors = {n: m for n, m in _mirrors(store, [network], data_dir).items()
               if m is not None and os.path.isdir(os.path.join(m.data_dir, n))}
    held = _Held()
    removed: list[str] = []
    notes: list[str] = []

    def committed() -> None:
        files = held.files.get(network)
        try:
            if files is not None:
                try:
                    removed.extend(_tidy(files, notes))
                except (OSError, IoFailure) as e:  # the commit is done: report it
                    notes.append("left %s: %s" % (files.d.path, getattr(e, "msg", None) or e))
        finally:
            held.committed()

    try:
        held.open(store, mirrors)
        files = held.files.get(network)
        with store.transaction(after_commit=committed):
            store.lock_network(network, 1)  # as the plugin does, before any change
            if files is not None:  # another writer's files become leases first
                files.reconcile_if_changed(range_sets_of(store, network))
            leases = found(store, store.leases(network))
            others = _others(store, network, leases)
            if (leases or others) and not release:
                raise _refusal(network, len(leases), others)
            for lease in leases:
                store.release(lease, FORGET)
                if files is not None:
                    files.release(lease)
            if files is not None:
                notes += files.problems + files.notes
            if not others:
                store.forget_network(network)
    finally:
        held.close()
    return leases, removed, notes, others


def _refusal(network: str, mine: int, others: dict[Optional[str], int]) -> AdminError:
    if mine:
        return AdminError("network %s holds %d lease%s%s; release %s first, or forget it "
                          "with --release" % (network, mine, "" if mine == 1 else "s",
                                              " here" if others else "",
                                              "it" if mine == 1 else "them"))
    return AdminError("network %s holds leases of other nodes: %s; run 'ipamctl network "
                      "forget %s --release' on each of them (the last one removes the "
                      "records)" % (network, _listed(others), network))


def still_held(network: str, others: dict[Optional[str], int]) -> str:
    """What a shared store's node says when its part is done but not the others'."""
    return ("network %s still holds leases of other nodes: %s; its records stay until "
            "'ipamctl network forget %s --release' has run on each of them"
            % (network, _listed(others), network))


def _tidy(files: NetworkFiles, notes: list[str]) -> list[str]:
    """After COMMIT, still under host-local's lock: remove what was ours in the
    network's directory, then the directory if only ``lock`` is left."""
    d = files.d
    removed: list[str] = []
    left: list[str] = []
    failed = False
    for name in sorted(d.names()):
        if is_cursor_name(name) or name.startswith(TMP_PREFIX):
            try:
                d.remove(name)
                removed.append(os.path.join(d.path, name))
            except IoFailure as e:  # the commit is done: report it, go on
                notes.append(e.msg)
                failed = True
        elif name != MIRROR_LOCK:
            left.append(name)
    if left:
        notes.append("left %s: it holds files that are not ours (%s)"
                     % (d.path, ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")))
    if left or failed:
        return removed
    try:
        # Unlinked while we hold it: a writer already queued on it fails on the removed
        # directory and its runtime retries; it never shares a lock with a later one.
        os.unlink(os.path.join(d.path, MIRROR_LOCK))
        os.rmdir(d.path)
        removed += [os.path.join(d.path, MIRROR_LOCK), d.path]
    except OSError as e:
        notes.append("left %s: %s" % (d.path, e.strerror or e))
    return removed
