"""Plugin processes killed with SIGKILL: at random moments in a crowd, and at chosen points
of the code path. The database must never be damaged nor hold an address twice, every
reported address must be leased, and the mirror must come back equal to the database."""
import os
import random
import threading
import time

import pytest
from helpers import run_plugin
from plugin_procs import (
    Invocation,
    check_json,
    child_argv,
    database_problems,
    expected_mirror,
    integrity,
    leases,
    mirror,
    others,
    query,
    run_all,
    wait_reading_stdin,
)

from ipam.paths import PENDING_PREFIX, TMP_PREFIX

MIRROR_EXTRAS = {"last_reserved_ip.0", "lock"}


def assert_mirror_clean(data_dir, net, why=""):
    """``ipamctl check`` is happy, and the directory holds exactly the leases."""
    status, report = check_json(data_dir)
    assert (status, report) == (0, {"ok": True, "problems": [], "findings": []}), why
    assert mirror(data_dir, net) == expected_mirror(leases(data_dir, net)), why
    assert set(others(data_dir, net)) <= MIRROR_EXTRAS, why


# -- random kills in a crowd ---------------------------------------------------------
def _round(conf, rnd, seed, deletable):
    """~12 concurrent invocations: ADDs of new containers and DELs of earlier ones. All
    are started and wait on stdin (after the interpreter's start-up, which touches
    nothing); then all are fed at once and a random third is SIGKILLed 0-60 ms later."""
    rng = random.Random(seed)
    dels = rng.sample(sorted(deletable), min(rng.randint(2, 4), len(deletable)))
    ops = [("DEL", cid) for cid in dels]
    ops += [("ADD", "r%02dc%02d" % (rnd, i)) for i in range(12 - len(dels))]
    rng.shuffle(ops)
    victims = set(rng.sample(range(len(ops)), len(ops) // 3))
    delays = [rng.uniform(0, 0.060) for _ in ops]
    invs = [Invocation(command, cid, conf) for command, cid in ops]
    wait_reading_stdin(invs)
    timers = []
    for i, inv in enumerate(invs):
        inv.feed()
        if i in victims:
            timer = threading.Timer(delays[i], inv.kill)
            timer.start()
            timers.append(timer)
    for timer in timers:
        timer.join()
    return run_all(invs)  # every process waited for before any answer is checked


@pytest.mark.slow
def test_random_sigkills_never_corrupt_or_duplicate(data_dir, netconf, through):
    net = "crashy"
    conf = netconf({"subnet": "10.70.0.0/16", "busyTimeout": 60}, name=net)
    owned = {}  # container -> the address its ADD reported
    uncertain = set()  # containers whose ADD or DEL was killed: a lease or none
    killed = 0
    for rnd in range(20):
        seed = 7000 + rnd
        where = "round %d, seed %d" % (rnd, seed)
        invs = _round(conf, rnd, seed, set(owned) | uncertain)
        for inv in invs:
            assert b"Traceback" not in inv.err, (where, inv)
            if inv.rc == -9:
                killed += 1
                owned.pop(inv.container_id, None)
                uncertain.add(inv.container_id)
                continue
            assert inv.rc == 0 and through.expected_stderr(inv.err) == b"", (where, inv)
            if inv.command == "ADD":
                owned[inv.container_id] = inv.address
            else:
                assert inv.out == b"", (where, inv)
        for inv in invs:  # a DEL that completed: the container holds nothing any more
            if inv.command == "DEL" and inv.rc == 0:
                owned.pop(inv.container_id, None)
                uncertain.discard(inv.container_id)

        assert integrity(data_dir) == ["ok"], where
        assert database_problems(data_dir, net) == [], where
        now = leases(data_dir, net)  # asserts: no address twice, one per container
        for cid, ip in owned.items():
            assert now.get(cid) == ip, (where, cid, ip, now.get(cid))
        assert set(now) <= set(owned) | uncertain, (where, set(now) - set(owned))
        for inv in invs:
            if inv.command == "DEL" and inv.rc == 0:
                assert inv.container_id not in now, (where, inv)

        if rnd % 2 == 0:
            # One more successful invocation puts the mirror right.
            out = run_plugin("ADD", conf, container_id="fix%02d" % rnd)
            assert out.status == 0, (where, out)
            owned["fix%02d" % rnd] = out.json["ips"][0]["address"].split("/")[0]
            assert not (data_dir / (PENDING_PREFIX + net)).exists(), where
        else:
            # So does `ipamctl check --repair`, alone.
            status, report = check_json(data_dir, repair=True)
            assert status == 0 and report["ok"], (where, report)
        assert_mirror_clean(data_dir, net, where)
    assert killed >= 10, "only %d processes were killed while running" % killed


# -- kills at chosen points ----------------------------------------------------------
# Each is source text run in a child before the plugin's entry point; die() SIGKILLs it.
# These tests stay in process: the patch is the plugin process's own code, which through
# a daemon runs in the daemon, and a build cannot be patched. A daemon killed at a step
# of a call is test_daemon_process.py's (HOST_LOCAL_SQLITE_DAEMON_STOP_AT).
CHOSEN_POINT = pytest.mark.in_process_only(
    why="kills the plugin process at a chosen point of its own code (child_argv)")
# Killed before the command's own COMMIT; a reconcile committed alone before it (a
# foreign change met first: ipam.commands._run) is let through.
BEFORE_COMMIT = """
from ipam.store import table
_exit = table.Transaction.__exit__
def _patched(self, exc_type, exc, tb):
    if getattr(self.after_commit, "reconciled_only", False):
        return _exit(self, exc_type, exc, tb)
    if exc_type is None and self.store.conn.in_transaction:
        if self.store.conn.total_changes == 0:
            sys.exit("nothing changed before COMMIT")
        die()
    return _exit(self, exc_type, exc, tb)
table.Transaction.__exit__ = _patched
"""

AFTER_COMMIT = """
from ipam.mirror import files as exporter
exporter.NetworkFiles.committed = lambda self: die()
"""

# The changed files never reached the disk (no fsync before a power cut, say).
MIRROR_LOST = AFTER_COMMIT + """
exporter.NetworkDir.create = lambda self, name, data: True
exporter.NetworkDir.remove = lambda self, name: None
"""

MID_WRITE = """
from ipam import system
_link = system.link
def _link_or_die(src, dst, *a, **kw):
    if isinstance(src, str) and src.startswith(%r):
        die()
    return _link(src, dst, *a, **kw)
system.link = _link_or_die
""" % TMP_PREFIX

# Pause the writer the moment it has left the writers' queue (after its COMMIT), until
# the test lets it go: the scheduler can do the same to any process at that point.
PAUSE_AFTER_THE_QUEUE = """
from ipam.store import table
_end = table.LeaseTable.end
def _end_and_pause(self):
    _end(self)  # out of the writers' queue (writer_lock.release also drops other locks)
    open(os.environ["T_READY"], "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["T_GO"]) and time.monotonic() < deadline:
        time.sleep(0.005)
table.LeaseTable.end = _end_and_pause
"""

NET = "det"


def _state(data_dir):
    return {"leases": query(data_dir, "SELECT ip, container_id, ifname, next_free FROM leases "
                                      "ORDER BY ip_key"),
            "history": query(data_dir, "SELECT id, event, reason, ip, container_id FROM history "
                                       "ORDER BY id"),
            "cursors": query(data_dir, "SELECT network, range_set, ip FROM cursors")}


def _crash(conf, command, container_id, patch):
    inv = Invocation(command, container_id, conf, argv=child_argv(patch)).finish()
    assert inv.rc == -9 and inv.out == b"", inv
    return inv


def _setup(data_dir, netconf):
    conf = netconf({"subnet": "10.80.0.0/24", "busyTimeout": 5}, name=NET)
    assert run_plugin("ADD", conf, container_id="a").status == 0
    assert_mirror_clean(data_dir, NET)
    return conf


def _fix(data_dir, conf, fixer):
    """The next plugin invocation (an ADD asking for .50, so that no file of the crash
    could be mistaken for its own), or `ipamctl check --repair`."""
    if fixer == "plugin":
        out = run_plugin("ADD", conf, container_id="c", args="IP=10.80.0.50")
        assert out.status == 0, out
        assert not (data_dir / (PENDING_PREFIX + NET)).exists()
    else:
        status, report = check_json(data_dir, repair=True)
        assert status == 0 and report["ok"] and report["problems"], report
        assert all(p.endswith("(repaired)") for p in report["problems"]), report
    assert_mirror_clean(data_dir, NET)
    assert integrity(data_dir) == ["ok"]
    assert database_problems(data_dir, NET) == []


# How check names what a command killed before its journal went left (the journal says
# what the next call, or check --repair, does about it).
INTERRUPTED = ("interrupted (an unfinished command's change, which the next call on the "
               "network or --repair finishes or undoes)")


def _problems(data_dir):
    status, report = check_json(data_dir)
    assert status == 1 and not report["ok"], report
    return sorted(p.rsplit("/", 1)[1] for p in report["problems"])


@CHOSEN_POINT
@pytest.mark.parametrize("fixer", ["plugin", "ipamctl"])
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_killed_before_commit_leaves_no_trace(data_dir, netconf, command, fixer):
    conf = _setup(data_dir, netconf)
    before = _state(data_dir)
    cid = "b" if command == "ADD" else "a"
    _crash(conf, command, cid, BEFORE_COMMIT)
    assert _state(data_dir) == before  # no lease, no history row, cursor unchanged
    assert (data_dir / (PENDING_PREFIX + NET)).exists()
    if command == "ADD":  # its file and cursor were written, for a lease that never was
        assert mirror(data_dir, NET)["10.80.0.3"] == b"b\r\neth0"
        assert _problems(data_dir) == ["10.80.0.3: " + INTERRUPTED,
                                       "last_reserved_ip.0: " + INTERRUPTED]
    else:  # the file of a lease that is still there was removed
        assert "10.80.0.2" not in mirror(data_dir, NET)
        assert _problems(data_dir) == ["10.80.0.2: " + INTERRUPTED]
    _fix(data_dir, conf, fixer)
    assert leases(data_dir, NET) == dict({"a": "10.80.0.2"},
                                         **({"c": "10.80.0.50"} if fixer == "plugin" else {}))
    assert "10.80.0.3" not in mirror(data_dir, NET)


@CHOSEN_POINT
@pytest.mark.parametrize("fixer", ["plugin", "ipamctl"])
@pytest.mark.parametrize("command", ["ADD", "DEL"])
@pytest.mark.parametrize("files", ["written", "lost"])
def test_killed_after_commit_before_the_marker_goes(data_dir, netconf, command, files,
                                                    fixer):
    conf = _setup(data_dir, netconf)
    cid = "b" if command == "ADD" else "a"
    _crash(conf, command, cid, AFTER_COMMIT if files == "written" else MIRROR_LOST)
    # Committed: the database has the change, its history and cursor.
    expect = {"a": "10.80.0.2", "b": "10.80.0.3"} if command == "ADD" else {}
    assert leases(data_dir, NET) == expect
    last = query(data_dir, "SELECT event, reason, ip, container_id FROM history "
                           "ORDER BY id DESC LIMIT 1")
    assert last == [("allocate", "add", "10.80.0.3", "b") if command == "ADD"
                    else ("release", "del", "10.80.0.2", "a")]
    assert (data_dir / (PENDING_PREFIX + NET)).exists()
    if files == "written":
        assert mirror(data_dir, NET) == expected_mirror(expect)
        if fixer == "ipamctl":
            return  # nothing for check --repair to do; the marker case is the plugin's
    elif command == "ADD":
        assert _problems(data_dir) == ["10.80.0.3: " + INTERRUPTED]
    else:
        assert _problems(data_dir) == ["10.80.0.2: " + INTERRUPTED]
    _fix(data_dir, conf, fixer)
    if fixer == "plugin":
        expect["c"] = "10.80.0.50"
    assert leases(data_dir, NET) == expect


@CHOSEN_POINT
@pytest.mark.parametrize("fixer", ["plugin", "ipamctl"])
def test_killed_while_writing_the_mirror_leaves_a_temporary_file(data_dir, netconf, fixer):
    conf = _setup(data_dir, netconf)
    before = _state(data_dir)
    _crash(conf, "ADD", "b", MID_WRITE)
    assert _state(data_dir) == before
    temps = [n for n in others(data_dir, NET) if n.startswith(TMP_PREFIX)]
    assert len(temps) == 1 and temps[0].startswith(TMP_PREFIX + "10.80.0.3."), temps
    assert (data_dir / NET / temps[0]).read_bytes() == b"b\r\neth0"
    assert _problems(data_dir) == [temps[0] + ": temporary"]
    _fix(data_dir, conf, fixer)
    assert not any(n.startswith(TMP_PREFIX) for n in os.listdir(data_dir / NET))


@CHOSEN_POINT
def test_marker_removed_late_by_an_earlier_writer_still_protects_a_later_one(
        data_dir, netconf, tmp_path):
    """Writer A commits, leaves the writers' queue and is descheduled there. Writer B
    takes the lock, writes its files and is killed before its COMMIT. Whatever A still
    does when it runs again must not hide B's debris from the next invocation.

    Today A removes the pending marker only after leaving the queue: B found A's marker
    (so created none), A then removes it, and nothing tells the next invocation that B's
    files must be resynchronised.
    """
    conf = _setup(data_dir, netconf)
    ready, go = tmp_path / "a-left-the-queue", tmp_path / "go"
    a = Invocation("ADD", "x", conf, argv=child_argv(PAUSE_AFTER_THE_QUEUE),
                   env_extra={"T_READY": str(ready), "T_GO": str(go)})
    try:
        a.feed()
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline and a.proc.poll() is None:
            time.sleep(0.005)
        assert ready.exists(), "writer A never left the queue"
        _crash(conf, "ADD", "y", BEFORE_COMMIT)
    finally:
        go.touch()
        a.finish()
    assert a.rc == 0 and a.address == "10.80.0.3", a
    assert leases(data_dir, NET) == {"a": "10.80.0.2", "x": "10.80.0.3"}
    out = run_plugin("ADD", conf, container_id="c", args="IP=10.80.0.50")
    assert out.status == 0, out
    # y's file (10.80.0.4) belongs to a lease that was never committed.
    assert_mirror_clean(data_dir, NET)


@CHOSEN_POINT
def test_a_legacy_lease_is_claimed_once_and_a_crash_undoes_the_claim(data_dir, netconf):
    """A pre-0.8 host-local file holds only the container ID. The first interface that
    asks claims it (its file is rewritten ID\\r\\nifname); another interface gets an
    address of its own. A claim killed before its COMMIT leaves the legacy file."""
    conf = netconf({"subnet": "10.80.0.0/24", "busyTimeout": 5}, name=NET)
    net = data_dir / NET
    net.mkdir(parents=True)
    (net / "10.80.0.7").write_bytes(b"old")
    (net / "last_reserved_ip.0").write_bytes(b"10.80.0.7")
    _crash(conf, "ADD", "old", BEFORE_COMMIT)  # eth0 claims it, and dies before COMMIT
    assert mirror(data_dir, NET)["10.80.0.7"] == b"old\r\neth0"
    # The adoption, committed alone before the claim, stays: still the legacy lease.
    assert query(data_dir, "SELECT ip, container_id, ifname FROM leases") == [
        ("10.80.0.7", "old", None)]
    # The next call puts the legacy file back first; else eth0 would keep it.
    out = run_plugin("ADD", conf, container_id="old", ifname="eth1")
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.80.0.7/24", out
    assert (net / "10.80.0.7").read_bytes() == b"old\r\neth1"
    out = run_plugin("ADD", conf, container_id="old", ifname="eth2")
    assert out.status == 0 and out.json["ips"][0]["address"] == "10.80.0.8/24", out
    assert run_plugin("DEL", conf, container_id="old", ifname="eth1").status == 0
    assert sorted(mirror(data_dir, NET)) == ["10.80.0.8"]
    assert check_json(data_dir)[0] == 0
