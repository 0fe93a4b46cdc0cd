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
    w = Patience(2.0, 60.0).watch("holder")
    assert w.why() == "the busy timeout (2s)"
    assert w.step() == 0.5  # looks at the holder four times within busyTimeout


def test_a_wait_near_the_limit_gets_what_is_left_of_it():
    w = Patience(10.0, 0.2).watch("holder")
    assert 0.1 < w.step() <= 0.2
    assert w.why() == "the call's lock-wait limit (0.2s for all its waits)"
    time.sleep(0.25)
    assert w.step() == 0.0


def test_ipamctls_waits_are_bounded_one_by_one():
    w = Patience.each(3.0).watch("holder")
    assert w.why() == "the busy timeout (3s)" and w.step() == 0.75


def test_a_holder_that_changes_restarts_the_busy_timeout_up_to_the_limit():
    """A queue that moves is not a stall: each new holder gets busyTimeout again, and the
    call's limit ends the wait all the same (looks when due, as a waiter makes them)."""
    w = Patience(0.2, 1.0).watch(("1",))
    time.sleep(w.step())
    assert not w.saw(("1",)) and w.step() < 0.16  # the same holder: its time runs on
    assert w.saw(("2",)) and w.step() == pytest.approx(0.05)  # 0.2 s again, by quarters
    assert w.why() == "the busy timeout (0.2s)"
    while w.step():
        time.sleep(w.due - time.monotonic())
        assert not w.saw(("2",))
    assert time.monotonic() - w.since >= 0.2  # ("2",) held it for busyTimeout: a stall
    while time.monotonic() < w.patience.deadline - 0.1:
        time.sleep(w.step())
        w.saw(("3",) if w.holder == ("4",) else ("4",))
    assert w.why() == "the call's lock-wait limit (1s for all its waits)"
    time.sleep(w.patience.deadline - time.monotonic() + 0.01)
    assert w.saw(("5",)) and w.step() == 0.0  # the limit, though the holder just changed


def test_a_look_that_comes_late_does_not_count_against_the_holder():
    """A waiter stopped (or starved) past busyTimeout does not blame the holder for the
    time it did not look: the next look decides, and the limit still ends the wait."""
    w = Patience(0.2, 1.0).watch(("1",))
    time.sleep(w.step() + 0.4)  # stopped: 0.45 s where 0.05 s was asked
    assert not w.saw(("1",)) and w.step() == pytest.approx(0.05)  # 0.15 s left of 0.2
    assert w.why() == "the busy timeout (0.2s)"
    time.sleep(0.85)  # stopped again, past the call's limit
    w.saw(("1",))
    assert w.step() == 0.0
    assert w.why() == "the call's lock-wait limit (1s for all its waits)"


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


# -- the node daemon's own queue: its calls share one pid -------------------------------
def _take_turns(tmp_path, lock, holds, stall):
    """Threads of one process, as the node daemon's calls are, each taking ``lock``
    ("host-local's lock" or "writers' queue") through ipam.store.writer_lock in turn and holding
    it ``holds[i]`` seconds, the rest started at once when the first has its turn: who
    had a turn, and the errors."""
    from ipam.errors import TryAgain
    from ipam.store import writer_lock

    path = str(tmp_path / "lock")
    open(path, "w").close()
    turns, errors = [], []
    first = threading.Event()

    def call(i):
        try:
            if lock == "writers' queue":
                fd = writer_lock.acquire(path, Patience(stall, 10.0))
            else:
                fd = os.open(path, os.O_RDONLY)
                try:
                    writer_lock.poll(fd, Patience(stall, 10.0), "lock", key=path)
                except BaseException:
                    os.close(fd)
                    raise
        except TryAgain as e:
            errors.append(e.msg)
            return
        turns.append(i)
        first.set()
        time.sleep(holds[i])  # its turn
        writer_lock.release(fd)

    saved = writer_lock._THREAD_LOCKS
    writer_lock.share_between_threads()
    try:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(holds))]
        threads[0].start()
        assert first.wait(10), "the first call did not take the lock"
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        writer_lock._THREAD_LOCKS = saved
    return turns, errors


