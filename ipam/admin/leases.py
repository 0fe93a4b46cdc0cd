"""What ``ipamctl`` does, as library calls: each takes an open store and returns data.

The CLI only parses options, opens the store, calls one function here and renders the
answer. Writers use the same ``BEGIN IMMEDIATE`` transactions and the same mirror as the
plugin, so they are safe beside running plugin invocations.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional

from ipam import addr
from ipam.admin.labels import PREFIX, container_ref
from ipam.admin.selection import Found, found, of_container, of_pod, the_container
from ipam.errors import IpamError
from ipam.mirror.contents import mirrored_cursors
from ipam.mirror.files import Mirror, NetworkDir
from ipam.ranges import from_description
from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT
from ipam.waits import Patience

if TYPE_CHECKING:

    from ipam.addr import IP, Net
    from ipam.lease import Event, Lease, NetworkRecord
    from ipam.mirror.files import NetworkFiles
    from ipam.ranges import RangeSet
    from ipam.store.protocol import AdminStore, Store

    # progress(total) -> step, called with 1 per file (a progress bar's update)
    Progress = Callable[[int], Callable[[int], object]]


class AdminError(IpamError):
    """A request ipamctl refuses (e.g. releasing an address that is not leased)."""


# -- which networks ---------------------------------------------------------------------
def unknown_network(store: AdminStore, network: Optional[str]) -> Optional[str]:
    """Why ``network`` names nothing the database knows (no lease, cursor or recorded
    config), or None: also for None (every network). A read-only command warns with it
    (a typo lists nothing, which would read as "no leases"); a command that changes
    anything refuses (:func:`require_networks`)."""
    if network is None:
        return None
    known = list(store.networks())
    if network in known:
        return None
    return "no network %s in the database (%s)" % (
        network, "known: " + ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        if known else "it has none")


def require_networks(store: AdminStore, networks: Iterable[str]) -> None:
    """Refuse (:class:`AdminError`) a network the database does not know, before a
    command changes anything: a typo must not 'release nothing' and exit 0."""
    for network in networks:
        why = unknown_network(store, network)
        if why is not None:
            raise AdminError(why)


# -- reading ------------------------------------------------------------------------
def within(ip: Optional[IP], where: Optional[IP | Net]) -> bool:
    """Whether an address filter (an address, or a subnet: ``--ip 10.1.0.0/16``) keeps
    ``ip``; None keeps every one."""
    if where is None:
        return True
    if ip is None:
        return False
    return ip in where if isinstance(where, addr.Net) else ip == where


def _ip_key(lease: Lease) -> tuple[int, bytes]:
    return lease.ip.version, addr.to_key(lease.ip)


# ``list --sort``: each field, and the order it gives (then network and address).
SORTS: dict[str, Callable[[Lease], Any]] = {
    "network": lambda x: (x.network, _ip_key(x)),
    "ip": lambda x: (_ip_key(x), x.network),
    "container": lambda x: (x.container_id, x.ifname or "", x.network, _ip_key(x)),
    "ifname": lambda x: (x.ifname or "", x.network, _ip_key(x)),
    "node": lambda x: (x.node or "", x.network, _ip_key(x)),
    "pod": lambda x: (x.pod_namespace or "", x.pod_name or "", x.network, _ip_key(x)),
    "created": lambda x: (x.allocated_at, x.network, _ip_key(x)),  # the oldest first
    "age": lambda x: (-x.allocated_at, x.network, _ip_key(x)),  # the youngest first
}


def list_leases(store: AdminStore, network: Optional[str] = None,
                container_id: Optional[str] = None, ip: Optional[IP | Net] = None,
                pod: Optional[tuple[Optional[str], str]] = None, name: Optional[str] = None,
                sort: str = "network") -> Found[Lease]:
    """Leases sorted by :data:`SORTS` ``sort`` (network, then address numerically).
    ``container_id`` is a whole ID, or the start of one among the leases the other
    filters keep (see :mod:`ipam.admin.selection`); ``ip`` an address or a subnet."""
    with store.transaction():
        leases = of_pod([lease for lease in store.leases(network) if within(lease.ip, ip)],
                        pod, name)
        note = None
        if container_id is not None:
            leases, note = of_container(leases, container_id, _known(store, container_id))
        return found(store, sorted(leases, key=SORTS[sort]), note)


def _known(store: AdminStore, text: str) -> set[str]:
    """The IDs the database knows that start with ``text``'s (a start's or a whole ID's)."""
    return store.container_ids([container_ref(text)[0]])


