"""Differential tests: every scenario runs step by step through Go host-local and ours.

Each plugin gets the same environment and the same config, except ``ipam.dataDir``: each
side has its own temporary directory. After every step :meth:`Diff.step` compares exit
code, stdout (raw bytes for successes, so ADD results must be byte-identical; the parsed
object for errors) and the network directories (names and contents, not modes).

The reference is the Go binary itself (Debian's host-local 1.1.1); each scenario names
where the behaviour lives. host-local's files are cited by their path under
plugins/ipam/host-local/ in containernetworking/plugins (``main.go``, ``dns.go``,
``host_local_test.go``, ``backend/allocator/*.go``, ``backend/disk/backend.go``); the
``skel`` checks are containernetworking/cni's pkg/skel/skel.go; "the spec" is the CNI
SPEC.md, by section. The ONLY allowed differences are the named exceptions below (a)-(h);
everything else must match.

``HLS_PLUGIN=/usr/lib/cni/host-local`` runs the suite Go against Go: the exceptions then
collapse to "identical" (except where Go is random) and ours-only checks skip, which
proves the harness itself agrees with the reference.
"""
from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cniexec import (
    GO_HOST_LOCAL,
    OURS,
    Outcome,
    Snapshot,
    contents,
    run,
    snapshot_networks,
)

pytestmark = [
    pytest.mark.reference,
    # Every scenario through each entry path of ours (conftest.py's through) but two.
    pytest.mark.usefixtures("through"),
    pytest.mark.not_through("daemon-stopped-and-killed", why=(
        "calls one at a time, each compared with Go's: a call the chaos sends back in "
        "process answers as the in-process path does, which runs every scenario")),
    pytest.mark.not_through("build", why=(
        "the rules compared here are the same sources in the build; its calls are the "
        "guarantee suites' and test_dist's, and this suite would add 35 s a Python")),
    pytest.mark.skipif(
        not os.access(GO_HOST_LOCAL, os.X_OK),
        reason=f"Go reference {GO_HOST_LOCAL} missing: "
        "apt-get install containernetworking-plugins",
    ),
]

# Go v1.1.1 (cni lib v1.0.1) knows no 1.1.0.
VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
LEGACY = {"0.1.0", "0.2.0"}  # one address per family, ip4/ip6 result format
CHECK_VERSIONS = {"0.4.0", "1.0.0"}

OURS_IS_GO = os.path.realpath(OURS) == os.path.realpath(GO_HOST_LOCAL)
ours_only = pytest.mark.skipif(OURS_IS_GO, reason="HLS_PLUGIN points at Go: ours-only check")

DUPLICATE = re.compile(
    r"^failed to allocate for range \d+: \S+ has been allocated to \S+, "
    r"duplicate allocation is not allowed$"
)
LEFTOVER_PREFIX = "failed to allocate all requested IPs: "


# ---------------------------------------------------------------------------------------
# The allowed differences, each a named rule. Where each one lives:
#   (a) repeated ADD returns the existing allocation: Diff.step(repeat_of=...)
#   (b) host bits accepted as the network: test_host_bits (Diff.step(go_config=...))
#   (c) rangeStart beyond a defaulted rangeEnd rejected: test_range_start_beyond_defaulted_end
#   (d) failed ADD leaves last_reserved_ip.N alone: Diff.step(rollback_cursor=True)
#   (e) error codes 7/4/5 instead of 999: ours_error_code()
#   (f) VERSION, 1.1.0, GC, STATUS: ours_error(), test_version, test_cni_1_1_0
#   (g) file modes: never compared by Diff; test_file_modes
#   (h) request order instead of Go's random order: Leftover
#   (i) a JSON value of the wrong type: our own "invalid config: ..." text (code 7), not
#       Go's decoder message: same_error()
# ---------------------------------------------------------------------------------------

# (e) Error codes. Go reports every error host-local itself returns as 999 (ErrInternal).
# Ours uses the spec's codes where one fits, with the same msg: config validation -> 7,
# CNI_ARGS parse errors -> 4, an unreadable resolvConf -> 5. Allocation failures and
# CHECK's not-found stay 999. Messages not matched here must keep Go's code.
CONFIG_ERROR = re.compile(
    r"^(IPAM config missing 'ipam' key$"
    r"|invalid range set \d+: "
    r"|range set \d+ overlaps with \d+$"
    r"|no IP ranges specified$"
    r"|CNI version .* does not support more than 1 address per family$"
    r"|invalid CIDR address: "
    r"|invalid IP address"
    r"|cannot understand ip: "
    r"|json: cannot unmarshal "
    r"|IPNet IP and Mask version mismatch$)"
)
ARGS_ERROR = re.compile(r"^ARGS: ")
RESOLV_ERROR = re.compile(r"^open .*: (no such file or directory|permission denied|is a directory)")


def ours_error_code(go_error: Mapping[str, Any]) -> int:
    """Exception (e): the code ours must print for the error Go printed."""
    code, msg = go_error.get("code"), go_error.get("msg", "")
    if OURS_IS_GO or code != 999:
        return code  # skel errors (1, 3, 4, 6, 7) are identical
    if ARGS_ERROR.search(msg):
        return 4
    if RESOLV_ERROR.search(msg):
        return 5
    if CONFIG_ERROR.search(msg):
        return 7
    return 999  # allocation failures, CHECK's "Failed to find address", anything else


def ours_error(go_error: Mapping[str, Any]) -> dict[str, Any]:
    """The error object ours must print for the error Go printed."""
    expected = dict(go_error, code=ours_error_code(go_error))
    details = expected.get("details")
    if (not OURS_IS_GO and expected.get("msg") == "incompatible CNI versions"
            and isinstance(details, str)):
        # (f) Ours also speaks 1.1.0, so the version list in the details ends with it.
        expected["details"] = details.replace('"1.0.0"]', '"1.0.0" "1.1.0"]')
    return expected


GO_TYPE_ERROR = "json: cannot unmarshal "


def same_error(ours: Any, expected: Mapping[str, Any]) -> bool:
    """Equality, except (i): where Go printed its JSON decoder's type error, ours says
    which key has the wrong type in its own words, with code 7."""
    if OURS_IS_GO or not expected.get("msg", "").startswith(GO_TYPE_ERROR):
        return ours == expected
    return (isinstance(ours, dict) and ours.get("code") == 7
            and ours.get("msg", "").startswith("invalid config: ")
            and "details" not in ours)


# Through the node daemon, one scenario of each class (conftest.py deselects the rest):
# the daemon is a door before the same code (docs/architecture.md), and what can change
# the door's own work is what the client and the daemon read before that code runs: the
# command (forwarded, or answered by the client: VERSION, none, an unknown one), whether
# the config loads (the daemon loads it to name the paths its caller must see alike; a
# config or CNI_ARGS error names none), the config's shape where they read it (``ipam``
# present, an object), and the bytes carried. The values the rules judge (cniVersion, the
# addresses, ranges, routes, an interface name's length) change none of it; the
# in-process path runs every scenario with each of them.
def door_class(function: str, params: Mapping[str, Any]) -> object:
    """The class of one instance of the scenario ``function`` (its parameters ``params``)
    on the daemon path: its first instance runs, and each of another class."""
    if function == "test_skel_checks":  # the command, and which check answers it
        expected = params["expected"]
        return params["command"], 0 if expected is None else expected[0]
    if function == "test_config_validation_top_level":  # the config's own shape
        return sorted((key, type(value).__name__) for key, value in params["top"].items())
    expected = params.get("expected")
    if isinstance(expected, str):  # a config or CNI_ARGS error, or an allocation's
        return ours_error_code({"code": 999, "msg": expected})
    return None


def cursor_files(snap: Mapping[str, Any]) -> dict[str, Any]:
    return {p: v for p, v in snap.items() if os.path.basename(p).startswith("last_reserved_ip.")}


@dataclass(frozen=True)
class Leftover:
    """Exception (h): several requested IPs left over / competing for one set.

    Go takes a random one and lists the rest in random order; ours takes the first in
    request order (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips) and lists the rest in
    that order. ``ours_msg`` is ours' exact message; Go's must list the same number of
    addresses, all from ``candidates``."""

    ours_msg: str
    candidates: Sequence[str]


def check_go_leftover(msg: str, leftover: Leftover, count: int) -> None:
    assert msg.startswith(LEFTOVER_PREFIX), msg
    ips = msg[len(LEFTOVER_PREFIX):].split(" ")
    assert len(ips) == count and len(set(ips)) == count, msg
    assert set(ips) <= set(leftover.candidates), msg


# ---------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------


