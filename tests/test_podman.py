"""A real runtime: Debian's podman 4 on its CNI backend runs our plugin, installed by
``ipamctl install-plugin`` as an operator would, for containers started from a busybox
root file system (no image is pulled).

Each test has its own podman state (conftest's ``podman``: storage, run and lock
directories, containers.conf, network configs and plugin directory, all temporary), a
bridge of a unique name that it deletes, and leaves no container, network namespace or
mount behind. Tests ask for ``bridge`` (and ``calls``) before ``podman``: pytest tears
fixtures down in reverse, so a failed test's containers are removed (their DEL served)
before the daemon stops and the bridge goes. The bridge gets no address of the host's
(no isGateway, no ipMasq: no route, firewall rule or sysctl of the host changes), so the
containers' traffic stays on that bridge, between the namespaces podman made.
"""
import ipaddress
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
from helpers import BUSYBOX, GO_PLUGINS, IPAMCTL, busybox_rootfs, js, owners

from ipam import paths

GO_BRIDGE = os.path.join(GO_PLUGINS, "bridge")
GO_HOST_LOCAL = os.path.join(GO_PLUGINS, "host-local")
LIBCNI_CACHE = "/var/lib/cni/results"  # libcni's result cache: podman gives no other
SUBNET = "10.99.17.0/24"


def _missing():
    """Why podman cannot run here, or "" (CI installs all of it: .ci/run)."""
    if os.geteuid() != 0:
        return "needs root (podman's CNI backend, as root)"
    for program in ("podman", "runc", "ip"):
        if shutil.which(program) is None:
            return "needs %s (Debian: apt-get install %s)" % (
                program, "iproute2" if program == "ip" else program)
    if not os.access(BUSYBOX, os.X_OK):
        return "needs %s (Debian: apt-get install busybox-static)" % BUSYBOX
    if not os.access(GO_BRIDGE, os.X_OK):
        return "needs %s (Debian: apt-get install containernetworking-plugins)" % GO_BRIDGE
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    if not re.search(r"version 4\.", version):
        return "needs podman 4 (its CNI backend), not %r" % version.strip()
    return ""


MISSING = _missing()
pytestmark = [pytest.mark.root, pytest.mark.reference,
              pytest.mark.skipif(bool(MISSING), reason=MISSING or "runnable")]


@pytest.fixture
def rootfs(tmp_path):
    return busybox_rootfs(tmp_path / "rootfs", "sleep", "ping")


@pytest.fixture
def bridge():
    """A bridge name no one else uses; the bridge plugin makes it and leaves it (its DEL
    does not remove a bridge): deleted here."""
    name = "hlsp" + uuid.uuid4().hex[:8]  # 12 characters, within IFNAMSIZ
    yield name
    if os.path.exists("/sys/class/net/" + name):
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
    assert not os.path.exists("/sys/class/net/" + name), "could not delete bridge " + name


@pytest.fixture(params=["in-process", "daemon"])
def calls(request):
    """Where podman's calls of our plugin run: in the plugin's process, or forwarded to
    a node daemon (``ipamctl serve``) that the network config names. Not the
    environment: the DEL at a container's exit runs in ``podman container cleanup``,
    which conmon starts without podman's environment (HOST_LOCAL_SQLITE_DAEMON given to
    ``podman run`` never reaches it). The daemon, or None."""
    return request.getfixturevalue("start_daemon")() if request.param == "daemon" else None


