"""What the node daemon knows of a caller before it takes the call: could the caller make
this call itself, on the same files? The daemon's door rules (:mod:`ipam.daemon.server`), each
read from the kernel or proven by the caller's own view, never taken from its word.

- **Powers.** The peer's pid from ``SO_PEERCRED``, then its ``/proc/<pid>/status`` and
  ``/proc/<pid>/ns/user``, checked against a pidfd (``SO_PEERPIDFD``, Linux 6.5) so that
  a pid reused meanwhile cannot pass: the daemon's user namespace, and every capability
  the daemon has. A root caller stripped of its capabilities cannot write where it
  could not write itself. A peer the daemon cannot see (pid 0: another PID namespace)
  or read is declined.
- **Files.** The paths a call may touch (:func:`plan`), and the caller's views of them
  (:func:`ipam.client.view`: device and inode), compared with the daemon's own: a
  caller in another mount namespace, or a pod without the hostPath a config names,
  would otherwise have its lease recorded where its own in-process calls never look.

A declined call runs in the caller's process, as if there were no daemon.
"""
from __future__ import annotations

import os
import select
import socket
from typing import Any, Optional

from ipam import client
from ipam.errors import IpamError
from ipam.waits import DEFAULT_LOCK_WAIT_LIMIT, call_bound

# SO_PEERPIDFD (Linux 6.5): a pidfd of the peer, which no later process can take over;
# Python names it from 3.14 on.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
# Capability numbers (linux/capability.h), for saying which ones a caller lacks.
_CAPS = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
         "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
         "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
         "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
         "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
         "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
         "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore")


class Declined(Exception):
    """A call the daemon does not serve; ``args[0]`` says why (to the client and the log)."""


class Powers:
    """A process's effective capabilities and user namespace, as the kernel shows them."""

    def __init__(self, pid: str = "self") -> None:
        fd = os.open("/proc/%s/status" % pid, os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        self.caps = int(_status_field(status, b"CapEff") or b"", 16)
        st = os.stat("/proc/%s/ns/user" % pid)
        self.userns = (st.st_dev, st.st_ino)


def check_peer(conn: socket.socket, pid: int, own: Powers) -> None:
    """Raise :class:`Declined` unless the peer of ``conn`` (``pid``, from SO_PEERCRED)
    runs in ``own`` user namespace with every capability in ``own``."""
    if pid <= 0:
        raise Declined("the node daemon cannot see the calling process (it runs in another "
                       "PID namespace: the daemon needs the host's, hostPID in a pod)")
    try:
        pidfd: Optional[int] = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:  # a kernel before 6.5: the pid alone
        pidfd = None
    try:
        try:
            theirs = Powers(str(pid))
        except (OSError, ValueError) as e:
            raise Declined("the node daemon cannot read the calling process %d (%s)"
                           % (pid, getattr(e, "strerror", None) or e)) from None
        if pidfd is not None and _ended(pidfd):  # else what was read is the peer's still
            raise Declined("the calling process %d went away" % pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if theirs.userns != own.userns:
        raise Declined("the calling process %d runs in another user namespace than the "
                       "node daemon" % pid)
    missing = own.caps & ~theirs.caps
    if missing:
        raise Declined("the calling process %d lacks capabilities the node daemon has (%s): "
                       "through the daemon it could do what it cannot do itself"
                       % (pid, _names(missing)))


def plan(env: dict[str, str], conf: dict[str, Any]) -> tuple[list[str], float]:
    """``(paths, bound)`` of a call: every path it may touch, as the plugin resolves
    them (the dataDir: the mirror, a shared pool's queue; a SQLite database and its
    directory, where its -wal, -shm and writers' queue are; resolvConf), and its bound
    (:func:`ipam.waits.call_bound`). No paths where the config does not load: the call
    answers its error at once, touching nothing."""
    from ipam import config
    from ipam.store import location

    try:
        c = config.load(conf, env.get("CNI_ARGS", ""))
        kind, where = location.locate(c.database)
    except IpamError:
        return [], call_bound(DEFAULT_LOCK_WAIT_LIMIT)
    found = [c.data_dir]
    allowance = 0.0
    if kind == location.SQLITE:
        found += [os.path.dirname(where) or "/", where]
    else:
        from ipam.store import postgres

        allowance = postgres.DEFAULT_CONNECT_TIMEOUT + sum(
            min(0.5, 0.02 * 2 ** k) for k in range(postgres.ATTEMPTS - 1))
    if c.resolv_conf:
        found.append(c.resolv_conf)
    paths = list(dict.fromkeys(os.path.abspath(p) for p in found))
    return paths, call_bound(c.lock_wait_limit, allowance)


def relative_paths(conf: dict[str, Any]) -> list[str]:
    """The config's paths that are relative to the caller's working directory."""
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        return []
    return [v for k in ("datadir", "database", "resolvconf")
            for v in [ipam.get(k)] if isinstance(v, str) and v and not v.startswith("/")
            and "://" not in v]


def check_views(paths: list[str], theirs: list[bytes]) -> None:
    """Raise :class:`Declined` unless the caller's views of ``paths`` show the files this
    process sees there (:func:`seen_alike`)."""
    if len(theirs) != len(paths):
        raise Declined("the caller sent %d views for %d paths" % (len(theirs), len(paths)))
    for path, seen in zip(paths, theirs, strict=True):
        if not seen_alike(path, seen):
            raise Declined("the caller sees other files than the node daemon at %s (%s "
                           "against %s): another mount namespace without the same mounts, "
                           "or a path the daemon's pod does not mount"
                           % (path, seen.decode("utf-8", "replace"),
                              client.view(path).decode("utf-8", "replace")))


def seen_alike(path: str, seen: bytes) -> bool:
    """Whether ``seen``, the caller's :func:`ipam.client.view` of ``path``, names what is
    there for this process: the object the caller found (the path's, or its nearest
    existing ancestor's) is this process's at that same path. What lies below that
    ancestor is then the same for both, though it may exist by now: another call
    created the dataDir since the caller looked (a burst's first calls on a new one)."""
    try:
        dev, ino, rest = seen.split(b":", 2)
        found = (int(dev), int(ino))
    except ValueError:  # "!errno": the caller could not look; alike only if neither could
        return seen == client.view(path)
    at = path.rstrip("/") or "/"
    if rest:
        tail = "/" + rest.decode("utf-8", "surrogateescape")
        if not at.endswith(tail):
            return False
        at = at[:-len(tail)] or "/"
    try:
        st = os.stat(at)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == found


def _ended(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has ended (a pidfd polls readable then): while
    it has not, its pid is its own, and no later process's. Not pidfd_send_signal,
    which a Python built against older kernel headers lacks (the self-contained
    build's)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _status_field(text: bytes, name: bytes) -> Optional[bytes]:
    at = text.find(b"\n" + name + b":")
    if at < 0:
        return None
    end = text.find(b"\n", at + 1)
    return text[at + len(name) + 2:end if end >= 0 else len(text)].strip()


def _names(mask: int) -> str:
    return ", ".join("cap_" + (_CAPS[bit] if bit < len(_CAPS) else str(bit))
                     for bit in range(64) if mask >> bit & 1)