@dataclass
class Step:
    label: str
    go: Outcome
    ours: Outcome
    go_files: Snapshot
    ours_files: Snapshot

    def go_error(self, msg: str, code: int = 999, details: str | None = None) -> None:
        """Assert Go printed exactly this error (documents the fact being compared)."""
        expected: dict[str, Any] = {"code": code, "msg": msg}
        if details is not None:
            expected["details"] = details
        assert self.go.status == 1 and self.go.json == expected, f"{self.label}\n go: {self.go}"

    def go_addresses(self) -> list[str]:
        assert self.go.status == 0, f"{self.label}\n go: {self.go}"
        return addresses(self.go.json)

    def go_file(self, rel: str) -> bytes | None:
        entry = self.go_files.get(rel)
        return None if entry is None else entry[0]


def addresses(result: Mapping[str, Any]) -> list[str]:
    """The addresses of a result in any version's format."""
    if "ips" in result:
        return [ip["address"] for ip in result["ips"]]
    return [result[k]["ip"] for k in ("ip4", "ip6") if k in result]


def with_data_dir(config: Any, data_dir: Path) -> Any:
    """Point a config at one side's dataDir (dicts: ipam.dataDir; text: @DATADIR@)."""
    if isinstance(config, str):
        return config.replace("@DATADIR@", json.dumps(str(data_dir))[1:-1])
    if isinstance(config, Mapping) and isinstance(config.get("ipam"), Mapping):
        config = copy.deepcopy(dict(config))
        config["ipam"].setdefault("dataDir", str(data_dir))
    return config


class Diff:
    """One scenario: a Go dataDir and an ours dataDir, driven in lockstep."""

    def __init__(self, tmp_path: Path, version: str | None = "1.0.0") -> None:
        self.version = version
        self.go_dir = tmp_path / "go"
        self.ours_dir = tmp_path / "ours"
        self.tmp_path = tmp_path
        self.count = 0

    def net(self, ipam: Mapping[str, Any] | None = None, name: str = "mynet",
            **top: Any) -> dict[str, Any]:
        """A full plugin config as a runtime sends it to the delegated IPAM plugin.
        ``type``/``master`` are irrelevant keys, as in host-local's own tests
        (host_local_test.go)."""
        config: dict[str, Any] = {"name": name, "type": "ipvlan", "master": "foo0"}
        if self.version is not None:
            config["cniVersion"] = self.version
        if ipam is not None:
            config["ipam"] = {"type": "host-local", **ipam}
        config.update(top)
        return config

    def step(
        self,
        command: str | None,
        config: Any,
        *,
        go_config: Any = None,
        repeat_of: Step | None = None,
        rollback_cursor: bool = False,
        leftover: Leftover | None = None,
        **run_kwargs: Any,
    ) -> Step:
        """Run one step through both plugins and compare.

        ``go_config``: a different config for Go (exception (b) maps a host-bits subnet
        onto its network address). ``repeat_of``: exception (a), a repeated ADD of that
        earlier step. ``rollback_cursor``: exception (d), a failed ADD after which Go's
        ``last_reserved_ip.N`` may have advanced. ``leftover``: exception (h).
        """
        self.count += 1
        shown = json.dumps(config) if not isinstance(config, str) else config
        label = f"step {self.count}: {command} {run_kwargs} {shown}"
        ours_pre = snapshot_networks(self.ours_dir)
        go = run(GO_HOST_LOCAL, command,
                 with_data_dir(config if go_config is None else go_config, self.go_dir),
                 **run_kwargs)
        ours = run(OURS, command, with_data_dir(config, self.ours_dir), **run_kwargs)
        step = Step(label, go, ours, snapshot_networks(self.go_dir),
                    snapshot_networks(self.ours_dir))
        ctx = f"{label}\n go:   {go}\n ours: {ours}"
        self._compare_output(step, ctx, repeat_of, leftover)
        self._compare_files(step, ctx, ours_pre, rollback_cursor)
        return step

    @staticmethod
    def _compare_output(step: Step, ctx: str, repeat_of: Step | None,
                        leftover: Leftover | None) -> None:
        go, ours = step.go, step.ours
        if repeat_of is not None and not OURS_IS_GO:
            # (a) A repeated ADD for the same (ID, ifname) in the same network returns the
            # existing allocation, byte for byte the first ADD's result; Go refuses it.
            assert go.status == 1 and DUPLICATE.search(go.json["msg"]), ctx
            assert go.json["code"] == 999, ctx
            assert ours.status == 0, ctx
            assert ours.stdout == repeat_of.ours.stdout, ctx
            return
        if leftover is not None:
            # (h) Request order: ours is deterministic, Go is random.
            assert go.status == 1 and go.json["code"] == 999, ctx
            assert ours.status == 1, ctx
            count = len(leftover.ours_msg[len(LEFTOVER_PREFIX):].split(" "))
            check_go_leftover(go.json["msg"], leftover, count)
            if OURS_IS_GO:
                check_go_leftover(ours.json["msg"], leftover, count)
            else:
                assert ours.json == {"code": 999, "msg": leftover.ours_msg}, ctx
            return
        assert ours.status == go.status, ctx
        if go.status == 0:
            # Successes: ADD results byte-identical (4-space indent, key order, no
            # trailing newline); DEL and CHECK print nothing.
            assert ours.stdout == go.stdout, ctx
        else:
            assert isinstance(go.json, dict), ctx
            assert same_error(ours.json, ours_error(go.json)), ctx

    @staticmethod
    def _compare_files(step: Step, ctx: str, ours_pre: Snapshot, rollback_cursor: bool) -> None:
        # (g) Modes are never compared here; test_file_modes asserts ours' modes.
        go_c, ours_c = contents(step.go_files), contents(step.ours_files)
        if rollback_cursor:
            # (d) A failed ADD changes nothing in ours, not even last_reserved_ip.N; Go
            # has already advanced the cursor file of every set it reserved in.
            if not OURS_IS_GO:
                assert cursor_files(ours_c) == cursor_files(contents(ours_pre)), ctx
            go_c = {p: v for p, v in go_c.items() if p not in cursor_files(go_c)}
            ours_c = {p: v for p, v in ours_c.items() if p not in cursor_files(ours_c)}
        assert ours_c == go_c, "network directories differ\n" + ctx


# The version matrix. What cniVersion changes (ipam/result.py, ipam/cni.py, and Go's
# convertTo02x/convertTo04x): the result's shape (0.1.0/0.2.0: ip4/ip6 objects with
# their routes, one address per family, routes of a missing family dropped; 0.3.0-0.4.0:
# a "version" key in each ips entry; 1.0.0: neither), the cniVersion echoed in it, the
# "more than 1 address per family" refusal below 0.3.0, and CHECK's refusal below 0.4.0.
# Nothing else does: allocation, files, cursors, DEL and every error object are the same
# at every version. So the scenarios about shape (@every_version: dual stack, routes, dns
# beside them, several addresses per family, CHECK) run at all six versions; every other
# scenario runs at REPRESENTATIVE, one legacy (ip4/ip6) version and the current one, so
# that its result is still compared byte for byte in both shapes.
REPRESENTATIVE = ["0.2.0", "1.0.0"]
every_version = pytest.mark.parametrize("version", VERSIONS)


@pytest.fixture(params=REPRESENTATIVE)
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def diff(tmp_path: Path, version: str) -> Diff:
    return Diff(tmp_path, version)


@pytest.fixture
def diff10(tmp_path: Path) -> Diff:
    """Version-independent scenarios run at 1.0.0 only."""
    return Diff(tmp_path, "1.0.0")


