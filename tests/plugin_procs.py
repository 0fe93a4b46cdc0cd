"""Helpers for the process-level tests (test_concurrency.py, test_crash.py): real plugin
processes started with Popen, and what they left in the database and the mirror.

A plain module, no fixtures. Every Popen made here is waited for and its pipes closed
(pytest runs with ``filterwarnings = error``, so a leaked pipe would fail a test).
"""
import ipaddress
import json
import os
import sqlite3
import subprocess
import sys
import time

from helpers import cni_env, feeding, ipamctl, note_plugin_run, plugin_program

from ipam.paths import DAEMON_ENV, DB_NAME

_CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS",
             "CNI_PATH")


def plugin_env(command, container_id, **kw):
    env = {k: v for k, v in os.environ.items() if k not in _CNI_VARS}
    env.update(cni_env(command, container_id=container_id, **kw))
    return env


class Invocation:
    """One plugin process. ``feed()`` writes its config on stdin; until then the process
    waits in its read of stdin, after the interpreter's start-up: feeding many at once
    releases them together.

    Without ``argv``, the plugin of the test's entry path (helpers.plugin_program): its
    answer is then held to the path's accounting (helpers.note_plugin_run: a call meant
    for the path's node daemon must have gone there), unless the test killed the process
    or named a daemon itself (``env_extra``: a test of the daemon, which counts its own)."""

    def __init__(self, command, container_id, conf, argv=None, env_extra=None, **kw):
        self.command = command
        self.container_id = container_id
        self.conf = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        self.env = plugin_env(command, container_id, **kw)
        self.env.update(env_extra or {})
        self.ours = argv is None and DAEMON_ENV not in (env_extra or {})
        self.proc = subprocess.Popen(argv or [plugin_program()], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env)
        self.started = time.monotonic()
        self.rc = self.out = self.err = None
        self.killed = False
        self.noted = False

    def feed(self):
        if self.ours:
            feeding()
        try:
            self.proc.stdin.write(self.conf)
        except BrokenPipeError:  # killed before it read its config
            pass
        finally:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def kill(self):
        """SIGKILL, unless the process has already ended (Popen checks)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.killed = True

    def wait(self, timeout=120):
        """Feed it (if not yet), read its output, wait for its end."""
        if self.rc is None:
            if not self.proc.stdin.closed:
                self.feed()
            self.out = self.proc.stdout.read()
            self.err = self.proc.stderr.read()
            self.proc.stdout.close()
            self.proc.stderr.close()
            self.rc = self.proc.wait(timeout)
        return self

    def finish(self, timeout=120):
        """:meth:`wait`, then the entry path's accounting of its answer (once)."""
        self.wait(timeout)
        if self.ours and not self.killed and not self.noted:
            self.noted = True
            note_plugin_run(self.env, self.command, self.err)
        return self

    @property
    def json(self):
        return json.loads(self.out) if self.out.strip() else None

    @property
    def address(self):
        """The address of an ADD result (1.0.0 layout, one range set)."""
        return self.json["ips"][0]["address"].split("/")[0]

    def __repr__(self):
        return "Invocation(%s %s rc=%s out=%r err=%r)" % (
            self.command, self.container_id, self.rc, self.out, (self.err or b"")[-2000:])


def wait_reading_stdin(invocations, timeout=5.0):
    """Wait until every process has started up and blocks in its read of stdin (the
    kernel's wait channel names a pipe read), so that feeding them all releases them at
    once. Where /proc does not say, this just waits ``timeout``. True when seen."""
    deadline = time.monotonic() + timeout
    waiting = list(invocations)
    while waiting and time.monotonic() < deadline:
        still = []
        for inv in waiting:
            try:
                with open("/proc/%d/wchan" % inv.proc.pid) as f:
                    wchan = f.read()
            except OSError:
                wchan = "pipe"  # ended already
            if "pipe" not in wchan:
                still.append(inv)
        waiting = still
        if waiting:
            time.sleep(0.005)
    return not waiting


def run_all(invocations, timeout=120):
    """Wait for every process, then account for each (a failed check leaves none
    running)."""
    for inv in invocations:
        inv.wait(timeout)
    for inv in invocations:
        inv.finish()
    return invocations


def start_together(invocations, start_timeout=30):
    """Every process started and waiting on stdin, then all fed at once; waited for."""
    wait_reading_stdin(invocations, timeout=start_timeout)
    for inv in invocations:
        inv.feed()
    return run_all(invocations)


