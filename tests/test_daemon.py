"""The node daemon (ipam.daemon.server) in this process: its threads serving calls, called through
its socket by the client's own call() or by the real plugin. Its log line, the
stderr each call gets, the calls it declines, its health answer, how it takes its
socket (and refuses to take another's) and what a drain leaves behind. A daemon as a
process of its own (ipamctl serve: signals, SIGKILL mid-burst) is tested elsewhere."""
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from importlib.metadata import version

import pytest
from helpers import cni_env, held, plugin_process, serve_daemon

from ipam import client, paths
from ipam.daemon import server as daemon
from ipam.errors import IoFailure

SUBNET = {"subnet": "10.8.0.0/24"}


def call(sock, command, conf, cwd=None, **kw):
    """One call through the daemon's socket, as the client sends it: (status, out, err);
    Unanswered if the daemon declines it."""
    env = {k.encode(): v.encode() for k, v in cni_env(command, **kw).items()}
    request = client.request(env, (cwd or os.getcwd()).encode(), json.dumps(conf).encode())
    status, out, err = client.call(str(sock), request)
    return status, out.decode(), err.decode()


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "d.sock"


# -- stderr per call -------------------------------------------------------------------
def test_calls_at_once_each_get_their_own_warnings(sock, netconf, data_dir):
    """Each call's diagnostics are passed into it (its context's stderr), never a swap
    of the process's ``sys.stderr``: a call that warned and then waits for its network's
    lock, while another call warns and is answered, gets its own line alone; the
    daemon leaves ``sys.stderr`` as it found it, while it serves and after."""
    stderr = sys.stderr
    conf_a = netconf(dict(SUBNET, busyTimeout=30), name="a")
    conf_b = netconf(dict(SUBNET, busyTimeout=30), name="b")
    args = "IgnoreUnknown=1;K8S_POD_UID=%s\x01"
    waited = []
    with serve_daemon(sock, log=io.StringIO()) as d:
        assert sys.stderr is stderr
        assert call(sock, "ADD", conf_a, container_id="a0")[0] == 0  # a's lock file exists
        lock = _hold(data_dir / "a" / "lock")
        try:
            caller = threading.Thread(target=lambda: waited.append(call(
                sock, "ADD", conf_a, container_id="a1", args=args % "a")))
            caller.start()
            _in_flight(d, 1)
            answered = call(sock, "ADD", conf_b, container_id="b1", args=args % "b")
            assert sys.stderr is stderr
        finally:
            os.close(lock)
        caller.join(30)
    line = 'host-local-sqlite: CNI_ARGS K8S_POD_UID not recorded: unprintable ' \
           'characters: "%s\\x01"\n'
    assert answered == (0, answered[1], line % "b")
    assert [(status, err) for status, _, err in waited] == [(0, line % "a")]
    assert sys.stderr is stderr


def test_a_calls_warnings_go_to_its_client_not_the_log(sock, netconf):
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        status, out, err = call(sock, "ADD", netconf(SUBNET), container_id="c1",
                                args="IgnoreUnknown=1;K8S_POD_UID=a\x01b")
    assert status == 0, out
    assert err == 'host-local-sqlite: CNI_ARGS K8S_POD_UID not recorded: unprintable ' \
                  'characters: "a\\x01b"\n'
    assert "K8S_POD_UID" not in log.getvalue()


def test_the_mirrors_warnings_go_to_its_client_not_the_log(sock, netconf, data_dir):
    """What the mirror says about files it found (ipam.mirror.reconcile, through the call's
    NetworkFiles) reaches the call's client too, as a plugin process's stderr."""
    (data_dir / "mynet").mkdir()
    (data_dir / "mynet" / "10.8.0.2").write_bytes(b"")  # names no owner
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        status, out, err = call(sock, "ADD", netconf(SUBNET), container_id="c1")
    assert status == 0, out
    assert "10.8.0.3/24" in out
    assert "address file(s) name no owner" in err and "10.8.0.2" in err, err
    assert "no owner" not in log.getvalue()


