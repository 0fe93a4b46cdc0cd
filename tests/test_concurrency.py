"""Many real plugin processes at once: no address twice, no lost lease, a mirror equal to
the database, and waiting writers that give up with code 11 without harming anything."""
import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import threading
import time

import pytest
from helpers import (
    IPAMCTL,
    NOT_THROUGH_THE_CHAOS_AT_110,
    LockRelay,
    ipamctl,
    run_plugin,
    wait_until,
)
from plugin_procs import (
    DB_NAME,
    Invocation,
    all_succeeded,
    assert_clean,
    check_json,
    database_problems,
    expected_mirror,
    integrity,
    leases,
    mirror,
    others,
    run_all,
    start_together,
)

from ipam.errors import IoFailure
from ipam.paths import PENDING_PREFIX

EXHAUSTED = "failed to allocate for range 0: no IP addresses available"


class ListLoop(threading.Thread):
    """``ipamctl -o json list`` again and again until stopped; records every run."""

    def __init__(self, data_dir):
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.stop = threading.Event()
        self.runs = []

    def run(self):
        while not self.stop.is_set():
            proc = ipamctl("-o", "json", "list", data_dir=self.data_dir, expect=None,
                           timeout=120)
            self.runs.append(proc)

    def finish(self):
        self.stop.set()
        self.join(180)
        assert not self.is_alive()
        return self.runs


@pytest.mark.slow
def test_200_adds_then_200_dels_at_once_beside_ipamctl_list(data_dir, netconf, through):
    n = 200
    net = "burst"
    conf = netconf({"subnet": "10.50.0.0/16", "busyTimeout": 60}, name=net)
    # The schema exists before the storm, so that `ipamctl list` (read-only, never
    # creates a database) can run from the first moment.
    ipamctl("db", "upgrade", data_dir=data_dir)
    lister = ListLoop(data_dir)
    lister.start()
    try:
        got = all_succeeded(start_together(
            [Invocation("ADD", "c%03d" % i, conf) for i in range(n)]))
        assert len(got) == n
        assert leases(data_dir, net) == got
        assert mirror(data_dir, net) == expected_mirror(got)
        assert others(data_dir, net) == ["last_reserved_ip.0", "lock"]
        assert not (data_dir / (PENDING_PREFIX + net)).exists()

        all_succeeded(start_together([Invocation("DEL", "c%03d" % i, conf) for i in range(n)]))
    finally:
        runs = lister.finish()
    assert leases(data_dir, net) == {}
    assert mirror(data_dir, net) == {}
    assert others(data_dir, net) == ["last_reserved_ip.0", "lock"]
    assert database_problems(data_dir, net) == []
    assert integrity(data_dir) == ["ok"]
    ipamctl("check", data_dir=data_dir)
    # The reader ran the whole time, and every run saw a consistent snapshot.
    assert len(runs) >= 3, "ipamctl list ran only %d time(s)" % len(runs)
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)
        assert isinstance(rows, list)
        ips = [r["ip"] for r in rows]
        assert len(ips) == len(set(ips))
        assert {r["container_id"] for r in rows} <= set(got)


@pytest.mark.slow
@NOT_THROUGH_THE_CHAOS_AT_110
def test_110_pods_starting_at_once_each_get_an_address(data_dir, netconf, through):
    """kubelet's default maxPods, 110, starting at once on one network, with the config's
    defaults (busyTimeout 10 s): the last call waits for all the others (a queue that
    moves, never a stall), and every ADD, then every DEL, succeeds."""
    n = 110
    net = "pods"
    conf = netconf({"subnet": "10.51.0.0/16"}, name=net)
    got = all_succeeded(start_together(
        [Invocation("ADD", "pod%03d" % i, conf) for i in range(n)]))
    assert len(got) == n
    assert leases(data_dir, net) == got
    assert mirror(data_dir, net) == expected_mirror(got)
    all_succeeded(start_together([Invocation("DEL", "pod%03d" % i, conf) for i in range(n)]))
    assert leases(data_dir, net) == {}
    assert mirror(data_dir, net) == {}
    assert database_problems(data_dir, net) == []


