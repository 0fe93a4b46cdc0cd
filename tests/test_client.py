"""The plugin as a thin client (ipam.client): the wire format, which socket it picks, and
every way a daemon can fail to answer, each ending in the call run in process with the
same stdout as without a daemon. The daemons here are small servers on threads that
answer wrongly on purpose (and one run as another user); the plugin is the real one.
The real daemon's side is tests/test_daemon.py."""
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from helpers import plugin_process

from ipam import client
from ipam.daemon import server as daemon
from ipam.paths import DAEMON_ENV, DAEMON_SOCKET

SUBNET = {"subnet": "10.9.0.0/24"}


# -- the wire format ----------------------------------------------------------------------
def test_blobs_round_trip():
    parts = [b"", b"x", b"\0\xff" * 1000, b"=" * 7]
    buf = b"".join(client.blob(p) for p in parts)
    at, got = 0, []
    while at < len(buf):
        item, at = client.read_blob(buf, at)
        got.append(item)
    assert got == parts and at == len(buf)


@pytest.mark.parametrize("cut", [b"", b"\0\0\0", b"\0\0\0\x05abcd", client.blob(b"abc")[:-1]])
def test_a_blob_cut_short_is_a_value_error(cut):
    with pytest.raises(ValueError):
        client.read_blob(b"A" + cut, 1)


def test_environ_round_trips_values_with_equals_and_any_bytes():
    env = {b"CNI_ARGS": b"IgnoreUnknown=1;IP=10.9.0.5", b"EMPTY": b"",
           b"LATIN1": b"caf\xe9", b"RAW": b"\xff\xfe\x01", b"PATH": b"/bin:/usr/bin"}
    assert client.decode_environ(client.encode_environ(env)) == env
    assert client.decode_environ(b"") == {}


# -- which socket ---------------------------------------------------------------------------
def config(daemon=None, key=b'"daemon"', ipam_key=b'"ipam"'):
    value = b"" if daemon is None else b", " + key + b": " + daemon
    return (b'{"cniVersion": "1.0.0", "name": "n", ' + ipam_key +
            b': {"type": "host-local-sqlite"' + value + b'}}')


ENV = DAEMON_ENV.encode()


@pytest.mark.parametrize("data,env,expected", [
    # the config says first
    (config(b'"/run/x/d.sock"'), {}, ("/run/x/d.sock", True)),
    (config(b'"/run/x/d.sock"'), {ENV: b"false"}, ("/run/x/d.sock", True)),
    (config(b"true"), {ENV: b"/run/env.sock"}, (DAEMON_SOCKET, True)),
    (config(b"false"), {ENV: b"/run/env.sock"}, (None, False)),
    (config(b'"/run/y.sock"', key=b'"Daemon"', ipam_key=b'"IPAM"'), {}, ("/run/y.sock", True)),
    (config(b"false", key=b'"DAEMON"'), {}, (None, False)),
    # a value of the wrong kind: in process, which reports it (code 7)
    (config(b"5"), {ENV: b"/run/env.sock"}, (None, False)),
    (config(b"[]"), {}, (None, False)),
    (config(b'""'), {ENV: b"/run/env.sock"}, (None, False)),
    # null is unset, as everywhere in the config: the environment, then the default
    (config(b"null"), {ENV: b"/run/env.sock"}, ("/run/env.sock", True)),
    (config(b"null"), {}, (DAEMON_SOCKET, False)),
    # no ipam.daemon (the word elsewhere, or a config that does not parse)
    (b'{"name": "daemon", "ipam": {}}', {ENV: b"/run/env.sock"}, ("/run/env.sock", True)),
    (b'{"ipam": {"daemon": ', {}, (DAEMON_SOCKET, False)),
    (b'{"ipam": ["daemon"]}', {}, (DAEMON_SOCKET, False)),
    # then the environment
    (config(), {ENV: b"/run/env.sock"}, ("/run/env.sock", True)),
    (config(), {ENV: b"relative.sock"}, ("relative.sock", True)),
    (config(), {ENV: b"/run/\xff.sock"}, ("/run/\udcff.sock", True)),
    *[(config(), {ENV: off}, (None, False))
      for off in (b"false", b"FALSE", b"0", b"off", b"Off", b"no", b"NO")],
    (config(), {ENV: b""}, (DAEMON_SOCKET, False)),
    # then the default socket, not named: its absence is not worth a word
    (config(), {}, (DAEMON_SOCKET, False)),
    (config(), {b"OTHER": b"/run/env.sock"}, (DAEMON_SOCKET, False)),
])
def test_choose_socket(data, env, expected):
    assert client.choose_socket(data, env) == expected


