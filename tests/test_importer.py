"""ipam.mirror.importer and admin.import_networks: host-local's files, of every version, read into
the store (both Store implementations, through the ``store`` fixture).

The end-to-end side (ipamctl, the plugin's adoption, Go's own directories) is in
tests/test_import.py. The file formats are host-local's disk backend
(containernetworking/plugins, plugins/ipam/host-local/backend/disk/backend.go: Reserve
writes ``ID\r\nifname``; ReleaseByID and GetByID still match the bare ID older releases
wrote).
"""
import fcntl
import ipaddress
import json
import os
import stat
import threading
import time

import pytest

from ipam import allocator, paths
from ipam.admin import gc
from ipam.admin import leases as admin
from ipam.lease import Lease, NetworkRecord
from ipam.mirror import importer
from ipam.ranges import canonicalize, describe, make_set

ip = ipaddress.ip_address

# One directory holding every layout host-local ever wrote (backend/disk/backend.go and
# its history).
EVERY_LAYOUT = {
    "10.1.2.2": b"a\r\neth0",                 # v0.8.0 and later
    "10.1.2.3": b"b\neth1",                   # master, September 2018
    "10.1.2.4": b"legacy",                    # v0.7.x and before: the ID alone
    "2001:db8:0:1::1:2": b"c\r\neth0",        # Go's compressed IPv6 spelling
    "2001:db8:1:0:ffff:ffff:ffff:fffe": b"d\r\neth0",
    "fd00::ff": b"e\r\neth0",
    "2001_db8__7": b"w\r\neth0",              # Windows: '_' for ':'
    "fd00_1__a": b"w2\r\nEth2",
    "last_reserved_ip.0": b"10.1.2.4",
    "last_reserved_ip.1": b"2001:db8:0:1::1:2",
    "lock": b"",
}
EXPECTED_ENTRIES = {
    (ip("10.1.2.2"), "a", "eth0"),
    (ip("10.1.2.3"), "b", "eth1"),
    (ip("10.1.2.4"), "legacy", None),
    (ip("2001:db8:0:1::1:2"), "c", "eth0"),
    (ip("2001:db8:1:0:ffff:ffff:ffff:fffe"), "d", "eth0"),
    (ip("fd00::ff"), "e", "eth0"),
    (ip("2001:db8::7"), "w", "eth0"),
    (ip("fd00:1::a"), "w2", "Eth2"),
}


def make_dir(path, files, mtime=None):
    """A network directory: ``{name: bytes}``; ``mtime`` (seconds) set on every file."""
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
        if mtime is not None:
            os.utime(path / name, (mtime, mtime))
    return path


def fingerprint(top):
    """Every entry under ``top`` (itself included): name -> (bytes or link target, full
    mode, mtime in ns). Special files are never opened."""
    out = {}
    top = str(top)
    for root, dirs, files in os.walk(top):
        for name in [os.curdir] + dirs + files:
            full = os.path.normpath(os.path.join(root, name))
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(full).encode()
            else:
                data = None
            out[os.path.relpath(full, top)] = (data, st.st_mode, st.st_mtime_ns)
    return out


def entries(scan):
    return {(i, cid, ifname) for i, cid, ifname, _ in scan.entries}


def owners(leases):
    return {(x.network, str(x.ip), x.container_id, x.ifname) for x in leases}


def db_state(store):
    """Everything the import may touch: leases (every field), cursors, history, networks."""
    with store.transaction():
        networks = list(store.networks())
        return ([(x.network, str(x.ip), x.range_set, x.container_id, x.ifname,
                  x.allocated_at, x.boot_id) for x in store.leases()],
                {n: store.cursors(n) for n in networks},
                [(e.event, e.reason, e.network, e.ip, e.container_id, e.ifname)
                 for e in store.history()], networks)


