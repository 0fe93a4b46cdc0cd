"""The namespaces a mount namespace has bind-mounted, read from its ``mountinfo``; and
entering a mount namespace that no thread is in, to read its mounts.

A namespace is identified by its nsfs file's device and inode (:data:`Key`), as
``stat`` of ``/proc/<pid>/ns/net`` and the mount's root (``net:[4026532177]``) both
give it. :func:`entered_mounts` forks: run it only in a single-threaded process (gc's
child, :mod:`ipam.admin.netns`).
"""
import ctypes
import functools
import json
import os
import re
import signal
import socket

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
RECEIVE_TIMEOUT = 5.0  # seconds a child that entered a mount namespace may take to answer
Key = tuple[int, int]  # (st_dev, st_ino): a namespace's identity


_ESCAPED = re.compile(rb"\\([0-7]{3})")


def nsfs_mounts(data):
    """``(kind, (dev, inode), mountpoint)`` of each ``net`` or ``mnt`` nsfs mount in a
    ``mountinfo`` text (bytes); the kernel writes the namespace as the mount's root,
    ``net:[4026532177]``, and escapes a space in a path as ``\\040``."""
    if b" - nsfs " not in data:
        return  # most mount namespaces: nothing to split
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
        except ValueError:
            continue
        if fields[sep + 1:sep + 2] != [b"nsfs"]:
            continue
        kind, _, inode = fields[3].partition(b":[")
        if kind not in (b"net", b"mnt") or not inode.endswith(b"]"):
            continue
        major, minor = fields[2].split(b":")
        mountpoint = _ESCAPED.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
        yield (kind.decode(), (os.makedev(int(major), int(minor)), int(inode[:-1])),
               os.fsdecode(mountpoint))


def entered_mounts(opener, key, known):
    """``[(kind, key, mountpoint, descriptor)]``: the nsfs mounts of the mount namespace
    ``opener`` opens, but those whose namespace is ``known``. A forked child enters it
    (``setns`` changes the whole process), reads its ``/proc/self/mountinfo``, opens
    each mount there and passes the descriptors back. Raises FileNotFoundError when
    ``opener`` is gone, another OSError (a plain one from the child) when it cannot be
    read: without a ``/proc`` of its own, for one."""
    fd = os.dup(opener) if isinstance(opener, int) else os.open(
        opener, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ns_fkey(fd) != key:
            raise OSError("%s: another file is mounted over it" % opener)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            ours.close()
            _answer_entered(fd, theirs, known)
        theirs.close()
    finally:
        os.close(fd)
    out: list[tuple[str, Key, str, int]] = []
    try:
        with ours:
            ours.settimeout(RECEIVE_TIMEOUT)
            while True:
                msg, fds, _, _ = socket.recv_fds(ours, 1 << 16, 1)
                item = json.loads(msg or b'{"error": "its reader ended without an answer"}')
                if "error" in item:
                    for d in fds:
                        os.close(d)
                    raise OSError(item["error"])
                if item.get("done"):
                    return out
                out.append((item["kind"], tuple(item["key"]), item["mountpoint"], fds[0]))
    except BaseException:
        for *_, d in out:
            os.close(d)
        os.kill(pid, signal.SIGKILL)  # it may be stuck (its answer timed out)
        raise
    finally:
        os.waitpid(pid, 0)


def _answer_entered(fd, sock, known):  # pragma: no cover (runs in the forked child)
    where = "entering it"
    try:
        setns(fd, CLONE_NEWNS)
        where = "its /proc/self/mountinfo"
        with open("/proc/self/mountinfo", "rb") as f:
            data = f.read()
        for kind, key, mountpoint in nsfs_mounts(data):
            if key in known:
                continue
            where = mountpoint
            mfd = os.open(mountpoint, os.O_RDONLY | os.O_CLOEXEC)
            item = {"kind": kind, "key": key, "mountpoint": mountpoint}
            socket.send_fds(sock, [json.dumps(item).encode()], [mfd])
            os.close(mfd)
        sock.send(b'{"done": true}')
    except OSError as e:
        sock.send(json.dumps({"error": "%s: %s" % (where, e.strerror or e)}).encode())
    finally:
        os._exit(0)


def ns_key(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def ns_fkey(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def setns(fd, nstype):
    """Move the calling thread into the namespace ``fd`` (``os.setns`` from 3.12)."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)  # each CDLL builds classes: once is enough
