"""How long a call waits for locks (ipam.waits): each wait ends at busyTimeout, all of a
call's waits together at lockWaitLimit, and the bound the node daemon tells its client
stays under kubelet's 2-minute CRI timeout. The waits themselves are real flocks held by
this test; the call is the plugin's own, in process."""
import fcntl
import os
import threading
import time

import pytest
from helpers import run_inprocess

from ipam import paths, waits
from ipam.errors import ConfigError
from ipam.store import postgres
from ipam.waits import Patience, call_bound

SUBNET = {"subnet": "10.4.0.0/24"}


def test_a_wait_gets_the_stall_timeout_while_the_limit_is_far():
    p = Patience(2.0, 60.0)
    assert p.timeout() == (2.0, "the busy timeout (2s)")


def test_a_wait_near_the_limit_gets_what_is_left_of_it():
    p = Patience(10.0, 0.2)
    seconds, why = p.timeout()
    assert 0.1 < seconds <= 0.2 and why == "the call's lock-wait limit (0.2s for all its waits)"
    time.sleep(0.25)
    assert p.timeout()[0] == 0.0


def test_ipamctls_waits_are_bounded_one_by_one():
    assert Patience.each(3.0).timeout() == (3.0, "the busy timeout (3s)")


def test_every_bound_stays_under_kubelets_cri_timeout():
    """kubelet gives RunPodSandbox 2 minutes: the most lockWaitLimit, a shared pool's
    connect timeout and every retry pause, and the work, still fit."""
    pauses = sum(min(0.5, 0.02 * 2 ** k) for k in range(postgres.ATTEMPTS - 1))
    worst = call_bound(waits.MAX_LOCK_WAIT_LIMIT, postgres.DEFAULT_CONNECT_TIMEOUT + pauses)
    assert worst < 120
    assert call_bound(waits.DEFAULT_LOCK_WAIT_LIMIT) == 60 + waits.WORK_ALLOWANCE


@pytest.mark.parametrize("value", [-1, 101, "60", True, [60]])
def test_lock_wait_limit_must_be_seconds_up_to_100(netconf, value):
    out = run_inprocess("ADD", netconf(dict(SUBNET, lockWaitLimit=value)), container_id="c")
    assert out.status == 1 and out.json["code"] == ConfigError.code
    assert "ipam.lockWaitLimit must be a number of seconds from 0 to 100" in out.json["msg"]


def _hold(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_all_of_a_calls_waits_end_at_its_limit(netconf, data_dir):
    """host-local's lock held for 0.4 s, then our writers' queue held for good: the call
    waits for the first, then for the second only what is left of lockWaitLimit (0.8 s),
    though busyTimeout (5 s) would give each wait more; code 11 naming the limit."""
    conf = netconf(dict(SUBNET, busyTimeout=5, lockWaitLimit=0.8))
    assert run_inprocess("ADD", conf, container_id="a").status == 0  # the files exist
    network_lock = _hold(data_dir / "mynet" / paths.MIRROR_LOCK)
    queue = _hold(paths.writer_queue(paths.default_database(str(data_dir))))
    threading.Timer(0.4, os.close, (network_lock,)).start()  # closing drops the flock
    try:
        started = time.monotonic()
        out = run_inprocess("ADD", conf, container_id="b")
        elapsed = time.monotonic() - started
    finally:
        os.close(queue)
    assert out.status == 1 and out.json["code"] == 11, out
    assert "past the call's lock-wait limit (0.8s for all its waits)" in out.json["msg"], out
    assert 0.75 < elapsed < 2.0, elapsed
