"""Where this host's network namespaces are: every holder ``/proc`` shows, no fixed path.

A network namespace, and the addresses in it, live while something holds it. gc's
on-the-wire check (:mod:`ipam.admin.netns`) finds each through the holders ``/proc`` shows:

- a thread in it: ``/proc/<pid>/task/<tid>/ns/net`` of every thread, not only each
  process's main one (a thread that entered a namespace with ``setns`` holds it when
  its bind mount is gone);
- a bind mount of it, in any mount namespace: the nsfs mounts that each distinct mount
  namespace's ``mountinfo`` lists (``ip netns``, podman and CRI runtimes mount theirs in
  the host's; rootless podman under ``/run/user/<uid>/netns`` in a private mount
  namespace of its own), opened through ``/proc/<pid>/task/<tid>/root``;
- a mount namespace that no thread is in (pinned by a bind mount of it): entered, in a
  forked child, to read its mounts.

Not shown: a namespace held only by an open descriptor or a socket (``/proc`` shows
neither as a namespace). A thread root may not look at (ptrace's read access, which root
lacks towards a process more privileged than itself) is read from outside instead
(:func:`ipam.admin.nsaddr.proc_addresses`); a namespace found but not opened is reported, and
gc then keeps every candidate. A thread or mount that vanishes meanwhile held nothing.
"""
import errno
import functools
import os

from ipam.admin.nsmounts import Key, entered_mounts, ns_fkey, ns_key, nsfs_mounts

_GONE = (FileNotFoundError, ProcessLookupError)
Task = tuple[int, int, str]  # (pid, tid, "/proc/PID/task/TID")
# Ranks: how well a holder names its namespace (a mount's path says most), best first.
MOUNTED_HERE, MOUNTED_ELSEWHERE, THREAD_IN = 0, 1, 2


class Unreadable(Exception):
    """A namespace is there but may not be opened or read; the message says which."""


class Namespace:
    """One network namespace: its best name and every way found to open it."""

    def __init__(self, key):
        self.key = key
        self.rank = None
        self.label = ""
        self.openers = []  # (rank, path or an open descriptor)

    def add(self, rank, label, opener):
        if self.rank is None or rank < self.rank:
            self.rank, self.label = rank, label() if callable(label) else label
        self.openers.append((rank, opener))

    def open(self):
        """A new descriptor of this namespace, or None when it is gone meanwhile; raises
        :class:`Unreadable` when it is there but none of its openers may be opened."""
        failure = None
        for _, opener in sorted(self.openers, key=lambda o: o[0]):
            try:
                fd = os.dup(opener) if isinstance(opener, int) else os.open(
                    opener, os.O_RDONLY | os.O_CLOEXEC)
            except _GONE:
                continue
            except OSError as e:
                failure = failure or "%s: %s" % (opener, e.strerror)
                continue
            if ns_fkey(fd) == self.key:
                return fd
            os.close(fd)
            failure = failure or "%s: another file is mounted over it" % opener
        if failure:
            raise Unreadable(failure)
        return None


class Found:
    """What :func:`find` found: ``spaces`` ({key: Namespace}, ours left out), ``outside``
    ({key: (label, task)}: threads whose namespace is read from outside) and
    ``unreadable`` (what could not be read, each naming its path)."""

    def __init__(self):
        self.spaces = {}
        self.outside = {}
        self.unreadable = []
        self.descriptors = []  # opened here (mounts of entered namespaces): closed by close()

    def add(self, key, rank, label, opener):
        self.spaces.setdefault(key, Namespace(key)).add(rank, label, opener)

    def ordered(self):
        return sorted(self.spaces.values(), key=lambda s: s.rank)

    def close(self):
        for fd in self.descriptors:
            os.close(fd)
        self.descriptors = []