DUAL_ROUTES = [
    {"dst": "0.0.0.0/0"},
    {"dst": "::/0"},
    {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
    {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"},
]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------
# host_local_test.go, scenario by scenario
# ---------------------------------------------------------------------------------------


@every_version
def test_add_del_dual_stack(diff: Diff) -> None:
    """host_local_test.go "allocates and releases addresses with ADD/DEL": ranges, routes
    with and without gw, resolvConf -> dns, files, DEL."""
    resolv = write(diff.tmp_path / "resolv.conf", "nameserver 192.0.2.3\n")
    config = diff.net({
        "resolvConf": resolv,
        "ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
                   [{"subnet": "2001:db8:1::0/64"}]],
        "routes": DUAL_ROUTES,
    })
    add = diff.step("ADD", config)
    assert add.go_addresses() == ["10.1.2.2/24", "2001:db8:1::2/64"]
    if diff.version in {"0.3.0", "0.3.1", "0.4.0"}:
        assert b'"version":' in add.go.stdout
    assert add.go_file("mynet/10.1.2.2") == b"dummy\r\neth0"
    assert add.go_file("mynet/2001:db8:1::2") == b"dummy\r\neth0"
    assert add.go_file("mynet/last_reserved_ip.0") == b"10.1.2.2"
    assert add.go_file("mynet/last_reserved_ip.1") == b"2001:db8:1::2"
    assert add.go.json["dns"] == {"nameservers": ["192.0.2.3"]}
    dele = diff.step("DEL", config)
    assert dele.go.status == 0 and dele.go.stdout == b""
    assert "mynet/10.1.2.2" not in dele.go_files and "mynet/2001:db8:1::2" not in dele.go_files


def test_same_id_two_networks_two_ifnames(diff: Diff) -> None:
    """host_local_test.go "allocates and releases addresses on specific interface with
    ADD/DEL"."""
    net0 = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}]]}, name="mynet0")
    net1 = diff.net({"ranges": [[{"subnet": "10.2.2.0/24"}]]}, name="mynet1")
    diff.step("ADD", net0, ifname="eth0")
    s = diff.step("ADD", net1, ifname="eth1")
    assert s.go_file("mynet0/10.1.2.2") == b"dummy\r\neth0"
    assert s.go_file("mynet1/10.2.2.2") == b"dummy\r\neth1"
    s = diff.step("DEL", net0, ifname="eth0")
    assert s.go_file("mynet0/10.1.2.2") is None
    assert s.go_file("mynet1/10.2.2.2") == b"dummy\r\neth1"
    s = diff.step("DEL", net1, ifname="eth1")
    assert s.go_file("mynet1/10.2.2.2") is None


@pytest.mark.parametrize("ifname", ["é" * 7 + "a", "é" * 8, "eth\u00e90123456"])
def test_interface_name_length_counts_bytes(diff: Diff, ifname: str) -> None:
    """15 bytes is the limit (the kernel's IFNAMSIZ less its NUL), in bytes as Go's len()
    counts them: 8 two-byte letters are too long although they are 8 characters."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}]]})
    s = diff.step("ADD", config, ifname=ifname)
    assert (s.go.status == 0) == (len(ifname.encode()) <= 15), s.go


def test_repeat_add(diff: Diff) -> None:
    """host_local_test.go "repeat allocating addresses on specific interface for same
    container ID with ADD", with exception (a): ours returns the existing allocation."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}]]})
    first = diff.step("ADD", config)
    assert first.go_addresses() == ["10.1.2.2/24"]
    again = diff.step("ADD", config, repeat_of=first)
    again.go_error("failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, "
                   "duplicate allocation is not allowed")
    other = diff.step("ADD", config, container_id="dummy1")
    assert other.go_addresses() == ["10.1.2.3/24"]
    diff.step("ADD", config, repeat_of=first)
    s = diff.step("DEL", config)
    assert s.go_file("mynet/10.1.2.2") is None and s.go_file("mynet/10.1.2.3") is not None
    diff.step("DEL", config, container_id="dummy1")


def test_repeat_add_dual_stack(diff: Diff) -> None:
    """Exception (a) over several range sets: the whole first result comes back."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]],
                       "routes": DUAL_ROUTES})
    first = diff.step("ADD", config)
    diff.step("ADD", config, container_id="other")
    diff.step("ADD", config, repeat_of=first)
    diff.step("DEL", config)
    again = diff.step("ADD", config)  # after DEL it is a fresh ADD again, round robin
    assert again.go_addresses() == (["10.1.2.4/24", "2001:db8:1::4/64"])


@pytest.mark.parametrize("cni_args", ["IgnoreUnknown=1;K8S_POD_NAME=" + "n" * 1025,
                                      "IgnoreUnknown=1;K8S_POD_UID=a\x01b"])
def test_pod_identity_no_runtime_sends(tmp_path: Path, cni_args: str) -> None:
    """A K8S_POD_* value no runtime sends changes nothing Go would do: same bytes, same
    files. Ours only leaves the value out of its records (said on stderr)."""
    go_dir, ours_dir = tmp_path / "go", tmp_path / "ours"
    config = {"cniVersion": "1.0.0", "name": "mynet", "ipam": {"subnet": "10.1.2.0/24"}}
    go = run(GO_HOST_LOCAL, "ADD", with_data_dir(config, go_dir), args=cni_args)
    ours = run(OURS, "ADD", with_data_dir(config, ours_dir), args=cni_args)
    assert go.status == ours.status == 0, (go, ours)
    assert ours.stdout == go.stdout
    assert contents(snapshot_networks(ours_dir)) == contents(snapshot_networks(go_dir))


@ours_only
def test_repeat_add_returns_existing_allocation_ours(tmp_path: Path) -> None:
    """Exception (a), against ours alone: same bytes, exit 0, nothing new on disk."""
    config = {"cniVersion": "1.0.0", "name": "mynet",
              "ipam": {"subnet": "10.1.2.0/24", "dataDir": str(tmp_path)}}
    first = run(OURS, "ADD", config)
    assert first.status == 0, first
    files = contents(snapshot_networks(tmp_path))
    second = run(OURS, "ADD", config)
    assert second.status == 0 and second.stdout == first.stdout, second
    assert contents(snapshot_networks(tmp_path)) == files


def test_del_unknown_id(diff: Diff) -> None:
    """host_local_test.go "doesn't error when passed an unknown ID on DEL" and DEL
    idempotence; DEL creates the directory and lock (New in backend/disk/backend.go)."""
    config = diff.net({"subnet": "10.1.2.0/24"})
    s = diff.step("DEL", config)
    assert s.go.status == 0 and s.go.stdout == b"" and s.go_file("mynet/lock") == b""
    diff.step("DEL", config)
    diff.step("ADD", config)
    diff.step("DEL", config)
    s = diff.step("DEL", config)
    assert s.go_file("mynet/10.1.2.2") is None


def test_first_add_fresh_dir(diff: Diff) -> None:
    """host_local_test.go "does not output an error message upon initial subnet
    creation": no "Error retrieving last reserved ip" anywhere in the output."""
    s = diff.step("ADD", diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}]]}),
                  container_id="testing")
    for outcome in (s.go, s.ours):
        assert b"Error retrieving last reserved ip" not in outcome.stdout + outcome.stderr


def test_args_cni_ips(diff: Diff) -> None:
    """host_local_test.go "allocates a custom IP when requested by config args"."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}]]},
                      args={"cni": {"ips": ["10.1.2.88"]}})
    s = diff.step("ADD", config)
    assert s.go_addresses() == ["10.1.2.88/24"]
    diff.step("DEL", config)


@every_version
def test_custom_ips_two_v4_sets(diff: Diff) -> None:
    """host_local_test.go "allocates custom IPs from multiple ranges"."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]},
                      args={"cni": {"ips": ["10.1.2.88", "10.1.3.77"]}})
    s = diff.step("ADD", config)
    if diff.version in LEGACY:
        s.go_error(f"CNI version {diff.version} does not support more than 1 address per family")
    else:
        assert s.go_addresses() == ["10.1.2.88/24", "10.1.3.77/24"]
    diff.step("DEL", config)


@every_version
def test_custom_ips_dual_stack(diff: Diff) -> None:
    """host_local_test.go "allocates custom IPs from multiple protocols"."""
    config = diff.net(
        {"ranges": [[{"subnet": "172.16.1.0/24"}, {"subnet": "10.1.2.0/24"}],
                    [{"subnet": "2001:db8:1::/48"}]]},
        args={"cni": {"ips": ["10.1.2.88", "2001:db8:1::999"]}})
    s = diff.step("ADD", config)
    assert s.go_addresses() == ["10.1.2.88/24", "2001:db8:1::999/48"]
    diff.step("DEL", config)


