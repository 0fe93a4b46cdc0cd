"""How long a call waits for locks: the rule in one place, and the bound a caller of the
node daemon may count on.

A plugin call may wait for three locks in turn: host-local's ``<network>/lock``, our
writers' queue beside the database (:mod:`ipam.store.writer_lock`), and the database's own.
Each wait gives up once one holder has kept the lock for ``busyTimeout`` seconds (a stuck
holder: code 11 naming the lock). A queue whose holder keeps changing is progress, not a
stall (a node starting 110 pods on one network: each call holds the lock for
milliseconds, the last waits for all of them), so the wait goes on while the holder
moves (:class:`Watch`). All of one call's waits together give up at ``lockWaitLimit``
seconds (:data:`DEFAULT_LOCK_WAIT_LIMIT` unless the config says), so that no call
outlasts kubelet's 2-minute CRI timeout whatever ``busyTimeout`` is.

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
# Seconds between two looks at who holds a lock a call waits for, at most (a quarter of
# busyTimeout when that is less): a look reads /proc/locks, whose size grows with the
# node's locks, so a hundred waiters look a hundred times a second, not more.
LOOK_EVERY = 1.0
# Seconds a call may spend besides waiting for locks: its statements, the mirror's writes
# and syncs, on a node whose CPUs are busy starting pods (a call takes milliseconds).
WORK_ALLOWANCE = 3.0


class Patience:
    """One call's lock waits: :meth:`watch` bounds the next one. Made when the call
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

    def watch(self, holder: "object") -> "Watch":
        """The clock of one wait, whose lock ``holder`` holds now (:class:`Watch`)."""
        return Watch(self, holder)


class Watch:
    """One lock wait of a call: it ends at the call's deadline, or once the holder it
    last saw change has held the lock for ``busyTimeout`` (``stall``).

    The waiter looks at the holder every :meth:`step` seconds and tells :meth:`saw` who
    holds it: the pids /proc/locks shows for a plugin process's wait, or the node
    daemon's count of turns in its own queue for the lock (its calls share one pid, so
    /proc/locks cannot tell them apart). Anything that compares equal while nothing
    moved will do; a holder that cannot be seen (another PID namespace) compares equal
    to itself, and its wait ends at ``busyTimeout`` as before the rule.

    A look that comes late (the waiter stopped, its cgroup frozen, or starved of CPU on
    a node starting pods) does not count the lateness against the holder: no one looked
    meanwhile, and a queue stopped with its waiter is not one that stalled. In the
    daemon, the thread that sees the flock's holder move may not have run yet when the
    others behind it wake up. The call's deadline bounds the wait all the same."""

    __slots__ = ("patience", "holder", "since", "due")

    def __init__(self, patience: "Patience", holder: "object") -> "None":
        self.patience = patience
        self.holder = holder
        self.since = self.due = monotonic()

    def saw(self, holder: "object") -> "bool":
        """Whether ``holder`` is another than the one seen last: the queue moved, and
        ``busyTimeout`` counts again from now."""
        now = monotonic()
        if now > self.due:
            self.since += now - self.due
            self.due = now
        if holder == self.holder:
            return False
        self.holder = holder
        self.since = now
        return True

    def step(self) -> "float":
        """Seconds to wait before the next look at the holder; 0: give up (:meth:`why`
        says why)."""
        p = self.patience
        now = monotonic()
        end = min(self.since + p.stall, p.deadline)
        step = max(0.0, min(end - now, p.stall / 4, LOOK_EVERY))
        self.due = now + step
        return step

    def why(self) -> "str":
        """What ends this wait, for the error that says why the call gave up."""
        p = self.patience
        if p.deadline < self.since + p.stall:
            return "the call's lock-wait limit (%gs for all its waits)" % p.limit
        return "the busy timeout (%gs)" % p.stall


def call_bound(lock_wait_limit: "float", shared_allowance: "float" = 0.0) -> "float":
    """Seconds a call can take at most once taken: every lock wait, the work, and for a
    shared pool ``shared_allowance`` (its connect timeout and retry pauses)."""
    return lock_wait_limit + shared_allowance + WORK_ALLOWANCE