def assert_clean(inv):
    """Never a crash: no traceback; stdout one JSON object, or empty for a DEL or CHECK
    that succeeded; a failure is exit 1 and a CNI error object with an integer code and a
    message."""
    assert b"Traceback" not in inv.err and b"internal error" not in inv.err, inv
    if inv.rc == 0 and inv.command in ("DEL", "CHECK"):
        assert inv.out == b"", inv
    else:
        assert isinstance(inv.json, dict), inv
    if inv.rc != 0:
        assert inv.rc == 1 and isinstance(inv.json.get("code"), int) and inv.json.get("msg"), inv


def all_succeeded(invocations):
    """Every call clean (:func:`assert_clean`) and successful; for ADDs, each container's
    address, no address handed out twice."""
    for inv in invocations:
        assert_clean(inv)
        assert inv.rc == 0, inv
    got = {inv.container_id: inv.address for inv in invocations if inv.command == "ADD"}
    assert len(set(got.values())) == len(got), "an address was handed out twice"
    return got


def check_json(data_dir, repair=False):
    """``ipamctl -o json check [--repair]``: (exit status, parsed output)."""
    proc = ipamctl("-o", "json", "check", *(["--repair"] if repair else []), data_dir=data_dir,
                   expect=None)
    return proc.returncode, json.loads(proc.stdout)


def connect(data_dir):
    """A read-only connection: the test never changes the database."""
    path = os.path.join(str(data_dir), DB_NAME)
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None)


def query(data_dir, sql, params=()):
    db = connect(data_dir)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def leases(data_dir, network):
    """{container_id: ip}; asserts the basic invariants: one lease per address, one per
    container, ifname eth0."""
    rows = query(data_dir, "SELECT ip, container_id, ifname FROM leases WHERE network = ?",
                 (network,))
    ips = [r[0] for r in rows]
    assert len(ips) == len(set(ips)), "an address is leased twice: %r" % rows
    owners = [r[1] for r in rows]
    assert len(owners) == len(set(owners)), "a container holds two addresses: %r" % rows
    assert all(r[2] == "eth0" for r in rows), rows
    return {r[1]: r[0] for r in rows}


def integrity(data_dir):
    return [r[0] for r in query(data_dir, "PRAGMA integrity_check")]


def database_problems(data_dir, network):
    """Invariants a crash must not break, beyond SQLite's own integrity check:

    - the lease table's own (:mod:`ipam.store.invariant`, the check ``ipamctl check``
      runs): each ``next_free`` flag and ``ip_key`` agree with the leases;
    - the history agrees with the leases: an address is leased exactly when its last
      history event is an allocation.
    """
    from ipam.store import invariant

    problems = invariant.problems(query(
        data_dir, "SELECT network, ip, ip_key, next_free FROM leases WHERE network = ? "
                  "ORDER BY ip_key", (network,)))
    rows = query(data_dir, "SELECT ip FROM leases WHERE network = ?", (network,))
    last = {}
    for ip, event in query(data_dir, "SELECT ip, event FROM history WHERE network = ? "
                                     "ORDER BY id", (network,)):
        last[ip] = event
    leased = {r[0] for r in rows}
    for ip in leased | set(last):
        if (ip in leased) != (last.get(ip) == "allocate"):
            problems.append("history of %s ends with %s, leased: %s"
                            % (ip, last.get(ip), ip in leased))
    return problems


def mirror(data_dir, network):
    """The address files of a network's mirror directory: {name: bytes}."""
    d = os.path.join(str(data_dir), network)
    out = {}
    for name in os.listdir(d):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


def others(data_dir, network):
    """The names in a network's mirror directory that are not address files."""
    d = os.path.join(str(data_dir), network)
    return sorted(set(os.listdir(d)) - set(mirror(data_dir, network)))


def expected_mirror(lease_map):
    return {ip: ("%s\r\neth0" % cid).encode() for cid, ip in lease_map.items()}


def child_argv(patch):
    """A Python child that applies ``patch`` (source text, with ``die()`` available: a
    SIGKILL of itself) and then runs the console script's entry point."""
    code = ("import os, signal, sys, time\n"
            "def die():\n"
            "    sys.stdout.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "%s\n"
            "from ipam.__main__ import run\n"
            "run()\n" % patch)
    return [sys.executable, "-c", code]
