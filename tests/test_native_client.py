"""The thin client in C (native/client.c): the Python client's rules, rule for rule.

Every run here is of the sanitized build (``make native-asan``: AddressSanitizer and
UndefinedBehaviorSanitizer, any report fatal), against a real ``ipamctl serve``, against
hostile servers (real peers on a unix socket that send what no daemon of ours sends), and
with the real launcher as the in-process plugin it falls back to. The parsers are
compared with ipam.client's on random and mutated inputs (the bounded fuzz run; longer:
``make fuzz``)."""
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from ipam import client, paths, process
from ipam.install import frozen, launcher, native
from tests.helpers import (
    PLUGIN,
    NodeDaemon,
    cni_env,
    elf_segment_types,
    holds_flock,
    wait_until,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build", "native")
SUBNET = {"subnet": "10.9.0.0/24"}
# A sanitizer's report ends the run with these, never the plugin's own 0, 1 or 7.
SANITIZERS = {"ASAN_OPTIONS": "exitcode=86:abort_on_error=0:detect_leaks=0",
              "UBSAN_OPTIONS": "halt_on_error=1:exitcode=87:print_stacktrace=1"}
FALLBACK = "; running the call in process\n"


@pytest.fixture(scope="module")
def builds():
    """The shipped build and the sanitized builds, by the Makefile's own rules."""
    subprocess.run(["make", "-s", "-C", REPO, "native", "native-asan"], check=True,
                   timeout=300, capture_output=True)
    return {name: os.path.join(BUILD, name)
            for name in ("host-local-sqlite", "host-local-sqlite-asan", "probe-asan")}


_LAUNCHER_PATHS = []


@pytest.fixture
def bin_dir(tmp_path, builds):
    """A CNI bin directory as install-plugin would lay it out: the native client as the
    plugin, the launcher beside it as its in-process plugin."""
    d = tmp_path / "bin"
    d.mkdir()
    with open(builds["host-local-sqlite-asan"], "rb") as f:
        (d / paths.PLUGIN_NAME).write_bytes(f.read())
    os.chmod(d / paths.PLUGIN_NAME, 0o755)
    if not _LAUNCHER_PATHS:
        _LAUNCHER_PATHS.append(launcher.install_paths())
    launcher.install(str(d), paths.PLUGIN_NAME + ".in-process", paths=_LAUNCHER_PATHS[0],
                     forwarding=False)
    return d


@pytest.fixture
def conf(data_dir):
    def make(**ipam):
        return {"cniVersion": "1.0.0", "name": "nat", "type": "ipvlan", "master": "foo0",
                "ipam": dict({"type": "host-local-sqlite", "dataDir": str(data_dir)},
                             **SUBNET, **ipam)}
    return make


def run(program, command, conf, env_extra=None, container_id="c1", timeout=30):
    """The program run once as a runtime runs it: (status, stdout, stderr), checked for
    sanitizer reports and tracebacks."""
    env = {"PATH": os.environ.get("PATH", ""), **SANITIZERS,
           **cni_env(command, container_id=container_id), **(env_extra or {})}
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    proc = subprocess.run([str(program)], input=data, env=env, capture_output=True,
                          timeout=timeout)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode not in (86, 87), err
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert "Traceback" not in err, err
    return proc.returncode, proc.stdout.decode(), err


# -- the constants and the build ------------------------------------------------------
def test_constants_match_the_python_client():
    with open(os.path.join(REPO, "native", "client.h")) as f:
        defines = dict(re.findall(r"^#define (\w+) (.+)$", f.read(), re.M))
    assert json.loads(defines["MAGIC"]).encode() == client.MAGIC
    assert int(defines["TAKE_TIMEOUT_MS"]) == client.TAKE_TIMEOUT * 1000
    assert int(defines["ANSWER_MARGIN_MS"]) == client.ANSWER_MARGIN * 1000
    assert float(defines["MAX_BOUND"]) == client.MAX_BOUND
    assert eval(defines["MAX_STDIN"].rstrip("L").replace("L ", " ")) == process.MAX_STDIN
    assert json.loads(defines["DAEMON_SOCKET"]) == paths.DAEMON_SOCKET
    assert json.loads(defines["DAEMON_ENV"]) == paths.DAEMON_ENV
    assert json.loads(defines["IN_PROCESS_SUFFIX"]) == paths.IN_PROCESS_SUFFIX
    assert json.loads(defines["IN_USE_FILE"]) == frozen.IN_USE
    assert json.loads(defines["INSTALL_MARKER"]).encode() == native.MARKER


def test_install_plugin_knows_the_shipped_build_by_its_marker(builds):
    assert native.is_native(builds["host-local-sqlite"])
    assert not native.is_native(builds["probe-asan"])  # an ELF file of ours, not the client


def test_the_shipped_build_is_static(builds):
    """No program interpreter (PT_INTERP) nor dynamic section (PT_DYNAMIC): it needs no
    libc of the node's."""
    with open(builds["host-local-sqlite"], "rb") as f:
        types = elf_segment_types(f.read())
    assert 1 in types and not {2, 3} & set(types), types


# -- with a real daemon, and without one ---------------------------------------------
def test_a_call_the_daemon_answers_is_the_python_clients_answer(tmp_path, bin_dir, conf):
    d = NodeDaemon(tmp_path)
    try:
        d.wait_ready()
        env = {paths.DAEMON_ENV: d.socket}
        status, out, err = run(bin_dir / paths.PLUGIN_NAME, "ADD", conf(), env)
        assert status == 0, out + err
        assert FALLBACK not in err
        assert d.calls_served(1) == 1
        again = subprocess.run([PLUGIN], input=json.dumps(conf()).encode(),
                               env={**cni_env("ADD", container_id="c1"), **env},
                               capture_output=True, timeout=30)
        assert again.stdout.decode() == out  # idempotent: the same bytes, byte for byte
        # the config's own choice of socket, for DEL
        status, out, err = run(bin_dir / paths.PLUGIN_NAME, "DEL", conf(daemon=d.socket))
        assert (status, out, FALLBACK in err) == (0, "", False)
        assert d.calls_served(3) == 3
    finally:
        d.stop()


def test_without_a_daemon_the_launcher_runs_the_call(bin_dir, conf, data_dir):
    missing = str(bin_dir / "no.sock")
    status, out, err = run(bin_dir / paths.PLUGIN_NAME, "ADD", conf(),
                           {paths.DAEMON_ENV: missing})
    assert status == 0, out + err
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"
    assert err == ("host-local-sqlite: cannot reach the node daemon at %s (No such file or "
                   "directory)" % missing) + FALLBACK
    assert os.path.exists(data_dir / "nat" / "10.9.0.2")
    # forwarding off: silent
    assert run(bin_dir / paths.PLUGIN_NAME, "DEL", conf(daemon=False))[::2] == (0, "")


def test_version_is_the_in_process_plugins(bin_dir):
    ours = run(bin_dir / paths.PLUGIN_NAME, "VERSION", b"{}")
    theirs = subprocess.run([PLUGIN], input=b"{}", env=cni_env("VERSION"),
                            capture_output=True, timeout=30)
    assert ours == (theirs.returncode, theirs.stdout.decode(), theirs.stderr.decode())


def test_without_its_in_process_plugin_it_answers_code_5(bin_dir, conf):
    os.unlink(bin_dir / (paths.PLUGIN_NAME + ".in-process"))
    status, out, _ = run(bin_dir / paths.PLUGIN_NAME, "ADD", conf(daemon=False))
    assert status == 1
    assert json.loads(out)["code"] == 5
    assert "in-process plugin" in json.loads(out)["msg"]


def test_from_a_copy_of_the_build_it_holds_the_copys_lock(tmp_path, builds, conf):
    """Run from a copy of the self-contained build, it holds a shared flock on the copy's
    IN-USE.lock for as long as it runs, as the build's own processes do, so that
    install-plugin removes no copy it may yet exec the in-process plugin of; beside a
    launcher (no such file) it runs all the same."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / frozen.IN_USE).write_text("")
    shutil.copy(builds["host-local-sqlite"], copy / frozen.CLIENT)
    launcher.install(str(copy), frozen.CLIENT_IN_PROCESS, paths=launcher.install_paths(),
                     forwarding=False)
    env = {"PATH": os.environ["PATH"], **cni_env("ADD"), paths.DAEMON_ENV: "false"}
    proc = subprocess.Popen([str(copy / frozen.CLIENT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:  # it waits for its config: its lock is held by then
        wait_until(lambda: holds_flock(proc.pid, copy / frozen.IN_USE),
                   "the client's shared flock on IN-USE.lock")
        out, err = proc.communicate(json.dumps(conf()).encode(), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"


# -- hostile daemons ----------------------------------------------------------------------
def _read_request(conn):
    """A whole request from the client: (environment, cwd, stdin)."""
    buf = b""
    while True:
        try:
            at = len(client.MAGIC) + 1
            parts = []
            for _ in range(3):
                part, at = client.read_blob(buf, at)
                parts.append(part)
            return client.decode_environ(parts[0]), parts[1], parts[2]
        except ValueError:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError("the client closed before its request ended") from None
            buf += chunk


def _read_views(conn):
    buf = b""
    while True:
        try:
            kind, parts, _ = client.parse_message(buf)
            assert kind == client.VIEWS
            return parts[0]
        except ValueError:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError("the client closed before its views") from None
            buf += chunk


class FakeDaemon:
    """A peer on a unix socket that runs ``script(conn, self)`` on each connection: what
    a broken or hostile daemon might send. ``seen`` keeps what the scripts record;
    ``closed`` is set when a script finds the client gone."""

    def __init__(self, path, script):
        self.path = str(path)
        self.script = script
        self.seen = {}
        self.closed = threading.Event()
        self.taken = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    self.script(conn, self)
                except (OSError, EOFError):
                    pass

    def close(self):
        self.sock.close()


def _prove(conn, fake, asked=(b"/",)):
    fake.seen["request"] = _read_request(conn)
    conn.sendall(client.PROVE + client.blob(b"\0".join(asked)))
    fake.seen["views"] = _read_views(conn)


def _taken(conn, fake, bound=b"5"):
    _prove(conn, fake)
    conn.sendall(client.TAKEN + client.blob(bound))


def _then_close(conn):
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


HOSTILE = {
    "closes at once": lambda c, f: _read_request(c),
    "says nothing": lambda c, f: (_read_request(c), c.recv(1)),
    "an unknown kind": lambda c, f: (_read_request(c), c.sendall(b"Z" + b"\0" * 64)),
    "a PROVE cut short": lambda c, f: (_read_request(c),
                                       c.sendall(client.PROVE + b"\0\0\0\x64" + b"x" * 10)),
    "a 4 GiB PROVE": lambda c, f: (_read_request(c), c.sendall(client.PROVE + b"\xff" * 4)),
    "300 KiB of paths": lambda c, f: (_read_request(c), c.sendall(
        client.PROVE + client.blob(b"\0".join([b"/a" * 50] * 3000)))),
    "an ANSWER first": lambda c, f: (_read_request(c), c.sendall(
        client.ANSWER + b"\0" + client.blob(b"{}") + client.blob(b""))),
    "NOT_SERVED": lambda c, f: (_read_request(c), c.sendall(
        client.NOT_SERVED + client.blob(b"busy\x1b[31m\0now"))),
    "no TAKEN": lambda c, f: (_prove(c, f), c.recv(1)),
    "a bound of nan": lambda c, f: _taken(c, f, b"nan"),
    "a bound of 1e9": lambda c, f: _taken(c, f, b"1e9"),
    "a bound of -1": lambda c, f: _taken(c, f, b"-1"),
    "an empty bound": lambda c, f: _taken(c, f, b""),
    "a hex bound": lambda c, f: _taken(c, f, b"0x10"),
    "a 1 KiB bound": lambda c, f: _taken(c, f, b"1" * 1024),
    "taken, then gone": lambda c, f: _taken(c, f),
    "taken, then a 2 GiB ANSWER": lambda c, f: (_taken(c, f), c.sendall(
        client.ANSWER + b"\0" + b"\x7f\xff\xff\xff")),
    "taken, then half an ANSWER": lambda c, f: (_taken(c, f), c.sendall(
        client.ANSWER + b"\0" + client.blob(b"{}")[:4])),
    "taken, then no answer in time": lambda c, f: (_taken(c, f, b"0.2"), c.recv(1)),
}
WHY = {
    "closes at once": "stopped answering mid-call",
    "says nothing": "did not take the call within 1 s",
    "an unknown kind": "stopped answering mid-call",
    "a PROVE cut short": "stopped answering mid-call",
    "a 4 GiB PROVE": "stopped answering mid-call",
    "300 KiB of paths": "asked about more paths than a call touches",
    "an ANSWER first": "stopped answering mid-call",
    "NOT_SERVED": "did not take the call: busy?[31m?now",
    "no TAKEN": "did not take the call within 1 s",
    "taken, then gone": "stopped answering mid-call",
    "taken, then a 2 GiB ANSWER": "stopped answering mid-call",
    "taken, then half an ANSWER": "stopped answering mid-call",
    "taken, then no answer in time": "gave no answer within its bound (0.2 s) and 2 s more",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_daemon_changes_nothing_the_call_runs_in_process(name, tmp_path, bin_dir,
                                                                   conf, data_dir):
    fake = FakeDaemon(tmp_path / "fake.sock", HOSTILE[name])
    try:
        started = time.monotonic()
        status, out, err = run(bin_dir / paths.PLUGIN_NAME, "ADD",
                               conf(daemon=fake.path))
        elapsed = time.monotonic() - started
    finally:
        fake.close()
    assert status == 0, out + err
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/24"
    assert err.endswith(FALLBACK), err
    assert WHY.get(name, "gave no bound for the call") in err
    assert elapsed < 10


def test_a_daemons_answer_is_written_as_sent(tmp_path, bin_dir, conf):
    """Its stdout, stderr and status, whatever bytes they hold; the views it asked for are
    the Python client's, path for path; trailing bytes after the answer are ignored."""
    asked = [str(tmp_path).encode(), str(tmp_path / "missing" / "deeper/").encode(),
             b"//", str(bin_dir / paths.PLUGIN_NAME / "under-a-file").encode(),
             b"relative/name", b"/proc/self/fd/../../" + b"x" * 300]
    out_bytes, err_bytes = b'{"not": "json\xff\x00', b"warning \xfe\n"

    def script(conn, fake):
        _prove(conn, fake, asked)
        conn.sendall(client.TAKEN + client.blob(b"5")
                     + client.ANSWER + b"\x07" + client.blob(out_bytes)
                     + client.blob(err_bytes) + b"junk after")
        _then_close(conn)

    fake = FakeDaemon(tmp_path / "fake.sock", script)
    try:
        env = {**SANITIZERS, "PATH": os.environ["PATH"], **cni_env("ADD"),
               paths.DAEMON_ENV: fake.path, "ODD": "a=b", "EMPTY": ""}
        proc = subprocess.run([str(bin_dir / paths.PLUGIN_NAME)], input=b"{}", env=env,
                              capture_output=True, timeout=30, cwd=str(tmp_path))
    finally:
        fake.close()
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, out_bytes, err_bytes)
    got_env, cwd, data = fake.seen["request"]
    assert {k.decode(): v.decode() for k, v in got_env.items()} == env
    assert (cwd, data) == (str(tmp_path).encode(), b"{}")
    assert fake.seen["views"] == b"\0".join(client.view(p.decode()) for p in asked)


