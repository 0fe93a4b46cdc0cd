"""How long a call waits for locks: the rule in one place, and the bound a caller of the
node daemon may count on.

A plugin call may wait for three locks in turn: host-local's ``<network>/lock``, our
writers' queue beside the database (:mod:`ipam.writer_lock`), and the database's own.
Each wait gives up once its holder has kept it for ``busyTimeout`` seconds (a stuck
holder: code 11 naming the lock), and all of one call's waits together give up at
``lockWaitLimit`` seconds (:data:`DEFAULT_LOCK_WAIT_LIMIT` unless the config says), so
that no call outlasts kubelet's 2-minute CRI timeout whatever ``busyTimeout`` is.

The same :class:`Patience` runs a call in a plugin process and in the node daemon, so a
call waits as long on either path; :func:`call_bound` is what the daemon tells its client
when it takes a call: the most the call can take, waits and work together, past which the
client stops waiting and the daemon will not commit it.

Stdlib only, and only ``time``: the plugin's hot path imports it.
"""
from time import monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Callable, ContextManager, Optional

# Seconds all of one call's lock waits may take together, by default and at most. The
# most is what keeps call_bound() under kubelet's 120 s with every allowance added.
DEFAULT_LOCK_WAIT_LIMIT = 60.0
MAX_LOCK_WAIT_LIMIT = 100.0
# Seconds a call may spend besides waiting for locks: its statements, the mirror's writes
# and syncs, on a node whose CPUs are busy starting pods (a call takes milliseconds).
WORK_ALLOWANCE = 3.0


class Patience:
    """One call's lock waits: :meth:`timeout` bounds the next one. Made when the call
    starts, so the limit counts every wait of the call, and every attempt of it.

    ``idle``: what a wait is wrapped in, if anything: the node daemon's, which lets
    another call run while this one waits (its calls share one interpreter)."""

    __slots__ = ("stall", "limit", "deadline", "idle")

    def __init__(self, stall: "float", limit: "float" = DEFAULT_LOCK_WAIT_LIMIT,
                 idle: "Optional[Callable[[], ContextManager[object]]]" = None) -> "None":
        self.stall = stall
        self.limit = limit
        self.deadline = monotonic() + limit
        self.idle = idle

    @classmethod
    def each(cls, stall: "float") -> "Patience":
        """Waits bounded one by one, with no limit for them all: ipamctl's, whose
        operator is waiting and can see it wait."""
        return cls(stall, float("inf"))

    def timeout(self) -> "tuple[float, str]":
        """``(seconds, why)``: how long the next wait may take, and what ends it, for the
        error that says why the call gave up."""
        left = self.deadline - monotonic()
        if left < self.stall:
            return max(left, 0.0), "the call's lock-wait limit (%gs for all its waits)" % (
                self.limit)
        return self.stall, "the busy timeout (%gs)" % self.stall


def call_bound(lock_wait_limit: "float", shared_allowance: "float" = 0.0) -> "float":
    """Seconds a call can take at most once taken: every lock wait, the work, and for a
    shared pool ``shared_allowance`` (its connect timeout and retry pauses)."""
    return lock_wait_limit + shared_allowance + WORK_ALLOWANCE