# -- servers that answer wrongly ---------------------------------------------------------
class Server:
    """A listener on ``path`` that hands each connection to ``answer(conn)`` on a thread
    and keeps the requests it read."""

    def __init__(self, path, answer):
        self.path = str(path)
        self.answer = answer
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the test server did not stop in 10 s"
        self.sock.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)  # a test server waits no longer for a client
                self.answer(self, conn)

    def read(self, conn):
        """Read the whole request, as the daemon does."""
        kind, blobs = daemon._read_request(conn, time.monotonic() + 5)
        self.requests.append((kind, blobs))

    def take(self, conn, bound=b"5"):
        """Read the request, ask its views of no path, and take the call: what a daemon
        does before it runs one."""
        self.read(conn)
        conn.sendall(client.PROVE + client.blob(b""))
        daemon._read_views(conn, time.monotonic() + 5)
        conn.sendall(client.TAKEN + client.blob(bound))


def refuse(server, conn):
    server.read(conn)
    conn.sendall(client.NOT_SERVED + client.blob(b"busy for a test"))


def cut_after(reply):
    """Take the call, answer ``reply``, and close."""
    def answer(server, conn):
        server.take(conn)
        conn.sendall(reply)
    return answer


def reset(server, conn):
    """Go away without reading: the kernel resets the connection."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")


def _until_closed(conn):
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def hold(server, conn):
    """Read the request and never take it (a stopped daemon, or one with every thread
    busy): wait for the client to give up."""
    server.read(conn)
    _until_closed(conn)


def take_and_hold(bound):
    """Take the call with ``bound`` and never answer: wait for the client to give up."""
    def answer(server, conn):
        server.take(conn, bound)
        _until_closed(conn)
    return answer


# -- the plugin falls back --------------------------------------------------------------
def make_conf(data_dir):
    return {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": dict(SUBNET, type="host-local-sqlite", dataDir=str(data_dir))}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """stdout of an ADD with no daemon at all, on a fresh dataDir."""
    data_dir = tmp_path_factory.mktemp("baseline")
    out, err = plugin_process("ADD", make_conf(data_dir), env_extra={DAEMON_ENV: "false"},
                              container_id="c1")
    assert out.status == 0 and err == "", (out, err)
    assert out.json["ips"][0]["address"] == "10.9.0.2/24"
    return out.out


@pytest.fixture
def conf(tmp_path):
    """A config factory, on a fresh dataDir each time: the first ADD then gets the same
    address, and the same stdout, as the baseline's."""
    count = iter(range(100))
    return lambda: make_conf(tmp_path / ("data%d" % next(count)))


def add_via(path, conf, **kw):
    return plugin_process("ADD", conf(), env_extra={DAEMON_ENV: str(path)}, container_id="c1",
                          **kw)


def in_process(why):
    return "host-local-sqlite: %s; running the call in process\n" % why


def test_a_named_socket_that_is_missing_is_said_once(tmp_path, conf, baseline):
    path = tmp_path / "none.sock"
    out, err = add_via(path, conf)
    assert (out.status, out.out) == (0, baseline)
    assert err == in_process("cannot reach the node daemon at %s (No such file or directory)"
                             % path)


def test_a_named_socket_no_one_listens_on_is_said_once(tmp_path, conf, baseline):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(path))  # and closed: the file of a daemon that died
    out, err = add_via(path, conf)
    assert (out.status, out.out) == (0, baseline)
    assert err == in_process("cannot reach the node daemon at %s (Connection refused)" % path)