@pytest.mark.root
@pytest.mark.parametrize("size", [0, 1, 65535, 65536 * 3 + 7, 15 * 1024 * 1024])
def test_an_answer_of_any_size_a_daemon_sends_is_written_whole(size, tmp_path, bin_dir):
    out_bytes = bytes(random.Random(size).randbytes(size))

    def script(conn, fake):
        _prove(conn, fake)
        conn.sendall(client.TAKEN + client.blob(b"5") + client.ANSWER + b"\0"
                     + client.blob(out_bytes) + client.blob(b"e" * 1000))
        _then_close(conn)

    fake = FakeDaemon(tmp_path / "fake.sock", script)
    try:
        env = {**SANITIZERS, **cni_env("DEL"), paths.DAEMON_ENV: fake.path}
        # stdout and stderr closed: the socket must not take their numbers
        proc = subprocess.run([str(bin_dir / paths.PLUGIN_NAME)], input=b"{}", env=env,
                              stdout=subprocess.PIPE, timeout=30)
        closed = subprocess.run(["sh", "-c", '"$0" >&- 2>&-; echo $?',
                                 str(bin_dir / paths.PLUGIN_NAME)], input=b"{}", env=env,
                                stdout=subprocess.PIPE, timeout=30)
    finally:
        fake.close()
    assert (proc.returncode, proc.stdout == out_bytes) == (0, True)
    # the answer not written: 1, as the Python client says (0 when it was empty)
    assert closed.stdout == (b"1\n" if size else b"0\n")