def note(store, network, data_dir, *subnets):
    """Record a network's ranges as the plugin's ADD does (one range set per subnet)."""
    sets = [make_set([canonicalize(s, None, None, None)]) for s in subnets]
    with store.transaction():
        store.set_network_info(network, NetworkRecord(str(data_dir), True,
                                                      json.dumps(describe(sets))))
    return sets


# -- parse_content: the reservation file's bytes ---------------------------------------
@pytest.mark.parametrize("data, owner", [
    (b"abc\r\neth0", ("abc", "eth0")),
    (b"abc\neth0", ("abc", "eth0")),
    (b"abc", ("abc", None)),
    (b"  abc \r\neth0\n", ("abc", "eth0")),          # host-local compares trimmed content
    (b"abc\r\n", ("abc", None)),                      # trimmed: the bare ID (ReleaseByKey)
    (b"3f2a9c_x.y-z\r\nnet1", ("3f2a9c_x.y-z", "net1")),
])
def test_parse_content_every_version(data, owner):
    assert importer.parse_content(data) == (owner, None)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"\xff\xfe\x00junk", "not text"),
    (b"hello world", "not a container ID"),
    (b"   \n", "not a container ID"),
    (b"abc\r\n" + b"x" * 16, "interface name"),
    (b"-abc\r\neth0", "not a container ID"),
])
def test_parse_content_rejects_junk(data, reason):
    owner, why = importer.parse_content(data)
    assert owner is None
    assert reason in why


# -- scan: one directory --------------------------------------------------------------
def test_scan_reads_every_layout(tmp_path):
    d = make_dir(tmp_path / "net", EVERY_LAYOUT)
    found = importer.scan(str(d), "net")
    assert found.network == "net"
    assert entries(found) == EXPECTED_ENTRIES
    assert found.cursors == {0: ip("10.1.2.4"), 1: ip("2001:db8:0:1::1:2")}
    assert found.skipped == []  # lock is neither an entry nor reported
    assert found


def test_scan_old_cursor_without_suffix(tmp_path):
    """cni <= v0.5.2 kept one ``last_reserved_ip``: it is range set 0's cursor."""
    old = importer.scan(str(make_dir(tmp_path / "old", {
        "10.1.2.7": b"x", "last_reserved_ip": b"10.1.2.7"})), "old")
    assert old.cursors == {0: ip("10.1.2.7")}
    assert old.skipped == []
    # Both present (an upgraded directory): the newer .0 is the one host-local reads.
    both = importer.scan(str(make_dir(tmp_path / "both", {
        "last_reserved_ip": b"10.1.2.7", "last_reserved_ip.0": b"10.1.2.9"})), "both")
    assert both.cursors == {0: ip("10.1.2.9")}


def test_scan_cursor_is_not_trimmed(tmp_path):
    """host-local parses the cursor without trimming: a newline makes it no cursor
    (LastReservedIP in backend/disk/backend.go: net.ParseIP of the raw bytes)."""
    found = importer.scan(str(make_dir(tmp_path / "net", {
        "last_reserved_ip.0": b"10.1.2.5\n", "last_reserved_ip.1": b"junk",
        "last_reserved_ip.2": b"fd00::3"})), "net")
    assert found.cursors == {2: ip("fd00::3")}
    assert {f for f, _ in found.skipped} == {"last_reserved_ip.0", "last_reserved_ip.1"}