def test_no_socket_named_and_none_there_is_silent(tmp_path, conf, baseline):
    with pytest.raises(client.Unanswered) as e:
        client.Channel(str(tmp_path / "none.sock"), named=False)
    assert e.value.args == (None,)
    # the default socket: this node runs no daemon (the tests' own run on sockets of theirs)
    assert not os.path.exists(DAEMON_SOCKET), "a node daemon serves " + DAEMON_SOCKET
    out, err = plugin_process("ADD", conf(), container_id="c1")
    assert (out.status, out.out, err) == (0, baseline, "")


def test_a_refusal_runs_the_call_in_process_and_says_why(tmp_path, conf, baseline):
    path = tmp_path / "d.sock"
    with Server(path, refuse) as server:
        out, err = add_via(path, conf, cwd=str(tmp_path))
    assert (out.status, out.out) == (0, baseline)
    assert err == in_process("the node daemon at %s did not take the call: busy for a test"
                             % path)
    (kind, (env, cwd, stdin)), = server.requests  # what a daemon is sent
    env = client.decode_environ(env)
    assert kind == client.CALL and cwd == str(tmp_path).encode()
    assert env[b"CNI_COMMAND"] == b"ADD" and env[b"CNI_CONTAINERID"] == b"c1"
    assert env[ENV] == str(path).encode() and b'"dataDir"' in stdin


CUT_SHORT = [b"", client.ANSWER, client.ANSWER + b"\0" + b"\0\0\0\x40" + b'{"cniVersion"',
             client.ANSWER + b"\0" + client.blob(b"{}"), client.NOT_SERVED + b"\0\0",
             b"?garbage"]


@pytest.mark.parametrize("reply", CUT_SHORT)
def test_an_answer_cut_short_is_no_answer(tmp_path, reply):
    path = str(tmp_path / "d.sock")
    with Server(path, cut_after(reply)):
        with pytest.raises(client.Unanswered) as e:
            client.call(path, client.MAGIC + client.CALL + client.blob(b"") * 3)
    assert e.value.args == ("the node daemon at %s stopped answering mid-call" % path,)


@pytest.mark.parametrize("bound", [b"-1", b"121", b"nan", b"soon", b""])
def test_a_bound_that_is_none_is_no_answer(tmp_path, bound):
    path = str(tmp_path / "d.sock")
    with Server(path, take_and_hold(bound)):
        with pytest.raises(client.Unanswered) as e:
            client.call(path, client.MAGIC + client.CALL + client.blob(b"") * 3)
    assert e.value.args == ("the node daemon at %s gave no bound for the call" % path,)


@pytest.mark.parametrize("reply", [CUT_SHORT[0], CUT_SHORT[2]], ids=["nothing", "half-stdout"])
def test_an_answer_cut_short_runs_the_call_in_process(tmp_path, conf, baseline, reply):
    path = tmp_path / "d.sock"
    with Server(path, cut_after(reply)):
        out, err = add_via(path, conf)
    assert (out.status, out.out) == (0, baseline)
    assert err == in_process("the node daemon at %s stopped answering mid-call" % path)


def test_a_reset_connection_runs_the_call_in_process(tmp_path, conf, baseline):
    path = tmp_path / "d.sock"
    with Server(path, reset):
        out, err = add_via(path, conf)
    assert (out.status, out.out) == (0, baseline)
    assert err.startswith("host-local-sqlite: the node daemon at %s " % path)
    assert err.endswith("; running the call in process\n") and err.count("\n") == 1
    assert "went away mid-call" in err or "stopped answering mid-call" in err, err


