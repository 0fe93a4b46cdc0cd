"""A real CRI runtime: Debian's containerd 1.6 calls our plugin for pod sandboxes that
the test makes over CRI as kubelet makes them (tests/containerd.py).

Each test has its own containerd (its own config, root, state, sockets, CNI conf and bin
directories; starting one takes about 0.3 s here, so no test inherits another's
sandboxes or conf dir watcher), a bridge of a unique name and a unique subnet; at the end
every sandbox is stopped and removed (its DEL served) before the daemon, if any, stops.
The tests ask for ``calls`` before ``containerd``, so pytest tears containerd down first.
"""
import ipaddress
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from containerd import Containerd, missing
from helpers import IPAMCTL, PLUGIN, cni_env, ipamctl, js, owners, unit_environment, unit_exec_start

MISSING = missing()
pytestmark = [pytest.mark.root, pytest.mark.reference,
              pytest.mark.skipif(bool(MISSING), reason=MISSING or "runnable")]

NET = "hlsc"
_subnets = iter(range(1, 250))


def unique_subnet():
    """A /24 of 10.124.0.0/16 no other test of this session uses."""
    return "10.124.%d.0/24" % next(_subnets)


@pytest.fixture(params=["in-process", "daemon"])
def calls(request):
    """Where containerd's calls of our plugin run: in the plugin's process, or forwarded
    to a node daemon the network config names (containerd gives plugins no environment
    of ours). The daemon, or None."""
    return request.getfixturevalue("start_daemon")() if request.param == "daemon" else None


@pytest.fixture
def containerd():
    instance = Containerd()
    yield instance
    instance.close()


@pytest.fixture
def pods(containerd, calls, tmp_path):
    """The test's containerd, started on a network whose IPAM is ours (forwarded to
    ``calls``, the daemon, if there is one), its data in ``containerd.data_dir``."""
    containerd.data_dir = str(tmp_path / "ipam")
    containerd.subnet = unique_subnet()
    containerd.network(NET, containerd.subnet, data_dir=containerd.data_dir,
                       daemon=False if calls is None else calls.socket)
    containerd.start()
    containerd.calls = calls
    return containerd


def leases(c):
    return js("list", "--network", NET, data_dir=c.data_dir)


def address(c, sid):
    status = c.status(sid).status
    assert status.id == sid and status.state == 0  # SANDBOX_READY
    return status.network.ip


def served_by_daemon(c, command, sid):
    if c.calls is not None:
        line = "%s network=%s container=%s ifname=eth0 result=ok" % (command, NET, sid)
        c.calls.wait_log(lambda log: line in log, repr(line), timeout=10)


def test_sandboxes_get_distinct_addresses_recorded_and_released_on_stop(pods):
    c = pods
    made = {c.run_pod("web-%d" % i, namespace="shop"): "web-%d" % i for i in range(3)}
    ips = {sid: address(c, sid) for sid in made}
    assert len(set(ips.values())) == 3
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(c.subnet) for ip in ips.values())
    listed = {s.id: s for s in c.sandboxes()}
    assert set(listed) == set(made) and all(len(sid) == 64 for sid in made)
    # Our database and mirror record the sandbox (CNI_CONTAINERID) and kubelet's pod.
    held = leases(c)
    assert sorted(owners(held)) == sorted((NET, ips[sid], sid, "eth0") for sid in made)
    for row in held:
        sid = row["container_id"]
        assert (row["pod_namespace"], row["pod_name"]) == ("shop", made[sid])
        assert row["pod_uid"] == listed[sid].metadata.uid
        with open(os.path.join(c.data_dir, NET, ips[sid]), newline="") as f:
            assert f.read() == sid + "\r\neth0"
        served_by_daemon(c, "ADD", sid)

    # StopPodSandbox tears the network down: a DEL, the address is free again.
    first = next(iter(made))
    c.stop_pod(first)
    assert first not in {r["container_id"] for r in leases(c)}
    assert not os.path.exists(os.path.join(c.data_dir, NET, ips[first]))
    assert [s.state for s in c.sandboxes() if s.id == first] == [1]  # SANDBOX_NOTREADY
    served_by_daemon(c, "DEL", first)
    c.remove_pod(first)  # a second DEL, for a lease already gone: no error
    # The freed address is not handed straight back (round robin, as host-local).
    again = c.run_pod("web-3", namespace="shop")
    assert address(c, again) not in ips.values()
    for sid in list(made)[1:] + [again]:
        c.stop_pod(sid)
        c.remove_pod(sid)
    assert leases(c) == [] and c.sandboxes() == []


