"""Which network namespaces of this host hold which addresses: gc's on-the-wire check.

A lease whose container is gone may still have its address on the wire: a killed
``podman run`` leaves its namespace (and the veth in it) behind, and the next container
given that address would share it with the orphan (two MACs answer ARP). So before
releasing, ``ipamctl gc`` asks every namespace it can see.

Seen: bind-mounted namespaces (``/run/netns``, ``/var/run/netns``: ``ip netns``, podman
and CRI runtimes; rootless podman's ``/run/user/<uid>/netns``) and every process's
``/proc/<pid>/ns/net``, deduplicated by inode, our own namespace left out. Not seen:
other hosts' namespaces, a namespace kept alive only by an open file descriptor, bind
mounts made in another mount namespace only.

The reading runs in a child process (``python -m ipam.netns``): entering a namespace
(``setns``) changes the calling thread, and ipamctl must stay where it is. The child
enters each namespace in turn and asks the kernel for its addresses over netlink
(RTM_GETADDR), which needs no ``ip`` binary and parses no text. The parent bounds it
with a timeout; a namespace that vanishes meanwhile is skipped, not an error.
"""
import ctypes
import errno
import glob
import json
import os
import socket
import struct
import subprocess
import sys

from ipam.paths import NETNS_DIRS, ROOTLESS_NETNS_GLOB

TIMEOUT = 10.0  # seconds for the whole check; a host with thousands of pods needs ~1 s
CLONE_NEWNET = 0x40000000

_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2


class Incomplete(Exception):
    """The check could not look everywhere: releasing would be a guess."""


def holders(timeout=TIMEOUT):
    """``({address text: namespace}, [namespaces not read])`` over every namespace this
    host shows us (our own excluded). Raises :class:`Incomplete`, saying what it waited
    for or could not read, when it could not finish: releasing would then be a guess.
    One exception: root may be refused even a look at a process more privileged than
    itself (a sandbox's init); those are returned, for a warning."""
    try:
        proc = subprocess.run([sys.executable, "-I", "-m", "ipam.netns"], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Incomplete("reading the network namespaces did not finish in %g s" % timeout
                         ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
        raise Incomplete("reading the network namespaces failed: %s" % last)
    answer = json.loads(proc.stdout)
    unread = answer["unreadable"] + (answer["denied"] if os.geteuid() != 0 else [])
    if unread:
        raise Incomplete("%d network namespace(s) could not be read (%s%s)%s" % (
            len(unread), ", ".join(unread[:2]), ", ..." if len(unread) > 2 else "",
            "" if os.geteuid() == 0 else ": run as root"))
    return {_canonical(ip): "%s (%s)" % (ns, ifname) for ns, ip, ifname in answer["addresses"]
            }, answer["denied"]


def _canonical(text):
    from ipam.addr import parse_ip

    ip = parse_ip(text)
    return text if ip is None else str(ip)


# -- the child ------------------------------------------------------------------------
def _setns(fd):
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _key(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def namespaces():
    """``([(label, path)], [denied])``, one per namespace: bind mounts first (their
    names say more than a process number), then processes; ours left out. ``denied``:
    the paths we may not even stat."""
    own = _key("/proc/self/ns/net")
    seen, out, denied = {own}, [], []
    bind_paths = []
    for d in NETNS_DIRS + tuple(sorted(glob.glob(ROOTLESS_NETNS_GLOB))):
        try:
            bind_paths += [os.path.join(d, name) for name in sorted(os.listdir(d))]
        except OSError:
            continue  # no such directory here
    pid_paths = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        pid_paths.append("/proc/%s/ns/net" % pid)
    for path in bind_paths + pid_paths:
        try:
            key = _key(path)
        except PermissionError as e:
            denied.append("%s: %s" % (path, e.strerror))
            continue
        except OSError:
            continue  # gone meanwhile, or a dangling name
        if key in seen:
            continue
        seen.add(key)
        out.append((_label(path), path))
    return out, denied


def _label(path):
    if not path.startswith("/proc/"):
        return path
    try:
        with open(path[:-len("ns/net")] + "comm") as f:
            return "%s (%s)" % (path, f.read().strip())
    except OSError:
        return path


def addresses():
    """``[(address, ifname)]`` of the calling thread's namespace, from one netlink dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.bind((0, 0))
        s.send(struct.pack("=LHHLL", 24, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
               + struct.pack("=BBBBL", socket.AF_UNSPEC, 0, 0, 0, 0))
        out: list[tuple[str | None, str]] = []  # (address or None, ifname)
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=LH", data, off)
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(code, os.strerror(code))
                if kind == _RTM_NEWADDR:
                    out.append(_address(data[off + 16:off + length]))
                off += (length + 3) & ~3


def _address(msg):
    family, _, _, _, index = struct.unpack_from("=BBBBL", msg)
    attrs, pos = {}, 8
    while pos + 4 <= len(msg):
        rta_len, rta_type = struct.unpack_from("=HH", msg, pos)
        if rta_len < 4:
            break
        attrs[rta_type] = msg[pos + 4:pos + rta_len]
        pos += (rta_len + 3) & ~3
    raw = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))  # LOCAL: ours on a point-to-point
    ip = socket.inet_ntop(family, raw) if raw else None
    try:
        ifname = socket.if_indextoname(index)
    except OSError:
        ifname = str(index)
    return ip, ifname


def _probe():
    found, unreadable = [], []
    spaces, denied = namespaces()
    for label, path in spaces:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # the process exited, or the namespace was deleted
        except OSError as e:
            unreadable.append("%s: %s" % (label, e.strerror))
            continue
        try:
            _setns(fd)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: no namespace (an unmounted leftover name)
                unreadable.append("%s: %s" % (label, e.strerror))
            continue
        finally:
            os.close(fd)
        try:
            found += [(label, ip, ifname) for ip, ifname in addresses() if ip is not None]
        except OSError as e:
            unreadable.append("%s: %s" % (label, e.strerror or e))
    return {"addresses": found, "unreadable": unreadable, "denied": denied}


if __name__ == "__main__":
    json.dump(_probe(), sys.stdout)