# -- the log line ------------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [
    ("plain", "plain"), ("10.0.0.2/24,fd00::2/64", "10.0.0.2/24,fd00::2/64"), (7, "7"),
    ("café", "café"), ("", '""'), ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'), ("a=b", '"a=b"'), ("back\\slash", '"back\\\\slash"'),
    ("tab\there", '"tab\\there"'), ("new\nline", '"new\\nline"'),
    ("\x1b[31mred", '"\\u001b[31mred"'),
])
def test_logfmt_quotes_what_would_split_or_hide_a_field(value, text):
    assert daemon._logfmt(value) == text


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
CONF = b'{"cniVersion": "1.0.0", "name": "net"}'
V4V6 = "ips=10.0.0.2/24,fd00::2/64"


@pytest.mark.parametrize("env,data,status,out,line", [
    (ENV, CONF, 0, json.dumps({"cniVersion": "1.0.0", "ips": [
        {"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64"}]}),
     "ADD network=net container=c1 ifname=eth0 result=ok " + V4V6),
    (ENV, CONF, 0, json.dumps({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"},
                               "ip6": {"ip": "fd00::2/64"}}),
     "ADD network=net container=c1 ifname=eth0 result=ok " + V4V6),
    (dict(ENV, CNI_COMMAND="DEL"), CONF, 0, "",
     "DEL network=net container=c1 ifname=eth0 result=ok"),
    (ENV, CONF, 7, json.dumps({"cniVersion": "1.0.0", "code": 7,
                               "msg": 'invalid config: "x" y', "details": "z"}),
     'ADD network=net container=c1 ifname=eth0 result=error code=7 '
     'msg="invalid config: \\"x\\" y"'),
    (ENV, CONF, 1, "not json", 'ADD network=net container=c1 ifname=eth0 result=error '
                               'code=? msg=""'),
    ({"CNI_COMMAND": "GC"}, b'{"name": "my net"}', 0, "",
     'GC network="my net" container=- ifname=-'),
    ({}, b"[not a config", 0, "", "? network=? container=- ifname=- result=ok"),
    ({"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c 1"}, b"[]", 0, "",
     'CHECK network=? container="c 1" ifname=- result=ok'),
])
def test_summary(env, data, status, out, line):
    if "result=" not in line:
        line += " result=ok"
    assert daemon._summary(env, daemon._config(data), status, daemon._answer(out)) == line