def test_twenty_concurrent_sandboxes(pods):
    """20 RunPodSandbox at once (kubelet starts pods in parallel): 20 addresses, no two
    alike, each recorded for its sandbox; then 20 StopPodSandbox + RemovePodSandbox at
    once release every one."""
    c = pods
    start = threading.Barrier(20)

    def run(i):
        with c.runtime() as rt:
            start.wait(30)
            return c.run_pod("burst-%d" % i, rt=rt)

    with ThreadPoolExecutor(20) as pool:
        sids = list(pool.map(run, range(20)))
    ips = {sid: address(c, sid) for sid in sids}
    assert len(set(ips.values())) == 20
    assert sorted(owners(leases(c))) == sorted((NET, ip, sid, "eth0") for sid, ip in ips.items())

    def down(sid):
        with c.runtime() as rt:
            c.stop_pod(sid, rt=rt)
            c.remove_pod(sid, rt=rt)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(down, sids))
    assert leases(c) == [] and c.sandboxes() == []
    if c.calls is not None:
        assert c.calls.calls_served(20 + 40) >= 20 + 40  # ADDs, DELs of Stop and Remove


def test_containerd_restarted_with_sandboxes_live(pods):
    """containerd killed and started again while its sandboxes run (an upgrade, a crash):
    it finds them ready with their addresses, our leases are untouched, a new sandbox
    gets another address, and Stop releases the old ones."""
    c = pods
    sids = [c.run_pod("keep-%d" % i) for i in range(3)]
    ips = {sid: address(c, sid) for sid in sids}
    before = leases(c)
    shims = c.shims()
    assert len(shims) == 3
    c.restart()
    assert sorted(c.shims()) == sorted(shims)  # the sandboxes lived on
    assert {s.id: s.state for s in c.sandboxes()} == {sid: 0 for sid in sids}
    assert {sid: address(c, sid) for sid in sids} == ips
    assert leases(c) == before
    new = c.run_pod("after")
    assert address(c, new) not in ips.values()
    for sid in sids + [new]:
        c.stop_pod(sid)
        c.remove_pod(sid)
    assert leases(c) == []


def test_a_cri_client_reports_an_absent_runtime(tmp_path):
    """Our CRI client against a socket nobody serves: a bounded, named failure."""
    from ipam.cri.client import sandbox_ids
    from ipam.errors import CriError

    with pytest.raises(CriError, match="ListPodSandbox failed: UNAVAILABLE"):
        sandbox_ids("unix://%s/none.sock" % tmp_path, timeout=5)


# -- ipamctl gc --cri ---------------------------------------------------------------------
def ipamctl_gc(c, *args, expect=0):
    """``ipamctl -o json gc ARGS`` on the test's data dir: its JSON report, or the
    process when it fails (``expect`` not 0)."""
    proc = ipamctl("-o", "json", "gc", *args, data_dir=c.data_dir, expect=expect, timeout=120)
    return json.loads(proc.stdout) if expect == 0 else proc


