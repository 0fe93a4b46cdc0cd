"""What every plugin process shares, whichever way its call runs (forwarded to the node
daemon by :mod:`ipam.client`, or in process by :mod:`ipam.cni`): how much stdin a call
may bring, the signals that end a call, and the one guard that answers them.

A leaf below both: the client and the protocol layer each import it, and neither the
other. It imports only modules built into the interpreter, as the client does: a call
the daemon answers loads it too.
"""
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Callable, Optional

MAX_STDIN = 64 * 1024 * 1024  # bytes of network config read, by the client and in process
# The signals that end a call, in process (ipam.cni) or waiting for the daemon (ipam.client).
SIGNALS = {2: "SIGINT", 15: "SIGTERM", 1: "SIGHUP"}


# Before the guard is set, the signals are ignored wherever something of ours runs
# first. The launcher's shell ignores them (``trap ''``) and execs the interpreter, which
# keeps them ignored: exec resets only caught signals, and CPython sets its
# KeyboardInterrupt handler at start-up only over SIG_DFL (``signal_get_set_handlers``
# in Modules/signalmodule.c; checked on 3.11: under ``sh -c "trap '' INT; exec python
# ..."``, ``_signal.getsignal(2)`` is 1, SIG_IGN). The frozen build's init script
# ignores them first thing (tools/frozen/cx_init.py). The console script has no such
# step: Python's start-up (site, the script's imports) runs before any code of ours, so
# a SIGINT there is Python's KeyboardInterrupt traceback, and a SIGTERM or SIGHUP ends
# the process unanswered. The guard's docstring is short: it is unmarshalled on every
# call (this comment is not).
class Guard:
    """The one handler of :data:`SIGNALS` in a plugin process, from the first line of
    :func:`run` to its end: a signal at any moment ends the call in exactly one answer,
    a code-11 error object or the call's own. Only code that can still answer it is
    armed (:func:`armed`): there it raises, once. Elsewhere it is held, for the next
    armed stretch to raise at once; once the answer is decided, it changes nothing.
    Raised where Python drops exceptions (a weakref or import-lock callback), it is held
    again: :meth:`unraisable` re-arms it and says so in one line, not a traceback."""

    __slots__ = ("signum", "raising", "arming", "saved", "raised", "hook")

    def __init__(self) -> "None":
        self.signum: "Optional[int]" = None  # the first signal caught
        self.raising: "Optional[Callable[[int], BaseException]]" = None  # while armed
        self.arming: "Optional[Callable[[int], BaseException]]" = None  # for __enter__
        self.saved: "Optional[dict[int, Any]]" = None  # what to put back on __exit__
        self.raised: "Optional[tuple[BaseException, Callable[[int], BaseException]]]" = None
        self.hook: "Any" = None  # the sys.unraisablehook it replaced

    def __call__(self, signum: "int", frame: "object") -> "None":
        if self.signum is None:
            self.signum = signum
        raising, self.raising = self.raising, None
        if raising is not None:
            exc = raising(signum)
            self.raised = (exc, raising)
            raise exc

    def unraisable(self, what: "Any") -> "None":
        """``sys.unraisablehook``: the exception this guard raised, dropped by Python where
        it cannot propagate, re-arms the guard (a repeated signal raises; a later armed
        stretch raises at once, :meth:`__enter__`); anything else goes to the hook it
        replaced."""
        raised = self.raised
        if raised is None or what.exc_value is not raised[0]:
            return self.hook(what)
        self.raised = None
        if self.arming is raised[1]:
            self.raising = raised[1]
        sys.stderr.write("%s came inside a callback, which Python does not let it end;"
                         " the call goes on\n" % SIGNALS.get(self.signum or 0))

    def __enter__(self) -> "Guard":
        try:
            self.raising = raising = self.arming
            if self.signum is not None and raising is not None:  # one came already
                self.raising = None
                raise raising(self.signum)
        except BaseException:  # no __exit__ when __enter__ raises
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: "object") -> "None":
        self.raising = None
        if self.saved is not None:  # a guard for this stretch only: put back what it took
            import _signal

            saved, self.saved = self.saved, None
            for n, old in saved.items():
                _signal.signal(n, old)
            if sys.unraisablehook == self.unraisable:
                sys.unraisablehook = self.hook


def _guard() -> "Guard":
    """A new :class:`Guard` set for :data:`SIGNALS`, the handlers it replaced in its
    ``saved``; off the main thread, where Python sets no handler (the node daemon runs
    its calls there), one that is set nowhere and never fires."""
    import _signal  # the C module: signal.py would import enum

    guard = Guard()
    try:
        guard.saved = {n: _signal.signal(n, guard) for n in SIGNALS}
    except ValueError:
        return guard
    guard.hook, sys.unraisablehook = sys.unraisablehook, guard.unraisable
    return guard


def armed(raising: "Callable[[int], BaseException]") -> "Guard":
    """``with armed(exc):`` a signal of :data:`SIGNALS` raises ``exc(signum)`` within the
    block, at once if one came since the guard was set. The guard is the process's
    (:func:`run`'s); in any other program (the tests, the daemon's threads), one set for
    the block alone."""
    import _signal

    guard = _signal.getsignal(2)
    if not isinstance(guard, Guard):
        guard = _guard()
    guard.arming = raising
    return guard


def guard_process() -> "None":
    """The process's :class:`Guard`, set first thing by the plugin's entry
    (:func:`ipam.client.run`) and kept to the end: nothing puts back what it replaced."""
    _guard().saved = None