def test_mixed_storm_on_a_nearly_exhausted_pool(data_dir, netconf, through):
    """A /29 (5 addresses: .2-.6, .1 is the gateway) shared by 15 containers.

    Each wave gives every container at most one role, so that the outcome can be judged
    whatever the order the processes ran in:
      adders   - 1 to 3 ADDs (a repeated ADD must return the same address), maybe a CHECK;
      deleters - 1 or 2 DELs, maybe a CHECK;
      checkers - one CHECK; their lease must not change;
      idle     - nothing; their lease must not change.
    """
    net = "small"
    seed = 29
    rng = random.Random(seed)
    conf = netconf({"subnet": "10.60.0.0/29", "busyTimeout": 60}, name=net)
    pool = {"10.60.0.%d" % i for i in range(2, 7)}
    containers = ["s%02d" % i for i in range(15)]
    held = {}
    exhausted = total = 0
    for wave in range(12):
        where = "seed %d wave %d" % (seed, wave)
        order = containers[:]
        rng.shuffle(order)
        adders, deleters, checkers = order[:6], order[6:10], order[10:13]
        ops = []
        for cid in adders:
            ops += [("ADD", cid)] * rng.randint(1, 3) + [("CHECK", cid)] * rng.randint(0, 1)
        for cid in deleters:
            ops += [("DEL", cid)] * rng.randint(1, 2) + [("CHECK", cid)] * rng.randint(0, 1)
        ops += [("CHECK", cid) for cid in checkers]
        rng.shuffle(ops)
        invs = start_together([Invocation(cmd, cid, conf) for cmd, cid in ops])
        total += len(invs)
        after = leases(data_dir, net)
        assert set(after.values()) <= pool, where
        for inv in invs:
            assert_clean(inv)
            cid = inv.container_id
            if inv.command == "ADD":
                if inv.rc == 0:
                    # Leased to this container now (no DEL of it ran in this wave) and,
                    # for a container that already held one, the same address.
                    assert after.get(cid) == inv.address, (where, inv, after)
                    assert held.get(cid, inv.address) == inv.address, (where, inv, held)
                else:
                    assert cid not in held, (where, inv)  # a repeated ADD never fails
                    assert inv.json["code"] == 999, (where, inv)
                    assert inv.json["msg"].startswith(EXHAUSTED), (where, inv)
                    exhausted += 1
            elif inv.command == "DEL":
                assert (inv.rc, inv.out) == (0, b""), (where, inv)
            else:
                notfound = {"code": 999, "msg": "host-local: Failed to find address added "
                                                "by container %s" % cid}
                if cid in checkers or (cid in adders and cid in held):
                    expect_ok = cid in held  # its lease cannot change in this wave
                    assert (inv.rc == 0) == expect_ok, (where, inv)
                if cid in deleters and cid not in held:
                    assert inv.rc == 1, (where, inv)
                if inv.rc:
                    assert inv.json == notfound, (where, inv)
        for cid in adders:
            if any(i.rc == 0 for i in invs if i.container_id == cid and i.command == "ADD"):
                continue
            assert cid not in after, (where, cid, after)  # every ADD failed: nothing held
        for cid in deleters:
            assert cid not in after, (where, cid, after)
        for cid in checkers + order[13:]:
            assert after.get(cid) == held.get(cid), (where, cid, held, after)
        assert mirror(data_dir, net) == expected_mirror(after), where
        assert set(others(data_dir, net)) <= {"last_reserved_ip.0", "lock"}, where
        assert not (data_dir / (PENDING_PREFIX + net)).exists(), where
        held = after
    assert total >= 250
    assert exhausted > 0, "the storm never exhausted the pool"
    assert database_problems(data_dir, net) == []
    assert integrity(data_dir) == ["ok"]
    ipamctl("check", data_dir=data_dir)


# -- a writer that holds the lock ----------------------------------------------------
def _after_lock_checks(data_dir, conf, net, expect_ip):
    """Nothing corrupted: SQLite's check, our invariants, the mirror, and a working ADD."""
    assert integrity(data_dir) == ["ok"]
    assert database_problems(data_dir, net) == []
    assert not (data_dir / (PENDING_PREFIX + net)).exists()
    out = run_plugin("ADD", conf, container_id="b")
    assert out.status == 0 and out.json["ips"][0]["address"].split("/")[0] == expect_ip, out
    ipamctl("check", data_dir=data_dir)


