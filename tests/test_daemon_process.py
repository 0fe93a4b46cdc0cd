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
import shutil
import signal
import socket
import stat
import subprocess
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
    run_inprocess,
    run_plugin,
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
    call then waits inside, in the daemon or in process, until the block ends."""
    with open(paths.writer_queue(paths.default_database(str(data_dir))), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "waited %g s for %s" % (timeout, what)
        time.sleep(0.01)


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
    assert check_json(data_dir) == (0, {"ok": True, "problems": []})
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
            time.sleep(0.2)
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
        with writers_queue_held(data_dir):
            inv.feed()
            wait_in_flight(daemon)
            assert daemon.stop() == 1
            assert "stopping with 1 call unanswered after 0.5 s" in daemon.log()
            time.sleep(0.2)
            assert inv.proc.poll() is None  # now in process, waiting for the queue
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
    second = subprocess.run([IPAMCTL, "serve", "--socket", daemon.socket], env=daemon_env(),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
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
