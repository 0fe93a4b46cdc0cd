"""Go host-local and ours on one dataDir: no address is ever held by two owners.

The mirror is a two-way contract (design.md, "The file layout (the mirror)"): Go
host-local (before the binary swap, after a rollback), a restored backup and operators
read and write ``<dataDir>/<network>/<ip>`` too. Our plugin must take host-local's
``<network>/lock`` flock around its changes, treat a file naming another owner as taken
(adopt it, skip the address), notice on every call that someone else changed the
directory, and never unlink or rewrite a file that names another owner: not in ADD or
DEL, nor in ``ipamctl release``, ``gc --apply`` or ``check --repair``.

Every test runs the real binaries (Go's and ours, same dataDir, same network name, same
ipam keys) and tracks the containers it has ADDed and not DELeted: the live ones, with
the address each was told. :meth:`Pool.problems` judges the invariant from three views
at once: that list, Go's view (the address files, owner = parsed content) and ours (the
``leases`` table):
  - no two live containers were told the same address;
  - every live container's address is held for it by the database or by a file, and no
    address is held for two live containers across the two views;
  - every file Go created for a still-live container exists with Go's bytes.
The Go-against-Go baselines show that the tests' own bookkeeping is sound.
"""
import fcntl
import ipaddress
import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest
from cniexec import GO_HOST_LOCAL
from cniexec import run as run_binary
from helpers import IPAMCTL, PLUGIN, ipamctl
from plugin_procs import DB_NAME, Invocation, run_all, start_together

pytestmark = pytest.mark.reference

TYPE = {"go": "host-local", "ours": "host-local-sqlite"}
GO_ONLY = pytest.mark.no_entry_path(why="a baseline: Go's host-local beside itself")
NET = "shared"


def content(cid, ifname="eth0"):
    """What host-local writes into an address file."""
    return ("%s\r\n%s" % (cid, ifname)).encode()


def owner_of(data):
    """The container ID an address file names (host-local's three formats), or None."""
    if not data:
        return None
    text = data.decode(errors="replace").strip()
    return text.replace("\r\n", "\n").split("\n", 1)[0].strip() or None