def range_sets_of(store: Store, network: str) -> Optional[tuple[RangeSet, ...]]:
    """The network's range sets as the plugin last saw them, or None (never ADDed by us)."""
    return range_sets_in(store.network_info(network))


def range_sets_in(info: Optional[NetworkRecord]) -> Optional[tuple[RangeSet, ...]]:
    """The range sets of a network's :class:`~ipam.lease.NetworkRecord` (None: none)."""
    return from_description(json.loads(info.range_sets)) if info else None


def stats(store: AdminStore, network: Optional[str] = None) -> list[dict[str, Any]]:
    """Per network and range set: the range, its size (gateway and exclusions not
    counted), and how many of those addresses are leased (``used``) and reserved
    (``reserved``: ``ipamctl reserve``), apart: a reservation is no container's."""
    rows = []
    with store.transaction():
        names = [network] if network is not None else list(store.networks())
        for name in names:
            leases = store.leases(name)
            sets = range_sets_of(store, name)
            if sets is None:
                if leases:
                    reserved = sum(1 for lease in leases if lease.is_reservation())
                    rows.append({"network": name, "range_set": None, "range": None,
                                 "size": None, "used": len(leases) - reserved,
                                 "reserved": reserved, "free": None})
                continue
            for idx, rs in enumerate(sets):
                inside = [lease for lease in leases if _allocatable(rs, lease.ip)]
                reserved = sum(1 for lease in inside if lease.is_reservation())
                used = len(inside) - reserved
                size = rs.size()
                rows.append({"network": name, "range_set": idx, "range": str(rs),
                             "size": size, "used": used, "reserved": reserved,
                             "free": max(size - used - reserved, 0)})
    return rows


def _allocatable(rs: RangeSet, ip: IP) -> bool:
    r = rs.range_for(ip)
    return r is not None and ip != r.gateway and r.excluded(ip) is None


def history(store: AdminStore, network: Optional[str] = None, ip: Optional[IP | Net] = None,
            container_id: Optional[str] = None, since: Optional[float] = None,
            at: Optional[float] = None, pod: Optional[tuple[Optional[str], str]] = None,
            name: Optional[str] = None, limit: Optional[int] = None, reverse: bool = False
            ) -> Found[Event]:
    """Lease events in commit order. With ``at``: the allocations in force at that
    moment, i.e. after the last event stamped at or before it. ``container_id`` is a
    whole ID, or the start of one among the events the other filters keep (see
    :mod:`ipam.admin.selection`); ``ip`` an address or a subnet. ``limit``: only the last
    ``limit`` (the newest, as ``tail -n``); ``reverse``: the newest first.

    Commit order, not the wall clock, orders them: after the clock stepped back, a
    release stamped later than a newer allocation still comes before it. A moment the
    clock showed twice is read as its later occurrence."""
    start = None if container_id is None else container_ref(container_id)[0]
    with store.transaction():
        # A subnet is kept here: the history holds an address's text, not its key.
        events = store.history(network, ip if not isinstance(ip, addr.Net) else None,
                               since=since, container_prefix=start,
                               pod_name=name if pod is None else pod[1])
        if isinstance(ip, addr.Net):
            events = [e for e in events if within(addr.parse_ip(e.ip), ip)]
        events = of_pod(events, pod, name)
        note = None
        if container_id is not None:
            events, note = of_container(events, container_id, _known(store, container_id))
        if at is not None:
            events = _held_at(events, at)
        if limit is not None:
            events = events[-limit:] if limit else []
        return found(store, events[::-1] if reverse else events, note)


# history --follow: how often to look for new events, and how long a missing id is
# awaited. On PostgreSQL ids come from a sequence when a row is inserted, so a
# transaction that took id 10 can commit after one that took 11; a gap is read again
# until it fills or is older than the longest a writer's transaction lasts (a rolled-back
# insert leaves a gap for good).
FOLLOW_POLL = 0.5
GAP_WAIT = 60.0
FOLLOW_BATCH = 1000