def test_writer_flock_held_past_busy_timeout_is_code_11(data_dir, netconf, through):
    net = "locked"
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 0.3}, name=net)
    assert run_plugin("ADD", conf, container_id="a").status == 0
    fd = os.open(str(data_dir / (DB_NAME + ".lock")), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for command in ("ADD", "DEL", "CHECK"):
            t0 = time.monotonic()
            out = run_plugin(command, conf, container_id="b")
            waited = time.monotonic() - t0
            assert out.status == 1 and out.json["code"] == 11, (command, out)
            assert "locked" in out.json["msg"] and DB_NAME in out.json["msg"], out
            assert 0.3 <= waited < 10, waited
    finally:
        os.close(fd)
    assert leases(data_dir, net) == {"a": "10.1.2.2"}
    assert mirror(data_dir, net) == {"10.1.2.2": b"a\r\neth0"}
    _after_lock_checks(data_dir, conf, net, "10.1.2.3")


def test_writer_waits_in_the_queue_while_the_holder_finishes_in_time(data_dir, netconf,
                                                                     through):
    net = "queued"
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 30}, name=net)
    assert run_plugin("ADD", conf, container_id="a").status == 0
    queue = data_dir / (DB_NAME + ".lock")
    fd = os.open(str(queue), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        inv = Invocation("ADD", "c", conf)
        inv.feed()
        through.wait_queued(queue, inv.proc)
        assert inv.proc.poll() is None, "the ADD did not wait for the lock"
    finally:
        os.close(fd)
    inv.finish()
    assert inv.rc == 0 and inv.address == "10.1.2.3", inv
    assert leases(data_dir, net) == {"a": "10.1.2.2", "c": "10.1.2.3"}


@pytest.mark.parametrize("lock", ["host-local's lock", "writers' queue"])
def test_a_lock_whose_holder_keeps_changing_is_waited_for_past_busy_timeout(
        data_dir, netconf, lock, through):
    """busyTimeout bounds the wait on a holder that does not move; a queue whose holder
    keeps changing is progress. The lock passes from process to process here, each
    holding it 0.25 s, for 3 s from the moment a call waits: calls with a busyTimeout
    of 1 s wait it out and succeed (a holder that keeps it still ends the wait at
    busyTimeout: test_writer_flock_held_past_busy_timeout_is_code_11, and the stuck
    holder of one network's lock below).
    Three calls on host-local's lock: the first polls it, the others wait behind the
    first (in the node daemon, in its own queue, whose turns tell them it moves). One
    on the writers' queue: a second would wait on host-local's lock meanwhile, whose
    holder, that first call, does not change while it waits."""
    net = "relay"
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 1}, name=net)
    assert run_plugin("ADD", conf, container_id="a").status == 0
    polled = lock == "host-local's lock"
    path = data_dir / net / "lock" if polled else data_dir / (DB_NAME + ".lock")
    with LockRelay(path, hold=0.25, turns=13) as relay:
        invs = [Invocation("ADD", "c%d" % i, conf) for i in range(3 if polled else 1)]
        for inv in invs:
            inv.feed()
        through.wait_queued(path, invs[0].proc, polling=polled)
        relay.start()
        run_all(invs)
    assert len(set(relay.holders)) == 13
    for inv in invs:
        assert inv.rc == 0, inv
    assert sorted(leases(data_dir, net)) == ["a"] + [inv.container_id for inv in invs]
    assert check_json(data_dir)[0] == 0


