"""The node daemon (``ipamctl serve``): plugin calls without a process start each.

A runtime starts the plugin once per container and network, and most of such a call is
the interpreter's start and the plugin's imports, not its transaction. The daemon loads
the plugin once, keeps its stores open (:class:`ipam.daemon.pool.StorePool`), and serves
the calls that thin clients (:mod:`ipam.client`) forward over a unix socket: the same
thing Multus' thick plugin, Cilium's ``cilium-cni`` and CNI's own ``dhcp`` plugin do.

Each call runs through :func:`ipam.cni.main`, the in-process entry itself, with the
client's environment and stdin, and a stderr of its own (the call's context's), which
goes back to the client. It is one store transaction with the same locks and the same waits
(:mod:`ipam.waits`) as ever, so plugin processes, ipamctl and the daemon can all run at
once.

A door, not a second product: a forwarded call must be, to its caller, the call it would
have run in process.

- **The same waits.** Each call has a thread of its own: the daemon keeps ``pool_size``
  idle threads waiting for connections and starts more as calls come, up to
  ``max_calls``, so a call never queues behind calls waiting for another network's lock.
  A request must arrive whole within :data:`REQUEST_TIMEOUT` (a peer that trickles it
  holds a thread that long, no longer). The client hears within its ``TAKE_TIMEOUT``
  that its call was taken, and the call's bound (:func:`ipam.waits.call_bound`); the
  daemon commits nothing past that bound, nor once its client has gone (the last check
  before COMMIT: :meth:`Daemon._guard`).
- **The same files.** Before taking a call, the daemon asks what the caller sees at every
  path the call may touch (dataDir, a SQLite database and its directory, resolvConf)
  and serves it only where it sees the same device and inode (:func:`ipam.client.view`):
  a caller in another mount namespace, or a pod without the hostPath a config names,
  runs its call in process.
- **The same powers.** Only a peer that could make the call itself: root or the daemon's
  own uid (``SO_PEERCRED``), in the daemon's user namespace, with every capability the
  daemon has, read from the kernel through the peer's pid (``/proc/<pid>/status``,
  checked against a pidfd so a pid reused meanwhile cannot pass), never from its word.
  A peer it cannot see (pid 0: another PID namespace) is declined; hence ``hostPID`` in
  the DaemonSet.

One daemon per socket: the second finds the first's flock (:func:`ipam.paths.
daemon_lock`) and refuses to start. SIGTERM, SIGINT and SIGHUP drain: no new connection
is taken, the calls already taken are answered (for ``drain_timeout`` at most: a client
whose daemon went away runs its call in process), then the stores close. Under systemd
the socket can be the socket unit's (``LISTEN_FDS``), and readiness and stopping are told
through ``NOTIFY_SOCKET``.

It logs one line per call to stderr (command, network, container, ifname, result,
milliseconds), as ``key=value`` pairs, which journald and ``kubectl logs`` show as they
are; with a UTC timestamp in front unless journald, which stamps lines itself, is
stderr (``JOURNAL_STREAM``).

For tests only: ``HOST_LOCAL_SQLITE_DAEMON_STOP_AT`` names a step of a call (see
:data:`STEPS`) at which the daemon stops itself with SIGSTOP, as a frozen cgroup or an
operator's SIGSTOP would stop it there.
"""
import contextlib
import io
import itertools
import json
import os
import select
import signal
import socket
import stat
import sys
import threading
import time

from ipam import client, paths, process, system
from ipam.commands import CallContext
from ipam.daemon import caller
from ipam.daemon.metrics import Metrics
from ipam.daemon.pool import StorePool
from ipam.daemon.steps import Steps, TraceFile
from ipam.errors import Interrupted, IoFailure, TryAgain
from ipam.store import writer_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, Optional, TextIO

    from ipam.daemon.gc_periodic import PeriodicGc
    from ipam.daemon.metrics_http import MetricsServer