def follow(store: AdminStore, network: Optional[str] = None, ip: Optional[IP | Net] = None,
           container_id: Optional[str] = None, pod: Optional[tuple[Optional[str], str]] = None,
           name: Optional[str] = None, poll: float = FOLLOW_POLL,
           after: Optional[int] = None) -> Iterator[list[Event]]:
    """The events committed from now on (after event id ``after``, if given), batch by
    batch, as ``tail -f``: every ``poll`` seconds, one short read transaction. Filters
    as in :func:`history`; ``container_id`` is a whole ID, or a marked start
    (``3f2a9c...``) that keeps every ID starting so. Runs until the caller stops
    (KeyboardInterrupt, a closed pipe). If the history was emptied and its ids started
    again (SQLite reuses ids after a prune of every event), it starts from the first."""
    start, marked = container_ref(container_id) if container_id is not None else ("", False)
    if after is None:
        with store.transaction():
            after = store.last_event_id()
    seen: set[int] = set()  # ids above ``after`` already given
    gaps: dict[int, float] = {}  # missing id -> when it was found missing
    while True:
        with store.transaction():
            rows = store.events_after(after, FOLLOW_BATCH + len(seen))
            if not rows and after and not seen and store.last_event_id() < after:
                after = 0
                continue
        now = time.monotonic()
        fresh = [(i, e) for i, e in rows if i not in seen]
        top = max([after, *seen, *(i for i, _ in rows)])
        present = seen | {i for i, _ in rows}
        for i in range(after + 1, top):
            if i not in present:
                gaps.setdefault(i, now)
        for i, _ in fresh:
            gaps.pop(i, None)
        seen |= {i for i, _ in fresh}
        # Move ``after`` up to the first gap still awaited; drop the ids below it.
        open_gaps = [i for i, t in gaps.items() if now - t < GAP_WAIT]
        gaps = {i: gaps[i] for i in open_gaps}
        floor = min(open_gaps, default=top + 1) - 1
        if floor > after:
            after = floor
            seen = {i for i in seen if i > after}
        events = [e for _, e in fresh
                  if (network is None or e.network == network)
                  and within(addr.parse_ip(e.ip), ip)
                  and (container_id is None or e.container_id == start
                       or (marked and e.container_id.startswith(start)))]
        events = of_pod(events, pod, name)
        if events:
            yield events
        if len(fresh) < FOLLOW_BATCH:
            time.sleep(poll)


def _held_at(events: list[Event], at: float) -> list[Event]:
    """The allocations in force after the last of ``events`` stamped at or before ``at``."""
    last = max((i for i, e in enumerate(events) if e.time <= at), default=-1)
    held: dict[tuple[str, str], Event] = {}
    for e in events[:last + 1]:
        if e.event == "allocate":
            held[(e.network, e.ip)] = e
        else:
            held.pop((e.network, e.ip), None)
    return sorted(held.values(), key=_network_and_address)


def _network_and_address(e: Event) -> tuple[str, bytes]:
    ip = addr.parse_ip(e.ip)
    assert ip is not None  # the history holds addresses as the stores wrote them
    return e.network, addr.to_key(ip)


# Events per transaction. Measured on SQLite at 1 M events (2 cores shared with other
# work), a plugin ADD/DEL loop running beside the prune: batches of 10,000 held the lock
# about 1 s each and the plugin's calls took 1-1.4 s; of 2,500, 0.4 s and 0.3-0.5 s, the
# prune still deleting 7,000 events a second.
PRUNE_BATCH = 2500
# Between batches: flock wakes the writers that queued but does not hand them the lock,
# and a prune locking again at once could win it back each time.
PRUNE_PAUSE = 0.01


def prune_history(store, before, dry_run=False, batch=PRUNE_BATCH):
    """Delete every event stamped before ``before`` (every node's, on a shared store),
    ``batch`` at a time, each batch its own short transaction, so that plugins keep
    allocating between them. Returns how many went (with ``dry_run``: would go, and
    nothing is written). Stops when a batch comes back short: events another writer
    stamps in the past meanwhile (a stepped clock) wait for the next prune."""
    if dry_run:
        with store.transaction():
            return store.count_history(before)
    total = 0
    while True:
        with store.transaction():
            n = store.prune_history(before, batch)
        total += n
        if n < batch:
            return total
        time.sleep(PRUNE_PAUSE)


