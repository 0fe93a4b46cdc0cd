"""An in-memory AdminStore: the fake the rules' unit tests run against, and the third
implementation the contract tests drive (tests/test_store_contract.py).

It keeps the contract's semantics with the plainest data structures, so a contract test
that passes here and fails on SQLite points at the SQL, not at the rule. It lives with
the tests, not in the shipped package: nothing a user runs needs a store that forgets.
``make typecheck`` checks it against the contracts (the assignments at the end).
"""
from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Optional

from ipam import addr, system
from ipam.lease import NO_POD, Boot, Event, Lease, NetworkRecord, new_boot_time
from ipam.store import invariant
from ipam.store.schema_version import HEAD

if TYPE_CHECKING:
    from ipam.addr import IP
    from ipam.store.protocol import AdminStore, Store
    from ipam.waits import Patience

# An event's fields, in Event's order: time, event, reason, network, ip, container_id,
# ifname, node, pod_namespace, pod_name, pod_uid.
Fields = tuple[float, str, str, str, str, str, Optional[str], Optional[str],
               Optional[str], Optional[str], Optional[str]]


class _Row(tuple):  # Fields, with an id
    """An event's fields, and its id (``seq``), as the history table's rows have one."""

    seq = 0


class _Txn:
    def __init__(self, store: FakeStore, after_commit: Optional[Callable[[], None]] = None,
                 before_commit: Optional[Callable[[], None]] = None) -> None:
        self.store = store
        self.after_commit = after_commit
        self.before_commit = before_commit

    def __enter__(self) -> None:
        self.saved = (dict(self.store._leases), dict(self.store._cursors),
                      list(self.store.history_rows), dict(self.store._networks),
                      dict(self.store._stamps), dict(self.store._boots))

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]
                 ) -> Literal[False]:
        if exc_type is None and self.before_commit is not None:
            try:
                self.before_commit()
            except BaseException:
                self.__exit__(Exception, None, None)
                raise
        if exc_type is not None:
            (self.store._leases, self.store._cursors, self.store.history_rows,
             self.store._networks, self.store._stamps, self.store._boots) = self.saved
        elif self.after_commit is not None:
            self.after_commit()
        return False


