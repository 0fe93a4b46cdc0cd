"""The Store contracts: what a CNI command needs, and what ipamctl needs beside it.

:class:`Store` is the plugin's: every operation one CNI command (ADD, DEL, CHECK, GC,
STATUS) makes, with the mirror it keeps and the boots it stamps, and nothing more.
host-local's own store (``backend/store.go``) has seven methods; ours adds what host-local
does without a database (the transaction instead of lock/unlock, its files reconciled
as leases, the config a network was added with, the history a call trims) and nothing
that only an operator asks. :class:`AdminStore` adds what ipamctl asks: the history and
its follow, every network and node, the engine's health, forgetting networks and boots.
Each function is typed with the narrower one it needs, so the type checker keeps
operator queries out of the plugin's path.

Implementations: :class:`ipam.store.sqlite.SqliteStore` (the embedded default, stdlib
sqlite3) and :class:`ipam.store.postgres.PostgresStore` (a PostgreSQL database shared by
many nodes), both the one algorithm of :class:`ipam.store.table.LeaseTable`; the tests
add an in-memory fake (tests/fake_store.py). All pass the same contract tests
(tests/test_store_contract.py), and mypy checks each against :class:`AdminStore` (the
engines at the end of this module; the fake in its own module, which ``make typecheck``
reads). A plugin call never imports this module: it exists for type checkers and readers.
"""
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Protocol

from ipam.addr import IP
from ipam.lease import Boot, Event, Lease, NetworkRecord
from ipam.waits import Patience