def test_one_log_line_per_call(sock, netconf, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")  # journald stamps lines itself
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1")[0] == 0
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1", ifname="bad/name")[0] == 1
    lines = [line for line in log.getvalue().splitlines()  # workers may still be logging
             if not line.startswith("draining: ")]
    assert lines[0] == "serving on %s (pid %d, up to %d calls at a time)" % (
        sock, os.getpid(), daemon.DEFAULT_MAX_CALLS)
    error, ok = sorted(lines[1:3])  # each worker logs after its answer: in either order
    assert re.fullmatch(r"ADD network=mynet container=c1 ifname=eth0 result=ok "
                        r"ips=10\.8\.0\.2/24 ms=\d+\.\d", ok), ok
    assert re.fullmatch(r'ADD network=mynet container=c1 ifname=bad/name result=error '
                        r'code=\d+ msg="[^"]+" ms=\d+\.\d', error), error
    assert lines[3:] == ["stopped after 2 calls"]


def test_log_lines_are_stamped_without_journald(sock, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        pass
    for line in log.getvalue().splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (serving|stopped) ", line), line


# -- calls it declines -------------------------------------------------------------------
def rel_conf():
    return {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": dict(SUBNET, type="host-local-sqlite", dataDir="rel/data")}


def test_relative_paths_from_another_directory_are_declined(sock, tmp_path):
    """The daemon cannot run a call in its caller's directory (threads share one): the
    client runs it in process, where the relative dataDir means what it always did."""
    caller = tmp_path / "caller"
    caller.mkdir()
    with serve_daemon(sock, log=io.StringIO()) as d:
        out, err = plugin_process("ADD", rel_conf(), env_extra={paths.DAEMON_ENV: str(sock)},
                                  cwd=str(caller), container_id="c1")
        assert d.calls == 0
    assert out.status == 0, out
    assert err == ("host-local-sqlite: the node daemon at %s did not take the call: the "
                   "config names paths relative to the caller's directory (rel/data); "
                   "running the call in process\n" % sock)
    assert held(caller / "rel" / "data") == [("net", "10.8.0.2", "c1", "eth0")]


def test_relative_paths_from_the_daemons_directory_are_served(sock, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the daemon's directory, and the caller's
    with serve_daemon(sock, log=io.StringIO()):
        out, err = plugin_process("ADD", rel_conf(), env_extra={paths.DAEMON_ENV: str(sock)},
                                  cwd=str(tmp_path), container_id="c1")
        assert settled(sock)["calls"] == 1
    assert (out.status, err) == (0, ""), (out, err)
    assert held(tmp_path / "rel" / "data") == [("net", "10.8.0.2", "c1", "eth0")]


@pytest.mark.parametrize("request_,why", [
    (b"GET / HTTP/1.0\r\nHost: node\r\n\r\n", "bad request: not a host-local-sqlite/2 request"),
    (b"GET /", "bad request: the request was cut short"),
    (client.MAGIC + b"X", "unknown request b'X'"),
    (client.MAGIC + client.CALL + client.blob(b""), "bad request: the request was cut short"),
])
def test_what_is_no_call_is_answered_not_served(sock, request_, why):
    with serve_daemon(sock, log=io.StringIO()):
        reply = _send_and_close(sock, request_)
    assert reply == client.NOT_SERVED + client.blob(why.encode())


def _send_and_close(sock, data):
    """Send ``data`` and say no more (shut the write side), then read the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


CONNECT_AS_NOBODY = """
import os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
reply = b""
while chunk := s.recv(65536):
    reply += chunk
print(reply.hex())
"""


@pytest.mark.root
def test_a_peer_of_another_uid_is_refused(netconf, monkeypatch):
    """The socket is 0600; made world-writable here, so that uid 65534 can connect at
    all: the daemon still checks who it is (SO_PEERCRED)."""
    home = tempfile.mkdtemp(prefix="daemon-")
    os.chmod(home, 0o755)
    path = os.path.join(home, "d.sock")
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    log = io.StringIO()
    try:
        with serve_daemon(path, log=log) as d:
            os.chmod(path, 0o666)
            request = client.MAGIC + client.HEALTH
            proc = subprocess.run([sys.executable, "-I", "-c", CONNECT_AS_NOBODY, path,
                                   request.hex()], capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stderr
            health = d.health()
    finally:
        shutil.rmtree(home)
    reply = bytes.fromhex(proc.stdout.strip())
    assert reply == client.NOT_SERVED + client.blob(
        b"uid 65534 may not use this daemon (only root and uid 0)")
    assert health["refused"] == 1 and health["calls"] == 0
    assert re.search(r"^refused pid=\d+ uid=65534: only root and uid 0 may call$",
                     log.getvalue(), re.M), log.getvalue()


# -- health --------------------------------------------------------------------------------
def test_health(sock, netconf):
    with serve_daemon(sock, pool_size=2, log=io.StringIO()):
        before = daemon.check_health(str(sock), timeout=10)
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1")[0] == 0
        after = settled(sock)
    assert set(before) == {"status", "pid", "version", "socket", "uptime_s", "calls",
                           "refused", "declined", "in_flight", "threads", "max_calls",
                           "pool_size", "stores_open", "stores_opened"}
    assert before["status"] == "ok" and before["pid"] == os.getpid()
    assert before["version"] == version("host-local-sqlite")
    assert before["socket"] == str(sock) and before["pool_size"] == 2
    assert isinstance(before["uptime_s"], float) and before["uptime_s"] >= 0
    assert before["max_calls"] == daemon.DEFAULT_MAX_CALLS and before["threads"] >= 2
    fields = ("calls", "refused", "declined", "in_flight", "stores_open", "stores_opened")
    assert [before[k] for k in fields] == [0, 0, 0, 0, 0, 0]
    assert [after[k] for k in fields] == [1, 0, 0, 0, 1, 1]


def settled(sock):
    """The health answer once the calls answered are counted: a worker counts its call
    after the answer (and logs it), so a client can ask before that."""
    deadline = time.monotonic() + 10
    while True:
        health = daemon.check_health(str(sock), timeout=10)
        if health["in_flight"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.01)


def test_no_health_without_a_daemon(sock):
    with pytest.raises(IoFailure, match="cannot reach the node daemon at %s" % sock):
        daemon.check_health(str(sock), timeout=1)


# -- the socket ------------------------------------------------------------------------------
def test_socket_0600_in_a_created_directory_0700(tmp_path):
    path = tmp_path / "run" / "host-local-sqlite" / "d.sock"
    with serve_daemon(path, log=io.StringIO()):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        for directory in (path.parent, path.parent.parent):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert (tmp_path / "run" / "host-local-sqlite" / "d.sock.lock").read_text() == \
            "%d\n" % os.getpid()


def test_a_second_daemon_on_the_same_socket_refuses(sock):
    with serve_daemon(sock, log=io.StringIO()) as first:
        second = daemon.Daemon(str(sock), log=io.StringIO())
        with pytest.raises(IoFailure) as e:
            second.start()
        second.close()
        assert str(e.value.msg) == (
            "another node daemon (pid %d) is serving %s; stop it first, or give this one "
            "another --socket" % (os.getpid(), sock))
        assert daemon.check_health(str(sock), timeout=10)["pid"] == os.getpid()
        assert first.socket_path == str(sock) and os.path.exists(sock)


def test_a_stale_socket_is_replaced(sock):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock))  # and closed: the socket file of a daemon that died
    with serve_daemon(sock, log=io.StringIO()):
        assert daemon.check_health(str(sock), timeout=10)["status"] == "ok"


def test_a_regular_file_at_the_socket_path_is_refused(sock):
    sock.write_text("not mine\n")
    with pytest.raises(IoFailure) as e:
        with serve_daemon(sock, log=io.StringIO()):
            pass
    assert e.value.msg == "%s exists and is not a socket; refusing to replace it" % sock
    assert sock.read_text() == "not mine\n"


def test_a_socket_something_listens_on_is_refused(sock):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(sock))
        other.listen(1)
        with pytest.raises(IoFailure) as e:
            with serve_daemon(sock, log=io.StringIO()):
                pass
        assert e.value.msg == ("something already listens on %s (a systemd socket unit?); "
                               "stop it first, or give this daemon another --socket" % sock)
        other.settimeout(5)
        conn, _ = other.accept()  # the probe's connection, to the listener still there
        conn.close()


# -- the drain -------------------------------------------------------------------------------
def test_after_the_drain_the_socket_is_gone_and_the_stores_closed(sock, netconf, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    log = io.StringIO()
    with serve_daemon(sock, log=log) as d:
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1")[0] == 0
        stores = [s for idle in d.pool._idle.values() for s in idle]
        assert len(stores) == 1
        d.stop()
        assert d._drain() == 0
        assert not os.path.exists(sock)
        with pytest.raises(sqlite3.ProgrammingError):
            stores[0].conn.execute("SELECT 1")
        assert d.pool.idle() == 0
        assert not d._threads
        assert d.health()["status"] == "draining"
    assert log.getvalue().splitlines()[-1] == "stopped after 1 calls"
    with pytest.raises(client.Unanswered):
        client.ask(str(sock), client.MAGIC + client.HEALTH, timeout=1)


def test_the_process_state_is_put_back_after_close(sock):
    """The daemon itself, not a test's helper, puts back what it set for the process:
    left set, the writers' thread queues made every later lock in the process queue
    and stamp its lock file's mtime (test_importer met it, after a test here)."""
    from ipam.store import writer_lock

    stderr, locks = sys.stderr, writer_lock._THREAD_LOCKS
    d = daemon.Daemon(str(sock), log=io.StringIO())
    try:
        d.start()
        assert sys.stderr is stderr  # each call's stderr is passed in, never swapped
        assert writer_lock._THREAD_LOCKS is not None
        d.stop()
        assert d._drain() == 0
    finally:
        d.close()
    assert sys.stderr is stderr
    assert writer_lock._THREAD_LOCKS is locks


def test_a_call_in_flight_is_answered_before_the_drain_ends(sock, netconf, data_dir):
    """stop() while a call waits for host-local's lock (held here): the drain waits
    for the call, whose client gets its answer."""
    answers = []
    with serve_daemon(sock, log=io.StringIO()) as d:
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1")[0] == 0
        assert settled(sock)["calls"] == 1
        fd = os.open(data_dir / "mynet" / "lock", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            caller = threading.Thread(target=lambda: answers.append(
                call(sock, "ADD", netconf(SUBNET), container_id="c2")))
            caller.start()
            deadline = time.monotonic() + 10
            while d.health()["in_flight"] == 0:
                assert time.monotonic() < deadline, "the call did not reach the daemon in 10 s"
                time.sleep(0.01)
            d.stop()
            threading.Timer(0.3, os.close, (fd,)).start()  # closing drops the flock
            fd = None
            assert d._drain() == 0
        finally:
            if fd is not None:
                os.close(fd)
        caller.join(10)
    assert [a[0] for a in answers] == [0], answers
    assert [r[2] for r in held(data_dir)] == ["c1", "c2"]


def test_serve_drains_on_sigterm_and_puts_the_handlers_back(sock, netconf):
    """serve() on the main thread (signals reach no other), SIGTERM sent to this process
    once its handler is in place: the call answered, the drain clean, the handlers back."""
    from ipam.store import writer_lock

    before = signal.getsignal(signal.SIGTERM)
    saved = writer_lock._THREAD_LOCKS
    d = daemon.Daemon(str(sock), log=io.StringIO())
    answers, problems = [], []

    def call_then_terminate():
        try:
            answers.append(call(sock, "ADD", netconf(SUBNET), container_id="c1"))
        except client.Unanswered as e:
            problems.append(e)
        deadline = time.monotonic() + 10
        while signal.getsignal(signal.SIGTERM) != d._on_signal:
            if time.monotonic() > deadline:  # never kill pytest with SIGTERM's default
                problems.append("serve() did not take SIGTERM in 10 s")
                d.stop()
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        d.start()
        caller = threading.Thread(target=call_then_terminate)
        caller.start()
        assert d.serve() == 0
        caller.join(10)
    finally:
        d.close()
        writer_lock._THREAD_LOCKS = saved
    assert not problems and [a[0] for a in answers] == [0], (problems, answers)
    assert signal.getsignal(signal.SIGTERM) is before and not sock.exists()


def test_the_signal_handler_takes_no_lock_the_interrupted_thread_may_hold(sock):
    """A handler runs in the main thread between two of its byte-codes: here, as if
    SIGTERM came while that thread held the idle condition (draining) and the stop
    event's lock (inside its timed wait). The first signal must still mark the stop, and
    wake the wait for it, without waiting for either: a handler that took one waited for
    itself, and the daemon never stopped."""
    log = io.StringIO()
    d = daemon.Daemon(str(sock), log=log)
    marked = threading.Event()

    def interrupted():
        with d._idle, d._stopping._cond:
            d._on_signal(signal.SIGTERM, None)
        marked.set()

    d.start()
    try:
        d._stop_pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        threading.Thread(target=interrupted, daemon=True).start()
        assert marked.wait(10), "the handler waited for a lock its thread held"
        assert d._signalled and os.read(d._stop_pipe[0], 16) == b"x"
        d._wait_for_stop()  # returns at once: the stop was marked
        assert d._stopping.is_set()
        assert d._drain() == 0
    finally:
        if marked.is_set():  # else the stuck thread holds the locks close() takes
            d.close()


def test_a_refusal_reaches_a_client_still_sending(sock):
    """A request refused before it was read whole (here: not ours, 1 MiB of it): the
    client, which reads only once it has sent everything, still gets the refusal."""
    with serve_daemon(sock, log=io.StringIO()):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(sock))
            s.sendall(b"x" * (1 << 20))
            reply = s.recv(65536)
    assert reply == client.NOT_SERVED + client.blob(
        b"bad request: not a host-local-sqlite/2 request")


# -- the same waits as in process ----------------------------------------------------------
def _hold(path):
    """An exclusive flock on ``path``, held until the fd is closed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _in_flight(d, count, seconds=10.0):
    deadline = time.monotonic() + seconds
    while d.health()["in_flight"] < count:
        assert time.monotonic() < deadline, "%d calls did not reach the daemon in %g s" % (
            count, seconds)
        time.sleep(0.01)


def test_calls_waiting_for_one_networks_lock_hold_up_no_other_network(sock, netconf,
                                                                       data_dir):
    """Eight calls wait for network a's lock (held here, as a stopped Go plugin would):
    network b's call is answered at once, as in process; a's calls go on when it goes."""
    conf_a = netconf(dict(SUBNET, busyTimeout=30), name="a")
    conf_b = netconf(dict(SUBNET, busyTimeout=30), name="b")
    results = []
    with serve_daemon(sock, log=io.StringIO()) as d:
        assert call(sock, "ADD", conf_a, container_id="a0")[0] == 0  # a's lock file exists
        lock = _hold(data_dir / "a" / "lock")
        try:
            callers = [threading.Thread(target=lambda i=i: results.append(
                call(sock, "ADD", conf_a, container_id="a%d" % i))) for i in range(1, 9)]
            for t in callers:
                t.start()
            _in_flight(d, 8)
            threads = d.health()["threads"]  # 8 calls, and at least one more waiting
            started = time.monotonic()
            status, _, _ = call(sock, "ADD", conf_b, container_id="b1")
            elapsed = time.monotonic() - started
        finally:
            os.close(lock)
        for t in callers:
            t.join(30)
    assert status == 0 and elapsed < 0.5, elapsed
    assert sorted(r[0] for r in results) == [0] * 8
    assert 9 <= threads <= daemon.DEFAULT_MAX_CALLS


def test_past_max_calls_a_call_is_not_taken_and_runs_in_process(sock, netconf, data_dir):
    conf_a = netconf(dict(SUBNET, busyTimeout=30), name="a")
    conf_b = netconf(SUBNET, name="b")
    results = []
    with serve_daemon(sock, pool_size=1, max_calls=2, log=io.StringIO()) as d:
        assert call(sock, "ADD", conf_a, container_id="a0")[0] == 0
        lock = _hold(data_dir / "a" / "lock")
        try:
            callers = [threading.Thread(target=lambda i=i: results.append(
                call(sock, "ADD", conf_a, container_id="a%d" % i))) for i in (1, 2)]
            for t in callers:
                t.start()
            _in_flight(d, 2)
            threads = d.health()["threads"]
            out, err = plugin_process("ADD", conf_b, env_extra={paths.DAEMON_ENV: str(sock)},
                                      container_id="b1")
        finally:
            os.close(lock)
        for t in callers:
            t.join(30)
    assert threads == 2
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.8.0.2/24"
    assert err == ("host-local-sqlite: the node daemon at %s did not take the call within "
                   "1 s (stopped, or serving its most calls at once); running the call in "
                   "process\n" % sock)
    assert [r[0] for r in results] == [0, 0]


def test_a_request_must_arrive_whole_within_the_request_timeout(sock, monkeypatch):
    """A peer that trickles its request (a byte now and then) is refused once
    REQUEST_TIMEOUT has passed since it connected, however often it sends."""
    monkeypatch.setattr(daemon, "REQUEST_TIMEOUT", 0.5)
    with serve_daemon(sock, log=io.StringIO()):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(sock))
            started = time.monotonic()
            s.sendall(client.MAGIC + client.CALL + (4096).to_bytes(4, "big"))
            reply = b""
            s.setblocking(False)
            while not reply and time.monotonic() - started < 10:
                try:
                    s.send(b"\0")
                except OSError:
                    pass
                ready, _, _ = select.select([s], [], [], 0.1)
                if ready:
                    reply = s.recv(65536)
            elapsed = time.monotonic() - started
    assert reply == client.NOT_SERVED + client.blob(
        b"bad request: the request did not arrive whole within 0.5 s")
    assert 0.5 <= elapsed < 2, elapsed


def _send_call(sock, conf, container_id):
    """A client's first steps, by hand: the request sent; the daemon's PROVE read."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(sock))
    env = {k.encode(): v.encode() for k, v in cni_env("ADD", container_id).items()}
    s.sendall(client.request(env, os.getcwd().encode(), json.dumps(conf).encode()))
    return s, _message(s)


# What a socket received past the message read last: a fast call's TAKEN and ANSWER
# can come in one chunk (seen under load, the database refused at once).
_UNREAD = weakref.WeakKeyDictionary()


def _message(s):
    buf = _UNREAD.pop(s, b"")
    while True:
        try:
            kind, parts, length = client.parse_message(buf)
            _UNREAD[s] = buf[length:]
            return kind, parts
        except ValueError:
            chunk = s.recv(65536)
            assert chunk, "the daemon closed: %r" % buf
            buf += chunk


def test_a_caller_that_sees_other_files_is_declined(sock, netconf, data_dir):
    with serve_daemon(sock, log=io.StringIO()) as d:
        s, (kind, (asked,)) = _send_call(sock, netconf(SUBNET), "c1")
        with s:
            db = paths.default_database(str(data_dir))
            assert kind == client.PROVE and asked.split(b"\0") == [str(data_dir).encode(),
                                                                   db.encode()]
            s.sendall(client.VIEWS + client.blob(b"1:2:\0" + client.view(db)))
            kind, (why,) = _message(s)
        declined = d.health()["declined"]
    assert kind == client.NOT_SERVED and why.decode().startswith(
        "the caller sees other files than the node daemon at %s (1:2: against " % data_dir)
    assert declined == 1 and not os.path.exists(paths.default_database(str(data_dir)))


@pytest.mark.parametrize("ipam,bound", [
    ({}, b"63"), ({"lockWaitLimit": 5}, b"8"),
    ({"database": "postgresql://127.0.0.1:1/none"}, None)])
def test_the_bound_given_is_the_calls_own(sock, netconf, ipam, bound):
    from ipam.daemon import caller

    conf = netconf(dict(SUBNET, **ipam))
    with serve_daemon(sock, log=io.StringIO()):
        s, (kind, (asked,)) = _send_call(sock, conf, "c1")
        with s:
            views = [client.view(p.decode()) for p in asked.split(b"\0")]
            s.sendall(client.VIEWS + client.blob(b"\0".join(views)))
            kind, (given,) = _message(s)
            assert kind == client.TAKEN
            assert float(given) == caller.plan({}, daemon._config(json.dumps(conf).encode()))[1]
            assert bound is None or given == bound
            kind, parts = _message(s)  # the answer still comes
            assert kind == client.ANSWER


def test_a_call_whose_client_left_is_not_committed(sock, netconf, data_dir):
    """The client takes its TAKEN and goes (its signal, or its bound run out) while the
    call waits for a network's lock: the call reaches its last check before COMMIT,
    finds no one waiting, and rolls back, as a signal rolls back a call in process."""
    conf = netconf(dict(SUBNET, busyTimeout=30))
    log = io.StringIO()
    with serve_daemon(sock, log=log) as d:
        assert call(sock, "ADD", conf, container_id="c0")[0] == 0
        lock = _hold(data_dir / "mynet" / "lock")
        try:
            s, (kind, (asked,)) = _send_call(sock, conf, "c1")
            with s:
                s.sendall(client.VIEWS + client.blob(b"\0".join(
                    client.view(p.decode()) for p in asked.split(b"\0"))))
                assert _message(s)[0] == client.TAKEN
        finally:
            os.close(lock)
        deadline = time.monotonic() + 10
        while "container=c1" not in log.getvalue():
            assert time.monotonic() < deadline, log.getvalue()
            time.sleep(0.01)
        assert d.calls == 2
    line = [x for x in log.getvalue().splitlines() if "container=c1" in x][0]
    assert "result=error code=11" in line and "stopped waiting for it" in line, line
    assert [r[2] for r in held(data_dir)] == ["c0"]


def test_first_calls_on_new_databases_at_once_each_create_theirs(sock, netconf, tmp_path):
    """Eight first ADDs on eight new dataDirs at once: each thread creates its database's
    schema (one alembic migration at a time in the process) and answers."""
    results = []
    confs = [netconf(dict(SUBNET, dataDir=str(tmp_path / ("data%d" % i)))) for i in range(8)]
    with serve_daemon(sock, log=io.StringIO()):
        callers = [threading.Thread(target=lambda c=c: results.append(
            call(sock, "ADD", c, container_id="c1"))) for c in confs]
        for t in callers:
            t.start()
        for t in callers:
            t.join(120)
    assert [r[0] for r in results] == [0] * 8, results


@pytest.mark.parametrize("args,message", [
    (["--gc-cri", "unix:///run/containerd/containerd.sock"], "need --gc-interval"),
    (["--gc-previous-boots"], "need --gc-interval"),
    (["--gc-interval", "60"], "--gc-interval needs the live attachments"),
    (["--gc-interval", "60", "--gc-cri", "unix:///x", "--gc-valid-file", "/x"],
     "give one of --gc-cri and --gc-valid-file"),
    (["--gc-interval", "0.5", "--gc-previous-boots"], "0.5 is not in the range x>=1"),
    (["--metrics", "9731"], "is not HOST:PORT"),
    (["--metrics", "localhost:http"], "is not HOST:PORT"),
])
def test_serve_refuses_gc_and_metrics_options_that_do_not_fit(ctl, tmp_path, args, message):
    """A periodic gc without a list, a list without a period, two lists, a metrics
    address without a port: usage errors, before anything is bound."""
    sock = tmp_path / "d.sock"
    result = ctl("serve", "--socket", str(sock), *args, expect=2)
    assert message in result.output
    assert not sock.exists()


def test_periodic_gc_of_earlier_boots_alone(store, tmp_path):
    """--gc-previous-boots alone: a run releases the lease of an earlier boot and keeps
    this boot's, with no list; its log line and counts say so."""
    from helpers import note, put

    from ipam.daemon import gc_periodic, metrics

    data = str(tmp_path)
    note(store, "net", data, "10.5.0.0/24")
    put(store, "net", "10.5.0.2", "old", boot="earlier", at=time.time() - 3600)
    put(store, "net", "10.5.0.3", "now", at=time.time() - 3600)
    lines, counts = [], metrics.Metrics()
    periodic = gc_periodic.PeriodicGc(lambda: contextlib.nullcontext(store), data, 60,
                                      None, previous_boots=True, grace=0)
    periodic._log, periodic._metrics = lines.append, counts
    report = periodic.run_once()
    assert [lease.container_id for lease in report.released] == ["old"]
    assert lines[0].startswith("gc run=1 result=ok networks=1 released=1 kept=0 ")
    assert counts.gc_runs == {"ok": 1} and counts.gc_released == {"net": 1}
    assert [lease.container_id for lease in store.leases("net")] == ["now"]
