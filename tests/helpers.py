"""Helpers shared by the test modules: plain functions and constants, no fixtures (those
live in conftest.py). A test module imports what it needs from here, never from another
test module.

cniexec.py (the differential harness's runner), plugin_procs.py (Popen'd plugin
processes), pgserver.py (the throwaway PostgreSQL server) and syscall_faults.py (strace
fault injection) stay modules of their own: each serves one kind of test.
"""
import contextlib
import io
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

import pytest

from ipam import paths
from ipam.cni import main as cni_main
from ipam.lease import Lease, NetworkRecord
from ipam.ranges import canonicalize, describe, make_set
from ipam.system import boot_clock, boot_id

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
PLUGIN = os.path.join(os.path.dirname(sys.executable), "host-local-sqlite")
IPAMCTL = os.path.join(os.path.dirname(sys.executable), "ipamctl")
HOUR = 3600.0
# IPAM_ROOT for ipamctl in tests that prepare no tree of CNI configs: an empty one (it
# does not exist), so that no test reads, or depends on, the host's /etc/cni/net.d.
NO_ROOT = "/nonexistent/ipamctl-test-root"


# -- the plugin, in process and as a process ---------------------------------------------
class Outcome:
    """What one plugin call answered, in process or as a process (ours or Go's): its
    exit ``status``, ``stdout`` and ``stderr`` as written (bytes; a call in process has
    no stderr of its own), ``out`` (stdout as text) and ``json`` (stdout parsed; None
    when empty). Stdout that is not JSON fails at once, unless ``lenient`` (a reference
    run, where Go's answer is compared with ours byte for byte): json is None then."""

    def __init__(self, status, stdout, stderr=b"", lenient=False):
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        try:
            self.json = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            if not lenient:
                raise
            self.json = None

    @property
    def out(self):
        return self.stdout.decode()

    @property
    def error(self):
        return self.json if self.status else None

    def __repr__(self):
        return "Outcome(%d, %r, stderr=%r)" % (self.status, self.stdout, self.stderr[-2000:])


def cni_env(command, container_id="dummy", ifname="eth0", netns="/some/where", args=None,
            **extra):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin"}
    if args is not None:
        env["CNI_ARGS"] = args
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _stdin_bytes(conf):
    if isinstance(conf, bytes):
        return conf
    if isinstance(conf, str):
        return conf.encode()
    return json.dumps(conf).encode()


def run_inprocess(command, conf, context=None, **kw):
    """One plugin invocation in this process (fast; same code path as the binary);
    ``context``: an :class:`ipam.commands.CallContext` (the node daemon's store pool)."""
    out = io.StringIO()
    status = cni_main(cni_env(command, **kw), io.BytesIO(_stdin_bytes(conf)), out, context)
    return Outcome(status, out.getvalue().encode())


def _plugin(command, conf, env_extra, cwd, kw, daemon_from_environ):
    """The installed console script run once as a runtime runs it: ``(env, process)``,
    never a traceback."""
    env = {"PATH": os.environ.get("PATH", "")}
    if daemon_from_environ and paths.DAEMON_ENV in os.environ:
        env[paths.DAEMON_ENV] = os.environ[paths.DAEMON_ENV]
    env.update(cni_env(command, **kw))
    env.update(env_extra or {})
    proc = subprocess.run([plugin_program()], input=_stdin_bytes(conf), env=env,
                          capture_output=True, timeout=60, cwd=cwd)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return env, proc


