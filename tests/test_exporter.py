"""The mirror: host-local's layout written from the database, a contract with its other
writers: created without replacing, removed only when it names the released owner,
never followed through links, changed only under host-local's ``lock``."""
import fcntl
import ipaddress
import os
import time

import pytest
from fake_store import FakeStore

from ipam import allocator
from ipam.errors import IoFailure, TryAgain
from ipam.lease import Changes, Lease
from ipam.mirror import reconcile
from ipam.mirror.files import Mirror, NetworkDir
from ipam.paths import PENDING_PREFIX
from ipam.ranges import canonicalize, make_set

ip = ipaddress.ip_address


def lease(addr, cid="a", ifname="eth0", idx=0):
    return Lease("net", ip(addr), idx, cid, ifname)


def released(*leases):
    c = Changes("net")
    c.released.extend(leases)
    return c


def hold(data, store, timeout=None):
    """The network's files as a command holds them: locked, then reconciled."""
    files = Mirror(str(data), timeout=timeout).open(store, "net")
    files.reconcile_if_changed()
    return files


def commit(files):
    files.record()
    files.committed()


def test_claim_writes_host_local_layout(tmp_path):
    store = FakeStore()
    files = hold(tmp_path, store)
    for x in (lease("10.1.2.2"), lease("2001:db8::2", idx=1), lease("10.1.2.9", "legacy", None)):
        assert files.claim(x) is None
    c = Changes("net")
    c.cursors.update({0: ip("10.1.2.2"), 1: ip("2001:db8::2")})
    assert files.apply(c) == []
    commit(files)
    d = tmp_path / "net"
    assert (d / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (d / "2001:db8::2").read_bytes() == b"a\r\neth0"
    assert (d / "10.1.2.9").read_bytes() == b"legacy"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"2001:db8::2"
    assert (d / "lock").read_bytes() == b""
    assert {oct(p.stat().st_mode & 0o777) for p in d.iterdir()} == {"0o600"}
    assert oct(d.stat().st_mode & 0o777) == "0o755"
    assert sorted(os.listdir(tmp_path)) == ["net"]  # no journal left


def test_claim_never_replaces_another_owners_file(tmp_path):
    """Go's O_EXCL: an existing file is a taken address. One naming an owner is
    recorded as a lease (history reason adopt); one naming no one is just skipped."""
    store = FakeStore()
    d = tmp_path / "net"
    with store.transaction():
        files = hold(tmp_path, store)
        # Written by another program after this command's reconcile, as Go would.
        (d / "10.1.2.2").write_bytes(b"go\r\neth0")
        (d / "10.1.2.3").write_bytes(b"")  # Go died between create and write
        (d / "10.1.2.4").write_bytes(b"a\neth0")  # the same owner, an older spelling
        found = files.claim(lease("10.1.2.2"))
        assert (found.container_id, found.ifname, str(found.ip)) == ("go", "eth0", "10.1.2.2")
        assert files.claim(lease("10.1.2.3")) is False
        assert files.claim(lease("10.1.2.4")) is None
        commit(files)
    assert (d / "10.1.2.2").read_bytes() == b"go\r\neth0"
    assert (d / "10.1.2.3").read_bytes() == b""
    assert [(x.container_id, str(x.ip)) for x in store.leases("net")] == [("go", "10.1.2.2")]
    assert [(e.event, e.reason) for e in store.history()] == [("allocate", "adopt")]


def test_allocator_skips_addresses_whose_files_are_taken(tmp_path, capsys):
    store = FakeStore()
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"go\r\neth0")
    (d / "10.1.2.3").mkdir()  # not a file: no one's lease, yet the address is not free
    rs = make_set([canonicalize("10.1.2.0/29", None, None, None)])
    with store.transaction():
        files = hold(tmp_path, store)
        allocations, _ = allocator.add(store, "net", [rs], [], "a", "eth0", files=files)
        commit(files)
    assert [str(a.ip) for a in allocations] == ["10.1.2.4"]
    assert (d / "10.1.2.4").read_bytes() == b"a\r\neth0"
    err = capsys.readouterr().err
    assert "%s/10.1.2.3 exists and names no owner (a directory): skipped" % d in err
    assert "%s: recorded 1 lease(s) that another writer made" % d in err
    with store.transaction():  # only .5 and .6 are left; then nothing
        files = hold(tmp_path, store)
        for cid in ("b", "c"):
            allocator.add(store, "net", [rs], [], cid, "eth0", files=files)
        with pytest.raises(Exception, match="no IP addresses available"):
            allocator.add(store, "net", [rs], [], "d", "eth0", files=files)
        files.close()