def test_a_daemon_of_another_user_is_not_trusted(tmp_path, bin_dir, conf):
    """A daemon whose peer credentials say uid 65534 (neither root nor this user): not
    trusted, the call runs in process. Needs root, to run it as another user."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a peer of another uid")  # the root marker says so
    sock_dir = tempfile.mkdtemp(prefix="native-peer-")  # tmp_path's parents are 0700
    os.chmod(sock_dir, 0o777)
    path = os.path.join(sock_dir, "d.sock")
    server = subprocess.Popen(
        ["python3", "-c", "import socket, sys; s = socket.socket(socket.AF_UNIX); "
         "s.bind(sys.argv[1]); s.listen(); print('ready', flush=True); "
         "c, _ = s.accept(); c.recv(1)", path],
        user=65534, stdout=subprocess.PIPE)
    try:
        assert server.stdout.readline() == b"ready\n"
        status, out, err = run(bin_dir / paths.PLUGIN_NAME, "ADD", conf(daemon=path))
    finally:
        server.kill()
        server.wait(10)
        server.stdout.close()
        shutil.rmtree(sock_dir)
    assert status == 0, out + err
    assert ("the node daemon at %s runs as uid 65534, neither root nor this user: not "
            "trusting it" % path) + FALLBACK in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_while_the_daemon_runs_the_call_answers_code_11(signum, tmp_path, bin_dir,
                                                                 conf):
    def script(conn, fake):
        _taken(conn, fake, b"60")
        fake.taken.set()
        if not conn.recv(1):  # the client gone: what tells the daemon not to commit
            fake.closed.set()

    fake = FakeDaemon(tmp_path / "fake.sock", script)
    env = {"PATH": os.environ["PATH"], **SANITIZERS, **cni_env("ADD"),
           paths.DAEMON_ENV: fake.path}
    (tmp_path / "conf.json").write_text(json.dumps(conf()))
    with open(tmp_path / "conf.json", "rb") as stdin:
        proc = subprocess.Popen([str(bin_dir / paths.PLUGIN_NAME)], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert fake.taken.wait(10), "the client was not taken"
        # Taken: the client waits for the answer (a signal before its wait is held, and
        # delivered when it waits).
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
        assert fake.closed.wait(10)
    finally:
        fake.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    answer = json.loads(out)
    assert answer == {"code": 11, "msg": "interrupted by %s while the node daemon ran the "
                      "call; try again" % signal.Signals(signum).name}


# -- the parsers against ipam.client's, on random and mutated inputs -----------------------
def probe(builds, what, data):
    proc = subprocess.run([builds["probe-asan"], what], input=data, capture_output=True,
                          env={**os.environ, **SANITIZERS}, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def expected_config(data):
    """What the C client should make of ``data``, from ipam.client's own choice."""
    choice = client._config_choice(data)
    if choice is None:
        return "none"
    if choice is True:
        return "true"
    if choice is False or choice == "":
        return "false"
    if any("\ud800" <= ch <= "\udfff" for ch in choice) or len(choice.encode()) > 8192:
        return "unusable"
    return choice