def install_plugin(podman, *args, ipamctl=IPAMCTL):
    """``ipamctl -o json install-plugin`` into the podman's first plugin directory, with
    its containers.conf in the environment (as on a node where it is the system's): the
    JSON report, and the podman runtime's part of it. ``ipamctl``: this installation's
    (which writes the launcher) or a self-contained build's (which copies the build)."""
    proc = subprocess.run([ipamctl, "-o", "json", "install-plugin", podman.plugin_dir, *args],
                          env=podman.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    runtime = next(r for r in report["runtimes"] if r["name"] == "podman")
    assert runtime["configs"] == [podman.conf], runtime
    assert runtime["dirs"] == [podman.plugin_dir, GO_PLUGINS], runtime
    assert runtime["runs"] == report["path"], runtime  # ours is found first
    # Each warning begins with the runtime it is about; another runtime on this node
    # (containerd, which does not search the test's directory) may well warn.
    assert not [w for w in report["warnings"] if w.split()[0].rstrip(":") == "podman"], \
        report["warnings"]
    return report


def network(podman, name, bridge, ipam_type, data_dir, subnet=SUBNET, daemon=None):
    """A CNI network config as an operator writes one into podman's network_config_dir:
    the bridge plugin, IPAM delegated to ``ipam_type``; our calls forwarded to
    ``daemon``, else run in process (never to a daemon another program left on the
    default socket)."""
    conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
         "ipam": {"type": ipam_type, "ranges": [[{"subnet": subnet}]],
                  "dataDir": str(data_dir),
                  "daemon": False if daemon is None else daemon.socket}}]}
    with open(os.path.join(podman.config_dir, name + ".conflist"), "w") as f:
        json.dump(conf, f)


def start(podman, rootfs, net, name):
    """A container on ``net`` that sleeps (NET_RAW: busybox ping opens a raw socket,
    granted explicitly rather than by podman's version-dependent default capabilities);
    its ID, address (podman inspect) and network namespace."""
    cid = podman("run", "--detach", "--name", name, "--network", net, "--cap-add", "NET_RAW",
                 "--rootfs", rootfs, "sleep", "600").stdout.strip()
    info = podman.inspect(name)
    assert info["Id"] == cid and info["State"]["Running"], info["State"]
    ip = info["NetworkSettings"]["Networks"][net]["IPAddress"]
    return cid, ip, info["NetworkSettings"]["SandboxKey"]


def mirror(data_dir, net):
    """The host-local files of ``net``: {address: content}."""
    d = os.path.join(str(data_dir), net)
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    out = {}
    for n in names:
        if n != "lock" and not n.startswith("last_reserved_ip."):
            with open(os.path.join(d, n), newline="") as f:  # keeps its "\r\n"
                out[n] = f.read()
    return out


def leases(data_dir, net):
    return js("list", "--network", net, data_dir=data_dir)


def gone(sandbox, net, cid):
    """What podman's teardown removes: the container's network namespace and libcni's
    cached result of its ADD."""
    assert not os.path.exists(sandbox), sandbox
    assert not os.path.exists(os.path.join(LIBCNI_CACHE, "%s-%s-eth0" % (net, cid)))


def test_two_containers_ping_each_other_and_stop_releases(bridge, calls, podman, rootfs,
                                                          tmp_path):
    report = install_plugin(podman)
    assert report["path"] == os.path.join(podman.plugin_dir, paths.PLUGIN_NAME)
    data_dir, net = tmp_path / "ipam", "hlsp"
    network(podman, net, bridge, paths.PLUGIN_NAME, data_dir, daemon=calls)

    a_id, a_ip, a_ns = start(podman, rootfs, net, "a")
    b_id, b_ip, b_ns = start(podman, rootfs, net, "b")
    assert a_ip != b_ip and {a_ip, b_ip} <= {str(h) for h in
                                             ipaddress.ip_network(SUBNET).hosts()}
    # podman inspect, our database (ipamctl list) and host-local's files agree.
    held = leases(data_dir, net)
    assert sorted(owners(held)) == sorted([(net, a_ip, a_id, "eth0"), (net, b_ip, b_id, "eth0")])
    assert {x["container_id"]: x["pod_name"] for x in held} == {a_id: "a", b_id: "b"}
    assert mirror(data_dir, net) == {a_ip: a_id + "\r\neth0", b_ip: b_id + "\r\neth0"}

    for source, target in (("a", b_ip), ("b", a_ip)):
        ping = podman("exec", source, "ping", "-c", "1", "-W", "5", target, expect=None)
        assert ping.returncode == 0, "%s could not ping %s:\n%s%s" % (
            source, target, ping.stdout, ping.stderr)

    # stop: podman tears the network down (CNI DEL) and the address is free again.
    podman("stop", "--time", "0", "a")
    assert owners(leases(data_dir, net)) == [(net, b_ip, b_id, "eth0")]
    assert mirror(data_dir, net) == {b_ip: b_id + "\r\neth0"}
    gone(a_ns, net, a_id)
    podman("rm", "--force", "--time", "0", "b")
    assert leases(data_dir, net) == [] and mirror(data_dir, net) == {}
    gone(b_ns, net, b_id)
    if calls is not None:  # the daemon served them (its log has a line per call)
        for command in ("ADD", "DEL"):
            for cid in (a_id, b_id):
                line = "%s network=%s container=%s ifname=eth0 result=ok" % (command, net, cid)
                calls.wait_log(lambda log, line=line: line in log, repr(line), timeout=10)