def test_release_removes_only_a_file_naming_that_owner(tmp_path):
    store = FakeStore()
    files = hold(tmp_path, store)
    a, b = lease("10.1.2.2"), lease("10.1.2.3", "b")
    assert files.claim(a) is None and files.claim(b) is None
    commit(files)
    d = tmp_path / "net"
    (d / "10.1.2.3").write_bytes(b"other\r\neth0")  # b's address reused by another writer
    files = hold(tmp_path, store)
    problems = files.apply(released(a, b))
    commit(files)
    assert sorted(os.listdir(d)) == ["10.1.2.3", "lock"]
    assert (d / "10.1.2.3").read_bytes() == b"other\r\neth0"
    assert problems == ["left %s/10.1.2.3: it names another owner (other/eth0), not b/eth0" % d]


def test_a_link_is_never_followed_nor_replaced(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    d = tmp_path / "data" / "net"
    d.mkdir(parents=True)
    (d / "10.1.2.2").symlink_to(target)
    files = hold(tmp_path / "data", FakeStore())
    assert files.claim(lease("10.1.2.2")) is False
    assert files.apply(released(lease("10.1.2.2"))) == [
        "left %s/10.1.2.2: not a regular file, so not a/eth0's lease file" % d]
    files.close()
    assert target.read_bytes() == b"keep" and (d / "10.1.2.2").is_symlink()


def test_symlinked_network_dir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "net").symlink_to(outside)
    with pytest.raises(IoFailure, match="symbolic link"):
        hold(data, FakeStore())
    assert list(outside.iterdir()) == []