def check_config(builds, data):
    want, got = expected_config(data), probe(builds, "config", data).split()
    if isinstance(want, str) and want in ("none", "true", "false", "unusable"):
        assert got == [want], data
    else:
        # A daemon path that is not UTF-8: Python connects to the decoded path (U+FFFD
        # for each bad sequence), the C client to the config's bytes.
        assert got[0] == "path", data
        assert bytes.fromhex(got[1]).decode("utf-8", "replace") == want, data


CONFIG_SEEDS = [
    b'{"ipam": {"daemon": "/run/x.sock"}}', b'{"IPAM": {"Daemon": true}}',
    b'{"ipam": {"daemon": false}}', b'{"ipam": {"daemon": null}}',
    b'{"ipam": {"daemon": ""}}', b'{"ipam": {"daemon": 1}}', b'{"ipam": {"daemon": [1]}}',
    b'{"ipam": {"daemon": "a"}, "ipam": {}}', b'{"ipam": {"daemon": "a", "DAEMON": "b"}}',
    b'{"ipam": {"daemon": "\\ud83d\\ude00\\u00e9\\/\\n"}}', b'{"ipam": {"daemon": "\\ud800"}}',
    b'{"ipam": {"daemon": "\\udc80x"}}', b'{"ipam": {"daemon": "caf\xc3\xa9 \xff"}}',
    b'{"ipam": {"daemon": "x"}} x', b'{"ipam": {"daemon": NaN}}',
    b'{"ipam": {"daemon": -0.5e+3, "d": [{"daemon": "no"}]}}', b'[{"ipam": {"daemon": "a"}}]',
    b'  {"ipam" : {"daemon" : "a\\u0000b" } }\n', b'{"ipam": {"daemon": "\x01"}}',
    b'{"\\u0069pam": {"daemon": "esc"}}', b'{"ipam": {"daemon": 01}}',
    b'{"ipam": {"daemon": "a"}, "x": {"ipam": {"daemon": "b"}}}', b'\xef\xbb\xbf{"daemon": 1}',
    b'{"ipam": "daemon"}', b'{"ipam": {"daemon": "' + b"p" * 9000 + b'"}}',
]


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[min(at, len(data) - 1)]
        elif op == 1:
            data[at:at] = bytes([rng.choice(b'{}[]",:\\u0123456789abcdefnulltrue -.eE\x00\xff ')])
        elif op == 2:
            data[at:at] = rng.choice([b'"daemon"', b'"ipam"', b'{', b'}', b'"', b'\\ud800',
                                      b'[' * 3, b'null', b',', b':'])
        elif op == 3 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        else:
            data = data[:at]
    return bytes(data)