def run_plugin(command, conf, env_extra=None, **kw):
    """One invocation of the plugin, as a runtime runs it: the test's entry path's
    program (the installed console script, or the build's: :func:`plugin_program`), with
    the node daemon the tests' environment names, if any (``through`` in conftest.py)."""
    env, proc = _plugin(command, conf, env_extra, None, kw, daemon_from_environ=True)
    note_plugin_run(env, command, proc.stderr)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def on_terminal(data_dir, *args, answer=None, prompt=b"[y/N]"):
    """The installed ipamctl with a terminal as stdin, stdout and stderr, as an operator
    at a shell runs it; ``answer`` (bytes) typed when ``prompt`` shows, None: never.
    Returns ``(exit status, what the terminal showed)``. Popen, not pty.fork: Python
    3.12+ warns about fork() in a threaded process."""
    main, terminal = os.openpty()
    env = {"PATH": os.environ.get("PATH", ""), "IPAM_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([IPAMCTL, *args], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    out, deadline = b"", time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break  # EIO: ipamctl exited, the terminal has no other end
            if not chunk:
                break
            out += chunk
            if prompt in out and answer is not None:
                os.write(main, answer + b"\r")
                answer = None
    finally:
        status = proc.wait(timeout=30)
        os.close(main)
    return status, out.decode()


def checked(result):
    """A CliRunner result that ended through click (exit code), never by a traceback."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError("ipamctl raised:\n" + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)))
    assert "Traceback" not in result.output
    return result


def wait_queued(path, pid, polling=False, timeout=30.0):
    """Wait until process ``pid`` waits for the flock the test holds on ``path`` (the
    writers' queue). A plugin process waits in the kernel's queue: /proc/locks shows a
    blocked entry (``->``) of its pid on the file's device and inode. The node daemon
    (``polling``) does not: its worker threads poll the flock (ipam.store.writer_lock), so the
    sign there is the file open in the daemon, which opens it only to queue and closes
    it after its transaction."""
    wait_queued_in(path, [(pid, polling)], timeout)


def wait_queued_in(path, waiters, timeout=30.0):
    """:func:`wait_queued` for the first of ``waiters`` (``(pid, polling)`` pairs, or a
    function giving them, read again at each look) to queue. The first waiter is the
    call's own process: once it has ended, the call will never queue, and the wait fails
    at once rather than at ``timeout``."""
    path = os.path.realpath(path)  # as /proc/PID/fd names it
    st = os.stat(path)
    file_id = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    deadline = time.monotonic() + timeout
    while True:
        now = waiters() if callable(waiters) else waiters
        if any(_opened_by(pid, path) if polling else _blocked_on(pid, file_id)
               for pid, polling in now):
            return
        if not running(now[0][0]):
            raise AssertionError("process %d ended before it queued for %s"
                                 % (now[0][0], path))
        if time.monotonic() > deadline:
            raise AssertionError("none of %s queued for %s in %g s"
                                 % ([pid for pid, _ in now], path, timeout))
        time.sleep(0.005)


def running(pid):
    """Whether process ``pid`` still runs: neither gone nor a zombie (ended, not yet
    waited for), as /proc/PID/stat tells."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _blocked_on(pid, file_id):
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "->" and fields[5] == str(pid) and fields[6] == file_id:
                return True
    return False


def _opened_by(pid, path):
    where = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(where)
    except FileNotFoundError:  # ended (a daemon killed meanwhile)
        return False
    for fd in fds:
        try:
            if os.readlink(os.path.join(where, fd)) == path:
                return True
        except OSError:  # closed meanwhile
            pass
    return False


# -- PostgreSQL ----------------------------------------------------------------------------
def upgrade_pg_to(url, revision):
    """Bring the PostgreSQL database ``url`` to schema ``revision`` with the shipped
    migrations: a pool as an earlier version of ours left it."""
    import sqlalchemy
    from alembic import command

    from ipam.store import migrate

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(url, conn), revision)
    finally:
        engine.dispose()


# -- what a SQLite database in a dataDir holds ----------------------------------------------
def sql(data_dir, query, params=()):
    conn = sqlite3.connect(paths.default_database(str(data_dir)))
    try:
        with conn:
            return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def lease_rows(data_dir):
    return sql(data_dir, "SELECT network, ip, container_id, ifname, range_set, allocated_at, "
                         "boot_id FROM leases ORDER BY id")


def held(data_dir):
    return [tuple(r[:4]) for r in sql(
        data_dir, "SELECT network, ip, container_id, ifname FROM leases ORDER BY network, ip")]


def events(data_dir):
    return sql(data_dir, "SELECT event, reason, network, ip, container_id, ifname FROM history "
                         "ORDER BY id")


def owners(leases):
    """(network, ip, container, ifname) of each lease: Lease objects, or rows as ipamctl's
    JSON gives them."""
    return [(x["network"], x["ip"], x["container_id"], x["ifname"]) if isinstance(x, dict)
            else (x.network, str(x.ip), x.container_id, x.ifname) for x in leases]


def iso_z(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- leases and networks written straight into a Store -------------------------------------
def put(store, network, address, cid, ifname="eth0", at=None, boot="current", range_set=0,
        now=None):
    """A lease made ``at`` (wall clock, as of ``now``; now by default); in this boot, its
    boot clock reading then is the same age."""
    now = time.time() if now is None else now
    at = now if at is None else at
    current = boot == "current"
    lease = Lease(network, ipaddress.ip_address(address), range_set, cid, ifname, at,
                  boot_id() if current else boot, None,
                  boot_clock() - (now - at) if current else None)
    with store.transaction():
        assert store.reserve(lease, "add")
    return lease


def note(store, network, data_dir, *subnets, export=True, exclude=()):
    """Record a network's ranges as the plugin's ADD does (one range set per subnet)."""
    ip = ipaddress.ip_address
    sets = [make_set([canonicalize(s, None, None, None,
                                   [(int(ip(a)), int(ip(b))) for a, b in exclude])])
            for s in subnets]
    with store.transaction():
        store.set_network_info(network, NetworkRecord(str(data_dir), export,
                                                      json.dumps(describe(sets))))


def ipamctl(*args, data_dir=None, database=None, root=NO_ROOT, expect=0, env=None,
            input="", timeout=60, umask=None, cwd=None):
    """The installed ipamctl, as an operator runs it: the one way tests run it to the
    end (a daemon, or a command raced against, is a Popen of its own). ``data_dir``
    and ``database`` are given as an operator's environment gives them
    (``IPAM_DATA_DIR``, ``IPAM_DATABASE``), so that an option in ``args`` still wins.
    The rest of its environment is PATH, ``IPAM_ROOT`` (``root``: where it looks for
    CNI network configs, by default an empty tree, never the host's own) and ``env``:
    never the tests' own, whose variables would change what it does. stdin is
    ``input``, never the terminal the tests run from (a command that asks would wait
    for an answer); ``umask`` and ``cwd`` its own, if given. The finished process (text),
    which never shows a traceback; its exit status checked against ``expect`` (None: the
    caller looks)."""
    environ = {"PATH": os.environ.get("PATH", ""), "IPAM_ROOT": str(root)}
    if data_dir is not None:
        environ["IPAM_DATA_DIR"] = str(data_dir)
    if database is not None:
        environ["IPAM_DATABASE"] = str(database)
    environ.update(env or {})
    proc = subprocess.run([IPAMCTL, *args], env=environ, input=input, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          **({} if umask is None else {"umask": umask}))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert expect is None or proc.returncode == expect, (args, proc.stdout, proc.stderr)
    return proc


def js(*args, **kw):
    """:func:`ipamctl` with ``-o json``, its output parsed."""
    return json.loads(ipamctl("-o", "json", *args, **kw).stdout)


# --- node daemon (unit) -------------------------------------------------------------------
def plugin_process(command, conf, env_extra=None, cwd=None, **kw):
    """:func:`run_plugin` that keeps stderr too (where the thin client says why a call ran
    in process), and names no daemon but ``env_extra``'s: ``(Outcome, stderr text)``;
    ``cwd``: the runtime's working directory."""
    _, proc = _plugin(command, conf, env_extra, cwd, kw, daemon_from_environ=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr), proc.stderr.decode()


@contextlib.contextmanager
def serve_daemon(socket_path, **kw):
    """An :class:`ipam.daemon.server.Daemon` on ``socket_path`` in this process, its workers on
    threads (its ``serve()`` waits for signals, which only the main thread gets): yields
    the daemon; drains and closes it after, and puts back the state it set for the
    process (the writers' thread locks)."""
    from ipam.daemon import server as daemon
    from ipam.store import writer_lock

    saved = writer_lock._THREAD_LOCKS
    d = daemon.Daemon(str(socket_path), **kw)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        if d._listener is not None:  # not drained by the test already
            d._drain()
        d.close()
        writer_lock._THREAD_LOCKS = saved


def launcher_probe(path, report):
    """The installed launcher's text at ``path`` (0755), made to write ``report`` (the
    source of an expression giving text, e.g. over ``sys.modules``) on stderr as the
    process exits: what a plugin call loaded, seen from inside."""
    from ipam.install import launcher

    path.write_text(launcher.render().replace("\nrun(bundled=True)\n", (
        "\nimport posix\n"
        "_exit = posix._exit\n"
        "def _report(status):\n"
        "    sys.stderr.write(%s + '\\n')\n"
        "    sys.stderr.flush()\n"
        "    _exit(status)\n"
        "posix._exit = _report\n"
        "run(bundled=True)\n") % report))
    path.chmod(0o755)
    return path


# --- node daemon (processes) ---------------------------------------------------------------
# `ipamctl serve` as a process of its own, and the proof that a plugin process's call went
# through it (tests/test_daemon_process.py; the suites run "through the daemon").
DAEMON_READY = 10.0  # seconds a daemon may take to answer its first health check
# What the client says on stderr when a daemon it was told to use did not answer a call,
# and the reasons it gives (ipam.client), counted under the chaos.
FALLBACK = "running the call in process"
_FALLBACK_REASONS = ("cannot reach", "did not take the call within", "went away mid-call",
                     "stopped answering mid-call", "gave no answer within")


def daemon_named(env):
    """The socket ``env`` names for the plugin (``HOST_LOCAL_SQLITE_DAEMON``), or None when
    it names none or turns forwarding off: the client's own reading of it."""
    from ipam import client

    path, named = client.choose_socket(b"", {k.encode(): v.encode() for k, v in env.items()})
    return path if named else None


def note_plugin_run(env, command, stderr):
    """After a plugin process (or a runtime plugin delegating to ours) ran with ``env``
    and answered: when a daemon was named, its call must have gone there, never silently
    in process (the client says so on stderr whenever a named daemon does not answer),
    unless the test's entry path stops and kills the daemon (:data:`ENTRY`); counted
    there, so that ``through`` (conftest.py) can hold the daemon's own count against it.
    When the test itself names one, the process must have been given it."""
    from ipam import client

    if command not in client.FORWARDED:
        return
    wanted = daemon_named(os.environ)  # a test "through the daemon" (conftest's through)
    assert wanted is None or daemon_named(env) == wanted, (
        "the plugin process was not given the daemon the test names (%s)" % wanted)
    if daemon_named(env) is None:
        return
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    fell_back = FALLBACK in text
    entry = ENTRY
    assert entry.chaos is not None or not fell_back, (
        "the call did not go through the daemon: " + text)
    with entry.lock:
        entry.forwarded += 1
        entry.fell_back += fell_back
        for why in _FALLBACK_REASONS:
            if fell_back and why in text:
                entry.reasons[why] = entry.reasons.get(why, 0) + 1


def wait_until(predicate, what, timeout=10.0):
    """Wait for an event that ``predicate`` reads from the kernel (/proc, a socket)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "waited %g s for %s" % (timeout, what)
        time.sleep(0.01)


def has_open(pid, path):
    """Whether process ``pid`` has ``path`` open (/proc/PID/fd): a call polling a lock
    with LOCK_NB (host-local's) holds the file open and /proc/locks shows no waiter."""
    where = "/proc/%d/fd" % pid
    for fd in os.listdir(where):
        try:
            if os.readlink(os.path.join(where, fd)) == str(path):
                return True
        except OSError:  # closed meanwhile
            pass
    return False


def elf_segment_types(elf):
    """The program header types of a 64-bit little-endian ELF file's bytes (1: PT_LOAD,
    2: PT_DYNAMIC, 3: PT_INTERP): a static program has neither of the last two."""
    assert elf[:4] == b"\x7fELF" and elf[4:6] == b"\2\1", elf[:6]  # 64-bit, little-endian
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]


def holds_flock(pid, path, kind="READ"):
    """Whether /proc/locks shows process ``pid`` holding an flock (``READ``: shared,
    ``WRITE``: exclusive) on the file at ``path`` (by its inode)."""
    inode = str(os.stat(path).st_ino)
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()  # N: FLOCK ADVISORY READ PID MAJ:MIN:INODE START END
            if fields[1:2] == ["FLOCK"] and fields[3] == kind and fields[4] == str(pid) \
                    and fields[5].rsplit(":", 1)[1] == inode:
                return True
    return False


class LockRelay:
    """A lock file held by one process after another, each for ``hold`` seconds once
    :meth:`start` is called, ``turns`` in all: the holders /proc/locks shows keep
    changing, as those of a queue of calls that moves do, though the file is never free
    (each holder takes a shared flock before the last lets go, so an exclusive taker
    waits throughout). The first holds it from the start. The processes are started
    ahead and wait for their turn, so that a turn costs a pipe's write, not an
    interpreter's start. Use as a context manager: every process ends at its exit."""

    HOLDER = ("import fcntl, os, sys\n"
              "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600)\n"
              "sys.stdin.readline()\n"  # its turn
              "fcntl.flock(fd, fcntl.LOCK_SH)\n"
              "print('held', flush=True)\n"
              "sys.stdin.readline()\n")  # its turn is over: the end of its stdin

    def __init__(self, path, hold, turns):
        self.hold = hold
        self.procs = []
        self.holders = []  # the pids that held it, in turn
        self.error = None
        self.ended = threading.Event()  # the last holder let go
        self.thread = threading.Thread(target=self._relay, daemon=True)
        try:
            for _ in range(turns):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", self.HOLDER, str(path)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE))
            self._turn(0)
        except BaseException:
            self.__exit__()
            raise

    def _turn(self, i):
        proc = self.procs[i]
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line == b"held\n", "holder %d of the relay answered %r" % (i, line)
        self.holders.append(proc.pid)

    def _end(self, i):
        proc = self.procs[i]
        proc.stdin.close()
        proc.wait(30)

    def _relay(self):
        try:
            for i in range(1, len(self.procs)):
                time.sleep(self.hold)  # the holder's turn: what the test is about
                self._turn(i)
                self._end(i - 1)
            time.sleep(self.hold)
            self._end(len(self.procs) - 1)
        except BaseException as e:  # told at the exit
            self.error = e
        finally:
            self.ended.set()

    def start(self):
        self.thread.start()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.thread.join(60)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
            proc.stdin.close()
            proc.stdout.close()
        assert self.error is None, self.error


def daemon_env():
    """The environment a daemon starts with: the tests' own, minus what would change its
    behaviour (the CNI protocol's variables, a systemd's, another daemon named)."""
    drop = ("JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
            paths.DAEMON_ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") and k not in drop}
    # A daemon that does not stop in time is sent SIGABRT (NodeDaemon.stop): Python's
    # fault handler then writes every thread's stack into its log.
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def wait_health(socket, exited, log, timeout=DAEMON_READY):
    """Wait until a node daemon answers a health check on ``socket`` (the check
    ``ipamctl health`` makes); its health. ``exited()``: how the daemon ended, or None
    while it runs; ``log()``: its log, shown when it ends or does not answer in time."""
    from ipam.daemon.server import check_health
    from ipam.errors import IpamError

    deadline = time.monotonic() + timeout
    why = "no answer yet"
    while time.monotonic() < deadline:
        ended = exited()
        if ended:
            raise AssertionError("the daemon %s before answering:\n%s" % (ended, log()))
        if os.path.exists(socket):
            try:
                return check_health(socket, max(deadline - time.monotonic(), 0.1))
            except IpamError as e:
                why = str(e)
        time.sleep(0.02)
    raise AssertionError("the daemon on %s did not answer a health check within %g s "
                         "(%s):\n%s" % (socket, timeout, why, log()))


def counted(socket, calls, timeout=10.0):
    """The health of the daemon on ``socket`` once it has counted ``calls`` calls: it
    counts a call just after answering it, so its client may be back first."""
    from ipam.daemon.server import check_health

    deadline = time.monotonic() + timeout
    while True:
        health = check_health(socket, timeout)
        if health["calls"] >= calls:
            return health
        assert time.monotonic() < deadline, "waited %g s for %d call(s) counted" % (
            timeout, calls)
        time.sleep(0.01)


class NodeDaemon:
    """An ``ipamctl serve`` process (or ``argv`` that execs one; ``env_extra`` added to
    its environment), its stdout and stderr (the log) in ``<directory>/daemon-<n>.log``.
    :meth:`wait_ready` before use; :meth:`stop` (or :meth:`kill`) before the test ends."""

    _count = 0

    def __init__(self, directory, *options, socket=None, argv=None, env_extra=None):
        NodeDaemon._count += 1
        self.socket = str(socket or os.path.join(str(directory), "d.sock"))
        self.log_path = os.path.join(str(directory), "daemon-%d.log" % NodeDaemon._count)
        argv = argv or [IPAMCTL, "serve", "--socket", self.socket, *options]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=dict(daemon_env(), **(env_extra or {})))
        self.pid = self.proc.pid
        self._terminated = False

    def wait_ready(self, timeout=DAEMON_READY):
        """Wait until the daemon answers a health check (the check ``ipamctl health``
        makes); its health. Fails, with its log, if it exits or does not answer."""
        def exited():
            if self.proc.poll() is not None:
                return "exited (%d)" % self.proc.returncode
            return None
        return wait_health(self.socket, exited, self.log, timeout)

    def health(self):
        from ipam.daemon.server import check_health

        return check_health(self.socket, 5.0)

    def calls_served(self, at_least, timeout=5.0):
        """The daemon's count of calls served, once it reaches ``at_least`` or after
        ``timeout`` s: it counts a call just after answering it, so a count read at
        once may not have the last answer's yet."""
        deadline = time.monotonic() + timeout
        while True:
            served = self.health()["calls"]
            if served >= at_least or time.monotonic() > deadline:
                return served
            time.sleep(0.01)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, predicate, what, timeout=30.0):
        """Wait until ``predicate(log text)`` holds; fails saying ``what`` it waited for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.log()):
                return
            time.sleep(0.01)
        raise AssertionError("waited %g s for %s; the daemon's log:\n%s"
                             % (timeout, what, self.log()))

    def terminate(self):
        """SIGTERM, once: the drain starts (a second one, during the drain, would kill)."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.send_signal(15)

    def stop(self, timeout=30.0):
        """:meth:`terminate` (unless done already) and wait for the exit; its status."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # its threads' stacks, into the log
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            raise AssertionError("the daemon did not stop within %g s of SIGTERM (then "
                                 "SIGABRT: its threads' stacks at the end):\n%s"
                                 % (timeout, self.log())) from None

    def kill(self):
        """SIGKILL (what a crash or the OOM killer does); nothing is cleaned up."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)

    def stopped(self):
        """Whether the daemon is stopped (SIGSTOP: state T in /proc/<pid>/stat)."""
        with open("/proc/%d/stat" % self.pid) as f:
            return f.read().rpartition(")")[2].split()[0] in ("T", "t")


# --- entry paths: how a test's plugin processes reach the plugin's code -------------------
# The guarantee suites run each test through every one (conftest's ``through``), but where
# a mark says why not (``not_through``, ``in_process_only``, ``no_entry_path``): a path
# added here runs every guarantee test (tests/test_entry_paths.py holds the suites to it).
#   in-process                 forwarding off: the console script runs the call itself;
#   daemon                     a node daemon serves every call (a call that falls back in
#                              process fails the test);
#   daemon-stopped-and-killed  a daemon that a thread stops (past the client's
#                              TAKE_TIMEOUT) and kills (then starts anew) at random
#                              moments: calls may fall back in process, saying so;
#   native                     the native thin client (native/client.c, as install-plugin
#                              installs it), which a node daemon serves every call of (a
#                              call that falls back in process, to the launcher beside
#                              it, fails the test, as on the daemon path);
#   build                      the self-contained build's plugin, forwarding off.
ENTRY_PATHS = ("in-process", "daemon", "daemon-stopped-and-killed", "native", "build")
# The modules whose every test runs through ENTRY_PATHS or says why not.
GUARANTEE_SUITES = ("test_concurrency", "test_crash", "test_foreign_writers",
                    "test_shared_pool", "test_signals")
# Calls a test must make through the stopped and killed daemon for some to be bound to
# meet it stopped or gone (and so fall back in process).
CHAOS_CALLS = 60
# The 110-pod bursts (test_concurrency, test_shared_pool) leave out the chaos path.
NOT_THROUGH_THE_CHAOS_AT_110 = pytest.mark.not_through("daemon-stopped-and-killed", why=(
    "110 calls through the daemon are served in about a second: the chaos, acting within "
    "0.6 s of their start, stops the daemon after it took them all as often as not, and "
    "then no call falls back, which the chaos path counts as a failure; the larger "
    "bursts (200 calls, four nodes of 50) run through it"))


class EntryPath:
    """The entry path of the running test's plugin processes (:data:`ENTRY`): ``name``
    (one of :data:`ENTRY_PATHS`; "default" outside ``through``), the ``plugin`` program
    they run, the ``socket`` of the daemon they name (None: forwarding is off) and its
    ``chaos`` (a :class:`DaemonChaos`, or None); and what they did: ``started``
    processes of ``plugin`` (:func:`plugin_program`), ``fed`` calls begun by a process
    started ahead (:func:`feeding`), ``forwarded`` calls answered with a daemon named,
    of which ``fell_back`` ran in process (:func:`note_plugin_run`)."""

    def __init__(self, name="default", plugin=PLUGIN, node_daemon=None):
        self.name = name
        self.plugin = plugin
        self.chaos = None  # set by whoever starts one
        self._daemon = node_daemon
        self.lock = threading.Lock()
        self.started = self.fed = self.forwarded = self.fell_back = 0
        self.reasons = {}  # of falling back: how many calls gave each

    @property
    def daemon(self):
        """The daemon serving now (:class:`NodeDaemon`; the chaos starts new ones), or
        None."""
        return self.chaos.daemon if self.chaos is not None else self._daemon

    @property
    def socket(self):
        daemon = self.daemon
        return None if daemon is None else daemon.socket

    def wait_queued(self, path, process, timeout=30.0, polling=False):
        """Wait until the call of plugin process ``process`` (a Popen) waits for the
        flock the test holds on ``path``: in the process, or in the daemon that took
        it (under the chaos, whichever of the two: the daemon may be gone, the call
        run in process). ``polling``: the process polls that lock (host-local's)."""
        def waiters():
            daemon = self.daemon
            return [(process.pid, polling)] + (
                [] if daemon is None else [(daemon.pid, True)])
        wait_queued_in(path, waiters, timeout)

    def expected_stderr(self, err):
        """A plugin process's stderr without the client's word that it ran the call in
        process, where this path allows that (the daemon stopped or killed under it)."""
        if self.chaos is None:
            return err
        nl = b"\n" if isinstance(err, bytes) else "\n"
        word = FALLBACK.encode() if isinstance(err, bytes) else FALLBACK
        return nl.join(line for line in err.split(nl) if word not in line)


ENTRY = EntryPath()  # the running test's (conftest's ``through`` puts its own here)


def plugin_program():
    """The plugin program of the test's entry path (the console script, or the build's),
    counted as one more process started (:func:`starting`)."""
    return starting(ENTRY.plugin)


def starting(program):
    """``program``, counted as one more plugin process the test starts (the build's path
    must have run some; the chaos acts while they run)."""
    entry = ENTRY
    with entry.lock:
        entry.started += 1
    return program


def feeding():
    """Count one more call begun by a plugin process the test started ahead and now
    gives its config (plugin_procs.Invocation): its call starts only then, and the
    chaos acts while calls run, not only while processes start."""
    entry = ENTRY
    with entry.lock:
        entry.fed += 1


class DaemonChaos:
    """A node daemon on one socket that a thread, until :meth:`close`, stops (SIGSTOP,
    for longer than the client's TAKE_TIMEOUT, then SIGCONT) or kills (SIGKILL, then a
    new daemon on the same socket) at random moments while the test's plugin processes
    run (within 0.3 s of one's start, or of the call of one started ahead:
    ``activity()`` counts them), each after it served 0.2 to 1.5 s: calls meet a daemon
    that takes them late, answers late, or goes away under them, and one that serves
    them. A burst fed at once (``fed()`` counts its calls) cuts that serving short, to
    0.3 s at most: the daemon serves such a burst whole in about a second, which the
    chaos would otherwise meet only by chance. ``stops`` and ``kills`` count what it
    did; ``seed`` makes its choices (not the moments they meet)."""

    def __init__(self, directory, seed, activity, fed=lambda: 0):
        from ipam.client import TAKE_TIMEOUT

        self.directory = str(directory)
        self.seed = seed
        self.rng = random.Random(seed)
        self.activity = activity
        self.fed = fed
        self.stop_for = (TAKE_TIMEOUT * 1.2, TAKE_TIMEOUT * 2.0)
        self.serve_for = (0.2, 1.5)
        self.daemons = [self._start(None)]
        self.socket = self.daemons[0].socket
        self.stops = self.kills = 0
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def daemon(self):
        return self.daemons[-1]

    def _start(self, socket):
        """A daemon, its first health check answered: a new one meets the calls that
        queued for the socket meanwhile, and answers its health after them."""
        daemon = NodeDaemon(self.directory, socket=socket)
        try:
            daemon.wait_ready(DAEMON_READY if socket is None else 60.0)
        except BaseException:
            daemon.kill()
            raise
        return daemon

    def _run(self):
        try:
            seen = self.activity()
            while not self.done.is_set():
                if self.activity() == seen:  # no plugin process or call since the last
                    self.done.wait(0.005)
                    continue
                seen = self.activity()
                if self.done.wait(self.rng.uniform(0.0, 0.3)):
                    break
                daemon = self.daemon
                fed = self.fed()
                if self.rng.random() < 0.5:
                    os.kill(daemon.pid, signal.SIGSTOP)
                    self.stops += 1
                    try:
                        self.done.wait(self.rng.uniform(*self.stop_for))
                    finally:
                        os.kill(daemon.pid, signal.SIGCONT)
                else:
                    daemon.kill()
                    self.kills += 1
                    self.daemons.append(self._start(self.socket))
                # Serving a while before the next: a burst meets every state.
                self._serve(self.rng.uniform(*self.serve_for), fed)
        except BaseException as e:  # raised again by close(), in the test
            self.error = e

    def _serve(self, seconds, fed):
        """Let the daemon serve ``seconds``, or 0.3 s at most once a burst is fed (since
        ``fed`` calls: a burst fed while the daemon was stopped or restarted counts)."""
        end = time.monotonic() + seconds
        while not self.done.is_set():
            now = time.monotonic()
            if now >= end:
                return
            if self.fed() != fed:
                fed = self.fed()
                end = min(end, now + self.rng.uniform(0.0, 0.3))
            self.done.wait(min(0.005, end - now))

    def logs(self):
        return [("daemon %d (pid %d)" % (n, d.pid), d.log())
                for n, d in enumerate(self.daemons, 1)]

    def close(self):
        """Stop the chaos; the daemon serving then must drain cleanly (exit 0)."""
        self.done.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the chaos thread did not end"
        if self.error is not None:
            self.daemon.kill()
            raise self.error
        status = self.daemon.stop()
        assert status == 0, self.daemon.log()


def collected_entry_paths(modules):
    """``{(module file, function): {entry paths}}`` as pytest collects the tests of
    ``modules`` (file names under tests/): the paths the ids of each function's
    instances begin with (conftest's ``through`` puts its id first). Only a function
    that takes ``through`` has its paths here; another's ids may begin alike."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # every test:
    # .ci/run's other Pythons deselect the `once` marker, which says nothing of the docs
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *("tests/" + m for m in modules)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    paths = "|".join(re.escape(p) for p in sorted(ENTRY_PATHS, key=len, reverse=True))
    found = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"tests/(\w+\.py)::(\w+)\[(%s)(?:-|\])" % paths, line)
        if m:
            found.setdefault((m.group(1), m.group(2)), set()).add(m.group(3))
    return found



def marks_of(module, function):
    """The marks on a test ``function`` of ``module``, its module's (``pytestmark``) too."""
    marks = getattr(module, "pytestmark", [])
    marks = list(marks) if isinstance(marks, (list, tuple)) else [marks]
    marks += getattr(function, "pytestmark", [])
    return [getattr(m, "mark", m) for m in marks]


def takes_through(module, function):
    """Whether a test takes conftest's ``through``: as an argument, or by a
    ``usefixtures`` mark (its own or its module's)."""
    import inspect

    return "through" in inspect.signature(function).parameters or any(
        m.name == "usefixtures" and "through" in m.args for m in marks_of(module, function))


# Another user (nobody) running our programs: a peer the daemon must refuse, a user who
# may not open root's files (test_permissions.py, test_daemon_process.py). Needs root.
NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _closed_to_others(path):
    """The highest directory above ``path`` that others may not enter, or None."""
    here = "/"
    for part in path.strip("/").split("/")[:-1]:
        here = os.path.join(here, part)
        if not os.stat(here).st_mode & 0o001:
            return here
    return None


def _reachable():
    """A shell prefix that lets nobody reach this interpreter, its venv and the sources.

    They may live under a directory only root may enter (pyenv's under /root, a checkout
    in root's home). In a mount namespace of the child's own, each such directory is
    covered by an empty tmpfs open to all, into which only what the run needs is bound
    back: nobody then meets exactly the permissions of the files under test, and the
    host's directories are never changed. The command keeps the process's pid (each
    step execs the next)."""
    import shlex

    needed = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, REPO)})
    needed = [p for p in needed if not any(p.startswith(q + "/") for q in needed)]
    covers = {}
    for p in needed:
        top = _closed_to_others(p)
        if top is not None:
            covers.setdefault(top, []).append(p)
    if not covers:
        return []
    lines = ["set -e", "stage=$(mktemp -d)"]
    n = 0
    for top, under in sorted(covers.items()):
        for p in under:
            n += 1
            lines.append("mkdir $stage/%d && mount --bind %s $stage/%d" % (n, shlex.quote(p), n))
        lines.append("mount -t tmpfs -o mode=755 ipam-test %s" % shlex.quote(top))
        for i, p in enumerate(under, n - len(under) + 1):
            lines.append("mkdir -p %s && mount --bind $stage/%d %s" % (
                shlex.quote(p), i, shlex.quote(p)))
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            "\n".join(lines), "sh"]