DEFAULT_POOL_SIZE = 4
# Calls served at once, at most (threads): kubelet starts up to 110 pods on a node at
# once, each with one call per network. Past it a client's call is not taken, and runs
# in process after the client's TAKE_TIMEOUT.
DEFAULT_MAX_CALLS = 256
DEFAULT_DRAIN_TIMEOUT = 30.0
# Seconds a thread past pool_size waits for another call before it leaves: a burst's
# threads serve the next burst, rather than leave and be started again.
IDLE_TIMEOUT = 30.0
# Seconds a connected client has to send its whole request, and then its views: a
# plugin sends each at once; a peer that trickles bytes holds one thread this long.
REQUEST_TIMEOUT = 5.0
# A terminal's hang-up too: a daemon started by hand stops as cleanly as under systemd.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
BACKLOG = 512  # connections the kernel queues: a node starting hundreds of pods at once
# Linux 4.5's flag; a Python built against older kernel headers lacks the name (the
# CPython in cx_Freeze's bases, built for glibc 2.17: the self-contained build's).
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)
POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)  # Linux 2.6.17's, likewise
_SD_LISTEN_FDS_START = 3  # systemd's first passed descriptor (sd_listen_fds(3))
# The steps of a call, in order, at which HOST_LOCAL_SQLITE_DAEMON_STOP_AT may stop the
# daemon (tests: the client's bounds and the one-lease promise, step by step).
STEPS = ("read", "proved", "taken", "before-commit", "committed")
STOP_AT_ENV = "HOST_LOCAL_SQLITE_DAEMON_STOP_AT"
def _logfmt(value: "object") -> "str":
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text)


def _config(data: "bytes") -> "dict[str, Any]":
    """The call's config as far as the daemon itself reads it (the log line, relative
    paths), keys lower-cased as the plugin reads them; empty if it does not parse (the
    plugin's own answer says why)."""
    try:
        conf = json.loads(data, object_pairs_hook=lambda pairs: {k.lower(): v
                                                                   for k, v in pairs})
    except (ValueError, RecursionError):
        return {}
    return conf if isinstance(conf, dict) else {}


def _call_fields(env: "dict[str, str]", conf: "dict[str, Any]") -> "str":
    """The log line's fields naming a call: command, network, container, ifname."""
    return " ".join([env.get("CNI_COMMAND", "?"),
                     "network=" + _logfmt(conf.get("name") or "?"),
                     "container=" + _logfmt(env.get("CNI_CONTAINERID", "") or "-"),
                     "ifname=" + _logfmt(env.get("CNI_IFNAME", "") or "-")])


def _answer(out: "str") -> "dict[str, Any]":
    """The plugin's answer as JSON, or {} when it is none."""
    try:
        answer = json.loads(out) if out.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


def _code(status: "int", answer: "dict[str, Any]") -> "Optional[int]":
    """None for a call that succeeded, else its CNI error code (0 if it gave none)."""
    if status == 0:
        return None
    code = answer.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _summary(env: "dict[str, str]", conf: "dict[str, Any]", status: "int",
             answer: "dict[str, Any]") -> "str":
    """The log line's fields for one call (the network from the config, the addresses
    or the error from the answer); whatever does not parse is left out."""
    fields = [_call_fields(env, conf)]
    if status == 0:
        fields.append("result=ok")
        ips = [ip.get("address") or ip.get("ip") for ip in answer.get("ips", ())
               if isinstance(ip, dict)]
        ips += [answer[k]["ip"] for k in ("ip4", "ip6")
                if isinstance(answer.get(k), dict) and "ip" in answer[k]]
        if ips:
            fields.append("ips=" + _logfmt(",".join(map(str, ips))))
    else:
        fields += ["result=error", "code=%s" % answer.get("code", "?"),
                   "msg=" + _logfmt(answer.get("msg", ""))]
    return " ".join(fields)


def _read_request(conn: "socket.socket", deadline: "float"
                  ) -> "tuple[bytes, list[bytes]]":
    """(kind, blobs) of a request, which must arrive whole by ``deadline``; ValueError
    if it is not one, cut short or late."""
    head = len(client.MAGIC) + 1
    buf = b""
    while len(buf) < head:
        buf += _recv(conn, 65536, deadline, "request")
    if buf[:len(client.MAGIC)] != client.MAGIC:
        raise ValueError("not a %s request" % client.MAGIC.decode().strip())
    kind = buf[head - 1:head]
    wanted = 3 if kind == client.CALL else 0
    blobs: "list[bytes]" = []
    at = head
    while len(blobs) < wanted:
        try:
            item, at = client.read_blob(buf, at)
            blobs.append(item)
            continue
        except ValueError:
            pass
        if len(buf) - at >= 4 and int.from_bytes(buf[at:at + 4], "big") > process.MAX_STDIN * 2:
            raise ValueError("the request is too large")
        buf += _recv(conn, 1 << 20, deadline, "request")
    return kind, blobs