def _seconds():
    return float(os.environ.get("NATIVE_FUZZ_SECONDS", "15"))


def test_fuzz_config_choice_is_the_python_clients(builds):
    for seed in CONFIG_SEEDS:
        check_config(builds, seed)
    rng = random.Random(28)
    deadline = time.monotonic() + _seconds()
    while time.monotonic() < deadline:
        check_config(builds, _mutate(rng, rng.choice(CONFIG_SEEDS)))


def test_environment_choice_is_the_python_clients(builds):
    for value in ["false", "FALSE", "0", "Off", "no", "NO ", "/a b", "x\xff", "offf", "n"]:
        data = value.encode("utf-8", "surrogateescape")
        path, named = client.choose_socket(b"{}", {paths.DAEMON_ENV.encode(): data})
        got = probe(builds, "env", data).split()
        if path is None:
            assert got == ["false"], value
        else:
            assert got == ["path", path.encode("utf-8", "surrogateescape").hex()], value


def _expected_messages(data):
    lines = []
    while True:
        try:
            kind, parts, length = client.parse_message(data)
        except ValueError:
            return lines, "more"
        except IndexError:
            return lines, "bad"
        status = parts[0][0] if kind == client.ANSWER else 0
        blobs = parts[1:] if kind == client.ANSWER else parts
        lines.append("%s %d %d %s" % (kind.decode(), status, length,
                                      " ".join(b.hex() for b in blobs)))
        data = data[length:]