def test_changes_are_made_under_host_locals_lock_with_a_bounded_wait(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    fd = os.open(d / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's flock (Go's)
        start = time.monotonic()
        with pytest.raises(TryAgain, match="net/lock .host-local's lock. is held by another "
                                           "process past the busy timeout"):
            hold(tmp_path, FakeStore(), timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 2
        fcntl.flock(fd, fcntl.LOCK_UN)
        hold(tmp_path, FakeStore(), timeout=0.3).close()
    finally:
        os.close(fd)


def test_the_stamp_notices_another_writer_and_our_own_change_does_not(tmp_path):
    store = FakeStore()
    files = hold(tmp_path, store)
    assert files.changed()  # never recorded: reconcile once
    assert files.claim(lease("10.1.2.2")) is None
    commit(files)
    files = hold(tmp_path, store)
    assert not files.changed()
    files.close()
    (tmp_path / "net" / "10.1.2.7").write_bytes(b"go\r\neth0")
    files = hold(tmp_path, store)  # hold reconciles: the file is recorded
    commit(files)
    assert sorted(str(x.ip) for x in store.leases("net")) == ["10.1.2.2", "10.1.2.7"]


def test_an_unfinished_commands_journal_is_undone_from_the_database(tmp_path):
    """Files the dead command journaled are ours: removed where the database has no such
    lease, written back where it does. A file that changed since is someone else's."""
    store = FakeStore()
    with store.transaction():
        store.reserve(lease("10.1.2.2"), "add")
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.5").write_bytes(b"dead\r\neth0")  # created, never committed
    (d / "10.1.2.6").write_bytes(b"go\r\neth0")  # journaled by us, then reused by Go
    journal = b"".join(b"%s %s\n" % (name, data) for name, data in (
        (b"10.1.2.5", b"- " + b"dead\r\neth0".hex().encode()),  # created
        (b"10.1.2.2", b"a\r\neth0".hex().encode() + b" -"),  # removed
        (b"10.1.2.6", b"- " + b"dead2\r\neth0".hex().encode()))) + b"10.1.2.7 - cut-sh"
    (tmp_path / (PENDING_PREFIX + "net")).write_bytes(journal)
    files = hold(tmp_path, store)
    commit(files)
    assert sorted(os.listdir(d)) == ["10.1.2.2", "10.1.2.6", "lock"]
    assert (d / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert not (tmp_path / (PENDING_PREFIX + "net")).exists()
    assert sorted(str(x.ip) for x in store.leases("net")) == ["10.1.2.2", "10.1.2.6"]


def test_a_reconcile_writes_back_our_files_and_cursors_never_over_anothers(tmp_path):
    """Our lease whose file is gone gets it back; our lease whose file now names another
    owner is released and that owner recorded (the file is never replaced); the cursor
    files show the database's cursors (one it has none for goes, as check --repair
    removes it); a directory under a cursor's name is left."""
    store = FakeStore()
    with store.transaction():
        for addr, cid in (("10.1.2.2", "a"), ("10.1.2.3", "b"), ("10.1.2.4", "c")):
            store.reserve(lease(addr, cid), "add")
        store.set_last_reserved("net", 0, ip("10.1.2.4"))
        store.set_last_reserved("net", 1, ip("10.1.3.9"))
    files = hold(tmp_path, store)
    assert files.claim(lease("10.1.2.3", "b")) is None
    assert files.claim(lease("10.1.2.4", "c")) is None
    commit(files)
    d = tmp_path / "net"
    (d / "10.1.2.4").unlink()
    (d / "10.1.2.3").write_bytes(b"go\r\neth0")  # Go freed b's address and reused it
    (d / "last_reserved_ip.0").write_bytes(b"10.1.2.9")
    (d / "last_reserved_ip.1").mkdir()
    (d / "last_reserved_ip.2").write_bytes(b"10.1.4.7")  # no cursor of ours: stale
    files = Mirror(str(tmp_path)).open(store, "net")
    with store.transaction():
        found = files.reconcile_if_changed()
        files.record()
    files.committed()
    assert sorted(found) == [("adopted", "10.1.2.3"), ("missing", "10.1.2.2"),
                             ("missing", "10.1.2.4"), ("reassigned", "10.1.2.3"),
                             ("stale", "last_reserved_ip.2"), ("wrong", "last_reserved_ip.0")]
    assert (d / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (d / "10.1.2.4").read_bytes() == b"c\r\neth0"
    assert (d / "10.1.2.3").read_bytes() == b"go\r\neth0"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.1.2.4"
    assert (d / "last_reserved_ip.1").is_dir()
    assert not (d / "last_reserved_ip.2").exists()
    assert store.cursors("net") == {0: ip("10.1.2.4"), 1: ip("10.1.3.9")}
    assert sorted((str(x.ip), x.container_id) for x in store.leases("net")) == [
        ("10.1.2.2", "a"), ("10.1.2.3", "go"), ("10.1.2.4", "c")]
    assert not (tmp_path / (PENDING_PREFIX + "net")).exists()


def test_differences_and_sync(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"a\neth0")  # a's, another spelling
    (d / "10.1.2.4").write_bytes(b"x\r\neth0")  # b's address, another owner
    (d / "10.1.2.8").write_bytes(b"stray\r\neth0")  # an owner we do not know
    (d / "10.1.2.9").write_bytes(b"")  # names no one
    (d / "last_reserved_ip.3").write_bytes(b"10.1.2.8")
    (d / ".host-local-sqlite.tmp.10.1.2.4.9.1").write_bytes(b"x")
    (d / "README").write_bytes(b"foreign")
    (d / "010.1.2.2").write_bytes(b"not canonical: foreign")
    (d / "subdir").mkdir()
    (d / "10.1.2.10").mkdir()  # a directory under an address's name: no one's lease
    leases = [lease("10.1.2.2"), lease("10.1.2.3", "b"), lease("10.1.2.4", "b", "eth1")]
    files = Mirror(str(tmp_path)).open(FakeStore(), "net", create=False)
    try:
        dry = reconcile.differences(files.d, leases, {0: ip("10.1.2.3")})
        diffs = reconcile.sync(files, leases, {0: ip("10.1.2.3")})
    finally:
        files.close()
    assert dry == diffs
    assert sorted(diffs) == sorted([
        ("temporary", ".host-local-sqlite.tmp.10.1.2.4.9.1"), ("foreign", "10.1.2.8"),
        ("unreadable", "10.1.2.9"), ("stale", "last_reserved_ip.3"), ("wrong", "10.1.2.2"),
        ("missing", "10.1.2.3"), ("conflict", "10.1.2.4"), ("missing", "last_reserved_ip.0")])
    assert sorted(os.listdir(d)) == ["010.1.2.2", "10.1.2.10", "10.1.2.2", "10.1.2.3",
                                     "10.1.2.4", "10.1.2.8", "10.1.2.9", "README",
                                     "last_reserved_ip.0", "subdir"]
    assert (d / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (d / "10.1.2.4").read_bytes() == b"x\r\neth0"


def test_a_reader_creates_nothing(tmp_path):
    (tmp_path / "net").mkdir()
    files = Mirror(str(tmp_path)).open(FakeStore(), "net", create=False)
    files.close()
    assert os.listdir(tmp_path / "net") == []
    with pytest.raises(IoFailure, match="cannot open"):
        Mirror(str(tmp_path)).open(FakeStore(), "absent", create=False)


def test_disabled_mirror_touches_nothing(tmp_path):
    m = Mirror(str(tmp_path), enabled=False)
    assert m.open(FakeStore(), "net") is None
    assert os.listdir(tmp_path) == []


def test_network_dir_create_is_exclusive(tmp_path):
    (tmp_path / "net").mkdir()
    d = NetworkDir(str(tmp_path), "net")
    try:
        assert d.create("10.1.2.2", b"a\r\neth0") is True
        assert d.create("10.1.2.2", b"b\r\neth0") is False
    finally:
        d.close()
    assert (tmp_path / "net" / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert sorted(os.listdir(tmp_path / "net")) == ["10.1.2.2"]  # no temporary file left