def test_the_drop_in_name_found_first_is_ours(bridge, podman, rootfs, tmp_path):
    """``--name host-local`` in a directory podman searches before Debian's: a network
    config naming plain host-local gets its address from our plugin (our database has
    the lease: Go's host-local writes none, though it writes the same mirror files)."""
    report = install_plugin(podman, "--name", "host-local")
    assert report["path"] == os.path.join(podman.plugin_dir, "host-local")
    assert report["kept"] is None and os.access(GO_HOST_LOCAL, os.X_OK)
    data_dir, net = tmp_path / "ipam", "hlsp"
    network(podman, net, bridge, "host-local", data_dir)

    cid, ip, sandbox = start(podman, rootfs, net, "c")
    assert os.path.exists(paths.default_database(str(data_dir)))
    assert owners(leases(data_dir, net)) == [(net, ip, cid, "eth0")]
    assert mirror(data_dir, net) == {ip: cid + "\r\neth0"}

    podman("rm", "--force", "--time", "0", "c")
    assert leases(data_dir, net) == [] and mirror(data_dir, net) == {}
    gone(sandbox, net, cid)


@pytest.mark.network  # the self-contained build: make dist installs cx_Freeze
def test_the_self_contained_build_serves_podman(bridge, frozen_build, podman, rootfs,
                                                tmp_path):
    """The build installed by its own ipamctl serves podman as the launcher does."""
    report = install_plugin(podman, ipamctl=frozen_build.ipamctl)
    assert report["build"]["link"].startswith("host-local-sqlite.d/")
    data_dir, net = tmp_path / "ipam", "hlsp"
    network(podman, net, bridge, paths.PLUGIN_NAME, data_dir)

    cid, ip, sandbox = start(podman, rootfs, net, "f")
    listed = subprocess.run([frozen_build.ipamctl, "--data-dir", str(data_dir), "-o", "json",
                             "list"], capture_output=True, text=True, timeout=60)
    assert owners(json.loads(listed.stdout)) == [(net, ip, cid, "eth0")], listed.stderr
    assert mirror(data_dir, net) == {ip: cid + "\r\neth0"}
    podman("rm", "--force", "--time", "0", "f")
    assert leases(data_dir, net) == [] and mirror(data_dir, net) == {}
    gone(sandbox, net, cid)


def new_subnet(podman, name):
    """The subnet ``podman network create`` picks for a new network (then removed)."""
    podman("network", "create", name)
    try:
        return [s["subnet"] for s in network_inspect(podman, name)["subnets"]]
    finally:
        podman("network", "rm", name)


def network_inspect(podman, name):
    return json.loads(podman("network", "inspect", name).stdout)[0]


def test_podman_sees_the_subnets_of_the_drop_in_name_only(bridge, podman, tmp_path):
    """podman reads the ranges of an ipam of type host-local only: under our own type a
    network shows no subnets, and ``podman network create`` hands the same subnet to
    the next network; under the drop-in name it avoids it."""
    (free,) = new_subnet(podman, "probe")  # the subnet podman would pick first
    data_dir, net = tmp_path / "ipam", "hlsp"

    network(podman, net, bridge, paths.PLUGIN_NAME, data_dir, subnet=free)
    shown = network_inspect(podman, net)
    assert "subnets" not in shown and shown["ipam_options"] == {"driver": paths.PLUGIN_NAME}
    assert new_subnet(podman, "other") == [free]  # overlaps ours

    network(podman, net, bridge, "host-local", data_dir, subnet=free)
    shown = network_inspect(podman, net)
    assert [s["subnet"] for s in shown["subnets"]] == [free]
    assert free not in new_subnet(podman, "other")