def _read_views(conn: "socket.socket", deadline: "float") -> "list[bytes]":
    """The client's VIEWS message, whole by ``deadline``; ValueError if not."""
    buf = b""
    while True:
        try:
            kind, parts, _ = client.parse_message(buf)
        except ValueError:
            if len(buf) > 1 << 20:
                raise ValueError("views too large") from None
            buf += _recv(conn, 65536, deadline, "views")
            continue
        except IndexError:
            raise ValueError("not a views message") from None
        if kind != client.VIEWS:
            raise ValueError("not a views message")
        return parts[0].split(b"\0") if parts[0] else []


def _recv(conn: "socket.socket", size: "int", deadline: "float", what: "str") -> "bytes":
    """What the client sent next, by ``deadline``; ValueError saying so if nothing."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(size)
    except TimeoutError:
        raise ValueError("the %s did not arrive whole within %g s"
                         % (what, REQUEST_TIMEOUT)) from None
    if not chunk:
        raise ValueError("the %s was cut short" % what)
    return chunk


def _reply(status: "int", out: "bytes", err: "bytes") -> "bytes":
    return client.ANSWER + bytes([status & 0xFF]) + client.blob(out) + client.blob(err)


def _not_served(why: "str") -> "bytes":
    return client.NOT_SERVED + client.blob(why.encode())


class Daemon:
    """One node daemon on ``socket_path``: :meth:`start`, then :meth:`serve` until a
    signal (or :meth:`stop`) drains it."""

    def __init__(self, socket_path: "str" = paths.DAEMON_SOCKET,
                 pool_size: "int" = DEFAULT_POOL_SIZE,
                 drain_timeout: "float" = DEFAULT_DRAIN_TIMEOUT,
                 log: "Optional[TextIO]" = None,
                 max_calls: "int" = DEFAULT_MAX_CALLS,
                 metrics_server: "Optional[MetricsServer]" = None,
                 periodic_gc: "Optional[PeriodicGc]" = None,
                 metrics: "Optional[Metrics]" = None,
                 trace_steps: "Optional[str]" = None) -> "None":
        self.socket_path = os.path.abspath(socket_path)
        self.pool_size = pool_size
        self.max_calls = max(max_calls, 1)
        self.drain_timeout = drain_timeout
        self._log_stream = log
        self.pool = StorePool(pool_size)
        # Calls running the plugin's code at once, at most: those that wait for a lock
        # give theirs up meanwhile (CallContext.idle), so a call never waits behind
        # another network's stuck lock, and a burst's calls do not all contend for the
        # interpreter at once (that cost the daemon's CPU twice over).
        self._running = threading.Semaphore(pool_size)
        self.calls = 0
        # Counts and latencies by command, declined and refused calls, gc runs: read by
        # health() and by --metrics' scrapes.
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics_server = metrics_server
        self.periodic_gc = periodic_gc
        self._busy = 0  # connections taken and not yet answered (what a drain waits for)
        self._calling = 0  # of those, calls: from their request read to their log line
        self._idle = threading.Condition()
        self._waiting = 0  # threads waiting for a connection
        self._threads: "set[threading.Thread]" = set()
        self._names = itertools.count()
        self._wake: "Optional[tuple[int, int]]" = None  # the stop's wake-up pipe
        self._stopping = threading.Event()
        self._signalled = False  # a stop signal came (set by the handler, which locks nothing)
        self._stop_pipe: "Optional[tuple[int, int]]" = None  # wakes _wait_for_stop
        # The writers' thread queues this daemon set for the process, and what it replaced
        # (put back by close()).
        self._sharing = False
        self._locks_before: "Optional[dict[str, Any]]" = None
        self._listener: "Optional[socket.socket]" = None
        self._activated = False
        self._lock_fd: "Optional[int]" = None
        self._bound: "Optional[tuple[int, int]]" = None
        self._started = time.monotonic()
        self._stamp = not os.environ.get("JOURNAL_STREAM")
        self._cwd = os.getcwd().encode("utf-8", "surrogateescape")
        self._stop_at = os.environ.get(STOP_AT_ENV)
        self._powers = caller.Powers()
        # Each call's step timings, one JSON line each (ipam.daemon.steps); None: not traced.
        self._trace = TraceFile(trace_steps) if trace_steps else None

    # -- the log --------------------------------------------------------------------
    def log(self, line: "str") -> "None":
        stream = self._log_stream or sys.stderr
        try:
            stream.write(self._stamped(line))
            stream.flush()
        except (OSError, ValueError):
            pass  # a log that cannot be written must not stop the calls

    def _log_at_once(self, line: "str") -> "None":
        """:meth:`log` from a signal handler: one write(2) of the line, past the stream's
        buffer and its lock, which the interrupted thread may hold."""
        stream = self._log_stream or sys.stderr
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a reentrant flush
            pass
        try:
            os.write(stream.fileno(), self._stamped(line).encode("utf-8", "backslashreplace"))
        except (OSError, ValueError, AttributeError):  # AttributeError: no fileno
            pass

    def _stamped(self, line: "str") -> "str":
        if self._stamp:
            now = time.time()
            line = "%s.%03dZ %s" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
                                    int(now * 1000) % 1000, line)
        return line + "\n"

    # -- start ----------------------------------------------------------------------
    def start(self) -> "None":
        """Take the socket (systemd's, or bound here), or raise IoFailure saying why
        not: another daemon serves it, or it is no socket of ours."""
        inherited = self._inherited()
        if inherited is not None:
            self._listener, self._activated = inherited, True
            self.socket_path = inherited.getsockname() or self.socket_path
        directory = os.path.dirname(self.socket_path)
        if not os.path.isdir(directory):
            paths.makedirs(directory, paths.DAEMON_DIR_MODE)
        self._take_lock()
        if self._listener is None:
            self._listener = self._bind()
        self._listener.setblocking(False)  # the threads' epoll says when to accept
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        if not self._sharing:
            self._locks_before = writer_lock.share_between_threads()
            self._sharing = True
        self.log("serving on %s (pid %d, up to %d calls at a time%s)"
                 % (self.socket_path, os.getpid(), self.max_calls,
                    ", socket from systemd" if self._activated else ""))
        if self.metrics_server is not None:
            self.metrics_server.start()
            self.log("metrics on http://%s:%d/metrics" % (
                "[%s]" % self.metrics_server.host if ":" in self.metrics_server.host
                else self.metrics_server.host or "*", self.metrics_server.port))
        with self._idle:
            for _ in range(self.pool_size):
                self._spawn()
        if self.periodic_gc is not None:
            self.periodic_gc.start(self.log, self.metrics)
            self.log(self.periodic_gc.describe())
        _notify("READY=1\nSTATUS=serving on %s" % self.socket_path)

    @staticmethod
    def _inherited() -> "Optional[socket.socket]":
        """The listening socket systemd passed (socket activation), if any."""
        if os.environ.get("LISTEN_PID") != str(os.getpid()):
            return None
        try:
            count = int(os.environ.get("LISTEN_FDS", "0"))
        except ValueError:
            return None
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # not for the calls' children, if any
        if count < 1:
            return None
        sock = socket.socket(fileno=_SD_LISTEN_FDS_START)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise IoFailure("the socket systemd passed is not a unix stream socket: use "
                            "ListenStream= with a path")
        return sock  # PID 1 makes it non-blocking (SOCK_NONBLOCK): so does start()

    def _take_lock(self) -> "None":
        lock = paths.daemon_lock(self.socket_path)
        import fcntl

        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise IoFailure("another node daemon (pid %s) is serving %s; stop it first, or "
                            "give this one another --socket" % (other, self.socket_path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        self._lock_fd = fd

    def _bind(self) -> "socket.socket":
        path = self.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise IoFailure("%s exists and is not a socket; refusing to replace it" % path)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                listening = True
            except OSError:
                listening = False
            finally:
                probe.close()
            if listening:
                raise IoFailure("something already listens on %s (a systemd socket unit?); "
                                "stop it first, or give this daemon another --socket" % path)
            os.unlink(path)  # left by a daemon that died: we hold the lock now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600 from the start: no moment when others may connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, paths.DAEMON_SOCKET_MODE)
        st = os.lstat(path)
        self._bound = (st.st_dev, st.st_ino)
        sock.listen(BACKLOG)
        return sock

    # -- serve ----------------------------------------------------------------------
    def serve(self) -> "int":
        """Accept until told to stop, then drain; returns the exit status (0, or 1 if
        calls were still running at the drain's end)."""
        if self._stop_pipe is None:  # made once, closed by close()
            self._stop_pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            self._wait_for_stop()
            return self._drain()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: "int", frame: "Any") -> "None":
        """The first signal drains; a second one, during the drain, stops at once (an
        operator's second Ctrl-C): the calls still running are cut off, and their
        clients run them in process.

        A handler runs in the main thread between two of its byte-codes, maybe while
        that thread holds a lock: the idle condition's (draining), a stream's, an
        event's (setting the stop event here once met the main thread inside that
        event's timed wait, between its wake-up and its return). Taking one here would
        wait for itself for ever: a daemon that never stops on SIGTERM. So the handler
        takes none: the first signal marks the stop and writes to a pipe, and the main
        thread's :meth:`_wait_for_stop` carries it out; the second reads the count
        unlocked and writes its line with one write(2)."""
        if not self._signalled and not self._stopping.is_set():
            self._signalled = True
            self._wake_stop()
            return
        left = self._busy  # unlocked: a count for the log line
        self._log_at_once("second signal: stopping now with %d call%s unanswered: their "
                          "clients run them in process" % (left, "" if left == 1 else "s"))
        self._unlink()
        os._exit(1)

    def stop(self) -> "None":
        self._stopping.set()
        self._wake_stop()

    def _wake_stop(self) -> "None":
        pipe = self._stop_pipe
        if pipe is not None:
            try:
                os.write(pipe[1], b"x")
            except OSError:  # full (woken already) or closed (stopped already)
                pass

    def _wait_for_stop(self) -> "None":
        """Until a stop signal or :meth:`stop`: each writes to a pipe this waits on (an
        interrupted select is resumed, and then finds it readable)."""
        assert self._stop_pipe is not None
        while not self._signalled and not self._stopping.is_set():
            select.select([self._stop_pipe[0]], [], [], 1.0)
        self.stop()

    def _drain(self) -> "int":
        """Stop taking calls, answer those taken (``drain_timeout`` at most), close."""
        _notify("STOPPING=1")
        self._unlink()
        deadline = time.monotonic() + self.drain_timeout
        with self._idle:
            busy = self._busy
        if busy:
            self.log("draining: %d call%s to answer, %g s at most"
                     % (busy, "" if busy == 1 else "s", self.drain_timeout))
        self._shut()
        gc_stopped = self._stop_gc(deadline)
        with self._idle:  # each thread leaves after its call
            while self._threads and time.monotonic() < deadline:
                self._idle.wait(max(min(deadline - time.monotonic(), 0.5), 0.01))
        self._close_listener()  # connections still queued in the kernel are reset
        with self._idle:
            left = self._busy
        if not gc_stopped:
            self.log("stopping with a gc run unfinished after %g s: its transaction rolls "
                     "back" % self.drain_timeout)
            return 1
        if left:
            self.log("stopping with %d call%s unanswered after %g s: their clients run them "
                     "in process" % (left, "" if left == 1 else "s", self.drain_timeout))
            return 1
        self.pool.close()
        self.log("stopped after %d calls" % self.calls)
        return 0

    def _unlink(self) -> "None":
        """Remove a socket bound here, if it is still ours: new clients then find none
        and run their calls in process at once. systemd's socket stays with systemd,
        which queues new connections for the daemon's next start."""
        if self._bound is None:
            return
        try:
            st = os.lstat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._bound:
                os.unlink(self.socket_path)
        except OSError:
            pass
        self._bound = None

    def _shut(self) -> "None":
        """No more accepts: wake every thread waiting for a connection (the wake-up
        pipe stays readable). Not shutdown() on the socket: systemd's socket is shared
        with systemd, which must keep it for the next start."""
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except OSError:
                pass

    def _stop_gc(self, deadline: "float") -> "bool":
        """Stop the periodic gc (a run in progress: until ``deadline``); whether it
        stopped."""
        if self.periodic_gc is None:
            return True
        return self.periodic_gc.stop(deadline - time.monotonic())

    def _close_listener(self) -> "None":
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> "None":
        """Release the socket and the lock (after :meth:`serve`, or a failed start)."""
        self._stopping.set()
        self._unlink()
        self._shut()
        self._close_listener()
        self._stop_gc(time.monotonic())
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with self._idle:
            alive = bool(self._threads)
        if self._trace is not None and not alive:
            self._trace.close()
        if self._sharing and not alive:
            self._sharing = False
            writer_lock.stop_sharing(self._locks_before)
        pipe, self._stop_pipe = self._stop_pipe, None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)
        if self._wake is not None and not alive:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    # -- threads --------------------------------------------------------------------
    def _spawn(self) -> "None":
        """One more thread waiting for a connection (``self._idle`` held)."""
        thread = threading.Thread(target=self._work, daemon=True,
                                  name="call-%d" % next(self._names))
        self._threads.add(thread)
        self._waiting += 1
        thread.start()

    def _work(self) -> "None":
        """A thread: take a connection and answer it, until the daemon stops, or until
        it has waited :data:`IDLE_TIMEOUT` while more than ``pool_size`` others wait too.
        Each accepts for itself (no hand-over between threads on the way), woken by its
        own epoll: EPOLLEXCLUSIVE wakes one thread per connection, not all, and the
        wake-up pipe wakes them all to stop. The last one waiting starts another before
        it serves its call (up to ``max_calls``), so a call that waits for a lock never
        keeps the next connection waiting; the threads a burst started wait for the next
        one a while, rather than leave and be started again."""
        listener, wake = self._listener, self._wake
        assert listener is not None and wake is not None
        me = threading.current_thread()
        poller = select.epoll()
        waiting = True
        try:
            poller.register(listener.fileno(), select.EPOLLIN | EPOLLEXCLUSIVE)
            poller.register(wake[0], select.EPOLLIN)
            while not self._stopping.is_set():
                with self._idle:
                    surplus = len(self._threads) > self.pool_size
                ready = poller.poll(IDLE_TIMEOUT if surplus else -1)
                if self._stopping.is_set():
                    return
                if not ready:
                    with self._idle:
                        if self._waiting > self.pool_size:
                            return
                    continue
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:  # another thread took it
                    continue
                except OSError as e:  # EMFILE and the like: say so, breathe, go on
                    self.log("accept failed: %s" % (e.strerror or e))
                    time.sleep(0.1)
                    continue
                with self._idle:
                    self._waiting -= 1
                    waiting = False
                    if not self._waiting and len(self._threads) < self.max_calls:
                        self._spawn()
                self._serve_one(conn)
                with self._idle:
                    self._waiting += 1
                    waiting = True
        finally:
            poller.close()
            with self._idle:
                if waiting:
                    self._waiting -= 1
                self._threads.discard(me)
                self._idle.notify_all()

    # -- one connection ---------------------------------------------------------------
    def _serve_one(self, conn: "socket.socket") -> "None":
        steps = Steps() if self._trace is not None else None
        with self._idle:
            self._busy += 1
        try:
            conn.setblocking(True)
            self._handle(conn, steps)
        except Exception as e:  # never lose a thread: log it, answer nothing more
            self.log("internal error: %r" % (e,))
        finally:
            conn.close()
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _pause(self, step: "str") -> "None":
        """Stop here, once, if a test asked (:data:`STOP_AT_ENV`)."""
        if step == self._stop_at:
            self._stop_at = None
            # To this thread: it stops before its next instruction, where kill() on the
            # process would have the main thread stop it, a moment after this one went on.
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)

    def _handle(self, conn: "socket.socket", steps: "Optional[Steps]" = None) -> "None":
        started = time.monotonic()
        pid, uid = client.peer_cred(conn)
        if uid not in (0, os.geteuid()):
            self.metrics.refused()
            self.log("refused pid=%d uid=%d: only root and uid %d may call"
                     % (pid, uid, os.geteuid()))
            self._refuse(conn, "uid %d may not use this daemon (only root and uid %d)"
                         % (uid, os.geteuid()))
            return
        try:
            kind, blobs = _read_request(conn, started + REQUEST_TIMEOUT)
        except (ValueError, OSError) as e:
            self.log("bad request from pid=%d: %s" % (pid, e))
            self._refuse(conn, "bad request: %s" % e)
            return
        if kind == client.HEALTH:
            self._send(conn, _reply(0, json.dumps(self.health()).encode(), b""))
            return
        if kind != client.CALL:
            self._refuse(conn, "unknown request %r" % kind)
            return
        with self._idle:
            self._calling += 1
        if steps is not None:
            steps.mark("request")
        try:
            self._answer_call(conn, pid, started, steps, *blobs)
        finally:
            with self._idle:
                self._calling -= 1

    def _answer_call(self, conn: "socket.socket", pid: "int", started: "float",
                     steps: "Optional[Steps]", raw_env: "bytes", cwd: "bytes",
                     data: "bytes") -> "None":
        self._pause("read")
        # The door's own work runs as a call's does (_running), its waits for the
        # client outside it.
        with self._running:
            env = system.environ(client.decode_environ(raw_env))
            conf = _config(data)
        if steps is not None:
            steps.mark("parse")
        try:
            with self._running:
                caller.check_peer(conn, pid, self._powers)
                if cwd != self._cwd and caller.relative_paths(conf):
                    raise caller.Declined("the config names paths relative to the "
                                          "caller's directory (%s)"
                                          % ", ".join(caller.relative_paths(conf)))
                paths_, bound = caller.plan(env, conf)
            if steps is not None:
                steps.mark("door")
            conn.sendall(client.PROVE + client.blob(b"\0".join(
                p.encode("utf-8", "surrogateescape") for p in paths_)))
            self._pause("proved")
            try:
                theirs = _read_views(conn, time.monotonic() + REQUEST_TIMEOUT)
            except ValueError as e:
                raise caller.Declined("no views from the caller: %s" % e) from None
            with self._running:
                caller.check_views(paths_, theirs)
            if steps is not None:
                steps.mark("views")
        except caller.Declined as e:
            self.metrics.declined()
            self.log("declined %s pid=%d: %s" % (_call_fields(env, conf), pid, e.args[0]))
            self._refuse(conn, e.args[0])
            return
        except OSError as e:  # the client went away while asked
            self.log("%s: the client went away before it was taken (%s)"
                     % (_call_fields(env, conf), e.strerror or e))
            return
        deadline = time.monotonic() + bound
        try:
            conn.sendall(client.TAKEN + client.blob(b"%g" % bound))
        except OSError as e:  # the client gave up waiting to be taken: not ours to run
            self.log("%s: the client went away before it was taken (%s): not run"
                     % (_call_fields(env, conf), e.strerror or e))
            return
        self._pause("taken")
        if steps is not None:
            steps.mark("taken")
        conn.settimeout(None)  # the call's own waits are bounded
        status, out, err = self.call(env, data, self._guard(conn, deadline, bound), steps)
        self._pause("committed")
        if steps is not None:
            steps.mark("render")
        self._send(conn, _reply(status, out.encode("utf-8"),
                                 err.encode("utf-8", "backslashreplace")))
        conn.close()  # the client is done: the log line is ours
        if steps is not None:
            steps.mark("answer")
        elapsed = time.monotonic() - started
        answer = _answer(out)
        self.metrics.call(env.get("CNI_COMMAND", "?"), _code(status, answer), elapsed)
        with self._idle:
            self.calls += 1
        self.log("%s ms=%.1f" % (_summary(env, conf, status, answer), elapsed * 1000))
        if steps is not None and self._trace is not None:
            steps.mark("logged")
            self._trace.write(steps.record(
                command=env.get("CNI_COMMAND", "?"), status=status,
                container=env.get("CNI_CONTAINERID", ""), client_pid=pid))

    def _guard(self, conn: "socket.socket", deadline: "float", bound: "float"
               ) -> "Callable[[], None]":
        """The call's last check before each COMMIT: within the bound its client was
        told, and that client still waiting. A client that gave up runs the call in
        process, so what it gave up on must not land (past this check, the COMMIT and
        the locks it holds order the two: the client's own run finds what landed)."""
        def guard() -> "None":
            self._pause("before-commit")
            if time.monotonic() > deadline:
                raise TryAgain("the call ran past its bound (%g s) and was not committed; "
                               "try again" % bound)
            if _hung_up(conn):
                raise Interrupted("the plugin that sent this call to the node daemon "
                                  "stopped waiting for it; not committed")
        return guard

    def call(self, env: "dict[str, str]", data: "bytes",
             before_commit: "Optional[Callable[[], None]]" = None,
             steps: "Optional[Steps]" = None) -> "tuple[int, str, str]":
        """One plugin call, as :func:`ipam.cni.main` runs it in a plugin process:
        (exit status, stdout, stderr)."""
        from ipam.cni import main

        out, err = io.StringIO(), io.StringIO()  # both go back to the client
        with self._running:
            status = main(env, io.BytesIO(data), out,
                          CallContext(pool=self.pool, before_commit=before_commit,
                                      idle=self._waiting_for_a_lock, steps=steps,
                                      stderr=err))
        return status, out.getvalue(), err.getvalue()

    @contextlib.contextmanager
    def _waiting_for_a_lock(self) -> "Iterator[None]":
        """A call waiting for a lock lets another run meanwhile (:attr:`_running`)."""
        self._running.release()
        try:
            yield
        finally:
            self._running.acquire()

    def _refuse(self, conn: "socket.socket", why: "str") -> "None":
        """Answer NOT_SERVED, then read and drop what the client still sends until it
        closes (:data:`REQUEST_TIMEOUT` at most): a unix socket closed with unread data
        resets the connection, and the client would lose the answer and say "went away"
        instead of why."""
        self._send(conn, _not_served(why))
        deadline = time.monotonic() + REQUEST_TIMEOUT
        try:
            conn.shutdown(socket.SHUT_WR)  # the client reads to the end, then closes
            while time.monotonic() < deadline:
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                if not conn.recv(1 << 16):
                    break
        except OSError:
            pass

    def _send(self, conn: "socket.socket", reply: "bytes") -> "None":
        try:
            conn.sendall(reply)
        except OSError as e:  # the client went away: what was committed stands
            self.log("could not answer (%s): the client went away" % (e.strerror or e))

    def health(self) -> "dict[str, Any]":
        """The health answer. ``in_flight`` counts calls, from their request read to
        their log line (so at 0, every call answered is counted in ``calls``); not
        health checks, nor connections still sending their request."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("host-local-sqlite")
        except PackageNotFoundError:
            ours = "unknown"
        with self._idle:
            calling, threads = self._calling, len(self._threads)
        return {"status": "draining" if self._stopping.is_set() else "ok",
                "pid": os.getpid(), "version": ours, "socket": self.socket_path,
                "uptime_s": round(time.monotonic() - self._started, 1),
                "calls": self.calls, "refused": self.metrics.refused_total,
                "declined": self.metrics.declined_total,
                "in_flight": calling, "threads": threads, "max_calls": self.max_calls,
                "pool_size": self.pool_size, "stores_open": self.pool.idle(),
                "stores_opened": self.pool.opened}


def _hung_up(conn: "socket.socket") -> "bool":
    """Whether the client closed its end (it sends nothing after its views)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | POLLRDHUP)
    events = poller.poll(0)
    if not events:
        return False
    if events[0][1] & (select.POLLHUP | POLLRDHUP | select.POLLERR):
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _notify(state: "str") -> "None":
    """Tell systemd (``Type=notify``) when it asked, through ``NOTIFY_SOCKET``."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    if where.startswith("@"):
        where = "\0" + where[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), where)
    except OSError:
        pass


def check_health(socket_path: "str", timeout: "float" = 5.0) -> "dict[str, Any]":
    """The health of the daemon at ``socket_path``; IoFailure saying why if there is
    none, or it does not answer within ``timeout`` seconds."""
    try:
        _, out, _ = client.ask(socket_path, client.MAGIC + client.HEALTH, timeout)
        health = json.loads(out)
    except client.Unanswered as e:
        raise IoFailure(str(e.args[0])) from None
    except ValueError:
        raise IoFailure("the node daemon at %s gave no health answer" % socket_path) from None
    return health


def serve(socket_path: "str" = paths.DAEMON_SOCKET, pool_size: "int" = DEFAULT_POOL_SIZE,
          drain_timeout: "float" = DEFAULT_DRAIN_TIMEOUT,
          max_calls: "int" = DEFAULT_MAX_CALLS,
          metrics_address: "Optional[str]" = None,
          usage: "Optional[Callable[[], list[dict[str, Any]]]]" = None,
          periodic_gc: "Optional[PeriodicGc]" = None,
          trace_steps: "Optional[str]" = None) -> "int":
    """Run a daemon until one of :data:`STOP_SIGNALS`; returns the exit status.

    ``metrics_address``: serve Prometheus metrics there (``HOST:PORT``), with the range
    gauges of ``usage()`` (:func:`ipam.admin.leases.stats` rows); ``periodic_gc``: run it;
    ``trace_steps``: append each call's step timings to this file (:mod:`ipam.daemon.steps`)."""
    server = None
    if metrics_address is not None:
        from ipam.daemon.metrics_http import MetricsServer

        server = MetricsServer(metrics_address, lambda: daemon.metrics.text())
    daemon = Daemon(socket_path, pool_size, drain_timeout, max_calls=max_calls,
                    metrics_server=server, periodic_gc=periodic_gc,
                    metrics=Metrics(usage), trace_steps=trace_steps)
    daemon.metrics.log = daemon.log
    try:
        daemon.start()
        status = daemon.serve()
    finally:
        daemon.close()
    if status:  # calls still running on threads: leave without waiting for them
        sys.stderr.flush()
        os._exit(status)
    return status
