"""The mirror: host-local's layout written from the database, never followed through links."""
import ipaddress
import os

import pytest

from ipam.errors import IoFailure
from ipam.exporter import Mirror, NetworkDir, sync_dir
from ipam.lease import Changes, Lease
from ipam.memory_store import MemoryStore

ip = ipaddress.ip_address


def changes_with(*leases, cursors=None):
    c = Changes("net")
    c.reserved.extend(leases)
    c.cursors.update(cursors or {})
    return c


def test_apply_writes_host_local_layout(tmp_path):
    store = MemoryStore()
    m = Mirror(str(tmp_path))
    m.apply(store, changes_with(Lease("net", ip("10.1.2.2"), 0, "a", "eth0"),
                                Lease("net", ip("2001:db8::2"), 1, "a", "eth0"),
                                Lease("net", ip("10.1.2.9"), 0, "legacy", None),
                                cursors={0: ip("10.1.2.2"), 1: ip("2001:db8::2")}))
    m.committed("net")
    d = tmp_path / "net"
    assert (d / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (d / "2001:db8::2").read_bytes() == b"a\r\neth0"
    assert (d / "10.1.2.9").read_bytes() == b"legacy"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.1.2.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"2001:db8::2"
    assert (d / "lock").read_bytes() == b""
    assert {oct(p.stat().st_mode & 0o777) for p in d.iterdir()} == {"0o600"}
    assert oct(d.stat().st_mode & 0o777) == "0o755"
    assert sorted(os.listdir(tmp_path)) == ["net"]  # no marker left


def test_release_removes_only_that_file(tmp_path):
    m = Mirror(str(tmp_path))
    a = Lease("net", ip("10.1.2.2"), 0, "a", "eth0")
    m.apply(MemoryStore(), changes_with(a, Lease("net", ip("10.1.2.3"), 0, "b", "eth0")))
    m.committed("net")
    c = Changes("net")
    c.released.append(a)
    m.apply(MemoryStore(), c)
    assert sorted(os.listdir(tmp_path / "net")) == ["10.1.2.3", "lock"]


def test_symlinked_network_dir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "net").symlink_to(outside)
    with pytest.raises(IoFailure, match="symbolic link"):
        Mirror(str(data)).apply(MemoryStore(), changes_with(Lease("net", ip("10.1.2.2"), 0, "a",
                                                                  "eth0")))
    assert list(outside.iterdir()) == []


def test_symlinked_address_file_is_replaced_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    d = tmp_path / "data" / "net"
    d.mkdir(parents=True)
    (d / "10.1.2.2").symlink_to(target)
    Mirror(str(tmp_path / "data")).apply(
        MemoryStore(), changes_with(Lease("net", ip("10.1.2.2"), 0, "a", "eth0")))
    assert target.read_bytes() == b"keep"
    assert not (d / "10.1.2.2").is_symlink() and (d / "10.1.2.2").read_bytes() == b"a\r\neth0"


def test_sync_reports_and_repairs(tmp_path):
    d = tmp_path / "net"
    d.mkdir()
    (d / "10.1.2.2").write_bytes(b"wrong\r\neth0")
    (d / "10.1.2.8").write_bytes(b"stale\r\neth0")
    (d / "last_reserved_ip.3").write_bytes(b"10.1.2.8")
    (d / ".host-local-sqlite.tmp.10.1.2.4.9.1").write_bytes(b"x")
    (d / "README").write_bytes(b"foreign")
    (d / "010.1.2.2").write_bytes(b"not canonical: foreign")
    (d / "subdir").mkdir()
    leases = [Lease("net", ip("10.1.2.2"), 0, "a", "eth0"),
              Lease("net", ip("10.1.2.3"), 0, "b", "eth0")]
    nd = NetworkDir(str(tmp_path), "net", create=False)
    try:
        dry = sync_dir(nd, leases, {0: ip("10.1.2.3")}, dry_run=True)
        assert sorted(os.listdir(d)) == sorted(["10.1.2.2", "10.1.2.8", "last_reserved_ip.3",
                                                ".host-local-sqlite.tmp.10.1.2.4.9.1",
                                                "README", "010.1.2.2", "subdir"])
        diffs = sync_dir(nd, leases, {0: ip("10.1.2.3")})
    finally:
        nd.close()
    assert dry == diffs
    assert sorted(diffs) == sorted([
        ("temporary", ".host-local-sqlite.tmp.10.1.2.4.9.1"), ("stale", "10.1.2.8"),
        ("stale", "last_reserved_ip.3"), ("wrong", "10.1.2.2"), ("missing", "10.1.2.3"),
        ("missing", "last_reserved_ip.0")])
    assert sorted(os.listdir(d)) == ["010.1.2.2", "10.1.2.2", "10.1.2.3", "README",
                                     "last_reserved_ip.0", "lock", "subdir"]


def test_disabled_mirror_touches_nothing(tmp_path):
    m = Mirror(str(tmp_path), enabled=False)
    m.apply(MemoryStore(), changes_with(Lease("net", ip("10.1.2.2"), 0, "a", "eth0")))
    m.touch("net")
    assert os.listdir(tmp_path) == []