RUN_AS_NOBODY = _reachable() + AS_NOBODY  # argv prefix: [*RUN_AS_NOBODY, program, ...]


# --- podman 4 on its CNI backend, isolated from the host's (test_podman.py) -----------------
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static file, a whole userland
GO_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins (bridge, Go's host-local)


def busybox_rootfs(directory, *applets):
    """A container's root file system without an image (``podman run --rootfs``): the
    static busybox and a link per applet in /bin; the mount points runc needs."""
    import shutil

    for sub in ("bin", "dev", "proc", "sys", "etc", "tmp"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    shutil.copy(BUSYBOX, os.path.join(directory, "bin", "busybox"))
    for applet in applets:
        os.symlink("busybox", os.path.join(directory, "bin", applet))
    return str(directory)


def mounts_under(directory):
    """The mount points at or below ``directory`` (what podman left mounted there)."""
    top = os.path.realpath(str(directory))
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p == top or p.startswith(top + "/")]


class Podman:
    """Debian's podman 4 as root, its state apart from the host's podman: the test's own
    containers.conf (``CONTAINERS_CONF`` makes it the only one read), storage (vfs: no
    image is ever pulled, containers run ``--rootfs``), run and lock directories, all
    under ``directory``; the CNI backend searching ``plugin_dir`` (empty: the test
    installs into it) before Debian's plugins, and reading network configs from
    ``config_dir``. Call it like the podman command; :meth:`close` removes every
    container and then the directory. That directory is a new one in /tmp, not the
    test's: podman refuses a runroot longer than 50 characters (conmon's socket paths).

    Settings this machine kind needs, and why: runc (crun refuses the cgroup layout);
    cgroupfs (no systemd); default_ulimits below the hard limits (podman's defaults, as
    root, raise RLIMIT_NOFILE and RLIMIT_NPROC past what a process without
    CAP_SYS_RESOURCE may set: runc's "error setting rlimits ... operation not
    permitted"); file locks under tmp_dir (the default shared-memory locks are shared
    with every other podman on the host, and a fresh tmp_dir makes podman free them
    all); no events log."""

    def __init__(self, program="podman"):
        import resource
        import tempfile

        self.directory = tempfile.mkdtemp(prefix="hls-podman-", dir="/tmp")
        self.program = program
        self.plugin_dir = os.path.join(self.directory, "cni-bin")
        self.config_dir = os.path.join(self.directory, "net.d")
        for sub in ("cni-bin", "net.d", "root", "runroot", "tmp"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        limits = []
        for name, which in (("nofile", resource.RLIMIT_NOFILE),
                            ("nproc", resource.RLIMIT_NPROC)):
            hard = resource.getrlimit(which)[1]
            value = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard)
            limits.append("%s=%d:%d" % (name, value, value))
        self.conf = os.path.join(self.directory, "containers.conf")
        with open(self.conf, "w") as f:
            f.write("[containers]\ndefault_ulimits = %s\n\n"
                    "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = %s\n"
                    "network_config_dir = %s\n\n"
                    "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n"
                    "events_logger = \"none\"\nlock_type = \"file\"\ntmp_dir = %s\n"
                    % (json.dumps(limits), json.dumps([self.plugin_dir, GO_PLUGINS]),
                       json.dumps(self.config_dir),
                       json.dumps(os.path.join(self.directory, "tmp"))))
        # Not every plugin call gets this environment: conmon starts the DEL at a
        # container's exit (podman container cleanup) with CONTAINERS_CONF, PATH and a
        # few of podman's own variables only. A network config names the node daemon.
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf)

    def __call__(self, *args, expect=0, timeout=60):
        """``podman ARGS`` (storage options first); the finished process, its exit
        status checked (``expect=None``: not checked). A failure shows podman's
        stderr, where it reports a CNI plugin's error."""
        argv = [self.program, "--root", os.path.join(self.directory, "root"),
                "--runroot", os.path.join(self.directory, "runroot"),
                "--storage-driver", "vfs", *args]
        try:
            proc = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("%s did not finish within %g s; stderr:\n%s"
                                 % (" ".join(args), timeout, e.stderr)) from None
        assert expect is None or proc.returncode == expect, (
            "podman %s exited %d (expected %d)\nstdout: %s\nstderr: %s"
            % (" ".join(args), proc.returncode, expect, proc.stdout, proc.stderr))
        return proc

    def inspect(self, name):
        return json.loads(self("inspect", "--type", "container", name).stdout)[0]

    def close(self):
        """Remove every container (``rm -f``: their network is torn down, which calls
        the plugins' DEL), then the whole directory, once nothing is mounted in it."""
        import shutil

        try:
            self("rm", "--all", "--force", "--time", "0")
        finally:
            left = mounts_under(self.directory)
            assert not left, "podman left mounts: %s" % left
            shutil.rmtree(self.directory)