def test_scan_reports_what_it_does_not_import(tmp_path, monkeypatch):
    d = make_dir(tmp_path / "net", {
        "10.1.2.2": b"good\r\neth0",
        "10.1.2.5": b"",                         # host-local died between create and write
        "10.1.2.6": b"hello world",              # junk content
        "10.1.2.7": b"\x00\xff",                 # binary junk
        "10.1.2.300": b"x\r\neth0",              # not an address
        "notes.txt": b"x\r\neth0",
        "fe80::1%eth0": b"x\r\neth0",            # scoped: Go's ParseIP refuses it
        ".host-local-sqlite.tmp.10.1.2.9.1.1": b"x\r\neth0",
        "10.1.2.10": b"secret\r\neth0",          # unreadable (below)
    })
    (d / "10.1.2.8").mkdir()                     # a directory named like an address
    os.mkfifo(d / "10.1.2.11")                   # a FIFO: never opened (it would block)
    (d / "10.1.2.12").symlink_to(tmp_path / "nowhere")   # dangling symlink
    (tmp_path / "target").write_bytes(b"t\r\neth0")
    (d / "10.1.2.13").symlink_to(tmp_path / "target")    # a link is never followed
    real_open = os.open  # the importer reads each file through a bare descriptor

    def fake_open(path, *a, **kw):
        if os.path.basename(path) == "10.1.2.10":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    found = importer.scan(str(d), "net")
    assert entries(found) == {(ip("10.1.2.2"), "good", "eth0")}
    reasons = dict(found.skipped)
    assert len(reasons) == len(found.skipped)  # each file reported once
    assert set(reasons) == {"10.1.2.5", "10.1.2.6", "10.1.2.7", "10.1.2.300", "notes.txt",
                            "fe80::1%eth0", ".host-local-sqlite.tmp.10.1.2.9.1.1",
                            "10.1.2.10", "10.1.2.8", "10.1.2.11", "10.1.2.12", "10.1.2.13"}
    assert "empty" in reasons["10.1.2.5"]
    assert "not a container ID" in reasons["10.1.2.6"]
    assert "not text" in reasons["10.1.2.7"]
    for name in ("10.1.2.300", "notes.txt", "fe80::1%eth0"):
        assert "not an address" in reasons[name]
    assert "unreadable" in reasons["10.1.2.10"] and "Permission denied" in reasons["10.1.2.10"]
    for name in ("10.1.2.8", "10.1.2.11", "10.1.2.12", "10.1.2.13"):
        assert reasons[name], name
    assert not found.cursors


def test_scan_long_content_is_not_cut_into_another_id(tmp_path):
    """A file longer than any real reservation is junk; it must not become the lease of
    a container whose ID is a prefix of it."""
    found = importer.scan(str(make_dir(tmp_path / "net", {"10.1.2.2": b"a" * 10000})), "net")
    assert found.entries == []
    assert [f for f, _ in found.skipped] == ["10.1.2.2"]


