"""Stores kept open across calls: the node daemon's (:mod:`ipam.daemon.server`).

A plugin process opens its store, runs one transaction and exits. The daemon runs many
calls, at most ``size`` at a time, and keeps each store it opened for the next call to
the same database: a SQLite connection keeps its statement cache and its WAL index; a
PostgreSQL store keeps its server connection and prepares its statements, so a node
holds at most ``size`` connections to a shared pool instead of one per call. Nothing
else changes: each call is still one transaction through the same code, with the same
locks, beside plugin processes and ipamctl.

A store goes back only after a call that succeeded, and is checked when taken again
(:meth:`~ipam.store.protocol.Store.reusable`): a SQLite store whose file was removed or
replaced since is closed, and a new one opened. That only saves a reopen later: the
guarantee that no call writes through a stale handle is the transaction's own check, in
the writers' queue (:meth:`ipam.store.sqlite.SqliteStore._begin`), since a call taken
from here may wait in that queue while the file is replaced.
"""
import threading
from time import monotonic

from ipam.store.backend import open_store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from ipam.store.protocol import Store
    from ipam.waits import Patience

    Key = tuple[str, Optional[float], Optional[str], str]


# Idle stores kept in all, per call served at once: a node serves a few databases (one
# per dataDir on SQLite, one shared pool); each idle SQLite store holds 3 descriptors.
MAX_IDLE_PER_SLOT = 8


class StorePool:
    def __init__(self, size: "int") -> "None":
        self.size = size
        self._idle: "dict[Key, list[Store]]" = {}
        self._keys: "dict[int, Key]" = {}
        self._opening: "dict[Key, threading.Event]" = {}  # ready() opening one: set when done
        self._lock = threading.Lock()
        self.opened = 0  # stores opened, for the health check and the tests
        self.max_idle = MAX_IDLE_PER_SLOT * size

    def take(self, database: "str", busy_timeout: "Optional[float]", node: "Optional[str]",
             data_dir: "str") -> "Store":
        """An open store for these settings: an idle one, or a new one."""
        key = (database, busy_timeout, node, data_dir)
        with self._lock:
            idle = self._idle.get(key)
            store = idle.pop() if idle else None
        if store is not None:
            if store.reusable():
                with self._lock:
                    self._keys[id(store)] = key
                return store
            store.close()
        store = open_store(database, busy_timeout, node=node, data_dir=data_dir,
                               kept=True)
        store.prepare_statements()
        with self._lock:
            self.opened += 1
            self._keys[id(store)] = key
        return store

    def ready(self, database: "str", busy_timeout: "Optional[float]", node: "Optional[str]",
              data_dir: "str", patience: "Patience") -> "None":
        """Make sure a store for these settings is open and idle for :meth:`take`, with
        whatever needs no lock done (its engine imported, a server connected): a call
        runs this before it takes its network's lock, then takes the store once it holds
        the lock. Otherwise the first call of a database, and the first after a failed
        call closed its store, would do all that inside the lock while the calls queued
        behind it wait (a daemon started anew under a burst, starved of CPU, held one
        for seconds, importing psycopg). One store at a time per database: the other
        calls of a burst wait for it here, holding no lock, no longer than ``patience``
        allows all of their waits, and in what it wraps waits in (the daemon's: another
        call runs meanwhile); past that, or if it failed, :meth:`take` opens one."""
        key = (database, busy_timeout, node, data_dir)
        with self._lock:
            if self._idle.get(key):
                return
            opening = self._opening.get(key)
            if opening is None:
                opening = self._opening[key] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            left = max(patience.deadline - monotonic(), 0.0)
            if patience.idle is None:
                opening.wait(left)
            else:
                with patience.idle():
                    opening.wait(left)
            return
        try:
            store = open_store(database, busy_timeout, node=node, data_dir=data_dir,
                                kept=True)
            try:
                store.prepare_statements()
                store.connect()
            except BaseException:
                store.close()
                raise
            with self._lock:
                self.opened += 1
                self._keys[id(store)] = key
            self.give(store, reuse=True)
        finally:
            with self._lock:
                del self._opening[key]
            opening.set()

    def give(self, store: "Store", reuse: "bool") -> "None":
        """Back after a call; closed instead if the call failed, or if ``size`` stores
        for its database are idle already. Past :attr:`max_idle` idle stores in all,
        the least recently used database's go: a node whose networks come and go (or a
        test suite, one dataDir per test) must not hold every file it ever served."""
        stale: "list[Store]" = [store]
        with self._lock:
            key = self._keys.pop(id(store))
            idle = self._idle.pop(key, [])
            self._idle[key] = idle  # the most recently used key goes last
            if reuse and len(idle) < self.size:
                idle.append(stale.pop())
            if not idle:
                del self._idle[key]
            total = sum(len(stores) for stores in self._idle.values())
            for old in list(self._idle):
                if total <= self.max_idle:
                    break
                stale += self._idle.pop(old)
                total = sum(len(stores) for stores in self._idle.values())
        for old_store in stale:
            old_store.close()

    def idle(self) -> "int":
        with self._lock:
            return sum(len(stores) for stores in self._idle.values())

    def close(self) -> "None":
        """Close every idle store (the daemon's stop, once its calls are done)."""
        with self._lock:
            stores = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for store in stores:
            store.close()
