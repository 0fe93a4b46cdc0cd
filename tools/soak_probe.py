"""What ``make soak`` measures of a node (:mod:`soak_node`) after each hundredth of its
calls, and the audit of its leases against the pods it holds live.

Measured: the daemon's RSS, threads, CPU time and open descriptors (from ``/proc``),
the database file and its WAL, the mirror's bytes and entries (the networks' directories,
and any journal or temporary file beside them), the leases and history rows. The audit
stops the run at the first problem: a live pod whose lease is gone or at another
address, a lease held for a pod that was DELed (one Go DELed is kept, its file written
back, until the next GC: docs/switching.md, "Automatic adoption"), an address file that names no
live pod or names another, an address told to two live pods.
"""
import collections
import ipaddress
import json
import os
import sqlite3
import subprocess
import time

import helpers
from soak_node import IFNAME, Failed

from ipam import paths

FD_QUIET = 1.0  # seconds a sample waits for the daemon to close its last connection


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _is_address(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Probe:
    """Samples and audits of ``node``; :meth:`close` its database reader."""

    def __init__(self, node):
        self.node = node
        self.proc = "/proc/%d/" % node.daemon.pid
        self.reader = sqlite3.connect("file:%s?mode=ro" % node.db, uri=True,
                                      isolation_level=None)
        self.floor = self._fewest_fds()

    def close(self):
        self.reader.close()

    # -- the daemon ---------------------------------------------------------------------
    def _fds(self):
        return len(os.listdir(self.proc + "fd"))

    def _fewest_fds(self):
        """The fewest descriptors the daemon shows over :data:`FD_QUIET`, at rest: the
        floor that later samples come back to."""
        deadline = time.monotonic() + FD_QUIET
        n = self._fds()
        while time.monotonic() < deadline:
            time.sleep(0.01)
            n = min(n, self._fds())
        return n

    def _quiet_fds(self):
        """The daemon's descriptors once it has closed its last call's connection (it
        closes it just after answering): back to the floor, or what is still open after
        :data:`FD_QUIET`."""
        deadline = time.monotonic() + FD_QUIET
        n = self._fds()
        while n > self.floor and time.monotonic() < deadline:
            time.sleep(0.01)
            n = self._fds()
        return n

    def _status(self):
        with open(self.proc + "status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])

    def _cpu_seconds(self):
        with open(self.proc + "stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- the files ----------------------------------------------------------------------
    def _mirror(self):
        """(bytes, entries, {network: {address file: content}}): each network
        directory's own size and every entry's, with the journals and temporary files
        beside them."""
        size = entries = 0
        files = {}
        for name in self.node.names:
            d = os.path.join(self.node.data_dir, name)
            size += os.lstat(d).st_size
            files[name] = {}
            with os.scandir(d) as it:
                for entry in it:
                    entries += 1
                    size += entry.stat(follow_symlinks=False).st_size
                    if _is_address(entry.name):
                        with open(entry.path, "rb") as f:
                            files[name][entry.name] = f.read()
        with os.scandir(self.node.data_dir) as it:
            for entry in it:
                if entry.name.startswith((paths.PENDING_PREFIX, paths.TMP_PREFIX)):
                    entries += 1
                    size += entry.stat(follow_symlinks=False).st_size
        return size, entries, files

    def sample(self, slice_):
        """The figures after slice ``slice_`` (-1: the baseline), the audit passed."""
        rss, threads = self._status()
        mirror_bytes, mirror_entries, files = self._mirror()
        rows = self.reader.execute("SELECT network, ip, container_id, ifname FROM leases"
                                   ).fetchall()
        history = self.reader.execute("SELECT count(*) FROM history").fetchone()[0]
        self.audit(rows, files)
        node = self.node
        return {"slice": slice_, "calls": node.calls(), "daemon_calls": node.daemon_calls(),
                "t": time.monotonic(), "rss_bytes": rss, "threads": threads,
                "fds": self._quiet_fds(), "cpu_s": self._cpu_seconds(),
                "db_bytes": _size(node.db), "wal_bytes": _size(node.db + paths.SQLITE_WAL),
                "mirror_bytes": mirror_bytes, "mirror_entries": mirror_entries,
                "leases": len(rows), "history": history}

    # -- the audit ----------------------------------------------------------------------
    def audit(self, rows, files):
        """``rows`` (the leases) and ``files`` (the address files) against the pods held
        live; :class:`Failed` naming every problem."""
        node = self.node
        live = {(node.names[net], p.cid): p for net in range(node.args.networks)
                for p in node.holders(net)}
        problems = ["%s on %s was told to %d live pods" % (ip, name, n) for (name, ip), n
                    in collections.Counter((k[0], p.ip) for k, p in live.items()).items()
                    if n > 1]
        found = set()
        for network, ip, cid, ifname in rows:
            p = live.get((network, cid)) or (node.go_gone.get(cid) if network ==
                                             node.names[0] else None)
            if p is None:
                problems.append("%s on %s is held for %s/%s, a pod DELed or never ADDed"
                                % (ip, network, cid, ifname))
            elif ip != p.ip or ifname != IFNAME:
                problems.append("%s on %s is held for pod %d (%s/%s), which was told %s"
                                % (ip, network, p.serial, cid, ifname, p.ip))
            else:
                found.add((network, cid))
        for (network, cid), p in live.items():
            if p.who != "go" and (network, cid) not in found:
                problems.append("pod %d on %s (%s) lost its lease of %s"
                                % (p.serial, network, cid, p.ip))
            owner = files[network].pop(p.ip, None)
            if owner != b"%s\r\n%s" % (cid.encode(), IFNAME.encode()):
                problems.append("the file of %s on %s, live pod %d's, holds %r"
                                % (p.ip, network, p.serial, owner))
        # A pod Go DELed keeps its lease until the next GC, and (the reconcile writes
        # back the file of every lease it keeps) its file too.
        go_net = files.get(node.names[0], {})
        for cid, p in node.go_gone.items():
            if go_net.get(p.ip) == b"%s\r\n%s" % (cid.encode(), IFNAME.encode()):
                del go_net[p.ip]
        problems += ["%s/%s names no live pod: %r" % (network, ip, owner)
                     for network, left in files.items() for ip, owner in left.items()]
        if problems:
            raise Failed("lease audit: %d problem(s):\n  %s" % (
                len(problems), "\n  ".join(problems[:20])))


def check(node):
    """``ipamctl check`` on the node's dataDir, as an operator runs it: its problems."""
    proc = subprocess.run([helpers.IPAMCTL, "--data-dir", node.data_dir, "-o", "json",
                           "check"], capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return ["ipamctl check exited %d: %s %s" % (proc.returncode, proc.stdout,
                                                    proc.stderr)]
    if report["ok"] and proc.returncode == 0:
        return []
    return report["problems"] or ["ipamctl check exited %d" % proc.returncode]