def test_scan_takes_host_locals_lock(tmp_path):
    """While someone (a Go host-local) holds ``lock``, the scan waits; it reads the
    directory while holding the lock itself, and releases it when done."""
    d = make_dir(tmp_path / "net", {"10.1.2.2": b"a\r\neth0", "lock": b""})
    holder = os.open(d / "lock", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    done, result = threading.Event(), []

    def run():
        result.append(importer.scan(str(d), "net"))
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        assert not done.wait(0.5), "scan finished while host-local held the lock"
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert done.wait(10)
    t.join()
    assert entries(result[0]) == {(ip("10.1.2.2"), "a", "eth0")}
    # Released afterwards: a non-blocking lock succeeds at once.
    fd = os.open(d / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_scan_holds_the_lock_while_reading(tmp_path, monkeypatch):
    d = make_dir(tmp_path / "net", {"10.1.2.2": b"a\r\neth0", "10.1.2.3": b"b\r\neth0",
                                    "lock": b""})
    seen = []
    real = importer._scan_entry

    def probe(path, entry, result):
        fd = os.open(os.path.join(path, "lock"), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return real(path, entry, result)

    monkeypatch.setattr(importer, "_scan_entry", probe)
    importer.scan(str(d), "net")
    assert seen and set(seen) == {"held"}


def test_scan_without_lock_file_reads_and_creates_nothing(tmp_path):
    """Before v0.7.0 there was no ``lock`` file; the scan must not create one."""
    d = make_dir(tmp_path / "net", {"10.1.2.2": b"old-id"})
    found = importer.scan(str(d), "net")
    assert entries(found) == {(ip("10.1.2.2"), "old-id", None)}
    assert sorted(os.listdir(d)) == ["10.1.2.2"]


def test_scan_changes_nothing(tmp_path):
    d = make_dir(tmp_path / "net", dict(EVERY_LAYOUT, **{"10.1.2.9": b"", "junk": b"?"}),
                 mtime=1_600_000_000)
    os.chmod(d / "10.1.2.2", 0o644)
    os.chmod(d / "lock", 0o750)
    before = fingerprint(d)
    importer.scan(str(d), "net")
    assert fingerprint(d) == before


def test_scan_progress_counts_every_entry(tmp_path):
    d = make_dir(tmp_path / "net", EVERY_LAYOUT)
    steps = []
    importer.scan(str(d), "net", step=steps.append)
    assert steps == [1] * len(EVERY_LAYOUT)


def test_has_host_local_files(tmp_path):
    assert importer.has_host_local_files(str(make_dir(tmp_path / "a", {"10.1.2.2": b"x"})))
    assert importer.has_host_local_files(str(make_dir(tmp_path / "b", {"fd00__2": b"x"})))
    assert importer.has_host_local_files(str(make_dir(tmp_path / "c", {
        "last_reserved_ip.0": b"10.1.2.2", "lock": b""})))
    assert importer.has_host_local_files(str(make_dir(tmp_path / "d", {
        "last_reserved_ip": b"10.1.2.2"})))
    assert not importer.has_host_local_files(str(make_dir(tmp_path / "e", {"lock": b""})))
    assert not importer.has_host_local_files(str(make_dir(tmp_path / "f", {"notes": b"x"})))
    assert not importer.has_host_local_files(str(tmp_path / "missing"))


# -- import_networks: directories into the store --------------------------------------
@pytest.fixture
def made_at():
    """An hour ago."""
    return float(int(time.time() - 3600))


@pytest.fixture
def source(tmp_path, made_at):
    """Two host-local networks under one dataDir, files made an hour ago."""
    src = tmp_path / "src"
    an_hour_ago = made_at
    make_dir(src / "alpha", EVERY_LAYOUT, mtime=an_hour_ago)
    make_dir(src / "beta", {"10.9.0.5": b"z\r\neth0", "10.9.0.6": b"",
                            "last_reserved_ip.0": b"10.9.0.6", "lock": b""}, mtime=an_hour_ago)
    (src / paths.DB_NAME).write_bytes(b"")   # ours: not a network
    (src / ".snapshot").mkdir()                         # hidden: not a network
    (src / "README").write_bytes(b"a file is not a network")
    return src


def test_import_reads_every_network(store, source, made_at):
    summaries = admin.import_networks(store, str(source))
    assert [s["network"] for s in summaries] == ["alpha", "beta"]
    expected = {("alpha", str(i), cid, ifname) for i, cid, ifname in EXPECTED_ENTRIES}
    expected.add(("beta", "10.9.0.5", "z", "eth0"))
    with store.transaction():
        assert owners(store.leases()) == expected
        assert store.cursors("alpha") == {0: ip("10.1.2.4"), 1: ip("2001:db8:0:1::1:2")}
        assert store.cursors("beta") == {0: ip("10.9.0.6")}
        leases = store.leases()
    # The file's mtime is when it was reserved; its boot is unknown (no mtime proves one).
    assert {x.allocated_at for x in leases} == {made_at}
    assert {x.boot_id for x in leases} == {None}

    alpha, beta = summaries
    assert set(alpha) >= {"network", "source", "dry_run", "imported", "unchanged", "cursors",
                          "skipped", "conflicts"}
    assert alpha["source"] == str(source / "alpha") and alpha["dry_run"] is False
    assert {(x["ip"], x["container_id"], x["ifname"]) for x in alpha["imported"]} == {
        (str(i), cid, ifname) for i, cid, ifname in EXPECTED_ENTRIES}
    assert alpha["cursors"] == {"0": "10.1.2.4", "1": "2001:db8:0:1::1:2"}
    assert alpha["skipped"] == [] and alpha["conflicts"] == [] and alpha["unchanged"] == 0
    assert beta["imported"] == [{"ip": "10.9.0.5", "container_id": "z", "ifname": "eth0"}]
    assert [s["file"] for s in beta["skipped"]] == ["10.9.0.6"]
    assert "empty" in beta["skipped"][0]["reason"]
    json.dumps(summaries)  # the JSON contract: plain data only


def test_import_summary_has_counts(store, source):
    """The issue: "a summary per network with counts and the lists of imported, skipped
    (with reasons) and conflicting entries"."""
    put(store, "beta", "10.9.0.5", "other")
    summaries = {s["network"]: s for s in admin.import_networks(store, str(source))}
    beta = summaries["beta"]
    assert beta["counts"] == {"imported": 0, "unchanged": 0, "skipped": 1, "conflicts": 1,
                              "cursors": 1}
    alpha = summaries["alpha"]
    assert alpha["counts"] == {"imported": len(EXPECTED_ENTRIES), "unchanged": 0,
                               "skipped": 0, "conflicts": 0, "cursors": 2}
    for s in summaries.values():
        for key in ("imported", "skipped", "conflicts", "cursors"):
            assert s["counts"][key] == len(s[key])
        assert s["counts"]["unchanged"] == s["unchanged"]


def test_import_records_history_reason_import(store, source):
    admin.import_networks(store, str(source))
    with store.transaction():
        events = store.history()
    assert len(events) == len(EXPECTED_ENTRIES) + 1
    assert {(e.event, e.reason) for e in events} == {("allocate", "import")}
    assert {(e.network, e.ip, e.container_id, e.ifname) for e in events} == owners(
        admin.list_leases(store))


def test_import_is_idempotent(store, source):
    first = admin.import_networks(store, str(source))
    state = db_state(store)
    second = admin.import_networks(store, str(source))
    assert db_state(store) == state  # not even a history row
    for a, b in zip(first, second, strict=True):
        assert b["imported"] == [] and b["conflicts"] == [] and b["cursors"] == {}
        assert b["unchanged"] == len(a["imported"])
        assert b["skipped"] == a["skipped"]


def put(store, network, address, cid, ifname="eth0", range_set=0):
    lease = Lease(network, ip(address), range_set, cid, ifname, 1_000_000.0, "an-old-boot")
    with store.transaction():
        assert store.reserve(lease, "add")
    return lease


def test_conflicts_keep_the_database(store, source):
    """Same address, other owner: reported, the database wins and is not changed."""
    mine = put(store, "alpha", "10.1.2.2", "mine")              # file says a/eth0
    other_if = put(store, "alpha", "10.1.2.3", "b", "eth9")     # same ID, other ifname
    legacy = put(store, "alpha", "2001:db8::7", "w", None)      # file says w/eth0
    same = put(store, "alpha", "fd00::ff", "e", "eth0")         # same owner: unchanged
    with store.transaction():
        store.set_last_reserved("alpha", 0, ip("10.1.2.99"))    # the database's cursor
    before = {x.ip: x for x in admin.list_leases(store, "alpha")}
    alpha = admin.import_networks(store, str(source), ["alpha"])[0]
    after = {x.ip: x for x in admin.list_leases(store, "alpha")}
    for kept in (mine, other_if, legacy, same):
        assert after[kept.ip] == before[kept.ip]   # every field, allocated_at and boot too
    assert sorted((c["ip"], c["container_id"], c["ifname"], c["held_by"]["container_id"],
                   c["held_by"]["ifname"]) for c in alpha["conflicts"]) == [
        ("10.1.2.2", "a", "eth0", "mine", "eth0"),
        ("10.1.2.3", "b", "eth1", "b", "eth9"),
        ("2001:db8::7", "w", "eth0", "w", None)]
    assert alpha["unchanged"] == 1
    imported = {x["ip"] for x in alpha["imported"]}
    assert imported == {str(i) for i, _, _ in EXPECTED_ENTRIES} - {
        "10.1.2.2", "10.1.2.3", "2001:db8::7", "fd00::ff"}
    # A cursor is taken only where the database has none.
    assert alpha["cursors"] == {"1": "2001:db8:0:1::1:2"}
    with store.transaction():
        assert store.cursors("alpha") == {0: ip("10.1.2.99"), 1: ip("2001:db8:0:1::1:2")}
        assert [e.reason for e in store.history(ip="10.1.2.2")] == ["add"]
    # Running again reports the same conflicts and still changes nothing.
    state = db_state(store)
    again = admin.import_networks(store, str(source), ["alpha"])[0]
    assert again["conflicts"] == alpha["conflicts"] and again["imported"] == []
    assert db_state(store) == state


def test_dry_run_reports_the_same_and_changes_nothing(store, source):
    put(store, "alpha", "10.1.2.2", "mine")
    state = db_state(store)
    dry = admin.import_networks(store, str(source), dry_run=True)
    assert db_state(store) == state
    real = admin.import_networks(store, str(source))
    assert [s["dry_run"] for s in dry] == [True, True]
    for d, r in zip(dry, real, strict=True):
        assert dict(d, dry_run=False) == r


def test_source_files_are_never_modified(store, source):
    os.chmod(source / "alpha" / "10.1.2.2", 0o644)
    os.chmod(source / "beta" / "lock", 0o750)
    before = fingerprint(source)
    admin.import_networks(store, str(source), dry_run=True)
    admin.import_networks(store, str(source))
    admin.import_networks(store, str(source))
    assert fingerprint(source) == before


def test_import_selected_networks(store, source):
    assert [s["network"] for s in admin.import_networks(store, str(source), ["beta"])] == [
        "beta"]
    with store.transaction():
        assert {x.network for x in store.leases()} == {"beta"}
        assert store.cursors("alpha") == {}
    with pytest.raises(admin.AdminError, match="gamma"):
        admin.import_networks(store, str(source), ["beta", "gamma"])
    with pytest.raises(admin.AdminError, match="cannot read"):
        admin.import_networks(store, str(source / "missing"))


def test_each_network_is_one_transaction(store, source, monkeypatch):
    """A failure half-way through a network leaves none of it; networks already done stay."""
    real = store.set_last_reserved

    def failing(network, idx, address):
        if network == "beta":
            raise RuntimeError("disk full")
        return real(network, idx, address)

    monkeypatch.setattr(store, "set_last_reserved", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        admin.import_networks(store, str(source))
    with store.transaction():
        assert {x.network for x in store.leases()} == {"alpha"}
        assert store.cursors("beta") == {}
        assert {e.network for e in store.history()} == {"alpha"}
    monkeypatch.setattr(store, "set_last_reserved", real)
    beta = admin.import_networks(store, str(source), ["beta"])[0]
    assert [x["ip"] for x in beta["imported"]] == ["10.9.0.5"]


def test_import_progress(store, source):
    calls = []

    def progress(total):
        calls.append(("total", total))
        return lambda n: calls.append(("step", n))

    admin.import_networks(store, str(source), progress=progress)
    total = len(os.listdir(source / "alpha")) + len(os.listdir(source / "beta"))
    assert calls[0] == ("total", total)
    assert calls[1:] == [("step", 1)] * total


def test_range_set_of_imported_leases(store, tmp_path):
    """Exact when the plugin recorded the network's ranges; otherwise the range set whose
    cursor is nearest (longest common prefix, same family)."""
    src = tmp_path / "src"
    files = {"10.1.0.7": b"a\r\neth0", "10.2.0.3": b"b\r\neth0", "fd00::5": b"c\r\neth0",
             "last_reserved_ip.0": b"10.1.0.9", "last_reserved_ip.1": b"10.2.0.3",
             "last_reserved_ip.2": b"fd00::5"}
    make_dir(src / "guessed", files)
    make_dir(src / "known", files)
    note(store, "known", src, "10.1.0.0/24", "fd00::/64", "10.2.0.0/24")
    admin.import_networks(store, str(src))
    with store.transaction():
        guessed = {str(x.ip): x.range_set for x in store.leases("guessed")}
        known = {str(x.ip): x.range_set for x in store.leases("known")}
    assert guessed == {"10.1.0.7": 0, "10.2.0.3": 1, "fd00::5": 2}
    assert known == {"10.1.0.7": 0, "10.2.0.3": 2, "fd00::5": 1}


def test_imported_leases_are_of_no_known_boot(store, tmp_path):
    """A file's mtime proves no boot (the clock may have stepped since): an imported
    lease is never a ``gc --previous-boots`` candidate on that alone."""
    src = tmp_path / "src"
    make_dir(src / "net", {"10.1.2.2": b"a\r\neth0"}, mtime=1_000_000)  # 1970
    make_dir(src / "net", {"10.1.2.3": b"b\r\neth0"})
    admin.import_networks(store, str(src))
    with store.transaction():
        boots = {str(x.ip): (x.boot_id, x.boot_time, x.allocated_at)
                 for x in store.leases("net")}
    assert boots["10.1.2.2"] == (None, None, 1_000_000)
    assert boots["10.1.2.3"][:2] == (None, None)
    with store.transaction():
        assert gc.plan_network(store, "net", gc.Valid(["a/eth0", "b/eth0"]), 0,
                               previous_boots=True).candidates == []


def test_legacy_lease_behaves_as_host_local(store, tmp_path):
    """An ID-only lease: DEL by the container ID frees it whatever the ifname, and the
    mirror writes it back as it was."""
    src = tmp_path / "src"
    make_dir(src / "net", {"10.1.2.4": b"legacy", "10.1.2.5": b"a\r\neth0"})
    admin.import_networks(store, str(src))
    with store.transaction():
        lease = store.lease_at("net", ip("10.1.2.4"))
    assert (lease.container_id, lease.ifname) == ("legacy", None)
    assert lease.mirror_content() == b"legacy"
    out = tmp_path / "out"
    admin.export(store, str(tmp_path), "net", to=str(out))
    assert (out / "net" / "10.1.2.4").read_bytes() == b"legacy"
    assert (out / "net" / "10.1.2.5").read_bytes() == b"a\r\neth0"
    with store.transaction():
        changes = allocator.release(store, "net", "legacy", "eth7", 1)
    assert [str(x.ip) for x in changes.released] == ["10.1.2.4"]
    with store.transaction():
        assert [str(x.ip) for x in store.leases("net")] == ["10.1.2.5"]


def test_one_address_spelled_twice(store, tmp_path):
    """``2001:db8::7`` and Windows' ``2001_db8__7`` name one address: one is imported,
    the other reported, and the summary says exactly what was imported."""
    src = tmp_path / "src"
    make_dir(src / "net", {"2001:db8::7": b"linux\r\neth0", "2001_db8__7": b"win\r\neth0",
                           "10.1.2.2": b"a\r\neth0", "10.1.2.2.": b"x"})
    found = importer.scan(str(src / "net"), "net")
    assert entries(found) == {(ip("2001:db8::7"), "linux", "eth0"),
                              (ip("10.1.2.2"), "a", "eth0")}
    assert [f for f, _ in found.skipped] == ["10.1.2.2.", "2001_db8__7"]
    [s] = admin.import_networks(store, str(src))
    assert sorted((x["ip"], x["container_id"]) for x in s["imported"]) == [
        ("10.1.2.2", "a"), ("2001:db8::7", "linux")]
    with store.transaction():
        assert owners(store.leases()) == {("net", "10.1.2.2", "a", "eth0"),
                                          ("net", "2001:db8::7", "linux", "eth0")}
