"""The plugin as a thin client of the node daemon, and the wire format the two speak.

When ``ipamctl serve`` runs (:mod:`ipam.daemon.server`), a plugin call need not load the plugin
at all. This module runs first: it sends the call (the whole environment, the working
directory and stdin) over the daemon's unix socket and copies the answer (stdout,
stderr, exit status) back. It imports only modules that are built into the interpreter
or C (``_socket``, ``posix``), so a forwarded call costs an interpreter's start and one
round trip; the daemon runs the call with the plugin's own code (:func:`ipam.cni.main`).

Which socket, if any (the first that says):
1. the network config's ``ipam.daemon``: a socket path, or ``false`` for never;
2. the environment variable ``HOST_LOCAL_SQLITE_DAEMON`` (:data:`ipam.paths.DAEMON_ENV`):
   a socket path, or ``false``;
3. the default socket (:data:`ipam.paths.DAEMON_SOCKET`), when it exists.

Otherwise, or when the daemon cannot take the call, the call runs in this process
exactly as without a daemon: silently when no socket was named and none is there (no
daemon on this node; a rootless runtime, which may not enter root's socket directory);
saying why on stderr in every other case: a named socket that is missing, a daemon that
refuses the call, one run by a user that is neither root nor ours, one that stops
answering mid-call (killed, restarted). Running again in process is safe: ADD is
idempotent for a container and ifname, DEL always was, and CHECK, GC and STATUS change
nothing twice.

Every wait here is bounded. The connection is made at once or not at all. The daemon
must take the call within :data:`TAKE_TIMEOUT`, after it has asked what this process
sees at the paths the call may touch (its own mount namespace may show other files:
:func:`view`); a daemon that is stopped, or busy with its most calls, does not, and the
call runs here. Once taken, the daemon tells the call's bound (:func:`ipam.waits.
call_bound`: every lock wait and the work), and the answer waits that and
:data:`ANSWER_MARGIN` at most. Giving up closes the socket, and a daemon that finds its
client gone before COMMIT rolls the call back; one past COMMIT has committed what this
process's own run then finds (an ADD idempotent, a DEL done): either way, one lease.
"""
import posix
import sys

from ipam.paths import DAEMON_ENV, DAEMON_SOCKET
from ipam.process import MAX_STDIN, SIGNALS, armed, guard_process

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional

# The commands a daemon serves: those that open the store. VERSION and a bare call
# (which prints the plugin's "about" text) answer at once in process.
FORWARDED = frozenset(("ADD", "DEL", "CHECK", "GC", "STATUS"))
_OFF = ("false", "0", "off", "no")

# --- the wire format -------------------------------------------------------------------
# A request: MAGIC, a kind byte, then for a call three blobs (each a 4-byte big-endian
# length and the bytes): the environment (NUL-separated KEY=VALUE), the working
# directory, and stdin. Then messages, each a kind byte and its parts:
#   daemon -> client  PROVE (blob: the paths the call may touch, NUL-separated): the
#                     daemon asks what the caller sees at each (:func:`view`);
#   client -> daemon  VIEWS (blob: one view per path, NUL-separated, in order);
#   daemon -> client  TAKEN (blob: the call's bound in seconds, ASCII): the call is the
#                     daemon's now, and ends within the bound (:mod:`ipam.waits`);
#   daemon -> client  ANSWER (the exit status, one byte; blobs: stdout, stderr);
#   daemon -> client  NOT_SERVED (blob: why), instead of any of its messages.
# A health check is MAGIC and HEALTH, answered by ANSWER at once. The daemon closes after
# answering; the client closes when it gives up, which tells the daemon not to commit.
MAGIC = b"host-local-sqlite/2\n"
CALL = b"C"
HEALTH = b"H"
PROVE = b"P"
VIEWS = b"V"
TAKEN = b"T"
ANSWER = b"A"
NOT_SERVED = b"N"
# Seconds the daemon has to send each of PROVE and TAKEN: a daemon that is stopped
# (SIGSTOP, a frozen cgroup) or serving its most calls at once does not take a call,
# and the call runs in process at once rather than waiting with it.
TAKE_TIMEOUT = 1.0
# Seconds a taken call's answer may come after its bound: the COMMIT and the answer
# itself, after the daemon's last check of its bound (ipam.daemon.server).
ANSWER_MARGIN = 2.0
# The most bound a daemon may give (kubelet's CRI timeout is 120 s): anything else is not
# a daemon of this version, and the call runs in process.
MAX_BOUND = 120.0


