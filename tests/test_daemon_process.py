"""The node daemon as a node runs it: ``ipamctl serve`` processes, plugin processes.

The issue's proof, with real processes where the process is the point: the daemon
killed (SIGKILL) in the middle of a burst, a peer of another uid, SIGTERM's drain (in
time, and past its timeout), a second daemon on the same socket, systemd's socket
activation. The suites that run through a daemon (test_reference.py, test_plugin_e2e.py,
test_bridge.py) use conftest.py's ``through``; the daemon in process is test_daemon.py.
"""
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest
from helpers import (
    FALLBACK,
    IPAMCTL,
    NOBODY,
    PLUGIN,
    RUN_AS_NOBODY,
    cni_env,
    counted,
    daemon_env,
    ipamctl,
    js,
    plugin_process,
    run_inprocess,
    run_plugin,
    wait_queued,
    wait_until,
)
from plugin_procs import (
    Invocation,
    check_json,
    database_problems,
    expected_mirror,
    leases,
    mirror,
    run_all,
    wait_reading_stdin,
)

from ipam import paths

SUBNET = {"subnet": "10.1.0.0/24"}  # 253 addresses: room for a burst of 200
POOL = 4  # the burst's daemon's workers
CALL_LINE = re.compile(r" (ADD|DEL) network=")


def via(daemon):
    return {paths.DAEMON_ENV: daemon.socket}


@contextmanager
def writers_queue_held(data_dir):
    """Hold the database's writers' queue (its flock), as a long transaction would: a
    call then waits inside, in the daemon or in process, until the block ends. Yields
    the queue's path."""
    path = paths.writer_queue(paths.default_database(str(data_dir)))
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_in_flight(daemon, count=1):
    """Wait until ``count`` calls are inside the daemon (health's in_flight)."""
    wait_until(lambda: daemon.health()["in_flight"] >= count,
               "%d call(s) in flight in the daemon" % count)


