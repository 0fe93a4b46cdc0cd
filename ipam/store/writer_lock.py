"""A queue for writers: an flock on a file beside a SQLite database (or, for a shared
database, in this node's dataDir), with a timeout; and the waits for host-local's
``lock``, which another program owns.

SQLite's own busy handler polls with sleeps of up to 100 ms, so under a burst of plugin
processes (a node starting 100 pods) most of the wall time would be spent asleep. The
kernel's flock queue wakes the next writer the moment the previous one is done. SQLite's
lock is still taken inside it (BEGIN IMMEDIATE), so the database's correctness never
depends on this file. The mirror's does: a writer removes the mirror's pending marker
after COMMIT but before it leaves this queue, so no other writer can be half-way
through its files when the marker goes.

Every wait here is bounded as :mod:`ipam.waits` says: it looks at who holds the lock
(:func:`holder`, from /proc/locks) now and then, and goes on while that changes.
"""
import fcntl

from ipam import system
from ipam.errors import IoFailure, TryAgain
from ipam.paths import SHARED_QUEUE_NAME, WRITER_QUEUE_SUFFIX
from ipam.system import O_CLOEXEC, O_CREAT, O_NOFOLLOW, O_RDONLY, O_RDWR

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from types import FrameType
    from typing import Any, Callable, NoReturn, Optional, TypeVar

    from ipam.waits import Patience, Watch

    T = TypeVar("T")


class _Expired(Exception):
    pass


def _expire(signum: "int", frame: "Optional[FrameType]") -> "NoReturn":
    raise _Expired()


class _Queue:
    """The node daemon's own queue for one lock file: its threads wait here, asleep, and
    only the one holding it waits for the flock. ``moves`` counts its turns, and the
    changes of the flock's holder that the thread holding it saw: what a thread behind
    watches (:class:`ipam.waits.Watch`), since the daemon's calls share one pid."""

    __slots__ = ("turn", "moves")

    def __init__(self) -> "None":
        import threading

        self.turn = threading.Lock()
        self.moves = 0

    def release(self) -> "None":
        self.turn.release()


# The node daemon's threads queue among themselves first, each path in a queue of its
# own: a thread that is not the main one cannot wait in the kernel's flock queue (the
# timer signal that bounds the wait reaches the main thread only) and would poll it,
# asleep most of the time under a burst. None in a plugin process (one thread).
_THREAD_LOCKS: "Optional[dict[str, _Queue]]" = None
_HELD: "dict[int, _Queue]" = {}  # fd -> the queue taken with it


def share_between_threads() -> "Optional[dict[str, _Queue]]":
    """Let this process's threads queue on a lock per path before the flock (the node
    daemon calls it once, before its threads start); returns what was there before, for
    :func:`stop_sharing`."""
    global _THREAD_LOCKS
    before, _THREAD_LOCKS = _THREAD_LOCKS, {}
    return before


def stop_sharing(before: "Optional[dict[str, _Queue]]") -> "None":
    """Put back what :func:`share_between_threads` replaced (the daemon, closed): left
    set, every later lock this process takes would queue and stamp its lock file's
    mtime (:func:`_mark_turn`) as the daemon's calls do."""
    global _THREAD_LOCKS
    _THREAD_LOCKS = before


def _queued_for(path: "str") -> "str":
    """What waits behind the queue at ``path``, for its errors: a SQLite database (its
    queue ``<database>.lock``), or this node's writers to a shared database (the queue
    in dataDir: the database is the server's, and other nodes' writers do not queue
    here)."""
    if path.rpartition("/")[2] == SHARED_QUEUE_NAME:
        return "this node's writers' queue %s (of a shared database)" % path
    return "database %s" % path.removesuffix(WRITER_QUEUE_SUFFIX)


def acquire(path: "str", patience: "Patience", create: "bool" = True) -> "Optional[int]":
    """Hold an exclusive flock on ``path`` (created 0600), waiting as ``patience`` allows
    (:mod:`ipam.waits`); returns the fd to release.

    A reader that queues (``create`` False: ipamctl check) creates nothing: where the
    file does not exist no writer has ever queued, and the answer is None."""
    what = _queued_for(path)
    queue = None
    if _THREAD_LOCKS is not None:
        queue = _threads_queue(path, patience, "%s is locked by another call past %%s; try "
                               "again later" % what)
    fd = None
    try:
        fd = _open(path, create)
        if fd is not None:
            _take(fd, patience, queue, True, path, "%s is locked by another process past "
                  "%%s; try again later" % what)
    except BaseException:
        if fd is not None:
            system.close(fd)
        if queue is not None:
            queue.release()
        raise
    if queue is not None:
        if fd is None:
            queue.release()
        else:
            _HELD[fd] = queue
    return fd


def poll(fd: "int", patience: "Patience", what: "str", key: "Optional[str]" = None) -> "None":
    """Hold an exclusive flock on ``fd``, a lock another program owns (host-local's
    ``lock``): polled with ``LOCK_NB``, never a blocking wait in the kernel, so that a
    stuck holder costs us what ``patience`` allows at most, and the error names what it
    waited for. ``key`` (the file's path): in the node daemon, its threads queue for it
    among themselves first, and only the first polls; release with :func:`release`."""
    queue = None
    if key is not None and _THREAD_LOCKS is not None:
        queue = _threads_queue(key, patience, "%s is held by another call past %%s; try "
                               "again later" % what)
    try:
        _take(fd, patience, queue, False, what, "%s is held by another process past %%s; "
              "try again later" % what)
    except BaseException:
        if queue is not None:
            queue.release()
        raise
    if queue is not None:
        _HELD[fd] = queue