# -- writing ------------------------------------------------------------------------
def mirror_for(store: Store, network: str, data_dir: str, to: Optional[str] = None
               ) -> Optional[Mirror]:
    """Where a network is mirrored: ``to`` if given; else where the plugin mirrors it (its
    recorded dataDir, if export is on); else ``data_dir`` if the network has a directory
    there. None: the network is not mirrored. On a shared database, ``data_dir`` is this
    node's, whatever another node recorded."""
    if to is not None:
        return Mirror(to)
    info = store.network_info(network)
    if info is not None and not info.export:
        return None
    if store.shared:
        # The recorded dataDir is whichever node wrote last; this node's is data_dir, and
        # it mirrors this node's leases.
        here = os.path.isdir(os.path.join(data_dir, network)) or store.leases(network)
        return Mirror(data_dir) if here else None
    if info is not None:
        return Mirror(info.data_dir)
    return Mirror(data_dir) if os.path.isdir(os.path.join(data_dir, network)) else None


class _Held:
    """The networks' files a command holds. Their host-local locks are taken in name
    order BEFORE the transaction (as the plugin takes its one): waiting on a lock that
    another program holds never holds up our writers' queue. The journals go after
    COMMIT, still in the queue; the locks with them."""

    def __init__(self) -> None:
        self.files: dict[str, NetworkFiles] = {}

    def open(self, store: Store, mirrors: Mapping[str, Optional[Mirror]],
             create: bool = True) -> dict[str, str]:
        """Hold each ``{network: Mirror or None}``; returns ``{network: error}`` for the
        directories a reader (``create`` False) could not open. A writer raises."""
        errors = {}
        for network, mirror in sorted(mirrors.items()):
            if mirror is None:
                continue
            try:
                files = mirror.open(store, network, create)
            except IpamError as e:
                if create:
                    raise
                errors[network] = e.msg
                continue
            if files is not None:
                self.files[network] = files
        return errors

    def committed(self) -> None:
        for files in self.files.values():
            files.committed()

    def close(self) -> None:
        for files in self.files.values():
            files.close()


def _mirrors(store: Store, networks: Iterable[str], data_dir: str, to: Optional[str] = None
             ) -> dict[str, Optional[Mirror]]:
    """``{network: Mirror or None}``, read in a transaction of its own (before the locks)."""
    with store.transaction():
        return {n: mirror_for(store, n, data_dir, to) for n in networks}


def _release_all(store: Store, leases: Iterable[Lease], reason: str, held: _Held
                 ) -> tuple[list[Lease], list[str]]:
    """Release ``leases`` (re-read inside this transaction) and mirror the change. A
    file that names another owner is left and reported, never removed."""
    networks = sorted({lease.network for lease in leases} | set(held.files))
    for network in networks:
        store.lock_network(network, 1)  # as the plugin does, before any change
    for network in networks:  # an unfinished command's journal is finished here too
        if network in held.files:
            held.files[network].reconcile_if_changed(range_sets_of(store, network))
    released = []
    for lease in leases:
        current = store.lease_at(lease.network, lease.ip)
        if current is None or (current.container_id, current.ifname) != (
                lease.container_id, lease.ifname):
            continue  # changed since it was chosen (or reconciled away): leave it
        store.release(current, reason)
        released.append(current)
        if lease.network in held.files:
            held.files[lease.network].release(current)
    for files in held.files.values():
        files.record()
    return released, [p for f in held.files.values() for p in f.problems + f.notes]