def _wait_stopped(pid, timeout=5.0):
    """SIGSTOP takes effect asynchronously: wait for the state to be T (stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    raise AssertionError("process %d did not stop" % pid)


def _stop_while_holding(proc, lock_path, deadline):
    """SIGSTOP ``proc`` at a moment it holds the writers' flock (it is then inside its
    transaction). True when it did; False when ``proc`` ended first."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.kill(proc.pid, signal.SIGSTOP)
                _wait_stopped(proc.pid)
                try:  # still held now that it is stopped?
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.kill(proc.pid, signal.SIGCONT)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def test_ipamctl_stopped_mid_transaction_makes_add_code_11(data_dir, netconf, through):
    """The holder is ipamctl itself: `ipamctl export` rewriting a big mirror, frozen with
    SIGSTOP while it holds the lock."""
    net = "big"
    conf = netconf({"subnet": "10.9.0.0/16", "busyTimeout": 0.3}, name=net)
    src = data_dir / net
    src.mkdir()
    n = 4000
    for i in range(n):
        (src / ("10.9.%d.%d" % (10 + i // 250, 2 + i % 250))).write_bytes(b"x%d\r\neth0" % i)
    ipamctl("import", data_dir=data_dir)
    lock_path = str(data_dir / (DB_NAME + ".lock"))
    deadline = time.monotonic() + 60
    while True:
        holder = subprocess.Popen([IPAMCTL, "--data-dir", str(data_dir), "-o", "json",
                                   "export"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stopped = _stop_while_holding(holder, lock_path, deadline)
            if stopped:
                try:
                    out = run_plugin("ADD", conf, container_id="b")
                finally:
                    os.kill(holder.pid, signal.SIGCONT)
        finally:
            stdout, stderr = holder.communicate(timeout=120)
        if stopped or time.monotonic() > deadline:
            break
    assert stopped, "never caught ipamctl inside its transaction"
    assert out.status == 1 and out.json["code"] == 11, out
    assert holder.returncode == 0, stderr.decode()
    assert json.loads(stdout) == {net: []}
    assert len(leases(data_dir, net)) == n
    assert "b" not in leases(data_dir, net)
    _after_lock_checks(data_dir, conf, net, "10.9.0.2")


def _daemon_settled(through):
    """No call in flight in the daemon the plugin processes name, or no daemon."""
    daemon = through.daemon
    if daemon is None:
        return True
    try:
        return daemon.health()["in_flight"] == 0
    except (IoFailure, OSError):  # stopped or killed: its calls ended with it
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("waiting_on", ["writers' queue", "host-local's lock"])
def test_a_signal_is_an_error_object_and_changes_nothing(data_dir, netconf, signum,
                                                        waiting_on, through):
    """A runtime that gives up on a call (Ctrl-C by hand, a timeout's SIGTERM) gets a CNI
    error object, code 11, never a traceback; the call's transaction rolls back."""
    net = "signalled"
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 30}, name=net)
    assert run_plugin("ADD", conf, container_id="a").status == 0
    held = data_dir / (DB_NAME + ".lock") if waiting_on == "writers' queue" \
        else data_dir / net / "lock"
    fd = os.open(str(held), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        inv = Invocation("ADD", "b", conf)
        inv.feed()
        through.wait_queued(held, inv.proc, polling=waiting_on == "host-local's lock")
        assert inv.proc.poll() is None, "the ADD did not wait"
        inv.proc.send_signal(signum)
        inv.finish(timeout=10)
    finally:
        os.close(fd)
    assert inv.rc == 1 and b"Traceback" not in inv.err, inv
    # Through the daemon, the client says where the call was (ipam.client._interrupted);
    # a call that fell back in process (the chaos) answers as in process.
    name = signal.Signals(signum).name
    answers = []
    if through.socket is None or through.chaos is not None:
        answers.append("interrupted by %s; try again" % name)
    if through.socket is not None:
        answers.append("interrupted by %s while the node daemon ran the call; try again"
                       % name)
    assert inv.json in [{"code": 11, "msg": msg} for msg in answers], inv
    # The daemon rolls the call back once it sees its client gone, after the client has
    # answered: wait until it has, or until it is gone (the chaos stops daemons).
    wait_until(lambda: _daemon_settled(through), "the daemon's call to roll back",
               timeout=30)
    assert leases(data_dir, net) == {"a": "10.1.2.2"}
    assert mirror(data_dir, net) == {"10.1.2.2": b"a\r\neth0"}
    assert run_plugin("ADD", conf, container_id="b").status == 0
    assert check_json(data_dir)[0] == 0


@pytest.mark.not_through("daemon-stopped-and-killed", why=(
    "its bound, 3 calls of the other network within 2.5 s, is in-process time: a stopped "
    "daemon costs every call up to the client's TAKE_TIMEOUT (1 s) by design"))
def test_a_stuck_holder_of_one_networks_lock_stalls_that_network_only(data_dir, netconf,
                                                                      through):
    """host-local's ``<network>/lock`` is taken before our node-wide writers' queue: a
    process stuck holding it (a stopped Go plugin) costs that network ``busyTimeout``
    and a code 11 naming the file, and every other network goes on meanwhile."""
    stuck = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 3}, name="stuck")
    other = netconf({"subnet": "10.1.3.0/24", "busyTimeout": 3}, name="other")
    for conf in (stuck, other):
        assert run_plugin("ADD", conf, container_id="a").status == 0
    fd = os.open(str(data_dir / "stuck" / "lock"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = Invocation("ADD", "b", stuck)
        waiting.feed()
        through.wait_queued(data_dir / "stuck" / "lock", waiting.proc, polling=True)
        t0 = time.monotonic()
        for cid in "bcd":
            out = run_plugin("ADD", other, container_id=cid)
            assert out.status == 0, out
        assert time.monotonic() - t0 < 2.5, "the other network waited for the stuck one"
        waiting.finish(timeout=20)
    finally:
        os.close(fd)
    assert waiting.rc == 1 and waiting.json["code"] == 11, waiting
    assert str(data_dir / "stuck" / "lock") in waiting.json["msg"], waiting
    assert "past the busy timeout (3s)" in waiting.json["msg"], waiting
    assert leases(data_dir, "stuck") == {"a": "10.1.2.2"}
    assert run_plugin("ADD", stuck, container_id="b").status == 0


def test_a_fifo_planted_as_the_lock_is_refused_at_once(data_dir, netconf, through):
    conf = netconf({"subnet": "10.1.2.0/24", "busyTimeout": 30}, name="fifo")
    (data_dir / "fifo").mkdir(parents=True)
    os.mkfifo(data_dir / "fifo" / "lock")
    t0 = time.monotonic()
    out = run_plugin("ADD", conf, container_id="a")
    assert time.monotonic() - t0 < 5
    assert out.status == 1 and out.json["code"] == 5, out
    assert "lock is not a regular file" in out.json["msg"], out
    assert stat.S_ISFIFO(os.lstat(data_dir / "fifo" / "lock").st_mode)
