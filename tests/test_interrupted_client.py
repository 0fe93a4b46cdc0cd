"""A plugin stopped by its runtime while the node daemon runs its call (docs/daemon.md, "When
it is down"): the plugin answers a CNI error object (code 11), as an
in-process call does, never a traceback; and as in process, the call rolls back: the
daemon finds its client gone at its last check before COMMIT and commits nothing, so
the runtime's repeated ADD allocates afresh. Real processes: ``ipamctl serve``, the
plugin, and the writers' queue held by this test so that the call waits inside the
daemon."""
import fcntl
import json
import os
import signal
import subprocess
import time

import pytest
from helpers import IPAMCTL, PLUGIN, cni_env, held, run_inprocess, wait_queued

from ipam import paths
from ipam.daemon import server as daemon

SUBNET = {"subnet": "10.1.2.0/24"}


def _until(what, test, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if test():
            return
        time.sleep(0.05)
    raise AssertionError("waited %g s for %s" % (seconds, what))


def _health(sock):
    try:
        return daemon.check_health(sock, timeout=2)
    except Exception:
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_plugin_stopped_mid_call_answers_code_11_and_the_daemon_rolls_back(
        tmp_path, netconf, data_dir, signum):
    sock = str(tmp_path / "d.sock")
    conf = netconf(dict(SUBNET, busyTimeout=30))
    assert run_inprocess("ADD", conf, container_id="a").status == 0  # the database exists
    log_path = tmp_path / "daemon.log"
    env = {"PATH": os.environ.get("PATH", "")}
    with open(log_path, "w") as log:
        served = subprocess.Popen([IPAMCTL, "serve", "--socket", sock], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log)
    try:
        _until("the daemon's health", lambda: _health(sock) is not None)
        queue_path = paths.writer_queue(paths.default_database(str(data_dir)))
        queue = os.open(queue_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(queue, fcntl.LOCK_EX)  # the daemon's call waits for it
            plugin = subprocess.Popen(
                [PLUGIN], env=dict(env, **cni_env("ADD", "b"), **{paths.DAEMON_ENV: sock}),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            plugin.stdin.write(json.dumps(conf).encode())
            plugin.stdin.close()
            wait_queued(queue_path, served.pid, polling=True)
            plugin.send_signal(signum)
            status = plugin.wait(timeout=30)
            out, err = plugin.stdout.read(), plugin.stderr.read()
            plugin.stdout.close()
            plugin.stderr.close()
        finally:
            os.close(queue)  # the daemon's call goes on
        assert status == 1, (status, out, err)
        assert b"Traceback" not in err, err
        answer = json.loads(out)
        assert answer["code"] == 11 and "interrupted by SIG" in answer["msg"], answer
        _until("the daemon's log line", lambda: "container=b" in log_path.read_text())
        line = [x for x in log_path.read_text().splitlines() if "container=b" in x][0]
        assert "result=error code=11" in line and "stopped waiting for it" in line, line
        assert [r[2] for r in held(data_dir)] == ["a"]  # nothing of b's committed
        again = run_inprocess("ADD", conf, container_id="b")  # the runtime's retry
        assert again.status == 0 and again.json["ips"][0]["address"] == "10.1.2.3/24"
        assert [r[2] for r in held(data_dir)] == ["a", "b"]
    finally:
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=daemon.DEFAULT_DRAIN_TIMEOUT + 10) == 0, \
            log_path.read_text()