def select_release(store: AdminStore, ips: Iterable[IP] = (), container_id: Optional[str] = None,
                   ifname: Optional[str] = None, network: Optional[str] = None
                   ) -> Found[Lease]:
    """The leases ``ipamctl release`` would free. An address not leased is an error, and
    so is a reserved one (``unreserve`` frees it: a release must never free one by
    accident).
    ``container_id`` is a whole ID, or a marked start (``3f2a...``) that fits exactly one
    container in the whole database (:func:`~ipam.admin.selection.the_container`); a
    container with no lease that the other options keep is an error."""
    with store.transaction():
        require_networks(store, [network] if network is not None else [])
        if container_id is not None:
            return found(store, _of_container(store, container_id, ifname, network))
        chosen = []
        for ip in ips:
            holders = [lease for lease in store.leases(network) if lease.ip == ip]
            if not holders:
                raise AdminError("%s is not leased%s" % (
                    ip, "" if network is None else " in network " + network))
            if len(holders) > 1:
                raise AdminError("%s is leased in several networks (%s): choose one with "
                                 "--network" % (ip, ", ".join(h.network for h in holders)))
            if holders[0].is_reservation():
                raise AdminError("%s is reserved in network %s, not leased: 'ipamctl "
                                 "unreserve %s --network %s' frees it" % (
                                     ip, holders[0].network, ip, holders[0].network))
            chosen.append(holders[0])
        return found(store, chosen)


def _of_container(store: AdminStore, text: str, ifname: Optional[str], network: Optional[str]
                  ) -> list[Lease]:
    start, marked = container_ref(text)
    leases = store.leases()
    cid = the_container(text, _known(store, text) if marked else (), leases)
    if cid is None:
        raise AdminError("no container ID starts with %s" % start)
    chosen = [lease for lease in leases if lease.container_id == cid
              and not lease.is_reservation()  # unreserve frees those
              and (ifname is None or lease.ifname == ifname)
              and (network is None or lease.network == network)]
    if chosen:
        return chosen
    msg = "no lease held by container %s%s%s" % (
        cid, "" if ifname is None else " interface " + ifname,
        "" if network is None else " in network " + network)
    known = _known(store, text) if not marked else {cid}
    if cid not in known and known:  # a start typed as a whole ID: say how to mark one
        starting = sorted(known)
        raise AdminError(msg, "  an ID is taken whole; to name the one container whose ID "
                         "starts with %s, write %s%s (IDs that start with it: %s%s)" % (
                             cid, cid, PREFIX, ", ".join(starting[:5]),
                             " and %d more" % (len(starting) - 5) if len(starting) > 5
                             else ""))
    raise AdminError(msg)


def release(store: Store, leases: list[Lease], data_dir: str, reason: str = "admin"
            ) -> tuple[list[Lease], list[str]]:
    """Release the chosen leases as DEL would: history, mirror, one transaction.
    Returns ``(released, problems)``: files left because they name another owner, or
    could not be removed (their journal stays, so a later command retries)."""
    mirrors = _mirrors(store, {lease.network for lease in leases}, data_dir)
    held = _Held()
    try:
        held.open(store, mirrors)
        with store.transaction(after_commit=held.committed):
            return _release_all(store, leases, reason, held)
    finally:
        held.close()


def export(store: AdminStore, data_dir: str, network: Optional[str] = None,
           to: Optional[str] = None, progress: Optional[Progress] = None
           ) -> dict[str, list[tuple[str, str]]]:
    """Rewrite the mirror from the database; returns ``{network: differences}`` (see
    :func:`ipam.mirror.reconcile.differences`; files naming other owners are reported, kept).

    ``progress(total)`` is called once with the number of files to check, and the
    callable it returns is called with 1 per file: for a progress bar on big pools.
    """
    from ipam.mirror import reconcile

    out = {}
    with store.transaction():
        require_networks(store, [network] if network is not None else [])
        names = [network] if network is not None else list(store.networks())
        targets = {n: m for n, m in ((n, mirror_for(store, n, data_dir, to)) for n in names)
                   if m is not None}
        total = sum(len(store.leases(n)) + len(mirrored_cursors(store, n) or ())
                    for n in targets) if progress is not None else 0
    step = progress(total) if progress is not None else None
    held = _Held()
    try:
        held.open(store, targets)
        with store.transaction(after_commit=held.committed):
            for name, files in sorted(held.files.items()):
                if to is None:
                    out[name] = _mend(store, files, name, step)
                else:  # another directory is only written: its files are no one's leases
                    out[name] = reconcile.sync(files, store.leases(name),
                                               mirrored_cursors(store, name), progress=step)
    finally:
        held.close()
    return out


