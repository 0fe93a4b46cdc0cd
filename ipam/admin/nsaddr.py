"""The addresses one network namespace holds: gc's on-the-wire check asks each namespace.

Two ways to ask. From inside (the caller has entered it with ``setns``): one netlink
dump (RTM_GETADDR), which needs no ``ip`` binary, parses no text and names each
address's interface. From outside, through ``/proc/<pid>/task/<tid>/net``: the kernel
lets anyone read a task's ``fib_trie`` and ``if_inet6`` even where it refuses a look at
its namespace (``/proc/<pid>/ns/net`` needs ptrace's read access, which root lacks
towards a process more privileged than itself: a sandbox's init, a host process seen
from a container without CAP_SYS_PTRACE); IPv4 addresses read there have no interface
name (``fib_trie`` does not say).
"""
import os
import socket
import struct

_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2


def addresses():
    """``[(address, ifname)]`` of the calling thread's namespace, from one netlink dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.bind((0, 0))
        s.send(struct.pack("=LHHLL", 24, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
               + struct.pack("=BBBBL", socket.AF_UNSPEC, 0, 0, 0, 0))
        out: list[tuple[str, str]] = []
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
                    ip, ifname = _address(data[off + 16:off + length])
                    if ip is not None:
                        out.append((ip, ifname))
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


def proc_addresses(task):
    """``[(address, ifname or None)]`` of the namespace of ``task`` (``/proc/P/task/T``),
    read from its ``net/if_inet6`` and ``net/fib_trie``. Raises OSError."""
    out: list[tuple[str, object]] = []
    with open(task + "/net/if_inet6") as f:
        for line in f:  # address (32 hex digits), index, prefix, scope, flags, ifname
            fields = line.split()
            if len(fields) == 6:
                out.append((socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0])),
                            fields[5]))
    with open(task + "/net/fib_trie") as f:
        out += [(ip, None) for ip in local_ipv4(f)]
    return out


def local_ipv4(lines):
    """The addresses a ``fib_trie`` listing marks ``/32 host LOCAL``: the namespace's own
    (each leaf, ``|-- 10.1.2.3``, is followed by one line per route through it)."""
    found: dict[str, None] = {}  # ordered, each once
    leaf = None
    for line in lines:
        text = line.strip()
        if text.startswith("|-- "):
            leaf = text[4:]
        elif text.startswith("+-- ") or text.endswith(":"):
            leaf = None  # a trie node, or a table's heading
        elif leaf is not None and text.split()[:3] == ["/32", "host", "LOCAL"]:
            found[leaf] = None
    return list(found)