class Store(Protocol):
    """What one CNI command needs (:mod:`ipam.commands` and the rules and mirror it
    runs: :mod:`ipam.allocator`, :mod:`ipam.mirror.files`,
    :mod:`ipam.mirror.reconcile`, :mod:`ipam.node_boots`), and the node daemon's pool
    (:mod:`ipam.daemon.pool`)."""

    # True when many nodes share the store: a node's mirror, GC and ipamctl then walk
    # its own leases (leases() is scoped), and its dataDir and cursor files are its own.
    shared: bool
    # This node's name: recorded with each lease and event it makes (None: a store made
    # without one).
    node: Optional[str]

    def close(self) -> None:
        """Release the connection; the store is not used again."""

    def reusable(self) -> bool:
        """Whether a store kept open since its last call (the node daemon's pool) may
        serve another: False when what it opened is gone (a SQLite file removed or
        replaced since)."""

    def prepare_statements(self) -> None:
        """Prepare statements on first use, where the engine can (a store that serves
        many calls: the node daemon's)."""

    def connect(self) -> None:
        """Be ready for a transaction: connected, where the engine connects lazily (a
        shared pool's server), and whatever else needs no lock done. A command calls it
        before it takes a network's lock, so that every call queued behind it does not
        wait for its connect too."""

    def __enter__(self) -> "Store": ...

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        """Close the store (``with open_store(...) as store:``)."""

    def transaction(self, after_commit: Optional[Callable[[], None]] = None,
                    patience: "Optional[Patience]" = None,
                    before_commit: Optional[Callable[[], None]] = None
                    ) -> AbstractContextManager[None]:
        """One atomic unit holding the write lock: all of a command or none of it.
        ``patience`` bounds the wait for the lock (:mod:`ipam.waits`; default: the
        store's timeout); ``before_commit`` runs last inside, and may still stop it by
        raising; ``after_commit`` runs after COMMIT, while the lock is still held."""

    def retry_delays(self) -> list[float]:
        """Pauses before each further attempt of a command that raised ``Retry``; empty
        where one attempt always suffices (SQLite's single writer)."""

    def lock_network(self, network: str, n_sets: int) -> None:
        """Serialize, against every other writer of ``network``, all that this
        transaction changes in it (a no-op where the whole store has one writer)."""

    def lease_at(self, network: str, ip: IP) -> Optional[Lease]:
        """The lease of ``ip`` in ``network``, if any."""

    def leases_of(self, network: str, container_id: str, ifname: Optional[str]) -> list[Lease]:
        """Leases with exactly this owner; ``ifname=None`` selects legacy ID-only leases."""

    def leases(self, network: Optional[str] = None) -> list[Lease]:
        """All leases (of one network), ordered by network and address."""

    def reserve(self, lease: Lease, reason: str) -> bool:
        """Insert ``lease`` (pod identity included); False when the address is already
        leased. Records history."""

    def import_leases(self, network: str, leases: list[Lease], reason: str) -> int:
        """Insert many leases of one network (addresses not yet leased); the count."""

    def renew(self, lease: Lease, pod: Optional[tuple[Optional[str], ...]] = None) -> None:
        """Mark a lease as held in the current boot (a repeated ADD found it alive); a
        lease with no pod identity yet (adopted, imported, older) takes ``pod``'s."""

    def claim_legacy(self, lease: Lease, ifname: str) -> Lease:
        """Give a legacy ID-only lease the interface that first asked for it (it then
        belongs to that attachment alone); returns the lease as it now is."""

    def release(self, lease: Lease, reason: str) -> None:
        """Delete ``lease`` and record the release, with its pod identity, in the history."""

    def prune_history(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` of the oldest events stamped before ``before`` (every
        node's, on a shared store: the history is the pool's); how many went."""

    def first_free(self, network: str, lo: IP, hi: IP) -> Optional[IP]:
        """The lowest address in [lo, hi] not leased in ``network``, found without a walk."""

    def last_reserved(self, network: str, range_set: int) -> Optional[IP]:
        """The round-robin cursor of a range set (host-local's last_reserved_ip.N)."""

    def set_last_reserved(self, network: str, range_set: int, ip: IP) -> None: ...

    def cursors(self, network: str) -> dict[int, IP]:
        """Every cursor of a network, for the exporter."""

    def network_info(self, network: str) -> Optional[NetworkRecord]:
        """The network as the last ADD saw its config."""

    def set_network_info(self, network: str, record: NetworkRecord) -> None: ...

    def mirror_stamp(self, network: str) -> Optional[str]:
        """This node's record of its mirror directory right after our last change to it
        (see :meth:`ipam.mirror.files.NetworkDir.stamp`); None before the first."""

    def set_mirror_stamp(self, network: str, stamp: str) -> None: ...

    def boots(self, node: Optional[str] = None) -> tuple[float, list[Boot]]:
        """The database clock's now (seconds since the epoch; on a shared store the
        server's, one clock for every node), and the recorded boots of ``node`` (None:
        of every name), ordered by name and first stamp."""

    def stamp_boot(self, boot: Boot, prune_before: Optional[float] = None) -> None:
        """Record ``boot`` (its first stamp's fields stay as first written); with
        ``prune_before``, drop its name's other boots seen before then that hold no
        lease made in them."""

    def boot_leases(self, node: Optional[str] = None, boot_id: Optional[str] = None
                    ) -> dict[tuple[str, str], int]:
        """``{(node, boot id): leases made in that boot under that name}``, of every
        name and boot unless given (a walk of the leases: ipamctl's, and a call's only
        while a conflict stands)."""


class AdminStore(Store, Protocol):
    """What ipamctl needs beside a command's operations (:mod:`ipam.admin` and the
    modules behind the other commands): the history, every network and node, the
    engine's health, forgetting a network or a node's boots."""

    # Whose leases leases() walks: a node's name (a shared store's, by default its own
    # node), or None for every lease in the store.
    scope: Optional[str]

    def __enter__(self) -> "AdminStore": ...

    def history(self, network: Optional[str] = None, ip: Optional[IP] = None,
                container_id: Optional[str] = None, since: Optional[float] = None,
                until: Optional[float] = None, container_prefix: Optional[str] = None,
                pod_name: Optional[str] = None) -> list[Event]:
        """Allocation and release events in commit order (the wall clock may step), each
        with the lease's pod identity; ``container_prefix`` selects every container ID
        that starts with it."""

    def events_after(self, after: int, limit: int) -> list[tuple[int, Event]]:
        """``(id, event)`` of at most ``limit`` events whose id is above ``after``, in id
        order. Ids grow with each event inserted; on a shared store a transaction that
        began earlier may commit a smaller one later (see :func:`ipam.admin.leases.follow`)."""

    def last_event_id(self) -> int:
        """The largest event id (0: no event)."""

    def container_ids(self, starts: Iterable[str]) -> set[str]:
        """Every container ID the database knows that begins with one of ``starts``: a
        lease's, of any node whatever the scope, or a history event's."""

    def count_history(self, before: float) -> int:
        """How many events are stamped before ``before`` (every node's)."""

    def integrity(self) -> list[str]:
        """Problems the database engine finds in itself; empty when healthy."""

    def revision(self) -> Optional[str]:
        """The schema revision (alembic's)."""

    def networks(self) -> Iterable[str]:
        """Every network the store knows, in name order: one with a lease, a cursor, or
        a ``networks`` row (its config recorded by an ADD, kept after its last DEL)."""

    def lease_counts(self, network: str) -> dict[Optional[str], int]:
        """``{node: leases held in network}`` over every node, whatever the scope."""

    def network_times(self, network: str) -> tuple[Optional[float], Optional[float]]:
        """When the ``networks`` row was last written (None: no row, or not recorded),
        and the time of the network's newest history event (None: none)."""

    def forget_network(self, network: str) -> None:
        """Delete the network's ``networks`` row, cursors and every node's mirror stamp;
        its history stays. The caller has released its leases first."""

    def forget_boots(self, node: str, keep: Optional[str]) -> int:
        """Drop the records of every boot of ``node`` but ``keep``; how many went."""


if TYPE_CHECKING:  # each engine must satisfy the contracts: mypy checks these
    from ipam.store.postgres import PostgresStore
    from ipam.store.sqlite import SqliteStore

    def _conforms(b: SqliteStore, c: PostgresStore) -> list[AdminStore]:
        return [b, c]
