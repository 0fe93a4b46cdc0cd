"""``ipamctl gc``: offline garbage collection that cannot hurt.

Runtimes that never send CNI GC (podman, nerdctl, Nomad, a CRI runtime after a crash)
leak leases; gc takes a list of the live attachments and releases the rest. A wrong list
is the danger: an empty one (the command that fed it failed), one of the wrong kind
(``crictl ps -q`` lists containers, CRI calls CNI with pod sandboxes), or one that lacks
half of the node. So gc plans first, then asks three guards about each network, then
checks the host for a namespace that still holds each address; with ``apply`` it
releases only when no guard refused (or ``force``), all networks or none. While two hosts
use the node's name (:mod:`ipam.node_boots`), nothing is released, ``force`` or not: the
leases under the name are both hosts', and the other's are not listed here.

A lease is a candidate when its attachment is not listed, or (``previous_boots``) it was
made before this boot; never while younger than ``grace``, so an ADD in flight is safe.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from ipam import node_boots, system
from ipam.admin.labels import SHORT_ID, container_ref
from ipam.admin.leases import _Held, _mirrors, _release_all, require_networks
from ipam.admin.selection import found, the_container

if TYPE_CHECKING:
    from ipam.addr import IP
    from ipam.lease import Lease
    from ipam.node_boots import Conflict
    from ipam.store.protocol import AdminStore, Store

NOT_LISTED, EARLIER_BOOT = "not listed", "earlier boot"
# Said (on stderr) when the list looks like `docker ps -q`'s or `podman ps -q`'s.
SHORT_LIST = ("every ID in the list has %d characters and none is an ID the database "
              "knows: a runtime's short IDs? gc needs them whole, as the runtime gives them "
              "to CNI: list them with --no-trunc ('podman ps -a -q --no-trunc', 'docker ps "
              "-a -q --no-trunc'), or mark each as the start of one ('3f2a9c01b2c4...')"
              % SHORT_ID)
# A network losing at most this many leases is never refused for its share: on a small
# node 2 of 3 going is routine, and a list of the wrong kind trips the no-match guard.
SMALL = 3


class Valid:
    """The live attachments: ``ID`` (every ifname) or ``ID/IFNAME`` entries. An ID is
    taken whole, unless it is marked as the start of one (``3f2a9c...``): such an entry
    stands for the one container of the whole database whose ID starts so (see
    :meth:`resolve`; one that fits none names nothing, as an unknown ID)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.any_if, self.pairs = parse_valid(entries)

    def __bool__(self) -> bool:
        return bool(self.any_if or self.pairs)

    def starts(self) -> set[str]:
        """The entries' IDs that are marked as starts."""
        return {cid for cid in self.any_if | {cid for cid, _ in self.pairs}
                if container_ref(cid)[1]}

    def resolve(self, store: AdminStore) -> None:
        """Replace each marked start with the whole ID it names (inside the caller's
        transaction); a start that fits several containers raises, and nothing goes."""
        starts = self.starts()
        if not starts:
            return
        known = store.container_ids(container_ref(s)[0] for s in starts)
        leases = store.leases()
        whole = {s: the_container(s, known, leases) for s in starts}

        def named(cid: str) -> Optional[str]:
            return whole[cid] if cid in whole else cid

        self.any_if = {n for n in map(named, self.any_if) if n is not None}
        self.pairs = {(n, ifname) for cid, ifname in self.pairs
                      if (n := named(cid)) is not None}

    def truncated(self, store: AdminStore) -> bool:
        """Does the list look like a runtime's short IDs (``podman ps -q`` without
        ``--no-trunc``): every ID unmarked, exactly :data:`SHORT_ID` characters, and none
        an ID the database knows (inside the caller's transaction)? Such a list names
        nothing, so every lease would go: the guards refuse, this says why."""
        ids = self.any_if | {cid for cid, _ in self.pairs}
        if not ids or any(len(cid) != SHORT_ID or container_ref(cid)[1] for cid in ids):
            return False
        return not store.container_ids(ids) & ids

    def lists(self, lease: Lease) -> bool:
        if lease.container_id in self.any_if:
            return True
        if lease.ifname is not None:
            return (lease.container_id, lease.ifname) in self.pairs
        return any(cid == lease.container_id for cid, _ in self.pairs)


