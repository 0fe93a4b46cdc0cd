"""``ipamctl network``: the networks the database knows, and forgetting one.

A network stays in the database (``stats``, ``network list``, the Prometheus gauges) as
long as it has a lease, a round-robin cursor or a ``networks`` row: nothing the plugin
does ever removes the last two, since host-local never learns that a network is gone.
:func:`forget` removes them, with the same locks as every other writer of ours.
"""
import os

from ipam.admin import AdminError, _Held, _mirrors, range_sets_of
from ipam.errors import IoFailure
from ipam.exporter import TMP_PREFIX, is_cursor_name

FORGET = "forget"  # the history reason of a lease released by ``network forget --release``


def networks(store):
    """One row per network, in name order: where and how the plugin last saw it, its
    leases (in the store's scope, as ``list`` and ``stats`` count them) and when it was
    last seen: the later of that record's time (an ADD that found the config changed)
    and the network's newest history event (any node's allocation or release)."""
    rows = []
    with store.transaction():
        for name in store.networks():
            info = store.network_info(name)
            sets = range_sets_of(store, name)
            seen = [t for t in store.network_times(name) if t is not None]
            rows.append({
                "network": name,
                "data_dir": info[0] if info else None,
                "export": info[1] if info else None,
                "ranges": [str(rs) for rs in sets] if sets is not None else None,
                "size": sum(rs.size() for rs in sets) if sets is not None else None,
                "leases": len(store.leases(name)),
                "last_seen": max(seen) if seen else None,
            })
    return rows


def find(store, network):
    """The :func:`networks` row of ``network``; an unknown one is an error."""
    for row in networks(store):
        if row["network"] == network:
            return row
    raise AdminError("no network %s in the database" % network)


def holders(store, network):
    """``{node: leases}`` still held in ``network`` by every node (a shared store's
    records are the whole pool's)."""
    return store.lease_counts(network)


def _refusal(network, counts, mine, release):
    """Why ``forget`` cannot go on, or None."""
    others = {node: n for node, n in counts.items() if node not in mine}
    if mine and not release:
        total = sum(mine.values())
        return AdminError("network %s holds %d lease%s; release %s first, or forget it "
                          "with --release" % (network, total, "" if total == 1 else "s",
                                              "it" if total == 1 else "them"))
    if others:
        listed = ", ".join("%s (%d)" % (node or "no node recorded", n)
                           for node, n in sorted(others.items(), key=lambda x: str(x[0])))
        return AdminError("network %s holds leases of other nodes: %s; forget it on "
                          "those nodes first (or with --node NAME --release)"
                          % (network, listed))
    return None


def forget(store, network, data_dir, release=False):
    """Remove ``network``'s records: its ``networks`` row, cursors and every node's
    mirror stamp. The history stays (it is the audit log). Refused while it holds
    leases, unless ``release``: this node's are then released first, as ``ipamctl
    release`` would, with reason ``forget``; another node's leases always refuse it.

    This node's mirror directory loses what was ours in it: the cursor files (the next
    reconcile would otherwise take them for host-local's and bring the network back),
    our temporary files, and then ``lock`` and the directory itself if nothing else is
    left. Anything else, above all a file naming an owner, stays and is reported.

    Returns ``(released, removed, notes)``: the released leases, the paths removed, and
    what was left and why."""
    with store.transaction():
        if network not in store.networks():
            raise AdminError("no network %s in the database" % network)
    mirrors = {n: m for n, m in _mirrors(store, [network], data_dir).items()
               if m is not None and os.path.isdir(os.path.join(m.data_dir, n))}
    held = _Held()
    removed, notes = [], []

    def committed():
        files = held.files.get(network)
        try:
            if files is not None:
                removed.extend(_tidy(files, notes))
        except (OSError, IoFailure) as e:  # the records are gone already: report it
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
            leases = store.leases(network)
            mine = {}
            for lease in leases:
                mine[lease.node] = mine.get(lease.node, 0) + 1
            error = _refusal(network, holders(store, network), mine, release)
            if error is not None:
                raise error
            for lease in leases:
                store.release(lease, FORGET)
                if files is not None:
                    files.release(lease)
            if files is not None:
                notes += files.problems + files.notes
            store.forget_network(network)
    finally:
        held.close()
    return leases, removed, notes


def _tidy(files, notes):
    """After COMMIT, still under host-local's lock: remove what was ours in the
    network's directory, then the directory if only ``lock`` is left."""
    d, removed = files.d, []
    left = []
    for name in sorted(d.names()):
        if is_cursor_name(name) or name.startswith(TMP_PREFIX):
            try:
                d.remove(name)
                removed.append(os.path.join(d.path, name))
            except IoFailure as e:  # the records are gone already: report, go on
                notes.append(e.msg)
                left.append(name)
        elif name != "lock":
            left.append(name)
    if left:
        notes.append("left %s: it holds files that are not ours (%s)"
                     % (d.path, ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")))
        return removed
    try:
        # Unlinked while we hold it: a writer already queued on it fails on the removed
        # directory and its runtime retries; it never shares a lock with a later one.
        os.unlink(os.path.join(d.path, "lock"))
        os.rmdir(d.path)
        removed += [os.path.join(d.path, "lock"), d.path]
    except OSError as e:
        notes.append("left %s: %s" % (d.path, e.strerror or e))
    return removed