def _mend(store: Store, files: NetworkFiles, name: str,
          progress: Optional[Callable[[int], object]] = None) -> list[tuple[str, str]]:
    """An operator's repair of one network (export, check --repair): reconcile the whole
    directory whatever its stamp says, then write what the database has wherever that
    harms nobody. Returns what was done and what is left, as ``[(kind, file)]``."""
    from ipam.mirror import reconcile

    done = [(k, f) for k, f in reconcile.reconcile(files, range_sets_of(store, name))
            if k in _RECONCILED]
    diffs = reconcile.sync(files, store.leases(name), mirrored_cursors(store, name),
                           progress=progress)
    files.record()
    return done + diffs


# What a reconcile or a repair did; the other kinds name files that are someone else's
# (left alone).
_RECONCILED = ("stale", "restored", "wrong", "temporary", "adopted", "reassigned", "missing")

# -- import from host-local ---------------------------------------------------------
@contextmanager
def empty_store(node: Optional[str] = None) -> Iterator[AdminStore]:
    """``with empty_store() as store:`` an empty database of the current schema, in a
    temporary directory removed afterwards: what ``import --dry-run`` plans against
    where the database does not exist yet, since a dry run never creates it. The real
    engine, so that the plan is the one a real import would make."""
    import tempfile

    from ipam.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory(prefix="ipamctl-dry-run-") as scratch:
        store = SqliteStore(os.path.join(scratch, "leases.db"), node=node, queue=False)
        try:
            yield store
        finally:
            store.close()


def import_networks(store: Store, source: str, networks: Optional[Iterable[str]] = None,
                    dry_run: bool = False, progress: Optional[Progress] = None
                    ) -> list[dict[str, Any]]:
    """Import host-local directories under ``source``: one summary per network.

    Each network is one transaction; a second run imports nothing (idempotent); the
    database wins conflicts; the source files are only read. ``progress`` works as in
    :func:`export`, counting directory entries.
    """
    from ipam.mirror import importer

    if networks:
        names = list(networks)
    else:
        try:
            names = sorted(n for n in os.listdir(source)
                           if os.path.isdir(os.path.join(source, n)) and not n.startswith("."))
        except OSError as e:
            raise AdminError("cannot read %s: %s" % (source, e.strerror or e)) from None
    for name in names:
        if not os.path.isdir(os.path.join(source, name)):
            raise AdminError("%s is not a host-local network directory"
                             % os.path.join(source, name))
    step = None
    if progress is not None:
        step = progress(sum(len(os.listdir(os.path.join(source, n))) for n in names))
    summaries = []
    for name in names:
        path = os.path.join(source, name)
        # host-local's lock first (as every writer of ours takes it, before our queue),
        # then read inside the transaction, in the writers' queue: a DEL in flight cannot
        # remove a file between the scan and the import (it would come back).
        source_dir = NetworkDir(source, name, create=False)
        try:
            source_dir.lock(Patience.each(DEFAULT_BUSY_TIMEOUT))
            with store.transaction():
                if not dry_run:
                    store.lock_network(name, 1)
                found = importer.scan(path, name, step, locked=True)
                sets = range_sets_of(store, name)
                new, unchanged, conflicts, cursors = importer.plan(store, found, sets)
                if not dry_run:
                    importer.apply(store, name, new, cursors)
        finally:
            source_dir.close()
        summaries.append({  # the JSON contract of "ipamctl -o json import"
            "network": name, "source": path, "dry_run": dry_run,
            "counts": {"imported": len(new), "unchanged": len(unchanged),
                       "skipped": len(found.skipped), "conflicts": len(conflicts),
                       "cursors": len(cursors)},
            "imported": [_brief(x) for x in new], "unchanged": len(unchanged),
            "cursors": {str(k): str(v) for k, v in sorted(cursors.items())},
            "skipped": [{"file": f, "reason": r} for f, r in found.skipped],
            "conflicts": [dict(_brief(mine), held_by=_brief(held)) for mine, held in conflicts],
        })
    return summaries


def _brief(lease: Lease) -> dict[str, Any]:
    return {"ip": str(lease.ip), "container_id": lease.container_id, "ifname": lease.ifname}