def blob(data: "bytes") -> "bytes":
    return len(data).to_bytes(4, "big") + data


def read_blob(buf: "bytes", at: "int") -> "tuple[bytes, int]":
    """The blob at ``buf[at:]`` and the offset after it; ValueError if cut short."""
    end = at + 4 + int.from_bytes(buf[at:at + 4], "big")
    if at + 4 > len(buf) or end > len(buf):
        raise ValueError("cut short")
    return buf[at + 4:end], end


def parse_message(buf: "bytes") -> "tuple[bytes, list[bytes], int]":
    """``(kind, parts, length)`` of the daemon's message at the start of ``buf`` (an
    ANSWER's first part is its status byte); ValueError if it is cut short, IndexError
    if it is no message at all."""
    kind = buf[:1]
    if kind == ANSWER:
        if len(buf) < 2:
            raise ValueError("cut short")
        out, at = read_blob(buf, 2)
        err, at = read_blob(buf, at)
        return kind, [buf[1:2], out, err], at
    if kind in (PROVE, TAKEN, NOT_SERVED, VIEWS):
        part, at = read_blob(buf, 1)
        return kind, [part], at
    if not kind:
        raise ValueError("cut short")
    raise IndexError("not a message")


def request(env: "dict[bytes, bytes]", cwd: "bytes", data: "bytes") -> "bytes":
    """A call's request: its environment, working directory and stdin (the config)."""
    return MAGIC + CALL + blob(encode_environ(env)) + blob(cwd) + blob(data)


def encode_environ(env: "dict[bytes, bytes]") -> "bytes":
    return b"\0".join(k + b"=" + v for k, v in env.items())


def decode_environ(block: "bytes") -> "dict[bytes, bytes]":
    return dict(item.partition(b"=")[::2] for item in block.split(b"\0") if item)


def view(path: "str") -> "bytes":
    """What this process sees at ``path``: the device and inode of the file, or, where it
    does not exist yet, of its nearest existing ancestor followed by the rest of the
    path (``dev:ino:rest``); ``!errno`` where it cannot look. The daemon serves a call
    only where it sees the same at every path the call may touch: the same files, though
    a mount namespace of its own (a pod with hostPaths) may show them."""
    rest: "list[str]" = []
    at = path
    while True:
        try:
            st = posix.stat(at or "/")
        except (FileNotFoundError, NotADirectoryError):
            if not at.strip("/"):
                return b"!2"
            at, _, name = at.rstrip("/").rpartition("/")
            rest.append(name)
            continue
        except OSError as e:
            return b"!%d" % (e.errno or 0)
        tail = "/".join(reversed(rest)).encode("utf-8", "surrogateescape")
        return b"%d:%d:%s" % (st.st_dev, st.st_ino, tail)


def peer_cred(sock: "object") -> "tuple[int, int]":
    """(pid, uid) of the process at the other end of a unix socket (``SO_PEERCRED``:
    ``struct ucred`` is pid, uid, gid as three native ints)."""
    import _socket

    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # type: ignore
    return (int.from_bytes(cred[0:4], sys.byteorder),
            int.from_bytes(cred[4:8], sys.byteorder))


# --- the client ---------------------------------------------------------------------
class Unanswered(Exception):
    """The daemon did not answer this call; ``args[0]`` says why (None: say nothing)."""


class _Signalled(Exception):
    """SIGINT, SIGTERM or SIGHUP while waiting for the daemon; ``args[0]``: its number."""


def _interrupted(signum: "int") -> "int":
    """The error object an in-process call answers to the same signal (code 11): the
    runtime gives up on this call, and so does the daemon, which finds its client gone
    before COMMIT (if it was past it, a repeated ADD returns what it committed)."""
    from ipam import result
    from ipam.errors import Interrupted

    _write_all(1, result.error_output(Interrupted(
        "interrupted by %s while the node daemon ran the call; try again"
        % SIGNALS.get(signum, signum))).encode())
    return 1