def connects(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def test_sigkill_in_the_middle_of_a_burst(start_daemon, data_dir, netconf):
    """200 plugin processes at once (150 ADDs, 50 DELs of containers added before), the
    daemon SIGKILLed after about a third of them were answered: every call answers,
    through the daemon or, saying so, in process; no address twice, no lease leaked or
    lost, the mirror equals the database."""
    daemon = start_daemon("--pool-size", str(POOL))
    conf = netconf(SUBNET)
    for n in range(50):
        assert run_inprocess("ADD", conf, container_id="old%d" % n).status == 0
    burst = []
    for n in range(150):
        burst.append(Invocation("ADD", "new%d" % n, conf, env_extra=via(daemon)))
        if n % 3 == 2:
            burst.append(Invocation("DEL", "old%d" % (n // 3), conf, env_extra=via(daemon)))
    try:
        wait_reading_stdin(burst, timeout=10.0)
        for inv in burst:  # as a runtime starting 200 pods: all released together
            inv.feed()
        daemon.wait_log(lambda log: len(CALL_LINE.findall(log)) >= len(burst) // 3,
                        "a third of the burst answered by the daemon")
        assert daemon.kill() == -signal.SIGKILL
        answered = len(CALL_LINE.findall(daemon.log()))
    finally:
        run_all(burst)

    for inv in burst:
        assert inv.rc == 0, inv
        assert b"Traceback" not in inv.err, inv
        if inv.command == "ADD":
            assert inv.json["ips"][0]["address"].endswith("/24"), inv
        else:
            assert inv.out == b"", inv
    cut_off = [inv for inv in burst if FALLBACK.encode() in inv.err]
    # The daemon logs a call just after answering it: the calls it answered unlogged
    # (one per worker at most) are the only ones neither logged nor run in process.
    assert cut_off, "no call was cut off by the kill"
    assert len(burst) - POOL <= answered + len(cut_off) <= len(burst), (answered, len(cut_off))

    held = leases(data_dir, "mynet")  # one address per container, one container per address
    assert sorted(held) == sorted("new%d" % n for n in range(150))
    for inv in burst:
        if inv.command == "ADD":  # a call answered twice (daemon, then in process) agrees
            assert held[inv.container_id] == inv.address, inv
    assert mirror(data_dir, "mynet") == expected_mirror(held)
    assert database_problems(data_dir, "mynet") == []
    assert check_json(data_dir) == (0, {"ok": True, "problems": [], "findings": []})
    for n in range(150):
        assert run_inprocess("DEL", conf, container_id="new%d" % n).status == 0
    assert leases(data_dir, "mynet") == {} and mirror(data_dir, "mynet") == {}


@pytest.mark.root
def test_a_peer_of_another_uid_is_refused(start_daemon, netconf):
    """nobody reaches the socket (opened to all on purpose, to reach the SO_PEERCRED
    check): the daemon refuses and logs it; the client says so and runs the call in
    process, as nobody, which may not open root's database: a CNI error, no lease."""
    top = tempfile.mkdtemp(prefix="hls-daemon-uid-")  # pytest's tmp_path is root's alone
    try:
        os.chmod(top, 0o755)
        data_dir = os.path.join(top, "data")
        daemon = start_daemon(socket=os.path.join(top, "d.sock"))
        os.chmod(daemon.socket, 0o666)
        conf = json.dumps(dict(netconf(SUBNET), ipam=dict(SUBNET, dataDir=data_dir)))
        assert run_plugin("ADD", conf, env_extra=via(daemon),
                          container_id="by-root").status == 0
        env = dict(cni_env("ADD", container_id="by-nobody"), PATH=os.environ["PATH"],
                   **via(daemon))
        proc = subprocess.Popen([*RUN_AS_NOBODY, PLUGIN], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = proc.communicate(conf.encode(), timeout=60)
        text = err.decode()
        assert "Traceback" not in text, text
        assert "refused pid=%d uid=%d" % (proc.pid, NOBODY) in daemon.log()
        health = counted(daemon.socket, 1)
        assert (health["refused"], health["calls"]) == (1, 1)
        assert ("the node daemon at %s did not take the call: uid %d may not use this daemon"
                % (daemon.socket, NOBODY)) in text and FALLBACK in text, text
        answer = json.loads(out)  # nobody may not open root's database (0600): says so
        assert proc.returncode == 1 and set(answer) >= {"code", "msg"}, answer
        assert "permission denied" in answer["msg"], answer
        assert list(leases(data_dir, "mynet")) == ["by-root"]
    finally:
        shutil.rmtree(top)


def test_sigterm_drains(start_daemon, data_dir, netconf):
    """SIGTERM while a call waits inside the daemon (the writers' queue held here): the
    socket goes at once, so that a new call runs in process; the call inside is answered
    when it can go on; the daemon then exits 0."""
    daemon = start_daemon()
    conf = netconf(dict(SUBNET, busyTimeout=60))
    assert run_inprocess("ADD", conf, container_id="first").status == 0
    calls = []
    try:
        with writers_queue_held(data_dir):
            inside = Invocation("ADD", "inside", conf, env_extra=via(daemon))
            calls.append(inside)
            inside.feed()
            wait_in_flight(daemon)
            daemon.terminate()
            # The socket goes first: the call inside is still waiting (asserted below).
            wait_until(lambda: not os.path.exists(daemon.socket), "the socket to go")
            assert not connects(daemon.socket)
            daemon.wait_log(lambda log: "draining: " in log, "the drain's start")
            after = Invocation("ADD", "after", conf, env_extra=via(daemon))
            calls.append(after)
            after.feed()
            # The new call, in process, waits for host-local's lock, which the call inside
            # holds while it waits for the queue: by then the drain has had that long to
            # end early; it must still wait for the call inside.
            wait_queued(data_dir / "mynet" / "lock", after.proc.pid, polling=True)
            assert daemon.proc.poll() is None and inside.proc.poll() is None  # waiting
    finally:
        run_all(calls)
    assert inside.rc == 0 and FALLBACK.encode() not in inside.err, inside
    assert daemon.stop() == 0
    assert "stopped after 1 calls" in daemon.log()
    assert after.rc == 0 and b"cannot reach the node daemon" in after.err, after
    held = leases(data_dir, "mynet")
    assert held == {"first": "10.1.0.2", "inside": inside.address, "after": after.address}


def test_sigterm_past_the_drain_timeout(start_daemon, data_dir, netconf):
    """A call still inside when the drain's time is up is cut off: the daemon exits 1,
    and the call's client runs it in process, which completes when it can go on."""
    daemon = start_daemon("--drain-timeout", "0.5")
    conf = netconf(dict(SUBNET, busyTimeout=60))
    assert run_inprocess("ADD", conf, container_id="first").status == 0
    inv = Invocation("ADD", "cut", conf, env_extra=via(daemon))
    try:
        with writers_queue_held(data_dir) as queue:
            inv.feed()
            wait_in_flight(daemon)
            assert daemon.stop() == 1
            assert "stopping with 1 call unanswered after 0.5 s" in daemon.log()
            wait_queued(queue, inv.proc.pid)  # now in process, waiting for the queue
    finally:
        inv.finish()
    assert inv.rc == 0 and FALLBACK.encode() in inv.err, inv
    assert leases(data_dir, "mynet") == {"first": "10.1.0.2", "cut": inv.address}


def test_a_second_signal_during_the_drain_stops_at_once(start_daemon, data_dir, netconf):
    """An operator's second Ctrl-C (or SIGTERM) does not wait out the drain: the daemon
    exits 1 at once, and the call it cut off runs in process."""
    daemon = start_daemon("--drain-timeout", "60")
    conf = netconf(dict(SUBNET, busyTimeout=60))
    inv = Invocation("ADD", "cut", conf, env_extra=via(daemon))
    try:
        with writers_queue_held(data_dir):
            inv.feed()
            wait_in_flight(daemon)
            daemon.proc.send_signal(2)  # SIGINT: the drain begins, and waits for the call
            daemon.wait_log(lambda log: "draining: " in log, "the drain's line")
            daemon.proc.send_signal(2)
            assert daemon.proc.wait(10) == 1
            assert "second signal: stopping now with 1 call unanswered" in daemon.log()
            assert not os.path.exists(daemon.socket)
    finally:
        inv.finish()
    assert inv.rc == 0 and FALLBACK.encode() in inv.err, inv
    assert leases(data_dir, "mynet") == {"cut": inv.address}


def test_a_second_daemon_on_the_socket_refuses(start_daemon):
    daemon = start_daemon()
    second = ipamctl("serve", "--socket", daemon.socket, env=daemon_env(), expect=1)
    assert ("another node daemon (pid %d) is serving %s" % (daemon.pid, daemon.socket)
            in second.stderr), second.stderr
    assert daemon.health()["pid"] == daemon.pid  # the first serves on
    assert daemon.stop() == 0


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate (apt-get install systemd)")
def test_systemd_socket_activation(start_daemon, data_dir, netconf, tmp_path):
    """systemd's socket (systemd-socket-activate binds it, starts the daemon on the
    first connection and passes it on): calls and health go through it; SIGTERM stops
    the daemon and leaves the socket, which is systemd's."""
    sock = str(tmp_path / "sd.sock")
    daemon = start_daemon(socket=sock, argv=["systemd-socket-activate", "-l", sock, IPAMCTL,
                                             "serve", "--drain-timeout", "5"])
    daemon.wait_log(lambda log: "socket from systemd" in log, "the daemon's first line")
    out = run_plugin("ADD", netconf(SUBNET), env_extra=via(daemon))
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.1.0.2/24", out
    health = counted(daemon.socket, 1)
    assert (health["status"], health["socket"], health["calls"]) == ("ok", sock, 1)
    assert health["pid"] == daemon.pid  # systemd-socket-activate exec'd it
    assert daemon.stop() == 0
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert "stopped after 1 calls" in daemon.log()


# -- a call through the daemon waits no longer than in process --------------------------------
def _hold(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _call_ms(daemon, container):
    """The milliseconds the daemon's log line gives for ``container``'s call."""
    line = [x for x in daemon.log().splitlines() if "container=%s " % container in x][-1]
    return float(line.rpartition(" ms=")[2])


def test_a_stuck_network_holds_up_no_call_on_another(start_daemon, data_dir, netconf):
    """Network a's lock held by a stuck process, eight ADDs on a waiting for it in the
    daemon (more than it keeps threads for): an ADD on network b is answered as it
    would be in process, at once."""
    daemon = start_daemon()
    conf_a = netconf(dict(SUBNET, busyTimeout=30), name="a")
    conf_b = netconf(SUBNET, name="b")
    assert run_inprocess("ADD", conf_a, container_id="a0").status == 0
    lock = _hold(data_dir / "a" / paths.MIRROR_LOCK)
    waiting = [Invocation("ADD", "a%d" % i, conf_a, env_extra=via(daemon)) for i in range(8)]
    try:
        wait_reading_stdin(waiting, timeout=10.0)
        for inv in waiting:
            inv.feed()
        wait_in_flight(daemon, 8)
        started = time.monotonic()
        out = run_plugin("ADD", conf_b, env_extra=via(daemon), container_id="b1")
        elapsed = time.monotonic() - started
        assert out.status == 0 and out.json["ips"][0]["address"] == "10.1.0.2/24", out
        assert all(inv.proc.poll() is None for inv in waiting)  # a's calls still wait
    finally:
        os.close(lock)
        run_all(waiting)
    counted(daemon.socket, 9)  # b1 and a1 to a8 (a0 ran in process)
    assert _call_ms(daemon, "b1") < 100, daemon.log()  # issue 24's target: as in process
    assert elapsed < 2, elapsed  # the plugin process's start and the call
    assert all(inv.rc == 0 and FALLBACK.encode() not in inv.err for inv in waiting)


def test_a_stopped_daemon_costs_a_call_about_a_second(start_daemon, data_dir, netconf):
    """A daemon stopped by SIGSTOP (a frozen cgroup) still has its socket accept: the
    call is not taken within TAKE_TIMEOUT and runs in process; continued, the daemon
    finds the client gone and never runs it. One lease."""
    from ipam import client

    daemon = start_daemon()
    conf = netconf(SUBNET)
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        wait_until(daemon.stopped, "the daemon to stop")
        started = time.monotonic()
        out = Invocation("ADD", "c1", conf, env_extra=via(daemon))
        out.feed()
        out.finish()
        elapsed = time.monotonic() - started
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert out.rc == 0 and out.address == "10.1.0.2", out
    assert ("the node daemon at %s did not take the call within 1 s" % daemon.socket
            ).encode() in out.err and FALLBACK.encode() in out.err, out
    assert client.TAKE_TIMEOUT <= elapsed < client.TAKE_TIMEOUT + 1.5, elapsed  # target: 2 s
    # The stale connection, read once continued: its client gone, declined (its process
    # is gone too) or found gone when asked; never run.
    daemon.wait_log(lambda log: "container=c1" in log, "the stale call's line")
    lines = [x for x in daemon.log().splitlines() if "container=c1" in x]
    assert len(lines) == 1 and ("went away" in lines[0] or "declined" in lines[0]), lines
    assert daemon.health()["calls"] == 0
    assert leases(data_dir, "mynet") == {"c1": "10.1.0.2"}


def test_peers_that_trickle_their_requests_hold_no_call_up(start_daemon, data_dir, netconf):
    """Eight root peers each send a request's start (a call whose environment is 4 KiB
    long), then a byte now and then, for longer than a request may take: a plugin's call
    is served at once meanwhile, and each trickler is refused once REQUEST_TIMEOUT has
    passed since it connected."""
    from ipam import client
    from ipam.daemon import server as daemon_module

    daemon = start_daemon()
    peers = []
    for _ in range(8):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.socket)
        s.sendall(client.MAGIC + client.CALL + (4096).to_bytes(4, "big"))
        s.setblocking(False)
        peers.append(s)
    opened = time.monotonic()
    replies = {s: b"" for s in peers}
    try:
        out = run_plugin("ADD", netconf(SUBNET), env_extra=via(daemon), container_id="c1")
        served = time.monotonic() - opened
        while any(not r for r in replies.values()) and time.monotonic() - opened < 30:
            for s in peers:
                if not replies[s]:
                    try:
                        s.send(b"\0")
                        replies[s] = s.recv(65536)
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
            time.sleep(0.2)
        refused = time.monotonic() - opened
    finally:
        for s in peers:
            s.close()
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.1.0.2/24", out
    assert served < 3, served
    why = "bad request: the request did not arrive whole within %g s" % (
        daemon_module.REQUEST_TIMEOUT)
    assert set(replies.values()) == {client.NOT_SERVED + client.blob(why.encode())}
    assert daemon_module.REQUEST_TIMEOUT <= refused < daemon_module.REQUEST_TIMEOUT + 3


def test_a_burst_on_a_new_data_dir_is_served_whole(start_daemon, tmp_path, netconf):
    """60 ADDs at once on a dataDir that does not exist yet: each caller's view names an
    ancestor, the first call creates the directory before the daemon looks at the others'
    paths, and every call is still served by the daemon, none in process."""
    daemon = start_daemon()
    conf = dict(netconf(SUBNET), ipam=dict(SUBNET, type="host-local-sqlite",
                                            dataDir=str(tmp_path / "new" / "data")))
    burst = [Invocation("ADD", "c%d" % n, conf, env_extra=via(daemon)) for n in range(60)]
    try:
        wait_reading_stdin(burst, timeout=10.0)
        for inv in burst:
            inv.feed()
    finally:
        run_all(burst)
    assert all(inv.rc == 0 and FALLBACK.encode() not in inv.err for inv in burst), [
        inv for inv in burst if inv.rc or FALLBACK.encode() in inv.err][:3]
    assert len({inv.address for inv in burst}) == 60
    assert counted(daemon.socket, 60)["declined"] == 0


def _first_line(inv, text, timeout=30.0):
    """Read the plugin's stderr until a line holds ``text``; the lines read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, "no %r on the plugin's stderr in %g s: %r" % (text, timeout, seen)
        ready, _, _ = select.select([inv.proc.stderr], [], [], left)
        if ready:
            chunk = os.read(inv.proc.stderr.fileno(), 4096)
            assert chunk, "the plugin ended first: %r" % seen
            seen += chunk
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("step", ["read", "proved", "taken", "before-commit", "committed"])
def test_a_call_given_up_at_any_step_ends_with_one_lease(start_daemon, data_dir, netconf,
                                                         step):
    """The daemon stopped (SIGSTOP) at each step of an ADD, until its client gives up
    and runs the call in process, then continued: either the daemon never commits the
    call, or the client's own run finds what it committed; one lease for the container
    either way, the address the client answered, and the mirror the database."""
    from ipam.daemon import server as daemon_module

    assert step in daemon_module.STEPS
    daemon = start_daemon(env_extra={daemon_module.STOP_AT_ENV: step})
    conf = netconf(dict(SUBNET, lockWaitLimit=1))
    assert run_inprocess("ADD", conf, container_id="c0").status == 0
    inv = Invocation("ADD", "c1", conf, env_extra=via(daemon))
    seen = b""
    try:
        inv.feed()
        seen = _first_line(inv, FALLBACK)
        assert daemon.stopped(), daemon.log()
        os.kill(daemon.pid, signal.SIGCONT)
    finally:
        inv.finish()
        inv.err = seen + inv.err
    assert inv.rc == 0 and FALLBACK.encode() in inv.err, inv
    wait_until(lambda: daemon.health()["in_flight"] == 0, "the daemon to be done")
    held = leases(data_dir, "mynet")
    assert held == {"c0": "10.1.0.2", "c1": inv.address}, (held, daemon.log())
    assert mirror(data_dir, "mynet") == expected_mirror(held)
    assert check_json(data_dir) == (0, {"ok": True, "problems": [], "findings": []})


# -- the daemon writes only where its caller would -----------------------------------------
SEES_ANOTHER_DATA_DIR = """
import json, subprocess, sys
data, plugin, conf, env = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", data], check=True)
for container, daemon in (("c1", env["HOST_LOCAL_SQLITE_DAEMON"]), ("c2", "false")):
    run = subprocess.run([plugin], input=conf.encode(), capture_output=True,
                         env=dict(env, CNI_CONTAINERID=container,
                                  HOST_LOCAL_SQLITE_DAEMON=daemon))
    print(json.dumps([run.returncode, run.stdout.decode(), run.stderr.decode()]))
"""


@pytest.mark.root
def test_a_caller_in_another_mount_namespace_runs_its_call_itself(start_daemon, data_dir,
                                                                  netconf):
    """A caller whose dataDir is another file system (a tmpfs mounted in its own mount
    namespace): the daemon sees other files there and declines; the call runs in
    process, where the caller's next in-process call finds its lease."""
    daemon = start_daemon()
    conf = json.dumps(netconf(SUBNET))
    env = dict(cni_env("ADD"), PATH=os.environ["PATH"], **via(daemon))
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-I", "-c", SEES_ANOTHER_DATA_DIR, str(data_dir), PLUGIN, conf,
                           json.dumps(env)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (rc1, out1, err1), (rc2, out2, err2) = map(json.loads, proc.stdout.splitlines())
    assert (rc1, rc2) == (0, 0), (err1, err2)
    assert ("the node daemon at %s did not take the call: the caller sees other files than "
            "the node daemon at %s (" % (daemon.socket, data_dir)) in err1, err1
    first, second = (json.loads(o)["ips"][0]["address"] for o in (out1, out2))
    assert (first, second) == ("10.1.0.2/24", "10.1.0.3/24")
    assert daemon.health()["declined"] == 1
    # nothing in the daemon's view, the host's
    assert not os.path.exists(paths.default_database(str(data_dir)))


@pytest.mark.root
def test_a_caller_without_the_daemons_capabilities_runs_its_call_itself(start_daemon,
                                                                       tmp_path, netconf):
    """root with every capability dropped cannot write under a directory closed to it
    (nobody's, 0700); through the daemon, which has them, it could: the daemon declines,
    and the call fails in process as it would without a daemon (code 5)."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chown(closed, NOBODY, 0)
    daemon = start_daemon()
    conf = json.dumps(dict(netconf(SUBNET), ipam=dict(SUBNET, type="host-local-sqlite",
                                                      dataDir=str(closed / "data"))))
    env = dict(cni_env("ADD", container_id="c1"), PATH=os.environ["PATH"], **via(daemon))
    proc = subprocess.run(["setpriv", "--bounding-set=-all", PLUGIN], input=conf.encode(),
                          env=env, capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 5, (proc.stdout, err)
    assert "lacks capabilities the node daemon has (cap_chown, cap_dac_override" in err, err
    assert FALLBACK in err and "Traceback" not in err
    assert not (closed / "data").exists()
    assert daemon.health()["calls"] == 0


@pytest.mark.root
def test_a_caller_in_another_user_namespace_runs_its_call_itself(start_daemon, data_dir,
                                                                 netconf):
    daemon = start_daemon()
    env = dict(cni_env("ADD", container_id="c1"), PATH=os.environ["PATH"], **via(daemon))
    proc = subprocess.run(["unshare", "--user", "--map-root-user", PLUGIN],
                          input=json.dumps(netconf(SUBNET)).encode(), env=env,
                          capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 0, (proc.stdout, err)
    assert "runs in another user namespace than the node daemon" in err and FALLBACK in err
    assert leases(data_dir, "mynet") == {"c1": "10.1.0.2"}


@pytest.mark.root
def test_a_daemon_that_cannot_see_its_callers_declines(start_daemon, data_dir, netconf,
                                                       tmp_path):
    """A daemon in a PID namespace of its own (a pod without hostPID) sees every caller
    on the host as pid 0, and can read none of their powers: it declines them all."""
    sock = str(tmp_path / "pidns.sock")
    daemon = start_daemon(socket=sock, argv=["unshare", "--pid", "--fork", "--mount-proc",
                                             "--kill-child", IPAMCTL, "serve", "--socket",
                                             sock])
    out, err = plugin_process("ADD", netconf(SUBNET), env_extra=via(daemon),
                              container_id="c1")
    assert out.status == 0, out
    assert "cannot see the calling process" in err and "hostPID" in err, err
    assert leases(data_dir, "mynet") == {"c1": "10.1.0.2"}


# -- ipamctl serve --metrics, --gc-interval: a node with nothing else ---------------------
METRICS_LINE = re.compile(r"metrics on http://([^/]+)/metrics")


def scrape(daemon):
    """``/metrics`` over HTTP from the address the daemon's log gives: {(name, labels):
    value}, parsed as Prometheus parses it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    daemon.wait_log(lambda log: METRICS_LINE.search(log), "the metrics address")
    where = METRICS_LINE.search(daemon.log()).group(1)
    with urllib.request.urlopen("http://%s/metrics" % where, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_are_scraped_over_http_after_real_calls(start_daemon, data_dir, netconf,
                                                        tmp_path):
    """Plugin processes call the daemon (two ADDs, one ADD refused with a CNI error, one
    DEL, one call declined): /metrics, scraped over HTTP, counts each by command and
    result, the error by its code, the declined call, their latencies, and each range's
    size/used/free as 'ipamctl -o prometheus stats' prints them."""
    daemon = start_daemon("--metrics", "127.0.0.1:0",
                          env_extra={"IPAM_DATA_DIR": str(data_dir)})
    conf = netconf(SUBNET)
    for cid in ("m1", "m2"):
        assert run_plugin("ADD", conf, env_extra=via(daemon), container_id=cid).status == 0
    wrong = run_plugin("ADD", conf, env_extra=via(daemon), container_id="m3",
                       args="IP=10.9.9.9")
    assert wrong.status != 0
    assert run_plugin("DEL", conf, env_extra=via(daemon), container_id="m2").status == 0
    relative = netconf(SUBNET, name="rel")
    relative["ipam"]["dataDir"] = "rel"
    (tmp_path / "rel").mkdir()
    declined, err = plugin_process("ADD", relative, env_extra=via(daemon), cwd=str(tmp_path))
    assert declined.status == 0 and "relative to the caller's directory" in err, err
    assert daemon.calls_served(4) == 4

    got = scrape(daemon)
    prefix = "host_local_sqlite_"
    assert got[prefix + "calls_total", (("command", "ADD"), ("result", "ok"))] == 2
    assert got[prefix + "calls_total", (("command", "ADD"), ("result", "error"))] == 1
    assert got[prefix + "calls_total", (("command", "DEL"), ("result", "ok"))] == 1
    code = str(wrong.error["code"])
    assert got[prefix + "call_errors_total", (("code", code), ("command", "ADD"))] == 1
    assert got[prefix + "calls_declined_total", ()] == 1
    assert got[prefix + "call_duration_seconds_count", (("command", "ADD"),)] == 3
    assert got[prefix + "call_duration_seconds_bucket", (("command", "DEL"), ("le", "+Inf"))
               ] == 1
    assert 0 < got[prefix + "call_duration_seconds_sum", (("command", "ADD"),)] < 60
    key = (("network", "mynet"), ("range", "10.1.0.1-10.1.0.254"), ("range_set", "0"))
    stats = js("stats", data_dir=data_dir)
    assert (got[prefix + "range_used", key], got[prefix + "range_size", key]) == (
        stats[0]["used"], stats[0]["size"]) == (1, stats[0]["size"])
    assert daemon.stop() == 0


def test_metrics_address_taken_stops_the_start(start_daemon, tmp_path):
    """A metrics address already in use: serve says so and exits 1, and its socket is
    not left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock = str(tmp_path / "m.sock")
        proc = ipamctl("serve", "--socket", sock, "--metrics", "127.0.0.1:%d" % port,
                       env=daemon_env(), timeout=30, expect=1)
    assert "cannot serve metrics on 127.0.0.1:%d" % port in proc.stderr
    assert not os.path.exists(sock)


GC_RUN = re.compile(r"gc run=(\d+) result=(\w+)")


def gc_results(daemon):
    return [m.group(2) for m in GC_RUN.finditer(daemon.log())]


def wait_gc(daemon, result, after=0):
    """Wait for a periodic gc run, later than the first ``after``, ending in ``result``;
    the number of runs logged by then."""
    daemon.wait_log(lambda log: result in gc_results(daemon)[after:],
                    "a gc run with result=%s" % result)
    return len(gc_results(daemon))


def test_periodic_gc_releases_refuses_and_survives_a_failed_run(start_daemon, data_dir,
                                                                netconf, tmp_path):
    """serve --gc-interval with a valid-file source: a run releases the lease its list
    leaves out (logged, counted); a run whose file is gone fails, logged and counted, and
    the daemon goes on serving; a run given an empty list is refused by the empty-list
    guard and releases nothing. /metrics counts each."""
    conf = netconf(SUBNET)
    for cid in ("keep", "gone"):
        assert run_inprocess("ADD", conf, container_id=cid).status == 0
    live = tmp_path / "live"
    live.write_text("keep\n")
    daemon = start_daemon("--gc-interval", "1", "--gc-valid-file", str(live),
                          "--gc-grace", "0", "--metrics", "127.0.0.1:0",
                          env_extra={"IPAM_DATA_DIR": str(data_dir)})
    assert "gc every 1s (file %s; grace 0s, max share 50%%)" % live in daemon.log()
    runs = wait_gc(daemon, "ok")
    assert "gc released network=mynet ip=10.1.0.3 container=gone ifname=eth0" in daemon.log()
    assert [lease["container_id"] for lease in js("list", data_dir=data_dir)] == ["keep"]

    live.unlink()
    runs = wait_gc(daemon, "failed", runs)
    assert "could not list the live attachments from file %s" % live in daemon.log()
    assert run_plugin("ADD", conf, env_extra=via(daemon), container_id="new").status == 0

    live.write_text("")
    wait_gc(daemon, "refused", runs)
    assert "gc refused: network mynet: the list of live containers is empty" in daemon.log()
    assert sorted(lease["container_id"] for lease in js("list", data_dir=data_dir)) == [
        "keep", "new"]
    got = scrape(daemon)
    for result in ("ok", "failed", "refused"):
        assert got["host_local_sqlite_gc_runs_total", (("result", result),)] >= 1
    assert got["host_local_sqlite_gc_released_total", (("network", "mynet"),)] == 1
    assert got["host_local_sqlite_gc_last_success_timestamp_seconds", ()] > 0
    assert daemon.stop() == 0


def test_periodic_gc_from_a_cri_runtime_that_does_not_answer(start_daemon, data_dir,
                                                             netconf, tmp_path):
    """--gc-cri naming a socket where no runtime listens: each run fails, saying so,
    releases nothing, and the daemon serves on."""
    conf = netconf(SUBNET)
    assert run_inprocess("ADD", conf, container_id="c1").status == 0
    endpoint = "unix://%s" % (tmp_path / "no-runtime.sock")
    daemon = start_daemon("--gc-interval", "1", "--gc-cri", endpoint, "--gc-grace", "0",
                          env_extra={"IPAM_DATA_DIR": str(data_dir)})
    wait_gc(daemon, "failed")
    assert "could not list the live attachments from CRI %s" % endpoint in daemon.log()
    assert [lease["container_id"] for lease in js("list", data_dir=data_dir)] == ["c1"]
    assert run_plugin("DEL", conf, env_extra=via(daemon), container_id="c1").status == 0
    assert daemon.calls_served(1) == 1
    assert daemon.stop() == 0