def release(fd: "Optional[int]") -> "None":
    if fd is not None:
        queue = _HELD.pop(fd, None)
        system.close(fd)  # closing the only descriptor drops the flock
        if queue is not None:
            queue.release()


def holder(fd: "int") -> "tuple[tuple[bytes, ...], int]":
    """Who holds the flock on ``fd``'s file, as a waiter can tell (:class:`ipam.waits.
    Watch`): the pids /proc/locks shows holding it, and the file's mtime, which the node
    daemon stamps at each turn it takes (:func:`_mark_turn`: its calls share one pid).
    No pid when the lock is free this moment, its holder is in a PID namespace this
    process cannot see, or /proc is not there. Matched by inode number alone: the device
    the kernel prints there is the superblock's, which stat does not give on btrfs
    subvolumes or overlayfs; another file's lock with the same number only adds a pid
    that stays. Read only while a call waits, once a look."""
    st = system.fstat(fd)
    try:
        locks = _read("/proc/locks")
    except OSError:
        return (), st.st_mtime_ns
    needle = b":%d " % st.st_ino
    # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"; a waiter's line has "->"
    return tuple(line.split()[4] for line in locks.split(b"\n")
                 if needle in line and b" FLOCK " in line and b"->" not in line), \
        st.st_mtime_ns


def _threads_queue(key: "str", patience: "Patience", late: "str") -> "_Queue":
    """In the node daemon, this process's own queue for ``key`` (a lock file's path),
    waited in before its flock: one thread at a time waits for the flock, the others
    for it here, asleep, while the queue moves (``late % why``: the error when it
    stopped moving for ``busyTimeout``, or the call's limit came first)."""
    queue = _THREAD_LOCKS.get(key)  # type: ignore[union-attr]
    if queue is None:
        queue = _THREAD_LOCKS.setdefault(key, _Queue())  # type: ignore[union-attr]
    if not queue.turn.acquire(blocking=False):
        watch = patience.watch(queue.moves)

        def wait() -> "bool":
            while True:
                step = watch.step()
                if step <= 0:
                    return False
                if queue.turn.acquire(timeout=step):
                    return True
                watch.saw(queue.moves)

        if not _idly(patience, wait):
            raise TryAgain(late % watch.why())
    queue.moves += 1
    return queue


def _idly(patience: "Patience", wait: "Callable[..., T]", *args: "Any", **kw: "Any"
          ) -> "T":
    """``wait(*args, **kw)``, in the wrapper ``patience`` gives, if any (the node
    daemon's: another call runs meanwhile). Not contextlib: a plugin process that
    waits would import it, 1 to 2 ms."""
    if patience.idle is None:
        return wait(*args, **kw)
    with patience.idle():
        return wait(*args, **kw)


def _open(path: "str", create: "bool") -> "Optional[int]":
    try:
        if create:
            return system.open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        return system.open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise IoFailure("cannot open lock file %s: No such file or directory"
                            % path) from None
        return None
    except OSError as e:
        from ipam import access  # only after a failure

        raise (access.is_denied(e) and access.denied(path, write=create)) or IoFailure(
            "cannot open lock file %s: %s" % (path, e.strerror or e)) from None


def _take(fd: "int", patience: "Patience", queue: "Optional[_Queue]", kernel: "bool",
          what: "str", late: "str") -> "None":
    """Hold the exclusive flock on ``fd``: at once, as most calls do, else waiting as
    ``patience`` allows, in the kernel's queue (``kernel``: our writers' queue) or
    polling (a lock another program owns). Each look at the holder that finds another
    one than the last (:func:`holder`) is the queue moving; in the node daemon it is
    counted in ``queue``, for its threads behind this one, and each turn the daemon
    takes is marked on the file, for the waiters of other processes. ``late % why``:
    the error when the wait ends."""
    try:  # at once, as most are: no wrapper, no look at /proc
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        watch = patience.watch(holder(fd))
        try:
            _idly(patience, _wait_watched, fd, watch, queue, kernel)
        except _Expired:
            raise TryAgain(late % watch.why()) from None
        except OSError as e:
            raise _cannot(what, e) from None
    except OSError as e:
        raise _cannot(what, e) from None
    if queue is not None:
        _mark_turn(fd)


def _mark_turn(fd: "int") -> "None":
    """Stamp the lock file's mtime: the node daemon's turn. Its calls share one pid, so
    a waiter in another process (a call it did not take, ipamctl) would see one holder
    in /proc/locks however fast its queue moves, and give up at ``busyTimeout``; the
    mtime moves with each turn. Nothing reads these files' times otherwise (host-local
    never does)."""
    from posix import utime

    try:
        utime(fd)
    except OSError:  # a file it may not stamp: a waiter sees one holder, as before
        pass


def _wait_watched(fd: "int", watch: "Watch", queue: "Optional[_Queue]", kernel: "bool"
                  ) -> "None":
    while True:
        step = watch.step()
        if step <= 0:
            raise _Expired()
        try:
            if kernel:
                _wait(fd, step)
            else:
                _poll(fd, step)
            return
        except _Expired:
            if watch.saw(holder(fd)) and queue is not None:
                queue.moves += 1


def _read(path: "str") -> "bytes":
    fd = system.open(path, O_RDONLY | O_CLOEXEC)
    try:
        chunks: "list[bytes]" = []
        while True:
            chunk = system.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        system.close(fd)


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