def _random_stream(rng):
    out = b""
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(b"APTNVZ\0")
        msg = bytes([kind])
        if kind == ord("A"):
            msg += bytes([rng.randrange(256)])
        for _ in range(2 if kind == ord("A") else 1):
            body = rng.randbytes(rng.randint(0, 40))
            length = len(body) if rng.random() < 0.8 else rng.choice(
                [len(body) + 1, 2 ** 32 - 1, 2 ** 24 + 1, 0])
            msg += struct.pack(">I", length) + body
        out += msg
    if out and rng.random() < 0.3:
        out = out[:rng.randrange(len(out))]
    return out


def test_fuzz_message_parsing_is_the_python_clients(builds):
    rng = random.Random(18)
    deadline = time.monotonic() + _seconds()
    while time.monotonic() < deadline:
        data = _random_stream(rng)
        lines, end = _expected_messages(data)
        got = probe(builds, "message", data).splitlines()
        assert [g.rstrip() for g in got[:len(lines)]] == [ln.rstrip() for ln in lines], data
        if got[len(lines):] != [end]:
            # only where a blob's length is past MAX_MESSAGE: Python waits for it, the
            # C client takes it for no daemon of ours
            assert end == "more" and got[len(lines):] == ["bad"], data
            assert any(n > 16 * 1024 * 1024 for n in _lengths(data)), data


def _lengths(data):
    return [struct.unpack(">I", data[i:i + 4])[0] for i in range(len(data) - 3)]


def test_fuzz_bound_parsing_is_the_python_clients(builds):
    rng = random.Random(120)
    alphabet = "0123456789.eE+- \tnaif"
    cases = ["5", "0", "120", "120.0000001", "1e2", " 7.5\n", "nan", "inf", "-0", "1e-400",
             "1e400", ".5", "5.", "", "--1", "1e", "e1"]
    deadline = time.monotonic() + _seconds()
    while time.monotonic() < deadline:
        text = cases.pop() if cases else "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        try:
            want = float(text)
        except ValueError:
            want = -1.0
        if not 0 <= want <= client.MAX_BOUND:
            want = -1.0
        assert float(probe(builds, "bound", text.encode())) == want, text