def test_unused_requested_ip(diff: Diff) -> None:
    """host_local_test.go "fails if a requested custom IP is not used", with exceptions (h)
    and (d): ours takes .88 (first requested)."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]},
                      args={"cni": {"ips": ["10.1.2.88", "10.1.2.77"]}})
    if diff.version in LEGACY:
        s = diff.step("ADD", config)
        s.go_error(f"CNI version {diff.version} does not support more than 1 address per family")
        return
    s = diff.step("ADD", config, rollback_cursor=True,
                  leftover=Leftover(LEFTOVER_PREFIX + "10.1.2.77", ["10.1.2.88", "10.1.2.77"]))
    assert s.go.json["msg"].startswith(LEFTOVER_PREFIX + "10.1.2.")
    assert not [p for p in contents(s.go_files) if re.match(r"mynet/\d", p)]  # nothing kept


# ---------------------------------------------------------------------------------------
# More scenarios, run against the Go binary (the rules: backend/allocator/*.go, main.go)
# ---------------------------------------------------------------------------------------


def test_exhaustion_and_round_robin_after_del(diff: Diff) -> None:
    """allocator.go: /29 fills up, exhaustion message, then DEL and wrap-around to .2."""
    config = diff.net({"subnet": "10.1.2.0/29"})
    first = diff.step("ADD", config, container_id="a")
    assert first.go_addresses() == ["10.1.2.2/29"]
    diff.step("ADD", config, container_id="a", repeat_of=first)
    s = diff.step("ADD", config, container_id="a", ifname="eth1")
    assert s.go_addresses() == ["10.1.2.3/29"]
    for cid, ip in (("b", "10.1.2.4/29"), ("c", "10.1.2.5/29"), ("d", "10.1.2.6/29")):
        assert diff.step("ADD", config, container_id=cid).go_addresses() == [ip]
    s = diff.step("ADD", config, container_id="e")
    s.go_error("failed to allocate for range 0: no IP addresses available in range set: "
               "10.1.2.1-10.1.2.6")
    diff.step("DEL", config, container_id="a")  # frees .2 only, not a/eth1
    s = diff.step("ADD", config, container_id="f")
    assert s.go_addresses() == ["10.1.2.2/29"]
    assert s.go_file("mynet/last_reserved_ip.0") == b"10.1.2.2"
    assert s.go_file("mynet/10.1.2.3") == b"a\r\neth1"


def test_round_robin_does_not_reuse_released(diff: Diff) -> None:
    """allocator.go's round robin (allocator_test.go, "should allocate in a round-robin
    fashion"): the freed address is not handed out next."""
    config = diff.net({"subnet": "10.1.2.0/24"})
    diff.step("ADD", config, container_id="x")
    diff.step("DEL", config, container_id="x")
    s = diff.step("ADD", config, container_id="y")
    assert s.go_addresses() == ["10.1.2.3/24"]
    diff.step("ADD", config, container_id="z")


def test_small_subnets(diff: Diff) -> None:
    """range.go's defaults: /30 and IPv6 /126 allocate, then run dry."""
    v4 = diff.net({"subnet": "10.1.2.0/30"}, name="v4")
    assert diff.step("ADD", v4, container_id="a").go_addresses() == ["10.1.2.2/30"]
    diff.step("ADD", v4, container_id="b").go_error(
        "failed to allocate for range 0: no IP addresses available in range set: "
        "10.1.2.1-10.1.2.2")
    v6 = diff.net({"subnet": "2001:db8::/126"}, name="v6")
    assert diff.step("ADD", v6, container_id="a").go_addresses() == ["2001:db8::2/126"]
    assert diff.step("ADD", v6, container_id="b").go_addresses() == ["2001:db8::3/126"]
    diff.step("ADD", v6, container_id="c").go_error(
        "failed to allocate for range 0: no IP addresses available in range set: "
        "2001:db8::1-2001:db8::3")


def test_ipv6_range_start_near_top(diff: Diff) -> None:
    """range.go: rangeStart two below the top of a /64 (default v6 rangeEnd = last address)."""
    config = diff.net({"subnet": "2001:db8:1::/64",
                       "rangeStart": "2001:db8:1::ffff:ffff:ffff:fffe"})
    assert diff.step("ADD", config, container_id="a").go_addresses() == [
        "2001:db8:1:0:ffff:ffff:ffff:fffe/64"]
    assert diff.step("ADD", config, container_id="b").go_addresses() == [
        "2001:db8:1:0:ffff:ffff:ffff:ffff/64"]
    diff.step("ADD", config, container_id="c").go_error(
        "failed to allocate for range 0: no IP addresses available in range set: "
        "2001:db8:1:0:ffff:ffff:ffff:fffe-2001:db8:1:0:ffff:ffff:ffff:ffff")


def test_gateway_outside_subnet(diff: Diff) -> None:
    """range.go (Canonicalize): the gateway is not checked; the default start .1 is then
    allocatable."""
    s = diff.step("ADD", diff.net({"subnet": "10.1.2.0/24", "gateway": "192.168.1.1"}))
    assert s.go_addresses() == ["10.1.2.1/24"]