def test_the_daemons_answer_is_copied_as_it_is(tmp_path, conf):
    path = tmp_path / "d.sock"
    reply = client.ANSWER + b"\x0b" + client.blob(b'{"code": 11}\n') + \
        client.blob(b"warning: \xff\n")
    with Server(path, cut_after(reply)):
        proc = subprocess.run([os.path.join(os.path.dirname(sys.executable),
                                            "host-local-sqlite")],
                              input=b"{}", capture_output=True, timeout=60,
                              env={DAEMON_ENV: str(path), "CNI_COMMAND": "DEL"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (11, b'{"code": 11}\n',
                                                           b"warning: \xff\n")


def test_a_call_not_taken_within_a_second_runs_in_process(tmp_path, conf, baseline):
    """A daemon that reads the call and does not take it (SIGSTOP, a frozen cgroup,
    every thread busy: the kernel still accepts connections): about a second, then
    the call runs in process."""
    path = tmp_path / "d.sock"
    with Server(path, hold):
        started = time.monotonic()
        out, err = add_via(path, conf)
        elapsed = time.monotonic() - started
    assert (out.status, out.out) == (0, baseline)
    assert err == in_process("the node daemon at %s did not take the call within 1 s "
                             "(stopped, or serving its most calls at once)" % path)
    assert client.TAKE_TIMEOUT <= elapsed < client.TAKE_TIMEOUT + 2, elapsed


def test_a_taken_call_is_waited_for_its_bound_and_no_longer(tmp_path):
    path = str(tmp_path / "d.sock")
    request = client.MAGIC + client.CALL + client.blob(b"") + client.blob(b"/") + \
        client.blob(b"{}")
    with Server(path, take_and_hold(b"0.5")):
        started = time.monotonic()
        with pytest.raises(client.Unanswered) as e:
            client.call(path, request)
        elapsed = time.monotonic() - started
    assert e.value.args == ("the node daemon at %s took the call but gave no answer within "
                            "its bound (0.5 s) and %g s more; gave up on it"
                            % (path, client.ANSWER_MARGIN),)
    assert 0.5 + client.ANSWER_MARGIN <= elapsed < 0.5 + client.ANSWER_MARGIN + 2


def test_the_views_asked_are_what_this_process_sees(tmp_path):
    """PROVE names paths; the client answers with its own view of each, in order: the
    device and inode of what exists, else of its nearest existing ancestor and the rest."""
    there = tmp_path / "there"
    there.mkdir()
    asked = [str(there), str(there / "not" / "yet"), str(tmp_path / "file") + "/under"]
    (tmp_path / "file").write_text("x")
    got = []

    def prove(server, conn):
        server.read(conn)
        conn.sendall(client.PROVE + client.blob("\0".join(asked).encode()))
        got.extend(daemon._read_views(conn, time.monotonic() + 5))
        conn.sendall(client.NOT_SERVED + client.blob(b"seen"))

    path = str(tmp_path / "d.sock")
    with Server(path, prove):
        with pytest.raises(client.Unanswered):
            client.call(path, client.MAGIC + client.CALL + client.blob(b"") * 3)
    st, f = os.stat(there), os.stat(tmp_path / "file")
    assert got == [b"%d:%d:" % (st.st_dev, st.st_ino), b"%d:%d:not/yet" % (st.st_dev, st.st_ino),
                   b"%d:%d:under" % (f.st_dev, f.st_ino)]
    assert [client.view(p) for p in asked] == got
    assert client.view("/") == b"%d:%d:" % (os.stat("/").st_dev, os.stat("/").st_ino)


LISTEN_AS_NOBODY = """
import os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # after the imports: the interpreter's own directory may be closed to it
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
sys.stdin.read()  # until the test closes it
"""


@pytest.mark.root
def test_a_daemon_run_by_another_user_is_not_trusted(conf, baseline):
    """A socket that another user listens on (where the default path's directory was
    left writable, say): the client sends it nothing and runs the call itself."""
    home = tempfile.mkdtemp(prefix="nobody-")
    os.chown(home, 65534, 65534)
    path = os.path.join(home, "d.sock")
    child = subprocess.Popen([sys.executable, "-I", "-c", LISTEN_AS_NOBODY, path],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 10)
        assert ready and child.stdout.readline() == b"listening\n", \
            "the listener run as uid 65534 did not start in 10 s"
        with pytest.raises(client.Unanswered) as e:
            client.Channel(path, named=False)
        why = "the node daemon at %s runs as uid 65534, neither root nor this user: " \
              "not trusting it" % path
        assert e.value.args == (why,)  # said even when no socket was named
        out, err = add_via(path, conf)
        assert (out.status, out.out, err) == (0, baseline, in_process(why))
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
        os.unlink(path)
        os.rmdir(home)