class FrozenBuild:
    """A self-contained build (``make dist``): ``directory`` (unpacked) holds both
    executables and BUILD-INFO (``info``); ``tarball`` is in ``out``."""

    def __init__(self, directory, out):
        self.directory = directory
        self.plugin = os.path.join(directory, "host_local_sqlite")
        self.ipamctl = os.path.join(directory, "ipamctl")
        with open(os.path.join(directory, "BUILD-INFO")) as f:
            self.info = json.load(f)
        self.tarball = os.path.join(out, "host-local-sqlite-%s-%s.tgz" % (
            self.info["version"], self.info["platform"]))

    def run(self, executable, *args, input=b"", env=None, root=None, timeout=120):
        """``executable`` (a path) with ``args``; under ``root``, chrooted there in a
        mount namespace of its own with /proc mounted (the executables find their
        libraries through /proc/self/exe), nothing else of the host's."""
        argv = [executable, *args]
        if root is not None:
            argv = ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c",
                    'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', root, *argv]
        return subprocess.run(argv, input=input, env=env if env is not None else {},
                              capture_output=True, timeout=timeout)

    def variant(self, directory, mark):
        """Another build, to install over this one: a copy of it in ``directory`` with
        another digest in its BUILD-INFO (``mark``, one hex digit, 64 times), and so
        another installed copy."""
        shutil.copytree(self.directory, directory, symlinks=True)
        with open(os.path.join(directory, "BUILD-INFO"), "w") as f:
            json.dump(dict(self.info, digest=mark * 64), f)
        return str(directory)

    def cni(self, plugin, command, conf, container="c1", root=None):
        """One CNI call of ``plugin`` (a path: the build's, or a link to it) as a runtime
        makes it, which must succeed without a traceback: its result, or None."""
        proc = self.run(plugin, input=conf, root=root,
                        env=cni_env(command, container_id=container))
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return json.loads(proc.stdout) if proc.stdout.strip() else None