class FakeStore:
    shared = False  # one node's store
    scope: Optional[str] = None  # leases() walks every lease

    def __init__(self, node: Optional[str] = "memory") -> None:
        self.node = node
        self._leases: dict[tuple[str, IP], Lease] = {}
        self._cursors: dict[tuple[str, int], IP] = {}  # (network, range_set) -> ip
        self.history_rows: list[_Row] = []  # Event's fields, in its order
        self._seq = 0  # the last event's id
        self._networks: dict[str, NetworkRecord] = {}
        self._stamps: dict[str, str] = {}  # network -> the mirror directory's stamp
        self._boots: dict[tuple[str, str], Boot] = {}  # (node, boot id) -> Boot

    def transaction(self, after_commit: Optional[Callable[[], None]] = None,
                    patience: Optional[Patience] = None,
                    before_commit: Optional[Callable[[], None]] = None) -> _Txn:
        return _Txn(self, after_commit, before_commit)

    def retry_delays(self) -> list[float]:
        return []  # one writer at a time: an attempt never needs repeating

    def lock_network(self, network: str, n_sets: int) -> None:
        pass  # the store's single write lock already covers every network

    def close(self) -> None:
        pass

    def reusable(self) -> bool:
        return True

    def prepare_statements(self) -> None:
        pass

    def connect(self) -> None:
        pass

    def __enter__(self) -> FakeStore:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        pass

    def lease_at(self, network: str, ip: IP) -> Optional[Lease]:
        return self._leases.get((network, ip))

    def leases_of(self, network: str, container_id: str, ifname: Optional[str]
                  ) -> list[Lease]:
        return sorted((lease for lease in self._leases.values()
                       if lease.network == network and lease.container_id == container_id
                       and lease.ifname == ifname), key=_order)

    def leases(self, network: Optional[str] = None) -> list[Lease]:
        return sorted((lease for lease in self._leases.values()
                       if network is None or lease.network == network), key=_order)

    def reserve(self, lease: Lease, reason: str, imported: bool = False) -> bool:
        if lease.key() in self._leases:
            return False
        lease = Lease(lease.network, lease.ip, lease.range_set, lease.container_id,
                      lease.ifname, lease.allocated_at or time.time(),
                      lease.boot_id if imported else lease.boot_id or system.boot_id(),
                      lease.node or self.node,
                      lease.boot_time if imported else new_boot_time(lease), *lease.pod())
        self._leases[lease.key()] = lease
        self._log("allocate", reason, lease)
        return True

    def import_leases(self, network: str, leases: list[Lease], reason: str) -> int:
        return sum(1 for lease in leases if self.reserve(lease, reason, imported=True))

    def claim_legacy(self, lease: Lease, ifname: str) -> Lease:
        claimed = lease.with_ifname(ifname)
        self._leases[lease.key()] = claimed
        return claimed

    def renew(self, lease: Lease, pod: Optional[tuple[Optional[str], ...]] = None) -> None:
        old = self._leases.get(lease.key())
        if old is not None:
            kept = old.pod() if old.pod() != NO_POD or not pod else pod
            self._leases[lease.key()] = Lease(old.network, old.ip, old.range_set,
                                              old.container_id, old.ifname, old.allocated_at,
                                              system.boot_id(), old.node, system.boot_clock(),
                                              *kept)

    def release(self, lease: Lease, reason: str) -> None:
        gone = self._leases.pop(lease.key(), None)
        if gone is not None:
            self._log("release", reason, gone)

    def _log(self, event: str, reason: str, lease: Lease) -> None:
        row = _Row((time.time(), event, reason, lease.network, str(lease.ip),
                    lease.container_id, lease.ifname, lease.node or self.node, *lease.pod()))
        self._seq += 1
        row.seq = self._seq
        self.history_rows.append(row)

    def history(self, network: Optional[str] = None, ip: Optional[IP] = None,
                container_id: Optional[str] = None, since: Optional[float] = None,
                until: Optional[float] = None, container_prefix: Optional[str] = None,
                pod_name: Optional[str] = None) -> list[Event]:
        out = []
        for row in self.history_rows:
            e = Event(*row)
            if ((network is None or e.network == network) and (ip is None or e.ip == str(ip))
                    and (container_id is None or e.container_id == container_id)
                    and (container_prefix is None
                         or e.container_id.startswith(container_prefix))
                    and (pod_name is None or e.pod_name == pod_name)
                    and (since is None or e.time >= since)
                    and (until is None or e.time <= until)):
                out.append(e)
        return out

    def events_after(self, after: int, limit: int) -> list[tuple[int, Event]]:
        return [(row.seq, Event(*row)) for row in self.history_rows if row.seq > after][:limit]

    def last_event_id(self) -> int:
        return max((row.seq for row in self.history_rows), default=0)

    def container_ids(self, starts: Iterable[str]) -> set[str]:
        prefixes = tuple(starts)
        ids = {lease.container_id for lease in self._leases.values()}
        ids |= {row[5] for row in self.history_rows}
        return {i for i in ids if i.startswith(prefixes)}

    def prune_history(self, before: float, limit: int) -> int:
        old = sorted((row[0], i) for i, row in enumerate(self.history_rows)
                     if row[0] < before)[:limit]
        gone = {i for _, i in old}
        self.history_rows = [r for i, r in enumerate(self.history_rows) if i not in gone]
        return len(gone)

    def count_history(self, before: float) -> int:
        return sum(1 for row in self.history_rows if row[0] < before)

    def integrity(self) -> list[str]:
        """The fake keeps no flags: its rows, with the flags they imply, go through the
        same check as the engines' (which keeps the check itself honest)."""
        keys = {(lease.network, addr.to_key(lease.ip)) for lease in self._leases.values()}
        rows = [(lease.network, str(lease.ip), addr.to_key(lease.ip),
                 (lease.network, addr.neighbour_key(addr.to_key(lease.ip), 1)) not in keys)
                for lease in self.leases()]
        return invariant.problems(rows)

    def revision(self) -> Optional[str]:
        return HEAD

    def first_free(self, network: str, lo: IP, hi: IP) -> Optional[IP]:
        ip: Optional[IP] = lo
        while ip is not None and ip <= hi:
            if (network, ip) not in self._leases:
                return ip
            ip = addr.add(ip, 1)
        return None

    def last_reserved(self, network: str, range_set: int) -> Optional[IP]:
        return self._cursors.get((network, range_set))

    def set_last_reserved(self, network: str, range_set: int, ip: IP) -> None:
        self._cursors[(network, range_set)] = ip

    def cursors(self, network: str) -> dict[int, IP]:
        return {idx: ip for (net, idx), ip in self._cursors.items() if net == network}

    def network_info(self, network: str) -> Optional[NetworkRecord]:
        return self._networks.get(network)

    def set_network_info(self, network: str, record: NetworkRecord) -> None:
        self._networks[network] = record

    def mirror_stamp(self, network: str) -> Optional[str]:
        return self._stamps.get(network)

    def set_mirror_stamp(self, network: str, stamp: str) -> None:
        self._stamps[network] = stamp

    def networks(self) -> list[str]:
        return sorted({n for n, _ in self._leases} | {n for n, _ in self._cursors}
                      | set(self._networks))

    def lease_counts(self, network: str) -> dict[Optional[str], int]:
        counts: dict[Optional[str], int] = {}
        for lease in self.leases(network):
            counts[lease.node] = counts.get(lease.node, 0) + 1
        return counts

    def network_times(self, network: str) -> tuple[Optional[float], Optional[float]]:
        times = [row[0] for row in self.history_rows if row[3] == network]
        return None, max(times, default=None)  # the fake records no time with a network

    def forget_network(self, network: str) -> None:
        self._networks.pop(network, None)
        self._stamps.pop(network, None)
        for key in [k for k in self._cursors if k[0] == network]:
            del self._cursors[key]

    def boots(self, node: Optional[str] = None) -> tuple[float, list[Boot]]:
        found = [b for b in self._boots.values() if node is None or b.node == node]
        return time.time(), sorted(found, key=lambda b: (b.node, b.first_seq, b.boot_id))

    def stamp_boot(self, boot: Boot, prune_before: Optional[float] = None) -> None:
        old = self._boots.get((boot.node, boot.boot_id))
        if old is not None:  # the first stamp's fields stay, as the engines' upsert keeps them
            boot = Boot(boot.node, boot.boot_id, boot.host, old.first_seq, boot.last_seq,
                        old.first_seen, boot.seen_at)
        self._boots[(boot.node, boot.boot_id)] = boot
        if prune_before is not None:
            held = self.boot_leases(boot.node)
            for key, b in list(self._boots.items()):
                if (b.node == boot.node and b.boot_id != boot.boot_id
                        and b.seen_at < prune_before and key not in held):
                    del self._boots[key]

    def boot_leases(self, node: Optional[str] = None, boot_id: Optional[str] = None
                    ) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for lease in self._leases.values():
            if lease.node is None or lease.boot_id is None:
                continue
            if node in (None, lease.node) and boot_id in (None, lease.boot_id):
                key = (lease.node, lease.boot_id)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def forget_boots(self, node: str, keep: Optional[str]) -> int:
        gone = [k for k in self._boots if k[0] == node and k[1] != keep]
        for key in gone:
            del self._boots[key]
        return len(gone)


def _order(lease: Lease) -> tuple[str, bytes]:
    return (lease.network, addr.to_key(lease.ip))


if TYPE_CHECKING:  # the fake must satisfy both contracts: mypy checks these
    _plugin: Store = FakeStore()
    _admin: AdminStore = FakeStore()