def find():
    """Every network namespace ``/proc`` shows a holder of, ours left out (a
    :class:`Found`). Runs in gc's child: it may fork to enter a mount namespace."""
    found = Found()
    own_net, own_outside = ns_key("/proc/self/ns/net"), ns_key("/proc/self/net/dev")
    own_view = (ns_key("/proc/self/ns/mnt"), ns_key("/proc/self/root"))
    views: dict[tuple[Key, Key], list[Task]] = {}  # (mount ns, root) -> its threads
    denied: list[Task] = []  # threads we may not look at
    for pid, tid, task in tasks():
        try:
            net = ns_key(task + "/ns/net")
            view = (ns_key(task + "/ns/mnt"), ns_key(task + "/root"))
        except PermissionError:
            denied.append((pid, tid, task))
            continue
        except OSError:
            continue  # gone, or a zombie thread (it holds no namespace)
        if net != own_net:
            found.add(net, THREAD_IN, functools.partial(_named, pid, tid, "/ns/net"),
                      task + "/ns/net")
        views.setdefault(view, []).append((pid, tid, task))
    mnt_known = {view[0] for view in views}
    pinned: dict[Key, tuple[str, list]] = {}  # mount namespaces no thread is in
    texts = set()
    for view, members in views.items():
        read = _first_mountinfo(found, members)
        if read is None:
            continue  # every member gone
        (pid, tid, _), data = read
        texts.add(data)
        here = view == own_view
        for kind, key, mountpoint in nsfs_mounts(data):
            if here:
                label, openers = mountpoint, [mountpoint]
            else:
                label = _named(pid, tid, "/root" + mountpoint)
                openers = [m[2] + "/root" + mountpoint for m in members[:3]]
            _note(found, kind, key, label, openers, here, own_net, mnt_known, pinned)
    for pid, tid, task in denied:
        _outside(found, pid, tid, task, own_outside)
        data = _mountinfo(found, task)
        if data is None or data in texts:
            continue
        texts.add(data)
        for kind, key, mountpoint in nsfs_mounts(data):
            _note(found, kind, key, _named(pid, tid, "/root" + mountpoint),
                  [task + "/root" + mountpoint], False, own_net, mnt_known, pinned)
    _enter_pinned(found, pinned, own_net, mnt_known)
    return found


def _note(found, kind, key, label, openers, here, own_net, mnt_known, pinned):
    if kind == "net" and key != own_net:
        for opener in openers:
            found.add(key, MOUNTED_HERE if here else MOUNTED_ELSEWHERE, label, opener)
    elif kind == "mnt" and key not in mnt_known and key not in pinned:
        pinned[key] = (label, openers)


def _outside(found, pid, tid, task, own):
    try:
        key = ns_key(task + "/net/dev")
    except _GONE:
        return
    except OSError as e:
        found.unreadable.append("%s/net: %s" % (task, e.strerror))
        return
    if key != own and key not in found.outside:
        found.outside[key] = (_named(pid, tid, "/net"), task)


def _enter_pinned(found, pinned, own_net, mnt_known):
    """Read the mounts of each mount namespace no thread is in, and of those pinned
    inside them in turn, each entered by a forked child that hands back descriptors."""
    while pinned:
        key, (label, openers) = pinned.popitem()
        mnt_known.add(key)
        mounts = []
        for opener in openers:
            try:
                mounts = entered_mounts(opener, key, set(found.spaces) | {own_net} | mnt_known)
                break
            except _GONE:
                continue  # the thread we reached it through ended (or the mount went)
            except OSError as e:
                found.unreadable.append("mount namespace %s: %s" % (label, "%s: %s" % (
                    opener, e.strerror) if e.errno else e))
                break
        for kind, inner, mountpoint, fd in mounts:
            found.descriptors.append(fd)
            inner_label = "%s (in mount namespace %s)" % (mountpoint, label)
            _note(found, kind, inner, inner_label, [fd], False, own_net, mnt_known, pinned)


def tasks(proc="/proc"):
    """``(pid, tid, "/proc/PID/task/TID")`` for every thread of every process, by pid."""
    for pid in sorted(int(p) for p in os.listdir(proc) if p.isdigit()):
        try:
            tids = sorted(int(t) for t in os.listdir("%s/%d/task" % (proc, pid)))
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            yield pid, tid, "%s/%d/task/%d" % (proc, pid, tid)


def _first_mountinfo(found, members):
    """``(member, its mountinfo)`` of the first of ``members`` still there, or None."""
    for member in members:
        data = _mountinfo(found, member[2])
        if data is not None:
            return member, data
    return None


def _mountinfo(found, task):
    try:
        with open(task + "/mountinfo", "rb") as f:
            return f.read()
    except _GONE:
        return None
    except OSError as e:
        if e.errno == errno.EINVAL:
            # The kernel's answer for a task that has no namespaces any more (exited, a
            # zombie until reaped: mounts_open_common finds no nsproxy), which holds
            # no namespace either. containerd's shims leave such threads about.
            return None
        found.unreadable.append("%s/mountinfo: %s" % (task, e.strerror))
        return None


def _named(pid, tid, tail):
    """``/proc/PID<tail> (comm)``, or ``/proc/PID/task/TID<tail>`` for a thread other
    than the main one: where to look, and what runs there."""
    where = "/proc/%d" % pid if pid == tid else "/proc/%d/task/%d" % (pid, tid)
    try:
        with open("/proc/%d/task/%d/comm" % (pid, tid)) as f:
            return "%s%s (%s)" % (where, tail, f.read().strip())
    except OSError:
        return where + tail