def parse_valid(entries: Iterable[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """``ID`` or ``ID/IFNAME`` entries -> (ids matching any ifname, (id, ifname) pairs)."""
    any_if: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for entry in entries:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        cid, sep, ifname = entry.partition("/")
        container_ref(cid)  # a bare mark names no container: refused
        (pairs.add((cid, ifname)) if sep else any_if.add(cid))
    return any_if, pairs


def age(lease: Lease, now: float, this_boot: Optional[str], uptime: float) -> float:
    """How old a lease is: on the boot clock when it was made in this boot (no step of
    the wall clock changes that), else by its wall-clock allocation time."""
    if lease.boot_time is not None and lease.boot_id == this_boot:
        return uptime - lease.boot_time
    return now - lease.allocated_at


def reasons(lease: Lease, valid: Optional[Valid], previous_boots: bool,
            this_boot: Optional[str]) -> list[str]:
    """Why ``lease`` should go: ``[]`` (it stays), "earlier boot", "not listed"."""
    out = []
    # Only a recorded other boot counts: an unknown one (imported) is not evidence.
    if previous_boots and None not in (this_boot, lease.boot_id) and lease.boot_id != this_boot:
        out.append(EARLIER_BOOT)
    if valid is not None and not valid.lists(lease):
        out.append(NOT_LISTED)
    return out


class NetworkPlan:
    """One network's verdicts: ``candidates`` and ``kept`` are ``(lease, reason)``."""

    def __init__(self, network: str, leases: list[Lease]) -> None:
        self.network = network
        self.total = len(leases)
        self.judged = 0    # leases the list decides about (not already of an earlier boot)
        self.matched = 0   # ... and that it lists
        self.candidates: list[tuple[Lease, str]] = []
        self.kept: list[tuple[Lease, str]] = []
        self.refusals: list[tuple[str, str]] = []  # (guard, message)

    def going(self) -> list[Lease]:
        """Candidates the list alone condemns (an earlier boot is proof enough)."""
        return [lease for lease, why in self.candidates if EARLIER_BOOT not in why]


def plan_network(store: Store, network: str, valid: Optional[Valid], grace: float,
                 previous_boots: bool, now: Optional[float] = None) -> NetworkPlan:
    """Classify one network's leases (inside the caller's transaction). Reservations
    (``ipamctl reserve``) are no container's: never judged, never counted by a guard."""
    now = time.time() if now is None else now
    this_boot, uptime = system.boot_id(), system.boot_clock()
    leases = [lease for lease in store.leases(network) if not lease.is_reservation()]
    plan = NetworkPlan(network, leases)
    for lease in leases:
        why = reasons(lease, valid, previous_boots, this_boot)
        if valid is not None and EARLIER_BOOT not in why:
            plan.judged += 1
            plan.matched += NOT_LISTED not in why
        if not why:
            continue
        left = grace - age(lease, now, this_boot, uptime)
        if left > 0:
            plan.kept.append((lease, "younger than --grace (%s left)" % duration(left)))
        else:
            plan.candidates.append((lease, ", ".join(why)))
    return plan


def guard(plan: NetworkPlan, valid: Optional[Valid], max_share: float
          ) -> list[tuple[str, str]]:
    """The guards' refusals for one network (empty: it may go ahead)."""
    going = plan.going()
    if not going:
        return []
    n = plan.network
    if not valid:
        return [("empty-list", "network %s: the list of live containers is empty, so all %d "
                 "of its leases past --grace would go; did the command feeding it fail? "
                 "Check it, or pass --force if the node really runs no container"
                 % (n, len(going)))]
    if plan.matched == 0:
        return [("no-match", "network %s: the list names none of its %d leases' containers, "
                 "so every one past --grace would go; is it the right list (pod sandbox IDs "
                 "for CRI: 'crictl pods -q', not 'crictl ps -q'; full IDs)? Pass --force if "
                 "every container of this network is gone" % (n, plan.judged))]
    if len(going) > SMALL and len(going) > max_share * plan.total:
        return [("max-share", "network %s: %d of its %d leases would go, more than "
                 "--max-share %g%%; check the list, or raise --max-share, or pass --force"
                 % (n, len(going), plan.total, max_share * 100))]
    return []


def keep_held_addresses(plans: list[NetworkPlan], holders: dict[str, str]) -> None:
    """Move each candidate whose address a namespace holds to ``kept``, naming it."""
    for plan in plans:
        going = []
        for lease, why in plan.candidates:
            where = holders.get(str(lease.ip))
            if where is None:
                going.append((lease, why))
            else:
                plan.kept.append((lease, "namespace %s holds %s" % (where, lease.ip)))
        plan.candidates = going


def keep_all(plans: list[NetworkPlan], why: str) -> None:
    """The on-the-wire check could not finish: nothing is released on a guess."""
    for plan in plans:
        plan.kept += [(lease, "%s (--ignore-netns to skip the check)" % why)
                      for lease, _ in plan.candidates]
        plan.candidates = []


class Report:
    """What gc found and did: per network plans, ``released`` leases, ``problems``
    (files left), whether guards ``refused`` or were ``forced``,
    and the node names two hosts use at once (``conflicts``: no ``force`` overrides
    them)."""

    def __init__(self, plans: list[NetworkPlan], applied: bool,
                 conflicts: Optional[list[Conflict]] = None) -> None:
        self.plans = plans
        self.applied = applied
        self.conflicts = conflicts or []
        self.released: list[Lease] = []
        self.problems: list[str] = []
        self.forced = False
        # {container ID: its short form in a table} (see ipam.admin.selection.found)
        self.shown: dict[str, str] = {}
        # A remark on the list for the operator (:data:`SHORT_LIST`), or None.
        self.hint: Optional[str] = None

    @property
    def refusals(self) -> list[tuple[str, str, str]]:
        """``(network, guard, message)`` for each refusal."""
        return [(p.network,) + r for p in self.plans for r in p.refusals]

    @property
    def refused(self) -> bool:
        return bool(self.conflicts) or (bool(self.refusals) and not self.forced)

    def candidates(self) -> list[tuple[Lease, str]]:
        return [c for p in self.plans for c in p.candidates]

    def kept(self) -> list[tuple[Lease, str]]:
        return [k for p in self.plans for k in p.kept]


def gc(store: AdminStore, networks: Optional[Iterable[str]], valid: Optional[Valid],
       grace: float, previous_boots: bool = False, apply: bool = False,
       data_dir: Optional[str] = None,
       force: bool = False, max_share: float = 0.5, netns: bool = True,
       confirm: Optional[Callable[[Report], bool]] = None, named: Iterable[str] = ()
       ) -> Report:
    """Plan, guard, check the wire, then (``apply``) release; returns a :class:`Report`.

    ``networks``: names, or None for every network of this node. ``valid``: a
    :class:`Valid`, or None when no list was given (only ``previous_boots`` then picks).
    ``confirm(report)``: asked when a guard refuses and ``force`` is not given; True
    goes ahead. Candidates, and whether two hosts use the node's name, are checked
    again inside the releasing transaction. ``named``: the networks the operator named
    (``--network``), each refused when the database does not know it; those a runtime
    loaded (``gc --cri``) may be new or another plugin's, and judge nothing then.
    """
    with store.transaction():
        hint = SHORT_LIST if valid is not None and valid.truncated(store) else None
        if valid is not None:
            valid.resolve(store)
        require_networks(store, named)
        names = sorted(store.networks()) if networks is None else list(dict.fromkeys(networks))
        plans = [plan_network(store, n, valid, grace, previous_boots) for n in names]
        shown = found(store, [lease for p in plans for lease, _ in p.candidates + p.kept]).shown
        conflicts = name_conflicts(store)
    for plan in plans:
        plan.refusals = guard(plan, valid, max_share)
    report = Report(plans, apply, conflicts)
    report.shown, report.hint = shown, hint
    if netns and any(p.candidates for p in plans):
        from ipam.admin import netns as wire

        try:
            keep_held_addresses(plans, wire.holders())
        except wire.Incomplete as e:
            keep_all(plans, str(e))
    if report.refusals and not report.conflicts:
        report.forced = force or bool(apply and confirm is not None and confirm(report))
    if not apply or report.refused:
        return report
    if data_dir is None:  # every caller gives it: the mirror of this node's leases
        raise TypeError("gc needs data_dir to apply")
    chosen = {_owner(c) for c, _ in report.candidates()}
    # Held even with nothing to release: a journal an earlier gc had to leave (a file it
    # could not remove) is finished here.
    mirrors = _mirrors(store, names, data_dir)
    held = _Held()
    try:
        held.open(store, mirrors)
        with store.transaction(after_commit=held.committed):
            report.conflicts = name_conflicts(store)
            again = [] if report.conflicts else [
                lease for n in names for lease, _ in plan_network(
                    store, n, valid, grace, previous_boots).candidates
                if _owner(lease) in chosen]
            report.released, problems = _release_all(store, again, "gc", held)
            report.problems += problems
    finally:
        held.close()
    return report


def name_conflicts(store: AdminStore) -> list[Conflict]:
    """The node names whose leases this gc would judge that two hosts use at once: the
    store's node's on a shared database (``--node``, else this host's), every name in
    a SQLite file (whose gc walks every lease in it). This host's boot counts as active
    now, if it is one of a name's."""
    return node_boots.conflicts(store, store.scope, system.boot_id())


def _owner(lease: Lease) -> tuple[str, IP, str, Optional[str]]:
    return (lease.network, lease.ip, lease.container_id, lease.ifname)


def duration(seconds: float) -> str:
    """``3m12s``, ``1h5m``, ``45s``: how long until a kept lease may go."""
    s = int(seconds + 0.999)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    if h:
        return "%dh%dm" % (h, m)
    return "%dm%02ds" % (m, s) if m else "%ds" % s