def ctl_json(data_dir, *args):
    proc = ipamctl("-o", "json", *args, data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


class Pool:
    """One network on one dataDir, shared by Go and ours, and the containers the test
    holds live there: ``live[cid] = (address it was told, "go" or "ours")``."""

    def __init__(self, data_dir, net=NET, **ipam):
        self.data_dir = str(data_dir)
        self.net = net
        self.dir = os.path.join(self.data_dir, net)
        self.db = os.path.join(self.data_dir, DB_NAME)
        self.live = {}
        self.conf = {who: {"cniVersion": "1.0.0", "name": net, "type": "bridge",
                           "ipam": dict({"type": TYPE[who], "dataDir": self.data_dir}, **ipam)}
                     for who in TYPE}

    # -- one call at a time ---------------------------------------------------------
    def call(self, who, command, cid, args=None):
        """Go's binary, or ours as the test's entry path runs it (cniexec.run, under
        conftest's through)."""
        binary = GO_HOST_LOCAL if who == "go" else PLUGIN
        return run_binary(binary, command, self.conf[who], container_id=cid, args=args)

    def add(self, who, cid, args=None):
        out = self.call(who, "ADD", cid, args)
        assert out.status == 0 and out.json and out.json.get("ips"), "%s ADD %s: %s" % (
            who, cid, out)
        ip = out.json["ips"][0]["address"].split("/")[0]
        self.live[cid] = (ip, who)
        return ip

    def delete(self, who, cid):
        out = self.call(who, "DEL", cid)
        assert (out.status, out.stdout) == (0, b""), "%s DEL %s: %s" % (who, cid, out)
        self.live.pop(cid, None)

    # -- many at once ---------------------------------------------------------------
    def invocation(self, who, command, cid):
        return Invocation(command, cid, self.conf[who],
                          argv=[GO_HOST_LOCAL] if who == "go" else None)

    def settle(self, invocations, whos):
        """Record what a batch did; every call must have succeeded."""
        failed = [(who, inv) for who, inv in zip(whos, invocations, strict=True)
                  if inv.rc != 0]
        assert not failed, "%d call(s) failed, first: %r" % (len(failed), failed[:3])
        for who, inv in zip(whos, invocations, strict=True):
            if inv.command == "ADD":
                self.live[inv.container_id] = (inv.address, who)
            elif inv.command == "DEL":
                self.live.pop(inv.container_id, None)

    # -- the three views --------------------------------------------------------------
    def files(self):
        """Go's view: {address: bytes} of the network directory's address files."""
        out = {}
        if not os.path.isdir(self.dir):
            return out
        for name in os.listdir(self.dir):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    out[name] = f.read()
            except OSError:
                pass
        return out

    def leases(self):
        """Ours: [(ip, container_id, ifname)] of the network, [] without a database."""
        if not os.path.exists(self.db):
            return []
        db = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, isolation_level=None)
        try:
            return db.execute("SELECT ip, container_id, ifname FROM leases WHERE network = ?",
                              (self.net,)).fetchall()
        finally:
            db.close()

    def problems(self):
        out = []
        told = {}
        for cid, (ip, _who) in sorted(self.live.items()):
            told.setdefault(ip, []).append(cid)
        for ip, cids in sorted(told.items()):
            if len(cids) > 1:
                out.append("duplicate: %s was told to %s" % (ip, " and ".join(
                    "%s (%s)" % (c, self.live[c][1]) for c in cids)))
        files = self.files()
        rows = self.leases()
        db = {}
        for ip, cid, _ifname in rows:
            db.setdefault(ip, set()).add(cid)
        for ip, cids in sorted(db.items()):
            if len(cids) > 1:
                out.append("the database leases %s to %s" % (ip, sorted(cids)))
        for cid, (ip, who) in sorted(self.live.items()):
            by_file = owner_of(files.get(ip)) == cid
            by_db = cid in db.get(ip, ())
            if not (by_file or by_db):
                out.append("%s (%s) is not held for live %s: file %r, database %r" % (
                    ip, who, cid, files.get(ip), sorted(db.get(ip, ()))))
            if who == "go" and files.get(ip) != content(cid):
                out.append("Go's file %s of live %s was %s" % (
                    ip, cid, "removed" if ip not in files else
                    "overwritten: now %r" % files[ip]))
            for lip, lcid, _ in rows:
                if lcid == cid and lip != ip:
                    out.append("the database leases %s to live %s, which was told %s" % (
                        lip, cid, ip))
        for ip in sorted(set(files) | set(db)):
            owners = set(db.get(ip, ()))
            if ip in files:
                owners.add(owner_of(files[ip]))
            held = sorted(o for o in owners if o in self.live)
            if len(held) > 1:
                out.append("%s is held for two live containers: %s (file %r, database %r)"
                           % (ip, held, files.get(ip), sorted(db.get(ip, ()))))
        return out

    def assert_ok(self, where=""):
        problems = self.problems()
        assert problems == [], "%s\n%s" % (where, "\n".join(problems))


def history(data_dir, network):
    return ctl_json(data_dir, "history", "--network", network)


def listed(data_dir, network):
    return {(r["ip"], r["container_id"], r["ifname"])
            for r in ctl_json(data_dir, "list", "--network", network)}