def test_fuzz_views_are_the_python_clients(builds, tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    parts = ["dir", "sub", "file", "loop", "missing", "", ".", "..", "/"]
    rng = random.Random(7)
    deadline = time.monotonic() + _seconds()
    while time.monotonic() < deadline:
        path = "/".join(rng.choice(parts) for _ in range(rng.randint(0, 5)))
        if rng.random() < 0.7:
            path = str(tmp_path) + "/" + path
        got = probe(builds, "view", path.encode())
        assert got == client.view(path).decode() + "\n", path


def _libfuzzer_seconds():
    """libFuzzer's run: NATIVE_FUZZ_SECONDS (make fuzz), else about a minute, which CI
    runs (the Python-driven runs above take another 15 s each)."""
    return float(os.environ.get("NATIVE_FUZZ_SECONDS", "60"))


@pytest.mark.once  # one C program whatever the Python: CI runs it on its main Python only
def test_fuzz_with_libfuzzer(tmp_path):
    """libFuzzer, with ASan and UBSan (any report fatal), on the parsers as the client
    gets their input from outside (native/fuzz.c), from the seeds above (its corpus,
    build/native/corpus, grows from run to run): no crash, report or hang within the
    run. Needs clang with its libFuzzer runtime (Debian: clang, with libclang-rt); where
    there is none it skips, which CI does not allow (.ci/run installs it)."""
    (tmp_path / "t.c").write_text("#include <stddef.h>\nint LLVMFuzzerTestOneInput("
                                  "const unsigned char *d, size_t n) { return 0; }\n")
    try:
        has = subprocess.run(["clang", "-fsanitize=fuzzer", "-o", str(tmp_path / "t"),
                              str(tmp_path / "t.c")], capture_output=True, timeout=120)
    except FileNotFoundError:
        has = None
    if has is None or has.returncode:
        pytest.skip("no libFuzzer here (clang and its runtime): the Python-driven runs "
                    "alone")
    made = subprocess.run(["make", "-s", "-C", REPO, "native-fuzz"], capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for n, seed in enumerate([b"\0" + c for c in CONFIG_SEEDS] + [
            b"\1false", b"\1/run/x.sock", b"\2T\0\0\0\0015", b"\3/proc/self/fd/../.."]):
        (seeds / ("seed-%d" % n)).write_bytes(seed)
    corpus = os.path.join(BUILD, "corpus")
    os.makedirs(corpus, exist_ok=True)
    seconds = _libfuzzer_seconds()
    proc = subprocess.run([os.path.join(BUILD, "fuzz"), "-max_total_time=%d" % seconds,
                           "-max_len=65536", "-timeout=10", "-print_final_stats=1",
                           "-artifact_prefix=%s/" % tmp_path, corpus, str(seeds)],
                          capture_output=True, text=True, timeout=seconds + 300,
                          env={**os.environ, **SANITIZERS})
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert re.search(r"^stat::number_of_executed_units: *[1-9]", proc.stderr, re.M), \
        proc.stderr[-3000:]


def _blocked(pid, signums):
    """Whether the process ``pid`` blocks all of ``signums`` (/proc's SigBlk)."""
    with open("/proc/%d/status" % pid) as f:
        mask = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", f.read(), re.M).group(1), 16)
    return all(mask >> (n - 1) & 1 for n in signums)


def test_a_signal_before_the_call_starts_answers_code_11_and_runs_nothing(tmp_path, bin_dir,
                                                                         conf, data_dir):
    """A signal while the client still reads stdin is held, as the Python client's guard
    holds it, and ends the call before the in-process plugin would start it."""
    env = {"PATH": os.environ["PATH"], **SANITIZERS, **cni_env("ADD")}
    proc = subprocess.Popen([str(bin_dir / paths.PLUGIN_NAME)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 10
        while not _blocked(proc.pid, (1, 2, 15)):  # its guard is set: it holds them now
            assert time.monotonic() < deadline, "the client never blocked the signals"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(json.dumps(conf(daemon=False)).encode(), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert json.loads(out) == {"code": 11, "msg": "interrupted by SIGTERM before the call "
                               "started; try again"}
    assert not os.path.exists(data_dir / "nat")