def _config_choice(data: "bytes") -> "object":
    """``ipam.daemon`` from the config: a path, True, False, or None when absent or null
    (anything else is False: in process, which reports it as code 7). Parsed
    only when the word is there at all: most configs pay one scan of their bytes."""
    if b"daemon" not in data.lower():
        return None
    from ipam import jsonio

    try:
        conf = jsonio.loads(data.decode("utf-8", "replace"),
                            object_pairs_hook=lambda pairs: {k.lower(): v for k, v in pairs})
        choice = conf["ipam"]["daemon"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return None  # run in process, which reports what is wrong with the config
    if choice is None:
        return None  # null means unset, as everywhere in the config (ipam.config)
    return choice if isinstance(choice, (str, bool)) else False


def choose_socket(data: "bytes", env: "dict[bytes, bytes]") -> "tuple[Optional[str], bool]":
    """``(socket path or None, named)``: ``named`` when the config or the environment
    asked for this socket, so that its absence is worth a word."""
    choice = _config_choice(data)
    if choice is None:
        value = env.get(DAEMON_ENV.encode(), b"").decode("utf-8", "surrogateescape")
        if value:
            choice = False if value.lower() in _OFF else value
    if choice is False or choice == "":
        return None, False
    if choice is None or choice is True:
        return DAEMON_SOCKET, choice is True
    return str(choice), True


class Channel:
    """A connection to the daemon at ``path``: connected at once or not at all, and its
    peer checked (root or this user; ``SO_PEERCRED``, the kernel's word), then
    messages each read by a deadline. Raises :class:`Unanswered` saying why."""

    def __init__(self, path: "str", named: "bool" = True) -> "None":
        import _socket

        self.path = path
        self.buf = b""
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.settimeout(TAKE_TIMEOUT)
            try:
                self.sock.connect(path)
            except OSError as e:  # ENOENT, ECONNREFUSED, EACCES; EAGAIN: its queue is full
                raise Unanswered("cannot reach the node daemon at %s (%s)"
                                % (path, e.strerror or e) if named else None) from None
            uid = peer_cred(self.sock)[1]
            if uid not in (0, posix.geteuid()):
                raise Unanswered("the node daemon at %s runs as uid %d, neither root nor "
                                "this user: not trusting it" % (path, uid))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> "None":
        self.sock.close()

    def send(self, data: "bytes", timeout: "float", late: "str") -> "None":
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except TimeoutError:
            raise Unanswered(late) from None
        except OSError as e:  # EPIPE, ECONNRESET: it went away
            raise Unanswered("the node daemon at %s went away mid-call (%s)"
                            % (self.path, e.strerror or e)) from None

    def receive(self, timeout: "float", late: "str") -> "tuple[bytes, list[bytes]]":
        """The next message, within ``timeout`` seconds (``late``: what to say if not)."""
        from time import monotonic

        deadline = monotonic() + timeout
        while True:
            try:
                kind, parts, length = parse_message(self.buf)
                self.buf = self.buf[length:]
                return kind, parts
            except ValueError:
                pass
            except IndexError:
                raise Unanswered("the node daemon at %s stopped answering mid-call"
                                % self.path) from None
            try:
                self.sock.settimeout(max(deadline - monotonic(), 0.001))
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise Unanswered(late) from None
            except OSError as e:  # ECONNRESET: it went away
                raise Unanswered("the node daemon at %s went away mid-call (%s)"
                                % (self.path, e.strerror or e)) from None
            if not chunk:
                raise Unanswered("the node daemon at %s stopped answering mid-call"
                                % self.path)
            self.buf += chunk


def _expect(channel: "Channel", kind: "bytes", got: "tuple[bytes, list[bytes]]"
            ) -> "list[bytes]":
    if got[0] == NOT_SERVED:
        raise Unanswered("the node daemon at %s did not take the call: %s"
                        % (channel.path, got[1][0].decode("utf-8", "replace")))
    if got[0] != kind:
        raise Unanswered("the node daemon at %s stopped answering mid-call" % channel.path)
    return got[1]


def call(path: "str", request: "bytes", named: "bool" = True) -> "tuple[int, bytes, bytes]":
    """Run a call (``request``) on the daemon at ``path``: its exit status, stdout and
    stderr. :class:`Unanswered` when it did not take the call within
    :data:`TAKE_TIMEOUT` (each of its first two messages), declined it, or took it and
    gave no answer within the call's bound; the socket is closed before this returns,
    which tells the daemon to give up on a call it took and has not committed."""
    channel = Channel(path, named)
    try:
        untaken = "the node daemon at %s did not take the call within %g s (stopped, or " \
                  "serving its most calls at once)" % (path, TAKE_TIMEOUT)
        channel.send(request, TAKE_TIMEOUT, untaken)
        asked = _expect(channel, PROVE, channel.receive(TAKE_TIMEOUT, untaken))[0]
        views = [view(p.decode("utf-8", "surrogateescape")) for p in asked.split(b"\0") if p]
        channel.send(VIEWS + blob(b"\0".join(views)), TAKE_TIMEOUT, untaken)
        bound = _expect(channel, TAKEN, channel.receive(TAKE_TIMEOUT, untaken))[0]
        try:
            seconds = float(bound)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_BOUND:
            raise Unanswered("the node daemon at %s gave no bound for the call" % path)
        late = "the node daemon at %s took the call but gave no answer within its bound " \
               "(%g s) and %g s more; gave up on it" % (path, seconds, ANSWER_MARGIN)
        status, out, err = _expect(channel, ANSWER,
                                   channel.receive(seconds + ANSWER_MARGIN, late))
        return status[0], out, err
    finally:
        channel.close()


def ask(path: "str", request: "bytes", timeout: "float") -> "tuple[int, bytes, bytes]":
    """A request answered at once (a health check): the answer's status, stdout, stderr."""
    channel = Channel(path)
    try:
        late = "no answer from the node daemon at %s within %g s" % (path, timeout)
        channel.send(request, timeout, late)
        status, out, err = _expect(channel, ANSWER, channel.receive(timeout, late))
        return status[0], out, err
    finally:
        channel.close()


def _write_all(fd: "int", data: "bytes") -> "bool":
    try:
        while data:
            data = data[posix.write(fd, data):]
        return True
    except OSError:  # EPIPE: the runtime stopped reading; no one to tell
        return False


def forward() -> "tuple[Optional[int], Optional[bytes]]":
    """Try the call on the node daemon: ``(exit status, None)`` when it answered (its
    stdout and stderr are written), else ``(None, stdin)`` for the in-process call:
    the config bytes read here (None if stdin was not read)."""
    env = posix.environ
    command = env.get(b"CNI_COMMAND", b"").decode("ascii", "replace")
    if command not in FORWARDED:
        return None, None
    try:
        data = sys.stdin.buffer.read(MAX_STDIN + 1)
    except OSError:
        return None, None  # the in-process call reads again and reports it
    path, named = choose_socket(data, env)
    if path is None:
        return None, data
    if not named:
        try:
            posix.stat(path)
        except OSError:  # no daemon on this node: not even _socket's import (0.25 ms)
            return None, data
    try:
        cwd = posix.getcwd().encode("utf-8", "surrogateescape")
    except OSError:
        cwd = b""
    try:
        with armed(_Signalled):  # a signal is an error object here too, as in process
            status, out, err = call(path, request(env, cwd, data), named)
    except Unanswered as e:
        if e.args[0] is not None:
            sys.stderr.write("host-local-sqlite: %s; running the call in process\n"
                             % e.args[0])
        return None, data
    except _Signalled as e:
        return _interrupted(e.args[0]), None
    ok = _write_all(1, out)
    _write_all(2, err)
    return (status if ok else status or 1), None


def run(bundled: "bool" = False, forwarding: "bool" = True) -> "None":
    """The plugin's entry (the launcher's, the console script's, ``python -m ipam``):
    one CNI call, on the node daemon if it takes it, else in this process
    (:func:`ipam.cni.in_process`); then the process ends at once. ``bundled``:
    first serve the hot path's modules from the launcher's bundle (:mod:`ipam.install.bundle`),
    which a forwarded call never needs. ``forwarding`` False: in this process only, for
    the native thin client's fallback (native/client.c), which has offered the call to
    the daemon already and said why it did not take it.

    First of all, the process's guard (:func:`ipam.process.guard_process`): from here
    on, a signal of :data:`~ipam.process.SIGNALS` ends the call in one answer, or
    changes nothing."""
    guard_process()
    import gc

    gc.disable()  # a one-shot process: collecting cycles at exit buys nothing
    status, data = forward() if forwarding else (None, None)
    if status is None:
        if bundled:
            from ipam.install import bundle

            bundle.load()
        from ipam.cni import in_process

        status = in_process(data)
    posix._exit(status)