# -- 1. roll back to Go, then forward ----------------------------------------------------
def test_rollback_to_go_then_forward(data_dir, through):
    pool = Pool(data_dir, subnet="10.71.0.0/24")
    for cid in "abc":
        pool.add("ours", cid)
    pool.assert_ok("after ours a, b, c")
    go_ips = {cid: pool.add("go", cid) for cid in "def"}   # continues from the cursor file
    go_bytes = {ip: pool.files()[ip] for ip in go_ips.values()}
    pool.assert_ok("after Go d, e, f")
    for cid in "ghi":
        pool.add("ours", cid)
        pool.assert_ok("after ours %s" % cid)
    assert len({ip for ip, _ in pool.live.values()}) == 9
    assert {ip: pool.files().get(ip) for ip in go_ips.values()} == go_bytes
    # Go's leases are ours now: recorded as adopted, and the pool is consistent.
    assert {(ip, cid, "eth0") for cid, ip in go_ips.items()} <= listed(data_dir, NET)
    adopted = {(e["ip"], e["container_id"]) for e in history(data_dir, NET)
               if e["reason"] == "adopt"}
    assert {(ip, cid) for cid, ip in go_ips.items()} <= adopted
    proc = ipamctl("check", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_go_takes_a_freed_address_then_our_del_leaves_its_file(data_dir, through):
    """Go DELs ours' ``a`` and gives its address to ``x``: our lease of ``a`` was released
    outside. Ours must hand the address to nobody else, and ours' DEL of ``a`` must not
    remove ``x``'s file."""
    pool = Pool(data_dir, subnet="10.72.0.0/24")
    a_ip = pool.add("ours", "a")
    pool.add("ours", "b")
    pool.add("ours", "c")
    pool.delete("go", "a")
    assert a_ip not in pool.files()
    assert pool.add("go", "x", args="IP=%s" % a_ip) == a_ip
    pool.assert_ok("after Go DEL a, ADD x")
    pool.add("ours", "g")
    pool.assert_ok("after ours ADD g")
    pool.delete("ours", "a")
    assert pool.files().get(a_ip) == content("x"), "ours' DEL of a touched x's file"
    pool.assert_ok("after ours DEL a")
    pool.add("ours", "h")
    pool.assert_ok("after ours ADD h")
    assert (a_ip, "x", "eth0") in listed(data_dir, NET)
    assert not any(cid == "a" for _ip, cid, _if in listed(data_dir, NET))
    released = [e for e in history(data_dir, NET)
                if e["container_id"] == "a" and e["event"] != "allocate"]
    assert [e["reason"] for e in released] == ["reconcile"], released


def test_a_lease_whose_file_go_removed_is_kept(data_dir, through):
    """Go DELs ours' ``a``: the file goes, the lease stays (never released automatically)
    and our next call writes its file back, reporting it on stderr, so that neither we
    nor Go hand its address out. The address leaks until an operator frees it, never
    held twice."""
    pool = Pool(data_dir, subnet="10.79.0.0/24", rangeStart="10.79.0.2",
                rangeEnd="10.79.0.3")   # two addresses
    a_ip = pool.add("ours", "a")
    pool.delete("go", "a")
    out = pool.call("ours", "ADD", "b")
    assert out.status == 0, out
    b_ip = out.json["ips"][0]["address"].split("/")[0]
    assert b_ip != a_ip
    assert a_ip in out.stderr.decode(), "the missing file of %s was not reported: %s" % (
        a_ip, out)
    assert (a_ip, "a", "eth0") in listed(data_dir, NET)
    assert pool.files().get(a_ip) == content("a"), "a's file was not written back"
    out = pool.call("ours", "ADD", "c")   # a's address stays taken: the pool is full
    assert out.status != 0, "ours gave c %s" % out.json
    out = pool.call("go", "ADD", "x")   # for Go too: it sees a's file
    assert out.status != 0, "Go gave x %s" % out.json
    pool.assert_ok("after ours ADD c and Go ADD x on a full pool")
    proc = ipamctl("check", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = ipamctl("release", a_ip, "--network", NET, "--yes", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert a_ip not in pool.files()
    assert pool.add("go", "x") == a_ip
    pool.assert_ok("after ipamctl release of a, then Go ADD x")


def test_ours_waits_for_host_locals_lock(data_dir, through):
    """While someone holds ``<network>/lock`` (as Go does for a whole command) ours
    changes no file; when the holder lets go, ours carries on."""
    pool = Pool(data_dir, subnet="10.80.0.0/24", busyTimeout=30)
    pool.add("ours", "first")
    before = pool.files()
    lock = os.path.join(pool.dir, "lock")
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        inv = pool.invocation("ours", "ADD", "second")
        inv.feed()
        through.wait_queued(lock, inv.proc, polling=True)
        assert inv.proc.poll() is None, "ours ADD ended while the lock was held: %r" % (
            inv.finish(),)
        assert pool.files() == before, "ours wrote while host-local's lock was held"
    finally:
        os.close(fd)   # closing drops the flock
    pool.settle(run_all([inv]), ["ours"])
    assert set(pool.files()) == set(before) | {pool.live["second"][0]}
    pool.assert_ok()


# -- 2. Go calls still queued at the binary swap ------------------------------------------
def _swap_burst(data_dir, second):
    pool = Pool(data_dir, subnet="10.73.0.0/24")
    for i in range(3):   # what Go left before the swap
        pool.add("go", "old%d" % i)
    pool.add(second, "first")   # the swap: the new binary's first call (adopts Go's files)
    whos = ["go"] * 30 + [second] * 30
    random.Random(73).shuffle(whos)
    invs = [pool.invocation(who, "ADD", "c%02d" % i) for i, who in enumerate(whos)]
    pool.settle(start_together(invs), whos)
    assert len(pool.live) == 64
    pool.assert_ok("after 30 Go and 30 %s ADDs at once" % second)
    return pool


@pytest.mark.slow
def test_go_adds_queued_at_the_swap_beside_ours(data_dir, through):
    pool = _swap_burst(data_dir, "ours")
    pool.add("ours", "last")   # sees everything Go wrote
    pool.assert_ok("after one more ours ADD")
    proc = ipamctl("check", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@GO_ONLY
def test_baseline_go_adds_beside_go(data_dir):
    _swap_burst(data_dir, "go")


# -- 3. the database goes back in time --------------------------------------------------
def _back_in_time(data_dir, restore):
    pool = Pool(data_dir, subnet="10.74.0.0/24")
    for cid in "ab":
        pool.add("ours", cid)
    backup = os.path.join(os.path.dirname(pool.data_dir), "backup.db")
    src = sqlite3.connect(pool.db)
    dst = sqlite3.connect(backup)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    later = {cid: pool.add("ours", cid) for cid in "cde"}
    later_bytes = {ip: pool.files()[ip] for ip in later.values()}
    assert later_bytes == {ip: content(cid) for cid, ip in later.items()}
    restore(pool, backup)
    for cid in "fgh":
        ip = pool.add("ours", cid)
        assert ip not in later.values(), "%s was handed out again to %s" % (ip, cid)
        pool.assert_ok("after ours ADD %s on the restored database" % cid)
    assert {ip: pool.files().get(ip) for ip in later.values()} == later_bytes
    return pool


def test_database_restored_from_a_backup_by_copy(data_dir, through):
    def restore(pool, backup):
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.exists(pool.db + suffix):
                os.unlink(pool.db + suffix)
        shutil.copyfile(backup, pool.db)

    _back_in_time(data_dir, restore)


def test_database_restored_with_ipamctl_db_restore(data_dir, through):
    def restore(pool, backup):
        proc = ipamctl("db", "restore", backup, "--yes", data_dir=pool.data_dir, expect=None)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    _back_in_time(data_dir, restore)


def test_files_restored_from_a_copy_are_written_back(data_dir, through):
    """The network's directory is put back from an older copy while the database stays:
    the file of b0, made after the copy, is gone. Our next call on the network (a DEL of
    another container, which moves no cursor) writes it back and puts the cursor file
    back to the database's, so Go beside us never hands out b0's address."""
    pool = Pool(data_dir, subnet="10.95.0.0/24")
    for cid in ("a0", "a1", "a2"):
        pool.add("ours", cid)
    copy = os.path.join(os.path.dirname(pool.data_dir), "copy")
    shutil.copytree(pool.dir, copy)
    b0_ip = pool.add("ours", "b0")
    shutil.rmtree(pool.dir)
    shutil.copytree(copy, pool.dir)
    assert b0_ip not in pool.files()
    pool.delete("ours", "a1")
    assert pool.files().get(b0_ip) == content("b0"), "b0's file was not written back"
    assert pool.add("go", "x") != b0_ip   # round robin from the cursor file
    out = pool.call("go", "ADD", "y", args="IP=%s" % b0_ip)
    assert out.status != 0, "Go gave y %s" % out.json
    pool.assert_ok("after Go ADD x and y")
    pool.add("ours", "z")   # adopts x
    pool.assert_ok("after ours ADD z")
    proc = ipamctl("check", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- 4. admin commands on a lease released outside ---------------------------------------
ADMIN = {
    "release-address": lambda ip: ["release", ip, "--network", NET, "--yes"],
    "release-container": lambda ip: ["release", "--container", "a", "--network", NET, "--yes"],
    "gc": lambda ip: ["gc", "--network", NET, "--valid", "b", "--grace", "0s", "--apply"],
    "check-repair": lambda ip: ["check", "--repair"],
}


@pytest.mark.parametrize("command", sorted(ADMIN))
def test_admin_command_on_a_stale_lease_leaves_the_new_owners_file(data_dir, command,
                                                                   through):
    """Ours ADDs ``a``; Go DELs it and gives its address to ``b``. An operator's command
    that releases (or repairs) ``a``'s stale lease must leave ``b``'s file alone, and the
    address must stay taken."""
    pool = Pool(data_dir, subnet="10.75.0.0/24", rangeStart="10.75.0.2",
                rangeEnd="10.75.0.3")   # two addresses
    a_ip = pool.add("ours", "a")
    pool.delete("go", "a")
    assert pool.add("go", "b", args="IP=%s" % a_ip) == a_ip
    # its status: whatever it is, no harm done
    ipamctl(*ADMIN[command](a_ip), data_dir=data_dir, expect=None)
    assert pool.files().get(a_ip) == content("b"), "ipamctl %s touched b's file" % command
    pool.assert_ok("after ipamctl %s" % command)
    other = pool.add("ours", "c")
    assert other != a_ip
    pool.assert_ok("after ours ADD c")
    out = pool.call("ours", "ADD", "d")   # the pool is full: b holds the other address
    assert out.status != 0, "ours gave d %s" % out.json
    assert pool.files().get(a_ip) == content("b")
    pool.assert_ok("after ours ADD d")


# -- 5. ipamctl import beside running DELs -----------------------------------------------
class Loop(threading.Thread):
    """Run ``argv`` again and again until stopped; keep every CompletedProcess."""

    def __init__(self, argv):
        super().__init__(daemon=True)
        self.argv = argv
        self.stop = threading.Event()
        self.runs = []

    def run(self):
        while not self.stop.is_set():
            self.runs.append(subprocess.run(self.argv, capture_output=True, text=True,
                                            timeout=120))

    def finish(self):
        self.stop.set()
        self.join(180)
        assert not self.is_alive()
        return self.runs


@pytest.mark.slow
def test_import_beside_dels_brings_no_lease_back(data_dir, through):
    """Two ``ipamctl import --network`` loops run the whole time. In each wave Go ADDs 30
    containers, the imports take them in, then ours DELs all 30 at once: an import that
    read the directory before a DEL and wrote after it brings a deleted lease back."""
    pool = Pool(data_dir, subnet="10.76.0.0/24")
    proc = ipamctl("db", "upgrade", data_dir=data_dir, expect=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    importers = [Loop([IPAMCTL, "--data-dir", str(data_dir), "import", "--network", NET])
                 for _ in range(2)]
    deleted = set()
    for loop in importers:
        loop.start()
    try:
        for wave in range(3):
            cids = ["w%dg%02d" % (wave, i) for i in range(30)]
            for cid in cids:
                pool.add("go", cid)
            deadline = time.monotonic() + 30
            while {cid for _ip, cid, _if in pool.leases()} < set(cids):
                assert time.monotonic() < deadline, "the imports did not take Go's leases"
                time.sleep(0.01)
            dels = [pool.invocation("ours", "DEL", cid) for cid in cids]
            pool.settle(start_together(dels), ["ours"] * len(dels))
            deleted |= set(cids)
    finally:
        runs = [run for loop in importers for run in loop.finish()]
    assert len(runs) >= 6, "ipamctl import ran only %d time(s)" % len(runs)
    for run in runs:
        assert run.returncode == 0 and "Traceback" not in run.stderr, run
    back = sorted((ip, cid) for ip, cid, _if in pool.leases() if cid in deleted)
    assert back == [], "deleted leases brought back by the import: %s" % back
    assert {ip: data for ip, data in pool.files().items() if owner_of(data) in deleted} == {}
    pool.assert_ok()


# -- 6. ipamctl check under load -------------------------------------------------------
@pytest.mark.slow
def test_check_under_a_burst_never_raises_a_false_alarm(data_dir, through):
    pool = Pool(data_dir, subnet="10.77.0.0/24", busyTimeout=60)
    for i in range(5):
        pool.add("ours", "base%d" % i)
    assert ipamctl("check", data_dir=data_dir, expect=None).returncode == 0
    checker = Loop([IPAMCTL, "--data-dir", str(data_dir), "-o", "json", "check"])
    checker.start()
    try:
        # Three waves at least, more while the check has not run 5 times beside them (a
        # fast path's waves, the native client's, end sooner); 8 at most fit the /24.
        wave = 0
        while wave < 3 or (len(checker.runs) < 5 and wave < 8):
            cids = ["w%d-%02d" % (wave, i) for i in range(40)]
            adds = [pool.invocation("ours", "ADD", cid) for cid in cids]
            pool.settle(start_together(adds), ["ours"] * len(adds))
            dels = [pool.invocation("ours", "DEL", cid) for cid in cids[::2]]
            pool.settle(start_together(dels), ["ours"] * len(dels))
            wave += 1
    finally:
        runs = checker.finish()
    pool.assert_ok()
    assert len(runs) >= 5, "ipamctl check ran only %d time(s)" % len(runs)
    alarms = [run for run in runs if run.returncode != 0 and not (
        through.chaos is not None and _only_interrupted(run))]
    assert alarms == [], "%d of %d check runs failed on a consistent pool; first: %s" % (
        len(alarms), len(runs), alarms[0].stdout + alarms[0].stderr)


def _only_interrupted(run):
    """A check run whose every finding is ``interrupted``: what a node daemon killed
    between a call's file changes and its COMMIT leaves (the chaos path kills it), real
    until the next call on the network redoes its journal."""
    try:
        findings = json.loads(run.stdout)["findings"]
    except (ValueError, KeyError):
        return False
    return bool(findings) and all(f["kind"] == "interrupted" for f in findings)


# -- 7. Go and ours at the same time, ADDs and DELs mixed ---------------------------------
def _mixed(data_dir, plugins, seed):
    """4 rounds of 40 calls by each of ``plugins`` ("go" or "ours") at once: round 0 all
    ADDs, then 20 ADDs of new containers and 20 DELs of live ones each, every container
    DELed by a plugin chosen at random (the one that ADDed it or the other)."""
    rng = random.Random(seed)
    pool = Pool(data_dir, subnet="10.78.0.0/24", busyTimeout=60)
    first, second = plugins
    serial = 0
    for rnd in range(4):
        calls = []   # (who, command, cid)
        adds = 40 if rnd == 0 else 20
        for who in (first, second):
            for _ in range(adds):
                calls.append((who, "ADD", "r%dc%03d" % (rnd, serial)))
                serial += 1
        if rnd:
            victims = rng.sample(sorted(pool.live), 40)
            for i, cid in enumerate(victims):
                calls.append(((first, second)[i % 2], "DEL", cid))
        rng.shuffle(calls)
        invs = [pool.invocation(who, command, cid) for who, command, cid in calls]
        pool.settle(start_together(invs), [who for who, _c, _cid in calls])
        assert len(pool.live) == 80
        pool.assert_ok("round %d (seed %d)" % (rnd, seed))
    return pool


@pytest.mark.slow
@pytest.mark.parametrize("seed", [78, 7])
def test_go_and_ours_adding_and_deleting_at_once(data_dir, seed, through):
    pool = _mixed(data_dir, ("go", "ours"), seed=seed)
    pool.add("ours", "last")
    pool.assert_ok("after one more ours ADD")


@GO_ONLY
def test_baseline_go_and_go_adding_and_deleting_at_once(data_dir):
    _mixed(data_dir, ("go", "go"), seed=78)
