"""A queue for writers: an flock on a file beside the database, with a timeout.

SQLite's own busy handler polls with sleeps of up to 100 ms, so under a burst of plugin
processes (a node starting 100 pods) most of the wall time would be spent asleep. The
kernel's flock queue wakes the next writer the moment the previous one is done. SQLite's
lock is still taken inside it (BEGIN IMMEDIATE), so the database's correctness never
depends on this file. The mirror's does: a writer removes the mirror's pending marker
after COMMIT but before it leaves this queue, so no other writer can be half-way
through its files when the marker goes.
"""
import fcntl

from ipam import system
from ipam.errors import IoFailure, TryAgain
from ipam.paths import WRITER_QUEUE_SUFFIX
from ipam.system import O_CLOEXEC, O_CREAT, O_NOFOLLOW, O_RDONLY, O_RDWR

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from types import FrameType
    from typing import Any, Callable, NoReturn, Optional, TypeVar

    from ipam.waits import Patience

    T = TypeVar("T")


class _Expired(Exception):
    pass


def _expire(signum: "int", frame: "Optional[FrameType]") -> "NoReturn":
    raise _Expired()


# The node daemon's threads queue among themselves first, each path on a lock of its
# own: a thread that is not the main one cannot wait in the kernel's flock queue (the
# timer signal that bounds the wait reaches the main thread only) and would poll it,
# asleep most of the time under a burst. None in a plugin process (one thread).
_THREAD_LOCKS: "Optional[dict[str, Any]]" = None
_HELD: "dict[int, Any]" = {}  # fd -> the thread lock taken with it


def share_between_threads() -> "None":
    """Let this process's threads queue on a lock per path before the flock (the node
    daemon calls it once, before its threads start)."""
    global _THREAD_LOCKS
    _THREAD_LOCKS = {}


def acquire(path: "str", patience: "Patience", create: "bool" = True) -> "Optional[int]":
    """Hold an exclusive flock on ``path`` (created 0600), waiting as ``patience`` allows
    (:mod:`ipam.waits`); returns the fd to release.

    A reader that queues (``create`` False: ipamctl check) creates nothing: where the
    file does not exist no writer has ever queued, and the answer is None."""
    timeout, why = patience.timeout()
    if _THREAD_LOCKS is None:
        return _acquire(path, timeout, why, create)
    from time import monotonic

    start = monotonic()
    lock = _threads_queue(path, timeout, "database %s is locked by another call past %s; "
                          "try again later" % (path.removesuffix(WRITER_QUEUE_SUFFIX), why),
                          patience)
    try:
        # a thread: its flock wait is a poll
        fd = _idly(patience, _acquire, path, timeout - (monotonic() - start), why, create)
    except BaseException:
        lock.release()
        raise
    if fd is None:
        lock.release()
    else:
        _HELD[fd] = lock
    return fd


def _threads_queue(key: "str", timeout: "float", late: "str", patience: "Patience"
                   ) -> "Any":
    """In the node daemon, this process's own queue for ``key`` (a lock file's path),
    waited in before its flock: one thread at a time waits for the flock, the others
    for it here, asleep (``late``: the error when ``timeout`` runs out first)."""
    import threading

    lock = _THREAD_LOCKS.get(key)  # type: ignore[union-attr]
    if lock is None:
        lock = _THREAD_LOCKS.setdefault(key, threading.Lock())  # type: ignore[union-attr]
    if not lock.acquire(blocking=False) and not _idly(
            patience, lock.acquire, timeout=max(timeout, 0)):
        raise TryAgain(late)
    return lock


def _idly(patience: "Patience", wait: "Callable[..., T]", *args: "Any", **kw: "Any"
          ) -> "T":
    """``wait(*args, **kw)``, in the wrapper ``patience`` gives, if any (the node
    daemon's: another call runs meanwhile). Not contextlib: a plugin process that
    waits would import it, 1 to 2 ms."""
    if patience.idle is None:
        return wait(*args, **kw)
    with patience.idle():
        return wait(*args, **kw)


def _acquire(path: "str", timeout: "float", why: "str", create: "bool") -> "Optional[int]":
    try:
        if create:
            fd = system.open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        else:
            fd = system.open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise IoFailure("cannot open lock file %s: No such file or directory"
                            % path) from None
        return None
    except OSError as e:
        from ipam import access  # only after a failure

        raise (access.is_denied(e) and access.denied(path, write=create)) or IoFailure(
            "cannot open lock file %s: %s" % (path, e.strerror or e)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    except OSError as e:
        system.close(fd)
        raise _cannot(path, e) from None
    try:
        _wait(fd, timeout)
    except _Expired:
        system.close(fd)
        raise TryAgain("database %s is locked by another process past %s; try again later"
                       % (path.removesuffix(WRITER_QUEUE_SUFFIX), why)) from None
    except OSError as e:
        system.close(fd)
        raise _cannot(path, e) from None
    except BaseException:
        system.close(fd)
        raise
    return fd


def _cannot(what: "str", err: "OSError") -> "IoFailure":
    """A lock that fails otherwise than by being held (ENOLCK, EIO): code 5, naming it."""
    return IoFailure("cannot lock %s: %s" % (what, err.strerror or err))


def _wait(fd: "int", timeout: "float") -> "None":
    """Block in the kernel's queue; a timer signal ends the wait after ``timeout``."""
    import _signal as signal  # the C module: signal.py would import enum

    if timeout <= 0:
        raise _Expired()
    try:
        old = signal.signal(signal.SIGALRM, _expire)
    except ValueError:  # not the main thread: signals reach the main thread only
        _poll(fd, timeout)
        return
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _poll(fd: "int", timeout: "float") -> "None":
    import time

    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _Expired() from None
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def poll(fd: "int", patience: "Patience", what: "str", key: "Optional[str]" = None) -> "None":
    """Hold an exclusive flock on ``fd``, a lock another program owns (host-local's
    ``lock``): polled with ``LOCK_NB``, never a blocking wait in the kernel, so that a
    stuck holder costs us what ``patience`` allows at most, and the error names what it
    waited for. ``key`` (the file's path): in the node daemon, its threads queue for it
    among themselves first, and only the first polls; release with :func:`release`."""
    timeout, why = patience.timeout()
    lock = None
    if key is not None and _THREAD_LOCKS is not None:
        from time import monotonic

        start = monotonic()
        lock = _threads_queue(key, timeout, "%s is held by another call past %s; try again "
                              "later" % (what, why), patience)
        timeout -= monotonic() - start
    try:
        try:  # at once, as most are: no wrapper
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _idly(patience, _poll, fd, timeout)
    except _Expired:
        if lock is not None:
            lock.release()
        raise TryAgain("%s is held by another process past %s; try again later"
                       % (what, why)) from None
    except BaseException as e:
        if lock is not None:
            lock.release()
        if isinstance(e, OSError):
            raise _cannot(what, e) from None
        raise
    if lock is not None:
        _HELD[fd] = lock


def release(fd: "Optional[int]") -> "None":
    if fd is not None:
        lock = _HELD.pop(fd, None)
        system.close(fd)  # closing the only descriptor drops the flock
        if lock is not None:
            lock.release()