@pytest.mark.parametrize("ipam, expected", [
    pytest.param({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.0", "gateway": "10.1.2.254"},
                 ["10.1.2.0/24"], id="start-is-network-address"),
    pytest.param({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.255", "rangeEnd": "10.1.2.255"},
                 ["10.1.2.255/24"], id="start-end-broadcast"),
    pytest.param({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.1", "rangeEnd": "10.1.2.1"},
                 "failed to allocate for range 0: no IP addresses available in range set: "
                 "10.1.2.1-10.1.2.1", id="start-end-gateway"),
    pytest.param({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.40", "rangeEnd": "10.1.2.50",
                  "gateway": "10.1.2.254"}, ["10.1.2.40/24"], id="all-fields"),
    pytest.param({"subnet": "10.1.2.0/24", "gateway": None, "rangeStart": "",
                  "rangeEnd": None}, ["10.1.2.2/24"], id="null-and-empty-mean-unset"),
    pytest.param({"ranges": [[{"subnet": "10.1.2.0/24", "rangeEnd": "10.1.2.127"},
                              {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.128"}]]},
                 ["10.1.2.2/24"], id="same-subnet-adjacent-ranges"),
    pytest.param({"subnet": "10.1.2.0/25"}, ["10.1.2.2/25"], id="slash25"),
    pytest.param({"subnet": "::ffff:10.1.2.0/24"}, "invalid range set 0: IPNet IP and Mask "
                 "version mismatch", id="v4-mapped-subnet-mask-mismatch"),
])
def test_range_bounds(diff10: Diff, ipam: dict[str, Any], expected: Any) -> None:
    """range.go (Canonicalize): bounds that are accepted as written."""
    config = diff10.net(ipam)
    s = diff10.step("ADD", config)
    if isinstance(expected, str):
        s.go_error(expected)
    else:
        assert s.go_addresses() == expected
    diff10.step("DEL", config)


def test_second_set_exhausted_rolls_back(diff: Diff) -> None:
    """main.go (cmdAdd's rollback), with exception (d): set 0's file removed again in both;
    Go keeps the cursor."""
    config = diff.net({"ranges": [
        [{"subnet": "10.1.2.0/24"}],
        [{"subnet": "2001:db8:9::/64", "rangeStart": "2001:db8:9::1",
          "rangeEnd": "2001:db8:9::1"}]]})
    s = diff.step("ADD", config, rollback_cursor=True)
    s.go_error("failed to allocate for range 1: no IP addresses available in range set: "
               "2001:db8:9::1-2001:db8:9::1")
    assert s.go_file("mynet/10.1.2.2") is None
    assert s.go_file("mynet/last_reserved_ip.0") == b"10.1.2.2"
    # Go's cursor now differs from ours, so the scenario stops here.


def test_second_v4_set_exhausted_rolls_back(tmp_path: Path) -> None:
    """main.go's rollback as the Go binary shows it (two v4 sets, so >= 0.3.0), after a
    successful ADD: ours keeps its cursor value, Go's advances."""
    diff = Diff(tmp_path, "0.3.1")
    config = diff.net({"ranges": [
        [{"subnet": "10.1.2.0/24"}],
        [{"subnet": "10.9.9.0/24", "rangeStart": "10.9.9.1", "rangeEnd": "10.9.9.2"}]]})
    diff.step("ADD", config, container_id="a")
    s = diff.step("ADD", config, container_id="b", rollback_cursor=True)
    s.go_error("failed to allocate for range 1: no IP addresses available in range set: "
               "10.9.9.1-10.9.9.2")
    assert s.go_file("mynet/10.1.2.3") is None
    assert s.go_file("mynet/last_reserved_ip.0") == b"10.1.2.3"
    if not OURS_IS_GO:
        assert contents(s.ours_files).get("mynet/last_reserved_ip.0") == b"10.1.2.2"


def test_three_requested_ips_one_set(diff: Diff) -> None:
    """config.go (LoadIPAMConfig) and main.go, with exceptions (h) and (d): env IP,
    args.cni.ips and runtimeConfig.ips all fit set 0; ours takes CNI_ARGS' .60 and reports
    .61 .62; the v6 set is rolled back."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]},
                      args={"cni": {"ips": ["10.1.2.61"]}},
                      runtimeConfig={"ips": ["10.1.2.62"]})
    s = diff.step("ADD", config, args="IP=10.1.2.60", rollback_cursor=True,
                  leftover=Leftover(LEFTOVER_PREFIX + "10.1.2.61 10.1.2.62",
                                    ["10.1.2.60", "10.1.2.61", "10.1.2.62"]))
    assert s.go_file("mynet/last_reserved_ip.1") == b"2001:db8::2"
    assert s.go_file("mynet/2001:db8::2") is None


@every_version
def test_runtime_ip_ranges_order(diff: Diff) -> None:
    """config.go (LoadIPAMConfig): runtimeConfig.ipRanges sets come first; N of
    last_reserved_ip.N follows."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]},
                      runtimeConfig={"ipRanges": [[{"subnet": "10.50.0.0/24",
                                                    "rangeStart": "10.50.0.100"}]]})
    s = diff.step("ADD", config)
    if diff.version in LEGACY:
        s.go_error(f"CNI version {diff.version} does not support more than 1 address per family")
        return
    assert s.go_addresses() == ["10.50.0.100/24", "10.1.2.2/24", "2001:db8::2/64"]
    assert s.go_file("mynet/last_reserved_ip.0") == b"10.50.0.100"
    assert s.go_file("mynet/last_reserved_ip.2") == b"2001:db8::2"
    diff.step("DEL", config)


def test_mixed_config_order(diff: Diff) -> None:
    """config_test.go "Should parse a mixed config" (config.go's order): runtime sets, then
    the legacy subnet, then ranges."""
    config = diff.net(
        {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.20",
         "gateway": "10.1.2.30",
         "ranges": [[{"subnet": "11.1.2.0/24", "rangeStart": "11.1.2.9", "rangeEnd": "11.1.2.20",
                      "gateway": "11.1.2.30"}]]},
        runtimeConfig={"irrelevant": "a", "ipRanges": [[{"subnet": "12.1.3.0/24"}]]})
    s = diff.step("ADD", config)
    if diff.version in LEGACY:
        s.go_error(f"CNI version {diff.version} does not support more than 1 address per family")
        return
    assert s.go_addresses() == ["12.1.3.2/24", "10.1.2.9/24", "11.1.2.9/24"]
    assert s.go.json["ips"][1]["gateway"] == "10.1.2.30"
    diff.step("DEL", config)


# ---------------------------------------------------------------------------------------
# Requested IPs: CNI_ARGS, args.cni.ips, runtimeConfig.ips (config.go, main.go)
# ---------------------------------------------------------------------------------------

ARGS_CASES = [
    ("IP=10.1.2.17", ["10.1.2.17/24"]),
    ("IP=10.1.2.16/8", ["10.1.2.16/24"]),  # prefix ignored
    ("IP=", ["10.1.2.2/24"]),  # empty: no request
    ("IgnoreUnknown=1;K8S_POD_NAME=foo;IP=10.1.2.20", ["10.1.2.20/24"]),
    ("IgnoreUnknown=true;K8S_POD_NAMESPACE=ns", ["10.1.2.2/24"]),
    ("IgnoreUnknown=True;K8S_POD_NAME=foo", ["10.1.2.2/24"]),
    # What CRI runtimes and podman send: recorded by ours, the same result bytes as Go.
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
     "K8S_POD_INFRA_CONTAINER_ID=dummy;K8S_POD_UID=6d1c1e0a-96a4-4ad4-9d0c-3b9a2f0c1e11",
     ["10.1.2.2/24"]),
    ("IgnoreUnknown=1;K8S_POD_NAME=nginx", ["10.1.2.2/24"]),
    ("IgnoreUnknown=0", ["10.1.2.2/24"]),
    ("ip=10.1.2.17", 'ARGS: unknown args ["ip=10.1.2.17"]'),
    ("IP", 'ARGS: invalid pair "IP"'),
    ("IP=10.1.2.17;", 'ARGS: invalid pair ""'),
    ("K8S_POD_NAME=x=y", 'ARGS: invalid pair "K8S_POD_NAME=x=y"'),
    ("K8S_POD_NAME=foo", 'ARGS: unknown args ["K8S_POD_NAME=foo"]'),
    ("IgnoreUnknown=yes", ('ARGS: error parsing value of pair "IgnoreUnknown=yes": '
                          "boolean unmarshal error: invalid input yes")),
    ("IP=10.1.2", 'ARGS: error parsing value of pair "IP=10.1.2": invalid IP address 10.1.2'),
    ("IP=10.1.2.1", "failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway"),
]


@pytest.mark.parametrize("cni_args, expected", ARGS_CASES,
                         ids=[c[0] or "empty" for c in ARGS_CASES])
def test_cni_args_ip(diff10: Diff, cni_args: str, expected: Any) -> None:
    """config.go and cni's pkg/types/args.go: CNI_ARGS IP= and its errors; DEL parses
    CNI_ARGS too (main.go's cmdDel loads the whole config)."""
    config = diff10.net({"subnet": "10.1.2.0/24"})
    s = diff10.step("ADD", config, args=cni_args)
    if isinstance(expected, str):
        s.go_error(expected)
    else:
        assert s.go_addresses() == expected
    diff10.step("DEL", config, args=cni_args)
    diff10.step("CHECK", config, args=cni_args)


@pytest.mark.parametrize("cni_args", ["IP=10.1.2.17", "IP=10.1.2.17/24"])
def test_cni_args_ip_all_versions(diff: Diff, cni_args: str) -> None:
    config = diff.net({"subnet": "10.1.2.0/24"})
    assert diff.step("ADD", config, args=cni_args).go_addresses() == ["10.1.2.17/24"]
    diff.step("DEL", config, args=cni_args)


def test_requested_outside_range(diff: Diff) -> None:
    """main.go: inside the subnet but outside the range is "not contained" (exception (d): Go
    reserved .10 dynamically first, so its cursor moved)."""
    config = diff.net({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10"})
    s = diff.step("ADD", config, args="IP=10.1.2.5", rollback_cursor=True)
    s.go_error("failed to allocate all requested IPs: 10.1.2.5")
    s = diff.step("ADD", config, args="IP=10.1.3.5", container_id="other", rollback_cursor=True)
    s.go_error("failed to allocate all requested IPs: 10.1.3.5")


def test_requested_ip_taken(diff: Diff) -> None:
    """allocator.go: a requested IP reserved by another container."""
    config = diff.net({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10",
                       "rangeEnd": "10.1.2.20"})
    assert diff.step("ADD", config, container_id="b", args="IP=10.1.2.15").go_addresses() == [
        "10.1.2.15/24"]
    diff.step("ADD", config, container_id="c", args="IP=10.1.2.15").go_error(
        "failed to allocate for range 0: requested IP address 10.1.2.15 is not available in "
        "range set 10.1.2.10-10.1.2.20")
    # The requested path also moves the cursor: the next dynamic ADD gets .16.
    assert diff.step("ADD", config, container_id="d").go_addresses() == ["10.1.2.16/24"]


def test_requested_ips_union(diff: Diff) -> None:
    """config.go: CNI_ARGS IP and args.cni.ips are merged and de-duplicated, not prioritised."""
    config = diff.net({"subnet": "10.1.2.0/24"}, args={"cni": {"ips": ["10.1.2.70"]}},
                      runtimeConfig={"ips": ["10.1.2.70/24"]})
    assert diff.step("ADD", config, args="IP=10.1.2.70").go_addresses() == ["10.1.2.70/24"]
    diff.step("DEL", config, args="IP=10.1.2.70")


def test_runtime_config_ips(diff: Diff) -> None:
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]},
                      runtimeConfig={"ips": ["10.1.2.30/24"]})
    # The v6 set got no request and falls back to dynamic allocation.
    assert diff.step("ADD", config).go_addresses() == ["10.1.2.30/24", "2001:db8::2/64"]
    diff.step("DEL", config)


def test_args_and_runtime_ips_two_sets(tmp_path: Path) -> None:
    """args.cni.ips and runtimeConfig.ips for two v4 sets: each set takes its own."""
    diff = Diff(tmp_path, "1.0.0")
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]},
                      args={"cni": {"ips": ["10.1.3.40"]}},
                      runtimeConfig={"ips": ["10.1.2.41"]})
    assert diff.step("ADD", config).go_addresses() == ["10.1.2.41/24", "10.1.3.40/24"]


def test_runtime_config_ips_leftover(diff10: Diff) -> None:
    """config_test.go's runtimeConfig.ips case, then main.go: none fits; exceptions (h)
    (order) and (d) (Go reserved .2 first)."""
    config = diff10.net({"subnet": "10.1.2.0/24"},
                        runtimeConfig={"ips": ["192.168.0.1", "192.168.0.5/24", "2001:db8::1/64"]})
    diff10.step("ADD", config, rollback_cursor=True, leftover=Leftover(
        LEFTOVER_PREFIX + "192.168.0.1 192.168.0.5 2001:db8::1",
        ["192.168.0.1", "192.168.0.5", "2001:db8::1"]))


# ---------------------------------------------------------------------------------------
# Config validation (config.go, range.go, range_set.go): exception (e) maps Go's 999 to ours' 7
# ---------------------------------------------------------------------------------------

VALIDATION_CASES = [
    ("too-small-v4", {"subnet": "10.1.2.0/31"},
     "invalid range set 0: Network 10.1.2.0/31 too small to allocate from"),
    ("too-small-v4-32", {"subnet": "10.1.2.0/32"},
     "invalid range set 0: Network 10.1.2.0/32 too small to allocate from"),
    ("too-small-v6", {"subnet": "2001:db8::/127"},
     "invalid range set 0: Network 2001:db8::/127 too small to allocate from"),
    ("too-small-before-host-bits", {"subnet": "10.1.2.5/31"},
     "invalid range set 0: Network 10.1.2.5/31 too small to allocate from"),
    ("start-not-in-network", {"subnet": "192.0.2.0/24", "rangeStart": "192.0.3.0"},
     "invalid range set 0: RangeStart 192.0.3.0 not in network 192.0.2.0/24"),
    ("end-not-in-network", {"subnet": "192.0.2.0/24", "rangeEnd": "192.0.4.0"},
     "invalid range set 0: RangeEnd 192.0.4.0 not in network 192.0.2.0/24"),
    # (c) An explicit start > end is rejected by both with the same message.
    ("start-after-end", {"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.50",
                         "rangeEnd": "192.0.2.40"},
     "invalid range set 0: RangeStart 192.0.2.50 not in network 192.0.2.0/24"),
    ("overlap-in-set", {"ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "10.1.2.0/24"}]]},
     "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"),
    ("overlap-in-set-same-end", {"ranges": [[
        {"subnet": "10.1.2.0/24", "rangeEnd": "10.1.2.127"},
        {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.127"}]]},
     "invalid range set 0: subnets 10.1.2.1-10.1.2.127 and 10.1.2.127-10.1.2.254 overlap"),
    ("overlap-between-sets", {"ranges": [
        [{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
        [{"subnet": "10.1.4.0/24"}, {"subnet": "10.1.6.0/24"}, {"subnet": "10.1.8.0/24"},
         {"subnet": "10.1.2.0/24"}]]},
     "range set 0 overlaps with 1"),
    ("overlap-legacy-and-ranges", {"subnet": "10.1.2.0/24",
                                   "ranges": [[{"subnet": "10.1.2.0/24"}]]},
     "range set 0 overlaps with 1"),
    ("mixed-families", {"ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "2001:db8:5::/64"}]]},
     "invalid range set 0: mixed address families"),
    ("empty-range-set", {"ranges": [[]]}, "invalid range set 0: empty range set"),
    ("empty-second-set", {"ranges": [[{"subnet": "10.1.2.0/24"}], []]},
     "invalid range set 1: empty range set"),
    ("no-ranges", {}, "no IP ranges specified"),
    ("ranges-empty-list", {"ranges": []}, "no IP ranges specified"),
    ("legacy-fields-without-subnet", {"rangeStart": "10.1.2.9", "gateway": "10.1.2.1"},
     "no IP ranges specified"),
    ("bad-cidr", {"subnet": "10.1.2.0"}, "invalid CIDR address: 10.1.2.0"),
    ("bad-range-ip", {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2"},
     "invalid IP address: 10.1.2"),
    ("bad-gateway-ip", {"ranges": [[{"subnet": "10.1.2.0/24", "gateway": "x"}]]},
     "invalid IP address: x"),
    ("bad-route-dst", {"subnet": "10.1.2.0/24", "routes": [{"dst": "10.0.0.0"}]},
     "invalid CIDR address: 10.0.0.0"),
    ("ranges-flat-list", {"ranges": [{"subnet": "10.1.2.0/24"}]},
     ("json: cannot unmarshal object into Go struct field IPAMConfig.ipam.ranges of type "
     "allocator.RangeSet")),
]


@pytest.mark.parametrize("ipam, expected", [c[1:] for c in VALIDATION_CASES],
                         ids=[c[0] for c in VALIDATION_CASES])
def test_config_validation(diff10: Diff, ipam: dict[str, Any], expected: str) -> None:
    """ADD, DEL and CHECK all load the config, so all three fail the same way (main.go: each
    calls LoadIPAMConfig)."""
    config = diff10.net(ipam)
    for command in ("ADD", "DEL", "CHECK"):
        diff10.step(command, config).go_error(expected)


TOP_LEVEL_CASES = [
    # id, top-level keys to set (None: remove), Go's message
    ("missing-ipam", {"ipam": None}, "IPAM config missing 'ipam' key"),
    ("ipam-is-string", {"ipam": "x"},
     "json: cannot unmarshal string into Go struct field Net.ipam of type allocator.IPAMConfig"),
    ("args-ips-bogus", {"args": {"cni": {"ips": ["bogus"]}}}, "invalid IP address bogus"),
    ("args-ips-prefix-33", {"args": {"cni": {"ips": ["10.1.2.10/33"]}}},
     "invalid IP address 10.1.2.10/33"),
    ("args-ips-empty", {"args": {"cni": {"ips": [""]}}},
     "cannot understand ip: IP <nil> not v4 nor v6"),
    ("runtime-ips-bogus", {"runtimeConfig": {"ips": ["bogus"]}}, "invalid IP address bogus"),
]


@pytest.mark.parametrize("top, expected", [c[1:] for c in TOP_LEVEL_CASES],
                         ids=[c[0] for c in TOP_LEVEL_CASES])
def test_config_validation_top_level(diff10: Diff, top: dict[str, Any], expected: str) -> None:
    config = diff10.net({"subnet": "10.1.2.0/24"})
    for key, value in top.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    for command in ("ADD", "DEL"):
        diff10.step(command, config).go_error(expected)


def test_case_insensitive_keys(diff10: Diff) -> None:
    """Go's encoding/json (config.go decodes with it) matches keys case-insensitively; the
    last duplicate wins."""
    text = ('{"cniVersion": "1.0.0", "name": "mynet", "ipam": {"type": "host-local", '
            '"dataDir": "@DATADIR@", "subnet": "10.9.0.0/24", "Subnet": "10.1.2.0/24", '
            '"RANGESTART": "10.1.2.9"}}')
    assert diff10.step("ADD", text).go_addresses() == ["10.1.2.9/24"]
    diff10.step("DEL", text)


@every_version
def test_more_than_one_address_per_family(diff: Diff) -> None:
    """config.go: two v4 sets need >= 0.3.0; one v4 plus one v6 is fine everywhere."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]})
    s = diff.step("ADD", config)
    if diff.version in LEGACY:
        s.go_error(f"CNI version {diff.version} does not support more than 1 address per family")
    else:
        assert s.go_addresses() == ["10.1.2.2/24", "10.1.3.2/24"]
    diff.step("DEL", config)


def test_missing_cni_version(tmp_path: Path) -> None:
    """cni's pkg/version/conf.go: no cniVersion means 0.1.0 output, and two spaces in the
    family error."""
    diff = Diff(tmp_path, None)
    config = diff.net({"subnet": "10.1.2.0/24"})
    s = diff.step("ADD", config)
    assert s.go.json["cniVersion"] == "0.1.0" and "ip4" in s.go.json
    two = diff.net({"ranges": [[{"subnet": "10.1.3.0/24"}], [{"subnet": "10.1.4.0/24"}]]},
                   name="two")
    diff.step("ADD", two).go_error("CNI version  does not support more than 1 address per family")
    diff.step("DEL", config)


# ---------------------------------------------------------------------------------------
# Exceptions (b) host bits and (c) rangeStart beyond the defaulted rangeEnd
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("written, network, go_msg", [
    ("203.0.113.1/24", "203.0.113.0/24", ("invalid range set 0: Network has host bits set. "
     "For a subnet mask of length 24 the network address is 203.0.113.0")),
    ("2001:DB8:1::24:19ff:fee1:c44a/64", "2001:db8:1::/64", ("invalid range set 0: Network has "
     "host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::")),
    ("192.168.127.0/23", "192.168.126.0/23", ("invalid range set 0: Network has host bits set. "
     "For a subnet mask of length 23 the network address is 192.168.126.0")),
])
def test_host_bits(diff: Diff, written: str, network: str, go_msg: str) -> None:
    """(b) Ours accepts a subnet with host bits set as its network: it must behave exactly
    as Go does with the network address written out."""
    config = diff.net({"subnet": written})
    go = run(GO_HOST_LOCAL, "ADD", with_data_dir(config, diff.tmp_path / "go-hostbits"))
    assert go.status == 1 and go.json == {"code": 999, "msg": go_msg}, go
    if OURS_IS_GO:
        pytest.skip("HLS_PLUGIN points at Go: (b) is ours-only")
    canonical = diff.net({"subnet": network})
    diff.step("ADD", config, go_config=canonical)
    diff.step("ADD", config, go_config=canonical, container_id="b")
    diff.step("CHECK", config, go_config=canonical)
    diff.step("DEL", config, go_config=canonical)


def test_range_start_beyond_defaulted_end(diff10: Diff) -> None:
    """(c) Go allocates outside the subnet (range.go checks rangeStart against
    a rangeEnd only when one is given); ours rejects the config, code 7."""
    config = diff10.net({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.255"})
    go_dir = diff10.tmp_path / "go"
    got = [run(GO_HOST_LOCAL, "ADD", with_data_dir(config, go_dir), container_id=c)
           for c in ("a", "b", "c")]
    assert [addresses(o.json) for o in got] == [["10.1.2.255/24"], ["10.1.3.0/24"],
                                                ["10.1.3.1/24"]], got
    if OURS_IS_GO:
        pytest.skip("HLS_PLUGIN points at Go: (c) is ours-only")
    ours_dir = diff10.tmp_path / "ours"
    ours = run(OURS, "ADD", with_data_dir(config, ours_dir), container_id="a")
    assert ours.status == 1 and ours.json["code"] == 7, ours
    leases = [p for p in contents(snapshot_networks(ours_dir))
              if re.search(r"/(\d|last_reserved)", p)]
    assert leases == [], leases


# ---------------------------------------------------------------------------------------
# Routes and DNS
# ---------------------------------------------------------------------------------------


@every_version
def test_routes(diff: Diff) -> None:
    """main.go and the spec's Section 5: Result Types: routes copied in order, dst as parsed
    (no masking), gw optional; the 0.1.0/0.2.0 formats sort them by family; v1.1.1 drops
    unknown route keys."""
    config = diff.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]],
                       "routes": [{"dst": "10.0.0.5/8"}, {"dst": "2001:db8:2::0/64"},
                                  {"dst": "192.168.0.0/16", "gw": "10.1.2.254"},
                                  {"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400},
                                  {"dst": "::/0", "gw": "2001:db8:1::1"}]})
    s = diff.step("ADD", config)
    if diff.version not in LEGACY:
        assert s.go.json["routes"][0] == {"dst": "10.0.0.5/8"}
        assert s.go.json["routes"][1] == {"dst": "2001:db8:2::/64"}
        assert s.go.json["routes"][3] == {"dst": "0.0.0.0/0", "gw": "10.1.2.1"}
    diff.step("DEL", config)


@every_version
def test_routes_of_a_missing_family(diff: Diff) -> None:
    """v6 routes with only a v4 address: dropped by the 0.1.0/0.2.0 conversion."""
    config = diff.net({"subnet": "10.1.2.0/24",
                       "routes": [{"dst": "::/0"}, {"dst": "0.0.0.0/0"}]})
    diff.step("ADD", config)


@every_version
def test_no_routes(diff: Diff) -> None:
    """main.go: "routes": [] omits the key."""
    s = diff.step("ADD", diff.net({"subnet": "10.1.2.0/24", "routes": []}))
    assert "routes" not in s.go.json


def test_resolv_conf(diff: Diff) -> None:
    """dns.go and dns_test.go: the full case (comments, indentation, merged search and options)."""
    resolv = write(diff.tmp_path / "resolv.conf", (
        "   nameserver 192.0.2.0\n"
        ";nameserver 192.0.2.1\n"
        "# nameserver 192.0.2.9\n"
        "nameserver 192.0.2.2\n"
        "domain example.com\n"
        "search example.net example.org\n"
        "search example.gov\n"
        "options one two\n"
        "options three four\n"
        "sortlist 130.155.160.0/255.255.240.0\n"
        "nameserver\n"))
    s = diff.step("ADD", diff.net({"subnet": "10.1.2.0/24", "resolvConf": resolv}))
    assert s.go.json["dns"] == {"nameservers": ["192.0.2.0", "192.0.2.2"],
                                "domain": "example.com",
                                "search": ["example.net", "example.org", "example.gov"],
                                "options": ["one", "two", "three", "four"]}


def test_resolv_conf_missing(diff10: Diff) -> None:
    """(e) code 5 in ours, same message; DEL does not read it (main.go)."""
    config = diff10.net({"subnet": "10.1.2.0/24", "resolvConf": "/nonexistent/resolv.conf"})
    diff10.step("ADD", config).go_error("open /nonexistent/resolv.conf: no such file or directory")
    s = diff10.step("DEL", config)
    assert s.go.status == 0


# ---------------------------------------------------------------------------------------
# DEL and CHECK
# ---------------------------------------------------------------------------------------


def test_del_scope(diff: Diff) -> None:
    """ReleaseByID in backend/disk/backend.go: DEL (a, eth0) keeps (a, eth1); DEL frees
    leases of subnets no longer in the config; repeated DEL succeeds."""
    old = diff.net({"subnet": "10.1.2.0/24"})
    diff.step("ADD", old, container_id="a", ifname="eth0")
    diff.step("ADD", old, container_id="a", ifname="eth1")
    new = diff.net({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "2001:db8:7::/64"}]]})
    s = diff.step("DEL", new, container_id="a", ifname="eth0")
    assert s.go_file("mynet/10.1.2.2") is None
    assert s.go_file("mynet/10.1.2.3") == b"a\r\neth1"
    diff.step("DEL", new, container_id="a", ifname="eth0")
    diff.step("DEL", old, container_id="a", ifname="eth1")


def test_del_without_netns(diff10: Diff) -> None:
    """skel: CNI_NETNS is optional for DEL."""
    config = diff10.net({"subnet": "10.1.2.0/24"})
    diff10.step("ADD", config)
    s = diff10.step("DEL", config, netns=None)
    assert s.go.status == 0 and s.go_file("mynet/10.1.2.2") is None


@every_version
def test_check(diff: Diff) -> None:
    """skel and main.go's cmdCheck: CHECK needs >= 0.4.0; found -> exit 0 and no output;
    else 999."""
    config = diff.net({"subnet": "10.1.2.0/24"})
    fresh = diff.step("CHECK", diff.net({"subnet": "10.1.2.0/24"}, name="fresh"))
    diff.step("ADD", config)
    found = diff.step("CHECK", config)
    other_if = diff.step("CHECK", config, ifname="eth1")
    unknown = diff.step("CHECK", config, container_id="zz")
    if diff.version in CHECK_VERSIONS:
        assert found.go.status == 0 and found.go.stdout == b""
        unknown.go_error("host-local: Failed to find address added by container zz")
        other_if.go_error("host-local: Failed to find address added by container dummy")
        # CHECK creates the directory (New in backend/disk/backend.go)
        assert fresh.go_file("fresh/lock") == b""
    else:
        for s in (found, unknown, other_if, fresh):
            s.go_error("config version does not allow CHECK", code=1)
    diff.step("DEL", config)
    diff.step("CHECK", config)


# ---------------------------------------------------------------------------------------
# skel pre-checks (pkg/skel/skel.go)
# ---------------------------------------------------------------------------------------

SKEL_CASES = [
    # id, command, run() keyword arguments, config tweak, Go's (code, msg, details) or None
    ("add-no-containerid", "ADD", {"container_id": None}, {},
     (4, "required env variables [CNI_CONTAINERID] missing", None)),
    ("add-no-netns", "ADD", {"netns": None}, {},
     (4, "required env variables [CNI_NETNS] missing", None)),
    ("add-no-ifname", "ADD", {"ifname": None}, {},
     (4, "required env variables [CNI_IFNAME] missing", None)),
    ("add-no-path", "ADD", {"path": None}, {},
     (4, "required env variables [CNI_PATH] missing", None)),
    ("add-empty-path", "ADD", {"path": ""}, {},
     (4, "required env variables [CNI_PATH] missing", None)),
    ("add-all-missing", "ADD", {"container_id": None, "netns": None, "ifname": None,
                                "path": None}, {},
     (4, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
      None)),
    ("del-no-path", "DEL", {"path": None}, {},
     (4, "required env variables [CNI_PATH] missing", None)),
    ("del-no-ifname-no-netns", "DEL", {"ifname": None, "netns": None}, {},
     (4, "required env variables [CNI_IFNAME] missing", None)),
    ("check-no-netns", "CHECK", {"netns": None}, {},
     (4, "required env variables [CNI_NETNS] missing", None)),
    ("no-command", None, {}, {}, None),  # about text on stderr (not compared), exit 0
    ("unknown-command", "FOO", {}, {}, (4, "unknown CNI_COMMAND: FOO", None)),
    ("unknown-command-no-containerid", "FOO", {"container_id": None}, {},
     (3, "missing containerID", None)),
    ("containerid-spaces", "ADD", {"container_id": "   dummy "}, {},
     (4, "invalid characters in containerID", "   dummy ")),
    ("containerid-slash", "DEL", {"container_id": "a/b"}, {},
     (4, "invalid characters in containerID", "a/b")),
    ("containerid-leading-dash", "ADD", {"container_id": "-a"}, {},
     (4, "invalid characters in containerID", "-a")),
    ("containerid-ok-chars", "ADD", {"container_id": "A0_b.c-d"}, {}, None),
    ("ifname-too-long", "ADD", {"ifname": "a" * 16}, {},
     (4, "interface name is too long", "interface name should be less than 16 characters")),
    ("ifname-15", "ADD", {"ifname": "a" * 15}, {}, None),
    ("ifname-dot", "ADD", {"ifname": "."}, {}, (4, "interface name is . or ..", None)),
    ("ifname-dotdot", "DEL", {"ifname": ".."}, {}, (4, "interface name is . or ..", None)),
    ("ifname-slash", "ADD", {"ifname": "a/b"}, {},
     (4, "interface name contains / or : or whitespace characters", None)),
    ("ifname-colon", "CHECK", {"ifname": "a:b"}, {},
     (4, "interface name contains / or : or whitespace characters", None)),
    ("ifname-space", "ADD", {"ifname": "a b"}, {},
     (4, "interface name contains / or : or whitespace characters", None)),
    ("ifname-tab", "ADD", {"ifname": "eth0\t"}, {},
     (4, "interface name contains / or : or whitespace characters", None)),
    ("no-name", "ADD", {}, {"name": None}, (7, "missing network name", None)),
    ("name-slash", "ADD", {}, {"name": "a/b"},
     (7, "invalid characters found in network name", "a/b")),
    ("name-dotdot", "DEL", {}, {"name": "../esc"},
     (7, "invalid characters found in network name", "../esc")),
    ("no-name-beats-bad-containerid", "ADD", {"container_id": "a/b"}, {"name": None},
     (7, "missing network name", None)),
    ("bad-containerid-beats-bad-ifname", "ADD", {"container_id": "a/b", "ifname": "."}, {},
     (4, "invalid characters in containerID", "a/b")),
    ("version-0.5.0", "ADD", {}, {"cniVersion": "0.5.0"},
     (1, "incompatible CNI versions", ('config is "0.5.0", plugin supports '
      '["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0"]'))),
    ("version-garbage", "DEL", {}, {"cniVersion": "abc"}, (1, "incompatible CNI versions",
     'config is "abc", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0"]')),
    ("check-0.3.1", "CHECK", {}, {"cniVersion": "0.3.1"},
     (1, "config version does not allow CHECK", None)),
    ("check-no-version", "CHECK", {}, {"cniVersion": None},
     (1, "config version does not allow CHECK", None)),
]


@pytest.mark.parametrize("command, kwargs, tweak, expected", [c[1:] for c in SKEL_CASES],
                         ids=[c[0] for c in SKEL_CASES])
def test_skel_checks(diff10: Diff, command: str | None, kwargs: dict[str, Any],
                     tweak: dict[str, Any], expected: Any) -> None:
    config = diff10.net({"subnet": "10.1.2.0/24"})
    for key, value in tweak.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    s = diff10.step(command, config, **kwargs)
    if expected is None:
        assert s.go.status == 0, s.go
    else:
        code, msg, details = expected
        s.go_error(msg, code=code, details=details)


# ---------------------------------------------------------------------------------------
# Ours-only behaviour: exceptions (f) and (g)
# ---------------------------------------------------------------------------------------

GO_VERSION_OUT = (b'{"cniVersion":"1.0.0","supportedVersions":'
                  b'["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}\n')
OURS_VERSION_OUT = (b'{"cniVersion":"1.1.0","supportedVersions":'
                    b'["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n')


def test_version(tmp_path: Path) -> None:
    """(f) VERSION: compact JSON plus newline; stdin and the other variables ignored."""
    for env in ({}, {"container_id": None, "ifname": None, "netns": None, "path": None}):
        go = run(GO_HOST_LOCAL, "VERSION", "not json", **env)
        assert go.status == 0 and go.stdout == GO_VERSION_OUT, go
        if not OURS_IS_GO:
            ours = run(OURS, "VERSION", "not json", **env)
            assert ours.status == 0 and ours.stdout == OURS_VERSION_OUT, ours


def test_cni_1_1_0(tmp_path: Path) -> None:
    """(f) cniVersion 1.1.0: Go v1.1.1 refuses it and knows no GC or STATUS; ours gives
    the 1.0.0 result with the 1.1.0 version, and implements GC and STATUS (the spec's
    Section 2: Execution Protocol, GC and STATUS)."""
    d = Diff(tmp_path, "1.1.0")
    config = d.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]],
                    "routes": DUAL_ROUTES})
    go = run(GO_HOST_LOCAL, "ADD", with_data_dir(config, d.go_dir))
    assert go.status == 1 and go.json["code"] == 1 and go.json["msg"] == "incompatible CNI versions"
    for command in ("GC", "STATUS"):
        go = run(GO_HOST_LOCAL, command, with_data_dir(dict(config, cniVersion="1.0.0"),
                                                        d.go_dir))
        assert go.status == 1 and go.json == {"code": 4, "msg": "unknown CNI_COMMAND: " + command}
    if OURS_IS_GO:
        pytest.skip("HLS_PLUGIN points at Go: (f) is ours-only")

    go10 = run(GO_HOST_LOCAL, "ADD", with_data_dir(dict(config, cniVersion="1.0.0"), d.go_dir))
    ours = run(OURS, "ADD", with_data_dir(config, d.ours_dir), container_id="a")
    assert ours.status == 0, ours
    expected = dict(go10.json, cniVersion="1.1.0")
    got = dict(ours.json)
    if expected.get("dns") == {}:  # HEAD's 1.x rendering omits an empty dns
        expected.pop("dns")
        got.pop("dns", None)
    assert got == expected

    assert run(OURS, "ADD", with_data_dir(config, d.ours_dir), container_id="b").status == 0
    files = contents(snapshot_networks(d.ours_dir))
    assert files["mynet/10.1.2.3"] == b"b\r\neth0"

    status = run(OURS, "STATUS", with_data_dir(config, d.ours_dir),
                 container_id=None, ifname=None, netns=None)
    assert status.status == 0 and status.stdout == b"", status

    gc_config = dict(config, **{"cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}]})
    gc = run(OURS, "GC", with_data_dir(gc_config, d.ours_dir),
             container_id=None, ifname=None, netns=None)
    assert gc.status == 0 and gc.stdout == b"", gc
    files = contents(snapshot_networks(d.ours_dir))
    assert files["mynet/10.1.2.2"] == b"a\r\neth0"
    assert files["mynet/2001:db8::2"] == b"a\r\neth0"
    assert "mynet/10.1.2.3" not in files and "mynet/2001:db8::3" not in files


def test_file_modes(tmp_path: Path) -> None:
    """(g) Go v1.1.1: IP and cursor files 0644, lock 0750; ours: all three 0600."""
    d = Diff(tmp_path, "1.0.0")
    config = d.net({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]})
    s = d.step("ADD", config)
    go_modes = {p: m for p, (_c, m) in s.go_files.items()}
    assert go_modes["mynet/10.1.2.2"] == 0o644 and go_modes["mynet/lock"] == 0o750
    assert go_modes["mynet/last_reserved_ip.1"] == 0o644
    if OURS_IS_GO:
        pytest.skip("HLS_PLUGIN points at Go: (g) is ours-only")
    modes = {p: m for p, (_c, m) in s.ours_files.items()}
    for path in ("mynet/10.1.2.2", "mynet/2001:db8::2", "mynet/last_reserved_ip.0",
                 "mynet/last_reserved_ip.1", "mynet/lock"):
        assert modes[path] == 0o600, (path, oct(modes[path]))