def leak(c, network, subnet, n, prefix):
    """``n`` leases whose sandboxes the runtime no longer knows (their DEL never came:
    a crash, a wiped state dir), made by our plugin as containerd makes its ADDs; the
    sandbox IDs. Same data dir, so the same database."""
    conf = {"cniVersion": "1.0.0", "name": network, "type": "host-local-sqlite",
            "ipam": {"type": "host-local-sqlite", "ranges": [[{"subnet": subnet}]],
                     "dataDir": c.data_dir, "daemon": False}}
    ids = []
    for i in range(n):
        sid = "%s%062x" % (prefix, i)
        proc = subprocess.run([PLUGIN], input=json.dumps(conf).encode(),
                              env=cni_env("ADD", container_id=sid), capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ids.append(sid)
    return ids


def test_gc_cri_releases_only_the_leases_of_sandboxes_the_runtime_lost(pods):
    """``ipamctl gc --cri`` lists the sandboxes over CRI (ready and not ready), judges
    the network containerd loaded and nothing else: a podman network's leases in the same
    database stay, though CRI lists none of their containers."""
    c = pods
    live = [c.run_pod("live-%d" % i) for i in range(5)]
    c.stop_pod(live[0])  # NOTREADY: listed, its lease already released by Stop's DEL
    lost = leak(c, NET, c.subnet, 2, "dd")
    podman = leak(c, "podman", unique_subnet(), 2, "ee")

    dry = ipamctl_gc(c, "--cri", c.endpoint, "--grace", "0")
    assert dry["networks"] == [NET]
    assert sorted(x["container_id"] for x in dry["candidates"]) == lost
    assert dry["refused"] == [] and dry["released"] == []
    report = ipamctl_gc(c, "--cri", c.endpoint, "--grace", "0", "--apply")
    assert sorted(x["container_id"] for x in report["released"]) == lost
    assert sorted(r["container_id"] for r in leases(c)) == sorted(live[1:])
    assert sorted(r["container_id"] for r in js("list", "--network", "podman",
                                                data_dir=c.data_dir)) == podman
    # --network names the networks to judge instead: podman's goes (CRI lists none).
    named = ipamctl_gc(c, "--cri", c.endpoint, "--grace", "0", "--network", "podman",
                       "--force", "--apply")
    assert named["networks"] == ["podman"]
    assert sorted(x["container_id"] for x in named["released"]) == podman
    assert sorted(r["container_id"] for r in leases(c)) == sorted(live[1:])


def test_gc_cri_keeps_every_guard(pods):
    """No sandbox at all, while the network has leases: the empty-list guard refuses
    (the runtime may have lost its state, not the pods their network); --grace keeps a
    young lease; nothing goes until --force."""
    c = pods
    lost = leak(c, NET, c.subnet, 2, "dd")
    proc = ipamctl_gc(c, "--cri", c.endpoint, "--grace", "0", "--apply", expect=1)
    assert "the list of live containers is empty" in proc.stderr
    assert [r["guard"] for r in json.loads(proc.stdout)["refused"]] == ["empty-list"]
    assert sorted(r["container_id"] for r in leases(c)) == lost
    young = ipamctl_gc(c, "--cri", c.endpoint, "--force", "--apply")  # --grace 10m
    assert young["released"] == [] and len(young["kept"]) == 2
    forced = ipamctl_gc(c, "--cri", c.endpoint, "--grace", "0", "--force", "--apply")
    assert sorted(x["container_id"] for x in forced["released"]) == lost


def test_gc_cri_without_a_runtime_releases_nothing(containerd, tmp_path):
    """A socket nobody serves: exit 1, the endpoint and call named, nothing released,
    within the call's bound."""
    containerd.data_dir = str(tmp_path / "ipam")
    lost = leak(containerd, NET, unique_subnet(), 1, "dd")
    proc = ipamctl_gc(containerd, "--cri", "unix://%s/none.sock" % tmp_path, "--grace", "0",
                      "--force", "--apply", expect=1)
    assert "Error: CRI runtime unix://%s/none.sock: ListPodSandbox failed: UNAVAILABLE" % (
        tmp_path) in proc.stderr
    assert [r["container_id"] for r in leases(containerd)] == lost


def test_gc_cri_usage(containerd, tmp_path):
    containerd.data_dir = str(tmp_path / "ipam")
    proc = ipamctl_gc(containerd, "--cri", "--valid", "x", expect=2)
    assert "--cri asks the runtime for the live sandboxes" in proc.stderr




# -- ipamctl serve --gc-interval --gc-cri: gc with no crictl and no timer -----------------
def test_the_daemons_periodic_gc_asks_the_runtime_itself(pods, start_daemon):
    """A node daemon running gc every second from containerd's CRI (as the DaemonSet
    does): a run releases the leases of sandboxes the runtime lost, on the network it
    loaded only (a podman network's leases stay), and keeps the live ones."""
    c = pods
    live = [c.run_pod("live-%d" % i) for i in range(3)]
    lost = leak(c, NET, c.subnet, 2, "dd")
    podman = leak(c, "podman", unique_subnet(), 1, "ee")
    gc_daemon = start_daemon("--gc-interval", "1", "--gc-cri", c.endpoint, "--gc-grace", "0",
                             socket=os.path.join(c.data_dir, "gc.sock"),
                             env_extra={"IPAM_DATA_DIR": c.data_dir})
    assert "gc every 1s (CRI %s; grace 0s" % c.endpoint in gc_daemon.log()
    line = "gc run=1 result=ok networks=1 released=2"
    gc_daemon.wait_log(lambda log: line in log, repr(line), timeout=60)
    for sid in lost:
        assert "network=%s" % NET in gc_daemon.log() and "container=%s" % sid in gc_daemon.log()
    assert sorted(r["container_id"] for r in leases(c)) == sorted(live)
    assert [r["container_id"] for r in js("list", "--network", "podman",
                                          data_dir=c.data_dir)] == podman


@pytest.mark.parametrize("calls", ["in-process"], indirect=True)
def test_the_self_contained_builds_gc_asks_the_runtime(pods, frozen_build):
    """The build's ``ipamctl gc --cri`` (its HTTP/2 frozen in, no Python on the node)
    releases the lease of a sandbox containerd lost, and keeps the live one's."""
    c = pods
    live = c.run_pod("live")
    lost = leak(c, NET, c.subnet, 1, "dd")
    proc = frozen_build.run(frozen_build.ipamctl, "--data-dir", c.data_dir, "-o", "json",
                            "gc", "--cri", c.endpoint, "--grace", "0", "--apply")
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [x["container_id"] for x in report["released"]] == lost
    assert [r["container_id"] for r in leases(c)] == [live]


@pytest.mark.parametrize("calls", ["in-process"], indirect=True)
def test_the_periodic_units_default_asks_containerd(pods):
    """deploy/systemd/ipamctl-gc.service as shipped (GC_ARGS=--cri, no LIVE), its
    endpoint the test's containerd: the lost sandbox's lease goes, the live one's stays;
    with containerd stopped, the unit fails and releases nothing."""
    c = pods
    live = c.run_pod("live")
    leak(c, NET, c.subnet, 1, "dd")
    env = unit_environment("ipamctl-gc.service")
    assert env["LIVE"] == "" and env["GC_ARGS"] == "--cri"

    def unit():
        return subprocess.run(
            ["sh", "-c", unit_exec_start("ipamctl-gc.service")], capture_output=True,
            text=True, timeout=120,
            env=dict(env, IPAMCTL=IPAMCTL, IPAM_DATA_DIR=c.data_dir, PATH=os.environ["PATH"],
                     GC_ARGS="--grace 0 --cri " + c.endpoint))

    proc = unit()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["container_id"] for r in leases(c)] == [live]
    again = leak(c, NET, c.subnet, 1, "de")
    c.kill()
    proc = unit()
    assert proc.returncode != 0 and "UNAVAILABLE" in proc.stderr, proc.stdout + proc.stderr
    assert sorted(r["container_id"] for r in leases(c)) == sorted([live] + again)