# --- the Kubernetes manifest and the installer image (test_kubernetes.py) -------------------
def read_manifest(path):
    """The YAML of deploy/kubernetes/ as Python objects, as kubectl reads it (anchors
    and aliases resolved)."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def image_context(build_dir, context):
    """``tools/build_image.py --no-build``: the installer image's build context made in
    ``context`` from the build at ``build_dir`` (its ``base/`` is glibc and nothing else
    of this machine's); the script's report, with podman's build arguments."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "build_image.py"),
                           "--no-build", "--frozen", build_dir, "--context", str(context)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)



# -- deploy/systemd's units -------------------------------------------------------------
def unit_lines(name):
    """The text of ``deploy/systemd/NAME``."""
    with open(os.path.join(REPO, "deploy", "systemd", name)) as f:
        return f.read()


def unit_exec_start(name):
    """The unit's ExecStart as the shell sees it ($$ -> $, %% -> %)."""
    line = [x for x in unit_lines(name).splitlines() if x.startswith("ExecStart=")][0]
    return line[len("ExecStart="):].replace("$$", "$").replace("%%", "%")


def unit_environment(name):
    """The unit's Environment= settings, as a dict."""
    out = {}
    for line in unit_lines(name).splitlines():
        if line.startswith("Environment="):
            key, _, value = line[len("Environment="):].strip('"').partition("=")
            out[key] = value
    return out


