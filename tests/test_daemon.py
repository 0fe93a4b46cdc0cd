"""The node daemon (ipam.daemon) in this process: its workers on threads, called through
its socket by the client's own exchange() or by the real plugin. Its log line, the
stderr it captures per call, the calls it declines, its health answer, how it takes its
socket (and refuses to take another's) and what a drain leaves behind. A daemon as a
process of its own (ipamctl serve: signals, SIGKILL mid-burst) is tested elsewhere."""
import fcntl
import io
import json
import os
import re
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
from importlib.metadata import version

import pytest
from helpers import cni_env, held, plugin_process, serve_daemon

from ipam import client, daemon, paths
from ipam.errors import IoFailure

SUBNET = {"subnet": "10.8.0.0/24"}


def call(sock, command, conf, cwd=None, **kw):
    """One call through the daemon's socket, as the client sends it: (status, out, err);
    Unanswered if the daemon declines it."""
    env = {k.encode(): v.encode() for k, v in cni_env(command, **kw).items()}
    request = client.MAGIC + client.CALL + client.blob(client.encode_environ(env)) + \
        client.blob((cwd or os.getcwd()).encode()) + client.blob(json.dumps(conf).encode())
    status, out, err = client.answer(str(sock), client.exchange(str(sock), request,
                                                                 timeout=30))
    return status, out.decode(), err.decode()


def raw(sock, request):
    """What the daemon answers ``request`` (bytes as sent)."""
    return client.exchange(str(sock), request, timeout=30)


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "d.sock"


# -- stderr per call -------------------------------------------------------------------
def test_stderr_is_captured_per_thread():
    real = io.StringIO()
    stderr = daemon._Stderr(real)
    both = threading.Barrier(2, timeout=10)
    got = {}

    def one_call(name):
        stderr.capture()
        both.wait()  # both capturing at once, writing in turns
        for i in range(100):
            stderr.write("%s%d;" % (name, i))
        both.wait()
        got[name] = stderr.release()
        stderr.write("after %s\n" % name)  # released: the daemon's log again

    threads = [threading.Thread(target=one_call, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    stderr.write("main\n")
    for t in threads:
        t.join(10)
    assert got == {n: "".join("%s%d;" % (n, i) for i in range(100)) for n in "ab"}
    assert sorted(real.getvalue().splitlines()) == ["after a", "after b", "main"]
    assert stderr.getvalue() == real.getvalue()  # anything else is the real stream's


def test_a_calls_warnings_go_to_its_client_not_the_log(sock, netconf):
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        status, out, err = call(sock, "ADD", netconf(SUBNET), container_id="c1",
                                args="IgnoreUnknown=1;K8S_POD_UID=a\x01b")
    assert status == 0, out
    assert err == 'host-local-sqlite: CNI_ARGS K8S_POD_UID not recorded: unprintable ' \
                  'characters: "a\\x01b"\n'
    assert "K8S_POD_UID" not in log.getvalue()


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
    assert daemon._summary(env, daemon._config(data), status, out) == line


def test_one_log_line_per_call(sock, netconf, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")  # journald stamps lines itself
    log = io.StringIO()
    with serve_daemon(sock, log=log):
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1")[0] == 0
        assert call(sock, "ADD", netconf(SUBNET), container_id="c1", ifname="bad/name")[0] == 1
    lines = [line for line in log.getvalue().splitlines()  # workers may still be logging
             if not line.startswith("draining: ")]
    assert lines[0] == "serving on %s (pid %d, 4 calls at a time)" % (sock, os.getpid())
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
    (b"GET / HTTP/1.0\r\nHost: node\r\n\r\n", "bad request: not a host-local-sqlite/1 request"),
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
                           "refused", "in_flight", "pool_size", "stores_open",
                           "stores_opened"}
    assert before["status"] == "ok" and before["pid"] == os.getpid()
    assert before["version"] == version("host-local-sqlite")
    assert before["socket"] == str(sock) and before["pool_size"] == 2
    assert isinstance(before["uptime_s"], float) and before["uptime_s"] >= 0
    fields = ("calls", "refused", "in_flight", "stores_open", "stores_opened")
    assert [before[k] for k in fields] == [0, 0, 0, 0, 0]
    assert [after[k] for k in fields] == [1, 0, 0, 1, 1]


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
        assert not any(w.is_alive() for w in d._workers)
        assert d.health()["status"] == "draining"
    assert log.getvalue().splitlines()[-1] == "stopped after 1 calls"
    with pytest.raises(client.Unanswered):
        client.exchange(str(sock), client.MAGIC + client.HEALTH, named=False, timeout=1)


def test_the_process_state_is_put_back_after_close(sock):
    from ipam import commands, writer_lock

    stderr, pool, locks = sys.stderr, commands.POOL, writer_lock._THREAD_LOCKS
    with serve_daemon(sock, log=io.StringIO()) as d:
        assert isinstance(sys.stderr, daemon._Stderr) and commands.POOL is d.pool
        assert writer_lock._THREAD_LOCKS is not None
    assert (sys.stderr, commands.POOL) == (stderr, pool)
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
    from ipam import writer_lock

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


def test_a_refusal_reaches_a_client_still_sending(sock):
    """A request refused before it was read whole (here: not ours, 1 MiB of it): the
    client, which reads only once it has sent everything, still gets the refusal."""
    with serve_daemon(sock, log=io.StringIO()):
        reply = client.exchange(str(sock), b"x" * (1 << 20), timeout=30)
    assert reply == client.NOT_SERVED + client.blob(
        b"bad request: not a host-local-sqlite/1 request")
