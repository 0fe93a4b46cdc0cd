"""The quick starts of docs/runtimes.md: the network configs it ships (deploy/quickstart/) are what
the runtimes take and what our plugin accepts, and ``ipamctl check-install`` finds out,
by a real ADD and DEL through the file each runtime would run, whether the install
works.

Each runtime is checked under ``--root`` (a temporary tree with its config files), never
against this host's runtimes, but for podman: Debian's podman 4 reading the podman
quick start from a private config directory (helpers.Podman)."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from click.testing import CliRunner
from helpers import Podman, checked, run_plugin

from host_local_sqlite_cli.main import cli
from ipam import paths
from ipam.install import install_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "deploy", "quickstart")
CONFLISTS = ["podman.conflist", "containerd.conflist"]
GO_BRIDGE = "/usr/lib/cni/bridge"  # Debian's containernetworking-plugins 1.1.1
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load(name):
    with open(os.path.join(QUICKSTART, name)) as f:
        return json.load(f)


@pytest.mark.parametrize("name", CONFLISTS)
def test_the_quick_start_conflists_are_bridge_with_our_ipam(tmp_path, name):
    """A conflist of one bridge whose ipam is ours, at cniVersion 1.0.0 (Debian's bridge
    1.1.1 takes nothing newer); our plugin, given the bridge's config as libcni gives it
    (the list's name and cniVersion inserted), leases from its range and releases."""
    conflist = load(name)
    assert conflist["cniVersion"] == "1.0.0"
    [bridge] = conflist["plugins"]
    assert bridge["type"] == "bridge" and bridge["ipam"]["type"] == paths.PLUGIN_NAME
    assert "dataDir" not in bridge["ipam"]  # the default: what the DaemonSet mounts
    conf = dict(bridge, name=conflist["name"], cniVersion=conflist["cniVersion"])
    conf["ipam"] = dict(bridge["ipam"], dataDir=str(tmp_path))
    added = run_plugin("ADD", conf, container_id="quick")
    assert added.status == 0, added.out
    subnet = bridge["ipam"]["ranges"][0][0]["subnet"]
    address = added.json["ips"][0]["address"]
    assert address.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
    assert run_plugin("DEL", conf, container_id="quick").status == 0


@pytest.mark.reference
@pytest.mark.parametrize("name", CONFLISTS)
def test_debians_bridge_supports_the_quick_starts_version(name):
    if not os.access(GO_BRIDGE, os.X_OK):
        assert not IN_CI, "CI installs containernetworking-plugins"
        pytest.skip("needs Debian's containernetworking-plugins")
    proc = subprocess.run([GO_BRIDGE], input=b"{}", capture_output=True, timeout=30,
                          env={"CNI_COMMAND": "VERSION"})
    assert load(name)["cniVersion"] in json.loads(proc.stdout)["supportedVersions"]


@pytest.mark.root
@pytest.mark.reference
def test_podman_takes_the_quick_start_and_check_install_runs_it(monkeypatch):
    """Debian's podman 4 lists the quick-start network; check-install finds that podman
    (CONTAINERS_CONF names its config) would run our plugin, once installed, and that
    an ADD and DEL through it work."""
    if shutil.which("podman") is None or os.geteuid() != 0:
        assert not IN_CI, "CI runs as root and installs podman"
        pytest.skip("needs root and Debian's podman")
    podman = Podman()
    try:
        shutil.copy(os.path.join(QUICKSTART, "podman.conflist"), podman.config_dir)
        listed = json.loads(podman("network", "inspect", "hls").stdout)
        assert listed[0]["name"] == "hls" and listed[0]["driver"] == "bridge"
        monkeypatch.setenv("CONTAINERS_CONF", podman.conf)

        def podman_report():
            result = checked(CliRunner().invoke(cli, ["-o", "json", "check-install"]))
            return next(r for r in json.loads(result.stdout) if r["runtime"] == "podman")
        assert podman_report()["problem"] == "no host-local-sqlite in %s, %s" % (
            podman.plugin_dir, "/usr/lib/cni")
        checked(CliRunner().invoke(cli, ["install-plugin", podman.plugin_dir]))
        report = podman_report()
        assert report["problem"] is None and report["what"] is None
        assert report["runs"] == os.path.join(podman.plugin_dir, paths.PLUGIN_NAME)
        assert report["add"] == "192.0.2.2/29"
    finally:
        podman.close()


# -- check-install under a root --------------------------------------------------------
def check(root, *args, expect):
    result = checked(CliRunner().invoke(cli, ["-o", "json", "check-install", "--root",
                                              str(root), *args]))
    assert result.exit_code == expect, result.output
    return json.loads(result.stdout)


def test_check_install_runs_what_containerd_would_run(tmp_path, monkeypatch):
    """Debian's containerd (bin_dir /usr/lib/cni): nothing installed there, then the
    launcher (a real ADD and DEL, in a temporary dataDir removed after), then a file that
    is not ours, then one that fails. Its temporary directories go to one of the test's
    own: in /tmp, another suite's check-install (.ci/run runs them side by side) would
    show as ours left behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
                      'bin_dir = "/usr/lib/cni"\n')
    (tmp_path / "usr/lib/cni").mkdir(parents=True)
    (tmp_path / "opt/cni/bin").mkdir(parents=True)
    checked(CliRunner().invoke(cli, ["install-plugin", "--root", str(tmp_path),
                                     "/opt/cni/bin"]))
    [report] = check(tmp_path, expect=1)
    assert report == {"runtime": "containerd", "runs": None, "what": None, "add": None,
                      "ms": None, "problem": "no host-local-sqlite in /usr/lib/cni"}

    checked(CliRunner().invoke(cli, ["install-plugin", "--root", str(tmp_path)]))
    [report] = check(tmp_path, expect=0)
    assert report["problem"] is None and report["add"] == "192.0.2.2/29"
    assert report["runs"] == "/usr/lib/cni/host-local-sqlite" and report["ms"] > 0
    assert os.listdir(temp) == []

    script = tmp_path / "usr/lib/cni/host-local"
    script.write_text('#!/bin/sh\necho \'{"cniVersion": "1.0.0", "ips": '
                      '[{"address": "192.0.2.5/29"}]}\'\n')
    script.chmod(0o755)
    [report] = check(tmp_path, "--name", "host-local", expect=1)
    assert report["add"] == "192.0.2.5/29" and report["what"] == "a script (#!/bin/sh)"
    assert report["problem"] == ("/usr/lib/cni/host-local is a script (#!/bin/sh), not "
                                 "host-local-sqlite")
    script.write_text('#!/bin/sh\necho \'{"code": 11, "msg": "busy"}\'\nexit 1\n')
    [report] = check(tmp_path, "--name", "host-local", expect=1)
    assert report["problem"] == 'ADD exited 1: {"code": 11, "msg": "busy"}'


def test_check_install_with_no_runtime_fails(tmp_path):
    assert check(tmp_path, expect=1) == []
    result = CliRunner().invoke(cli, ["check-install", "--root", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (1, "no container runtime found here\n")


def test_the_check_uses_a_network_no_operator_has():
    assert install_check.SUBNET == "192.0.2.0/29"  # TEST-NET-1, RFC 5737
    assert install_check.NETWORK.startswith("ipamctl-")