# -- a CRI runtime's answers ---------------------------------------------------------------
@contextlib.contextmanager
def cri_runtime(endpoint, sandboxes, networks):
    """gRPC's own server (grpcio) on ``endpoint``, answering ListPodSandbox with
    ``sandboxes`` (IDs, all ready) and a verbose Status with ``networks`` loaded, as
    containerd's CRI does: for commands whose subject is not the runtime (README
    examples). The messages are tests/cri_api's."""
    from concurrent import futures

    import grpc
    from cri_api import api_pb2 as api

    def list_pod_sandbox(request, context):
        return api.ListPodSandboxResponse(items=[
            api.PodSandbox(id=sid, state=0) for sid in sandboxes])

    def status(request, context):
        info = {"cniconfig": json.dumps({"Networks": [
            {"Config": {"Name": "cni-loopback"}}] + [
            {"Config": {"Name": name}} for name in networks]})}
        return api.StatusResponse(info=info if request.verbose else {})

    handlers = {
        "ListPodSandbox": grpc.unary_unary_rpc_method_handler(
            list_pod_sandbox, api.ListPodSandboxRequest.FromString,
            api.ListPodSandboxResponse.SerializeToString),
        "Status": grpc.unary_unary_rpc_method_handler(
            status, api.StatusRequest.FromString, api.StatusResponse.SerializeToString)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "runtime.v1.RuntimeService", handlers)])
    server.add_insecure_port(endpoint)
    server.start()
    try:
        yield
    finally:
        server.stop(None)
