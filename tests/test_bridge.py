"""A real runtime client: Go's bridge plugin delegating IPAM to ours, in two namespaces.

Needs root, iproute2 and Debian's containernetworking-plugins. Everything it creates has
a unique name (two netns, one bridge) and is removed even when the test fails; the only
addresses used are 10.99.0.0/24, inside those namespaces and on that bridge. The bridge
plugin's isGateway turns on net.ipv4.ip_forward: its old value is put back.
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipam.paths import DB_NAME

try:  # tests/ may or may not become a package
    from .cniexec import CONSOLE_SCRIPT, GO_BRIDGE, GO_HOST_LOCAL, OURS, run
    from .helpers import plugin_program
except ImportError:
    from cniexec import CONSOLE_SCRIPT, GO_BRIDGE, GO_HOST_LOCAL, OURS, run
    from helpers import plugin_program

SUBNET = ipaddress.ip_network("10.99.0.0/24")
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# Concurrent runs of this test (several checkouts on one host) would put 10.99.0.1/24 on
# two bridges at once: serialise them.
HOST_LOCK = "/tmp/host-local-sqlite-test-bridge.lock"


def _skip_reason() -> str:
    if os.geteuid() != 0:
        return "needs root (ip netns add, bridge plugin)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    if shutil.which("ping") is None:
        return "needs ping"
    if not os.access(GO_BRIDGE, os.X_OK):
        return f"{GO_BRIDGE} missing: apt-get install containernetworking-plugins"
    return ""


pytestmark = [
    pytest.mark.reference,
    pytest.mark.root,
    # Through each entry path of ours (conftest.py's through): the bridge plugin passes
    # its environment on to ours, which is the path's program (cni_path).
    pytest.mark.usefixtures("through"),
    pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "runnable"),
]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def host_lock() -> Iterator[None]:
    with open(HOST_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def tag(host_lock: None) -> str:
    """A unique suffix; also refuses to run if 10.99.0.0/24 is already in use here."""
    used = ip("-o", "-4", "addr", "show").stdout + ip("-4", "route", "show").stdout
    for word in used.split():
        try:
            if ipaddress.ip_interface(word).network.overlaps(SUBNET):
                pytest.skip(f"10.99.0.0/24 is already in use on this host: {word}")
        except ValueError:
            continue
    return uuid.uuid4().hex[:6]


@pytest.fixture
def bridge_name(tag: str) -> Iterator[str]:
    name = "hlsbr" + tag  # 11 characters, within IFNAMSIZ
    with open(IP_FORWARD) as f:
        forward = f.read()
    try:
        yield name
    finally:
        if ip("link", "show", name, check=False).returncode == 0:
            ip("link", "del", name, check=False)
        with open(IP_FORWARD, "w") as f:
            f.write(forward)


@pytest.fixture
def namespaces(tag: str) -> Iterator[list[str]]:
    names = [f"hls{tag}-a", f"hls{tag}-b"]
    created: list[str] = []
    try:
        for name in names:
            ip("netns", "add", name)
            created.append(name)
        yield names
    finally:
        for name in created:
            ip("netns", "del", name, check=False)


@pytest.fixture
def cni_path(tmp_path: Path, through: object) -> str:
    """A CNI_PATH holding only the two plugins of this chain: ours as the test's entry
    path runs it (the console script, or the build's program)."""
    d = tmp_path / "cni-bin"
    d.mkdir()
    (d / "host-local-sqlite").symlink_to(plugin_program() if OURS == CONSOLE_SCRIPT else OURS)
    (d / "bridge").symlink_to(GO_BRIDGE)
    return str(d)


def ip_files(network_dir: Path) -> list[str]:
    if not network_dir.is_dir():
        return []
    return sorted(p.name for p in network_dir.iterdir()
                  if p.name != "lock" and not p.name.startswith("last_reserved_ip."))


def lease_count(data_dir: Path) -> int:
    conn = sqlite3.connect("file:%s?mode=ro" % (data_dir / DB_NAME), uri=True)
    try:
        return conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    finally:
        conn.close()


def test_bridge_two_namespaces(tmp_path: Path, namespaces: list[str], bridge_name: str,
                               cni_path: str) -> None:
    data_dir = tmp_path / "ipam"
    config = {"cniVersion": "1.0.0", "name": "hlsbr", "type": "bridge", "bridge": bridge_name,
              "isGateway": True,
              "ipam": {"type": "host-local-sqlite", "subnet": str(SUBNET),
                       "dataDir": str(data_dir)}}
    ours_is_go = os.path.realpath(OURS) == os.path.realpath(GO_HOST_LOCAL)

    def bridge(command: str, ns: str):
        return run(GO_BRIDGE, command, config, container_id="ctr-" + ns, ifname="eth0",
                   netns="/var/run/netns/" + ns, path=cni_path)

    added = []
    try:
        addresses = []
        for ns in namespaces:
            out = bridge("ADD", ns)
            assert out.status == 0, out
            added.append(ns)
            ips = [ipaddress.ip_interface(i["address"]) for i in out.json["ips"]]
            assert len(ips) == 1 and ips[0].network == SUBNET, out
            assert str(ips[0].ip) in ip("netns", "exec", ns, "ip", "-4", "addr", "show",
                                        "eth0").stdout
            addresses.append(str(ips[0].ip))
        assert len(set(addresses)) == 2, addresses
        assert ip_files(data_dir / "hlsbr") == sorted(addresses)
        if not ours_is_go:
            assert lease_count(data_dir) == 2

        ping = subprocess.run(["ip", "netns", "exec", namespaces[0], "ping", "-c", "1", "-W",
                               "2", addresses[1]], capture_output=True, text=True, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr

        for ns in namespaces:
            out = bridge("DEL", ns)
            assert out.status == 0 and out.stdout == b"", out
            added.remove(ns)
        assert ip_files(data_dir / "hlsbr") == []
        if not ours_is_go:
            assert lease_count(data_dir) == 0
    finally:
        for ns in added:  # best effort: release what a failed run left behind
            bridge("DEL", ns)