@pytest.mark.parametrize("lock", ["host-local's lock", "writers' queue"])
def test_the_daemons_calls_wait_while_their_own_queue_moves(tmp_path, lock):
    """Six calls each holding the lock 0.2 s, busyTimeout 0.5 s: the last waits 1 s, and
    every one has its turn, since the queue's turns tell the threads behind it moves."""
    turns, errors = _take_turns(tmp_path, lock, [0.2] * 6, stall=0.5)
    assert errors == [] and sorted(turns) == list(range(6))


@pytest.mark.parametrize("lock", ["host-local's lock", "writers' queue"])
def test_a_turn_past_busy_timeout_is_a_stall_for_the_daemons_calls_behind(tmp_path, lock):
    turns, errors = _take_turns(tmp_path, lock, [1.5, 0.0], stall=0.5)
    assert turns == [0] and len(errors) == 1, (turns, errors)
    assert "by another call past the busy timeout (0.5s)" in errors[0]


WAITER = """import os, sys
from ipam.store import writer_lock
from ipam.errors import TryAgain
from ipam.waits import Patience
fd = os.open(sys.argv[1], os.O_RDONLY)
print("waiting", flush=True)
try:
    writer_lock.poll(fd, Patience(0.5, 10.0), "lock")
    print("taken")
except TryAgain as e:
    print(e.msg)
"""


def test_a_waiter_in_another_process_sees_the_daemons_turns(tmp_path):
    """The node daemon's calls share one pid, so /proc/locks shows one holder however
    its queue moves: each turn it takes stamps the lock file, and a call waiting in
    another process (one the daemon did not take) sees that. Six turns of 0.2 s, and a
    waiter elsewhere with a busyTimeout of 0.5 s has its turn after them."""
    import subprocess
    import sys

    from ipam.store import writer_lock

    path = str(tmp_path / "lock")
    open(path, "w").close()
    turns = []

    def turn(i, hold):
        fd = os.open(path, os.O_RDONLY)
        try:
            writer_lock.poll(fd, Patience(5.0, 10.0), "lock", key=path)
        except BaseException:
            os.close(fd)
            raise
        turns.append(i)
        time.sleep(hold)  # its turn
        writer_lock.release(fd)

    held, go_on = threading.Event(), threading.Event()

    def first():
        fd = os.open(path, os.O_RDONLY)
        writer_lock.poll(fd, Patience(5.0, 10.0), "lock", key=path)
        turns.append(0)
        held.set()
        go_on.wait(30)  # until the other process waits too
        time.sleep(0.2)  # its turn
        writer_lock.release(fd)

    saved = writer_lock._THREAD_LOCKS
    writer_lock.share_between_threads()
    threads = [threading.Thread(target=first)] + [
        threading.Thread(target=turn, args=(i, 0.2)) for i in range(1, 6)]
    try:
        threads[0].start()
        assert held.wait(30)
        for t in threads[1:]:
            t.start()  # they queue in the daemon's own queue
        with subprocess.Popen([sys.executable, "-c", WAITER, path], stdout=subprocess.PIPE,
                              text=True) as waiter:
            assert waiter.stdout.readline() == "waiting\n"
            go_on.set()
            for t in threads:
                t.join(30)
            assert sorted(turns) == list(range(6))
            assert waiter.stdout.read() == "taken\n"
    finally:
        go_on.set()
        for t in threads:
            if t.is_alive():
                t.join(30)
        writer_lock._THREAD_LOCKS = saved


@pytest.mark.parametrize("shared", [False, True], ids=["sqlite", "shared"])
def test_a_queue_past_its_wait_says_whose_queue_it_is(tmp_path, shared):
    """A SQLite database's queue names the database; a shared database's node queue (in
    dataDir) is this node's, not a database: its error says so."""
    from ipam.errors import TryAgain
    from ipam.store import writer_lock

    if shared:
        path, what = paths.shared_queue(str(tmp_path)), "this node's writers' queue %s (of " \
            "a shared database)" % paths.shared_queue(str(tmp_path))
    else:
        db = str(tmp_path / "leases.db")
        path, what = paths.writer_queue(db), "database %s" % db
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(TryAgain) as e:
            writer_lock.acquire(path, Patience(0.2, 10.0))
    finally:
        os.close(holder)
    assert e.value.msg == ("%s is locked by another process past the busy timeout (0.2s); "
                           "try again later" % what)
