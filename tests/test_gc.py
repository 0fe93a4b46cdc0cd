"""``ipamctl gc`` (ipam/admin/gc.py, ipam/admin/netns.py, cli/gc.py): the plan, the guards, the
on-the-wire check, gc over every network; in process for the rules, through the
installed ipamctl and plugin for the guards, a terminal, a real network namespace, the
runtime recipes of docs/gc.md (against fake runtime commands) and the systemd units."""
import contextlib
import errno
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import ip_address

import fake_store
import pytest
from docs_pages import subsections
from helpers import (
    HOUR,
    IPAMCTL,
    events,
    held,
    ipamctl,
    lease_rows,
    on_terminal,
    owners,
    put,
    run_plugin,
    sql,
    unit_environment,
    unit_exec_start,
    unit_lines,
    wait_until,
)

from host_local_sqlite_cli.output import lease_row
from ipam import system
from ipam.admin import gc
from ipam.admin import leases as admin
from ipam.lease import Lease
from ipam.store import table

SUBNET = {"subnet": "10.1.2.0/24"}
LEASE_KEYS = set(lease_row(Lease("n", "10.1.2.2", 0, "a", "eth0")))
GC_KEYS = {"candidates", "released", "kept", "refused", "forced", "networks", "conflicts"}
SYSTEMD = os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy", "systemd")


def gc_owners(answer):
    """(candidates, released) as (container, ifname), the JSON contract checked."""
    assert set(answer) == GC_KEYS
    for row in answer["candidates"] + answer["kept"]:
        assert set(row) == LEASE_KEYS | {"reason"}
    for row in answer["released"]:
        assert set(row) == LEASE_KEYS
    return ([(r["container_id"], r["ifname"]) for r in answer["candidates"]],
            [(r["container_id"], r["ifname"]) for r in answer["released"]])


def age_all(data_dir, seconds=7200):
    """Every lease made ``seconds`` ago, by either clock."""
    sql(data_dir, "UPDATE leases SET allocated_at = allocated_at - ?, "
                  "boot_time = boot_time - ?", (seconds, seconds))


# -- the rules, in process ------------------------------------------------------------
def test_parse_valid():
    assert gc.parse_valid(["a", " b/eth1 ", "", "# a comment", "c/", "d/eth0"]) == (
        {"a"}, {("b", "eth1"), ("c", ""), ("d", "eth0")})
    assert gc.parse_valid([]) == (set(), set())
    assert not gc.Valid(["", "# nothing"])


def test_plan(store):
    now = time.time()
    put(store, "n", "10.1.2.2", "a", "eth0", at=now - HOUR, now=now)
    put(store, "n", "10.1.2.3", "a", "eth1", at=now - HOUR, now=now)
    put(store, "n", "10.1.2.4", "b", "eth0", at=now - 60, now=now)  # young
    put(store, "n", "10.1.2.5", "legacy", None, at=now - HOUR, now=now)
    put(store, "n", "10.1.2.6", "old", "eth0", at=now - HOUR, boot="an-earlier-boot", now=now)
    put(store, "other", "10.1.2.2", "z", at=now - HOUR, now=now)

    def plan(entries, grace=600, previous_boots=False):
        with store.transaction():
            p = gc.plan_network(store, "n", None if entries is None else gc.Valid(entries),
                                grace, previous_boots, now=now)
        return [(x.container_id, x.ifname, why) for x, why in p.candidates], p

    everyone = ["a", "b", "legacy", "old"]
    assert plan(everyone)[0] == []
    cands, p = plan([])
    assert cands == [("a", "eth0", "not listed"), ("a", "eth1", "not listed"),
                     ("legacy", None, "not listed"), ("old", "eth0", "not listed")]
    assert [(x.container_id, why[:23]) for x, why in p.kept] == [
        ("b", "younger than --grace (9")]
    assert len(plan([], grace=0)[0]) == 5
    assert plan([], grace=2 * HOUR)[0] == []
    assert plan(["a/eth1", "legacy/eth0", "old"])[0] == [("a", "eth0", "not listed")]
    assert plan(everyone, previous_boots=True)[0] == [("old", "eth0", "earlier boot")]
    assert plan(["a"], previous_boots=True)[0][-1] == ("old", "eth0",
                                                       "earlier boot, not listed")
    # No list: only the earlier boots.
    assert plan(None, previous_boots=True)[0] == [("old", "eth0", "earlier boot")]
    assert plan(everyone, grace=2 * HOUR, previous_boots=True)[0] == []


def test_gc_applies_only_when_asked(store, tmp_path):
    for cid, address in (("a", "10.1.2.2"), ("b", "10.1.2.3"), ("c", "10.1.2.4")):
        put(store, "n", address, cid, at=time.time() - HOUR)
    valid = gc.Valid(["a", "c"])
    report = gc.gc(store, ["n"], valid, 600, data_dir=str(tmp_path))
    assert (owners(c for c, _ in report.candidates()), report.released) == (
        [("n", "10.1.2.3", "b", "eth0")], [])
    assert len(store.leases()) == 3
    report = gc.gc(store, ["n"], valid, 600, apply=True, data_dir=str(tmp_path))
    assert report.problems == [] or all("not checked" in p for p in report.problems)
    assert owners(report.released) == [("n", "10.1.2.3", "b", "eth0")]
    assert owners(store.leases()) == [("n", "10.1.2.2", "a", "eth0"),
                                      ("n", "10.1.2.4", "c", "eth0")]
    last = admin.history(store)[-1]
    assert (last.event, last.reason, last.container_id) == ("release", "gc", "b")
    report = gc.gc(store, ["n"], valid, 600, apply=True, data_dir=str(tmp_path))
    assert (report.candidates(), report.released) == ([], [])


def test_a_lease_is_aged_on_the_boot_clock(store, monkeypatch):
    """The wall clock steps forward an hour right after an ADD: gc --grace 10m must not
    take the lease; stepping back must not make an old one young."""
    import types

    wall, boot = [1_000_000.0], [5_000.0]
    fake = types.SimpleNamespace(time=lambda: wall[0], clock_gettime=lambda c: boot[0],
                                 CLOCK_BOOTTIME=time.CLOCK_BOOTTIME)
    for module in (table, fake_store, system, gc):
        monkeypatch.setattr(module, "time", fake)
    with store.transaction():
        assert store.reserve(Lease("n", ip_address("10.1.2.2"), 0, "young", "eth0"), "add")

    def candidates():
        with store.transaction():
            return [x.container_id for x, _ in gc.plan_network(
                store, "n", gc.Valid([]), 600, False).candidates]

    boot[0] += 5
    wall[0] += 3600  # the clock steps forward an hour, 5 s later
    assert candidates() == []
    boot[0] += 3600
    wall[0] -= 7200  # an hour on, the clock steps back two
    assert candidates() == ["young"]


def test_duration():
    assert [gc.duration(s) for s in (0.2, 45, 192, 3900)] == ["1s", "45s", "3m12s", "1h5m"]


def test_guards_decide_per_network():
    def plan(total, going, matched, earlier=0):
        p = gc.NetworkPlan("n", [None] * total)
        p.judged, p.matched = total - earlier, matched
        p.candidates = ([(None, "not listed")] * going
                        + [(None, "earlier boot")] * earlier)
        return p

    some = gc.Valid(["x"])
    assert gc.guard(plan(10, 0, 0), gc.Valid([]), 0.5) == []      # nothing would go
    assert gc.guard(plan(10, 1, 9), gc.Valid([]), 0.5)[0][0] == "empty-list"
    assert gc.guard(plan(10, 1, 0), some, 0.5)[0][0] == "no-match"
    assert gc.guard(plan(10, 6, 4), some, 0.5)[0][0] == "max-share"
    assert gc.guard(plan(10, 5, 5), some, 0.5) == []               # not more than half
    assert gc.guard(plan(4, 3, 1), some, 0.5) == []                # small: 3 may go
    assert gc.guard(plan(10, 4, 6), some, 0.3)[0][0] == "max-share"
    # A reboot makes every lease stale: earlier-boot leases never count.
    assert gc.guard(plan(10, 0, 0, earlier=10), some, 0.5) == []
    assert gc.guard(plan(10, 0, 0, earlier=10), None, 0.5) == []


# -- the command, in process ----------------------------------------------------------
def test_gc_grace_kept_and_shown(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    # Just made: younger than the default grace (10m), never a candidate, but shown.
    answer = ctl_json("gc", "--network", "mynet", "--valid", "a")
    assert gc_owners(answer) == ([], [])
    assert [(r["container_id"], r["reason"][:22]) for r in answer["kept"]] == [
        ("b", "younger than --grace (")]
    assert re.fullmatch(r"younger than --grace \((10m00|9m[0-5]\d)s left\)",
                        answer["kept"][0]["reason"])
    text = ctl("gc", "--network", "mynet", "--valid", "a").stdout
    assert "candidates:\n(none)\nkept:\n" in text
    assert re.search(r"mynet +10\.1\.2\.3 +b +eth0 +younger than --grace \((10m00|9m\d\d)s "
                     r"left\)", text)
    assert "mynet (leases 2, candidates 0, kept 1): ok" in text
    assert gc_owners(ctl_json("gc", "--network", "mynet", "--valid", "a", "--grace", "0")) == (
        [("b", "eth0")], [])
    age_all(data_dir)
    assert gc_owners(ctl_json("gc", "--network", "mynet", "--valid", "a")) == (
        [("b", "eth0")], [])
    answer = ctl_json("gc", "--network", "mynet", "--valid", "a", "--grace", "3h")
    assert gc_owners(answer) == ([], [])
    assert answer["kept"][0]["reason"] == "younger than --grace (1h0m left)"
    assert gc_owners(ctl_json("gc", "--network", "mynet", "--valid", "a",
                              "--grace", "1h30m")) == ([("b", "eth0")], [])
    assert len(held(data_dir)) == 2


def test_gc_is_a_dry_run_unless_apply(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    add("b", network="other")
    before = (lease_rows(data_dir), events(data_dir), sorted(os.listdir(data_dir / "mynet")))
    result = ctl("gc", "--network", "mynet", "--valid", "a", "--grace", "0")
    assert result.stdout.splitlines()[0] == "candidates:"
    assert result.stdout.splitlines()[2].split()[:3] == ["mynet", "10.1.2.3", "b"]
    assert result.stdout.splitlines()[2].endswith("not listed")
    assert "dry run" in result.stderr
    assert (lease_rows(data_dir), events(data_dir),
            sorted(os.listdir(data_dir / "mynet"))) == before
    answer = ctl_json("gc", "--network", "mynet", "--valid", "a", "--grace", "0", "--apply")
    assert gc_owners(answer) == ([("b", "eth0")], [("b", "eth0")])
    assert answer["released"][0]["ip"] == "10.1.2.3"
    assert answer["candidates"][0]["reason"] == "not listed"
    assert (answer["networks"], answer["refused"], answer["forced"]) == (["mynet"], [], False)
    assert held(data_dir) == [("mynet", "10.1.2.2", "a", "eth0"),
                              ("other", "10.1.2.2", "b", "eth0")]
    assert not (data_dir / "mynet" / "10.1.2.3").exists()
    assert events(data_dir)[-1] == ("release", "gc", "mynet", "10.1.2.3", "b", "eth0")
    result = ctl("gc", "--network", "mynet", "--valid", "a", "--grace", "0", "--apply")
    assert "released: 0" in result.stdout


def test_gc_valid_id_matches_every_ifname_id_ifname_only_that_one(ctl_json, add):
    add("a", ifname="eth0")
    add("a", ifname="eth1")
    add("b")

    def candidates(*valid):
        args = [arg for v in valid for arg in ("--valid", v)]
        return gc_owners(ctl_json("gc", "--network", "mynet", "--grace", "0", *args))[0]

    assert candidates("a", "b") == []
    assert candidates("a/eth0", "b") == [("a", "eth1")]
    assert candidates("a/eth1", "b/eth0") == [("a", "eth0")]
    assert candidates("a/eth2", "b/eth0") == [("a", "eth0"), ("a", "eth1")]
    assert candidates("b/eth1") == [("a", "eth0"), ("a", "eth1"), ("b", "eth0")]


def test_gc_valid_file_and_stdin(ctl_json, add, tmp_path):
    add("a", ifname="eth0")
    add("a", ifname="eth1")
    add("b")
    live = tmp_path / "live.txt"
    live.write_text("# live attachments\na\n\n  b/eth0  \n")
    args = ["gc", "--network", "mynet", "--grace", "0"]
    assert gc_owners(ctl_json(*args, "--valid-file", str(live))) == ([], [])
    live.write_text("a/eth0\n")
    assert gc_owners(ctl_json(*args, "--valid-file", str(live)))[0] == [("a", "eth1"),
                                                                       ("b", "eth0")]
    assert gc_owners(ctl_json(*args, "--valid-file", str(live), "--valid", "b"))[0] == [
        ("a", "eth1")]
    assert gc_owners(ctl_json(*args, "--valid-file", "-", input="a\nb\n")) == ([], [])
    assert gc_owners(ctl_json(*args, "--valid-file", "-", input="a/eth1\n"))[0] == [
        ("a", "eth0"), ("b", "eth0")]
    assert gc_owners(ctl_json(*args, "--valid-file", "-", "--apply", input="b\n")) == (
        [("a", "eth0"), ("a", "eth1")], [("a", "eth0"), ("a", "eth1")])


def test_gc_previous_boots(ctl_json, add, data_dir):
    add("a")
    add("b")
    sql(data_dir, "UPDATE leases SET boot_id = 'an-earlier-boot' WHERE container_id = 'a'")
    args = ["gc", "--network", "mynet", "--valid", "a", "--valid", "b", "--grace", "0"]
    assert gc_owners(ctl_json(*args)) == ([], [])
    assert gc_owners(ctl_json(*args, "--previous-boots")) == ([("a", "eth0")], [])
    # The grace rule still holds for a lease of an earlier boot.
    assert gc_owners(ctl_json("gc", "--network", "mynet", "--valid", "a", "--valid", "b",
                              "--previous-boots")) == ([], [])
    assert gc_owners(ctl_json(*args, "--previous-boots", "--apply")) == (
        [("a", "eth0")], [("a", "eth0")])
    assert held(data_dir) == [("mynet", "10.1.2.3", "b", "eth0")]


def test_gc_previous_boots_alone_takes_only_earlier_boots(ctl_json, add, data_dir):
    """At boot, before the runtime runs: no list to give, and none needed. A reboot makes
    every lease stale, so no guard counts earlier-boot leases."""
    for cid in "abcdef":
        add(cid)
    add("g", network="other")
    sql(data_dir, "UPDATE leases SET boot_id = 'an-earlier-boot' WHERE container_id != 'f'")
    answer = ctl_json("gc", "--previous-boots", "--grace", "0", "--apply")
    assert gc_owners(answer)[1] == [(c, "eth0") for c in "abcdeg"]
    assert [r["reason"] for r in answer["candidates"]] == ["earlier boot"] * 6
    assert (answer["networks"], answer["refused"]) == (["mynet", "other"], [])
    assert held(data_dir) == [("mynet", "10.1.2.7", "f", "eth0")]


def test_gc_over_every_network_and_repeated_network(ctl, ctl_json, add, data_dir):
    for network in ("n1", "n2", "n3"):
        add("live", network=network)
        add("dead-" + network, network=network)
    age_all(data_dir)
    answer = ctl_json("gc", "--valid", "live")
    assert answer["networks"] == ["n1", "n2", "n3"]
    assert [(r["network"], r["container_id"]) for r in answer["candidates"]] == [
        ("n1", "dead-n1"), ("n2", "dead-n2"), ("n3", "dead-n3")]
    answer = ctl_json("gc", "--valid", "live", "--network", "n3", "--network", "n1", "--apply")
    assert answer["networks"] == ["n3", "n1"]
    assert sorted(r["container_id"] for r in answer["released"]) == ["dead-n1", "dead-n3"]
    assert [(n, c) for n, _, c, _ in held(data_dir)] == [
        ("n1", "live"), ("n2", "live"), ("n2", "dead-n2"), ("n3", "live")]
    text = ctl("gc", "--valid", "live").stdout
    assert "  n1 (leases 1, candidates 0, kept 0): ok" in text
    assert "  n2 (leases 2, candidates 1, kept 0): ok" in text
    # A network the database does not know (a typo): an error, dry run or not, nothing
    # released in any network.
    before = held(data_dir)
    for apply in ([], ["--apply"]):
        result = ctl("gc", "--valid", "live", "--network", "n1", "--network", "nowhere",
                     "--grace", "0", *apply, expect=1)
        assert result.stdout == ""
        assert result.stderr == ("Error: no network nowhere in the database (known: n1, n2, "
                                 "n3)\n")
    assert held(data_dir) == before


@pytest.mark.parametrize("args", [
    ["--network", "mynet"], ["--network", "mynet", "--apply"], [],
    ["--network", "mynet", "--valid", "a", "--grace", "soon"],
    ["--network", "mynet", "--valid-file", "/nonexistent/live.txt"],
    ["--valid", "a", "--max-share", "150%"], ["--valid", "a", "--max-share", "half"],
])
def test_gc_usage_errors(ctl, add, data_dir, args):
    add("a")
    result = ctl("gc", *args, expect=2)
    assert "Usage:" in result.stderr
    assert len(held(data_dir)) == 1


# -- the guards, through the installed binaries ----------------------------------------


@pytest.fixture
def pool(data_dir, netconf):
    """``pool(network, *container_ids)``: ADDs through the installed plugin, aged 2 h."""
    def make(network, *ids, age=True):
        conf = netconf(SUBNET, name=network)
        for cid in ids:
            out = run_plugin("ADD", conf, container_id=cid)
            assert out.status == 0, out.out
        if age:
            age_all(data_dir)
    return make


def gc_json(data_dir, *args, input="", expect=0):
    return json.loads(ipamctl("-o", "json", "gc", *args, data_dir=data_dir, input=input,
                              expect=expect).stdout)


SANDBOXES = ["%064x" % (0x5a0d + i) for i in range(6)]  # what CRI passes to CNI
CONTAINERS = ["%064x" % (0xc0e1 + i) for i in range(6)]  # what 'crictl ps -q' prints


def test_guard_refuses_an_empty_list_and_force_overrides(data_dir, pool):
    pool("cbr0", *SANDBOXES[:3])
    before = held(data_dir)
    proc = ipamctl("gc", "--valid-file", "-", "--apply", data_dir=data_dir, input="", expect=1)
    assert "Error: gc refused, nothing released in any network:" in proc.stderr
    assert "network cbr0: the list of live containers is empty" in proc.stderr
    assert "did the command feeding it fail?" in proc.stderr and "--force" in proc.stderr
    assert held(data_dir) == before
    answer = gc_json(data_dir, "--valid-file", "-", input="")   # the dry run says so
    assert [r["guard"] for r in answer["refused"]] == ["empty-list"]
    assert len(answer["candidates"]) == 3 and answer["released"] == []
    answer = gc_json(data_dir, "--valid-file", "-", "--apply", "--force", input="")
    assert (len(answer["released"]), answer["forced"]) == (3, True)
    assert held(data_dir) == []


def test_guard_refuses_container_ids_where_cri_gives_sandboxes(data_dir, pool):
    """The documented mistake: 'crictl ps -q' lists container IDs; CRI calls CNI with
    pod sandbox IDs. Not one lease matches: every pod would lose its address."""
    pool("cbr0", *SANDBOXES)
    pool("other", "x", "y")
    before = held(data_dir)
    crictl_ps_q = "".join(c + "\n" for c in CONTAINERS)
    proc = ipamctl("gc", "--valid-file", "-", "--apply", data_dir=data_dir, input=crictl_ps_q,
                   expect=1)
    assert "network cbr0: the list names none of its 6 leases' containers" in proc.stderr
    assert "'crictl pods -q', not 'crictl ps -q'" in proc.stderr
    assert "network other:" in proc.stderr
    assert held(data_dir) == before   # nothing, in any network
    text = ipamctl("gc", "--valid-file", "-", data_dir=data_dir, input=crictl_ps_q).stdout
    assert "  cbr0 (leases 6, candidates 6, kept 0): refused: the list names none" in text
    # The right list: nothing to release, no refusal.
    answer = gc_json(data_dir, "--valid-file", "-", "--apply",
                     input="\n".join(SANDBOXES + ["x", "y"]))
    assert (answer["candidates"], answer["refused"]) == ([], [])
    # Forced, the wrong list does what it says.
    answer = gc_json(data_dir, "--network", "other", "--valid-file", "-", "--apply",
                     "--force", input=crictl_ps_q)
    assert sorted(r["container_id"] for r in answer["released"]) == ["x", "y"]


def test_guard_refuses_more_than_max_share(data_dir, pool):
    pool("cbr0", *SANDBOXES)
    pool("small", "s1", "s2", "s3", "s4")
    before = held(data_dir)
    live = "\n".join(SANDBOXES[:2] + ["s1"])
    proc = ipamctl("gc", "--valid-file", "-", "--apply", data_dir=data_dir, input=live, expect=1)
    assert ("network cbr0: 4 of its 6 leases would go, more than --max-share 50%"
            in proc.stderr)
    assert "network small" not in proc.stderr   # 3 leases going: small, allowed
    assert held(data_dir) == before
    answer = gc_json(data_dir, "--valid-file", "-", "--max-share", "70%", input=live)
    assert answer["refused"] == []
    answer = gc_json(data_dir, "--valid-file", "-", "--apply", "--max-share", "70",
                     input=live)
    assert len(answer["released"]) == 4 + 3
    pool("cbr0", *SANDBOXES[2:])
    answer = gc_json(data_dir, "--network", "cbr0", "--valid-file", "-", "--apply",
                     "--force", input=live)
    assert (len(answer["released"]), answer["forced"]) == (4, True)
    assert [r["guard"] for r in answer["refused"]] == ["max-share"]


def test_on_a_terminal_a_refusing_guard_asks(data_dir, pool, tmp_path):
    pool("cbr0", *SANDBOXES[:2])
    live = tmp_path / "live.txt"
    live.write_text("")

    def ask(answer):
        return on_terminal(data_dir, "gc", "--valid-file", str(live), "--apply",
                           answer=answer, prompt=b"anyway? [y/N]")

    status, out = ask(b"n")
    assert status == 1, out
    assert "refused: network cbr0: the list of live containers is empty" in out
    assert "Release 2 lease(s) anyway? [y/N]" in out
    assert len(held(data_dir)) == 2
    status, out = ask(b"y")
    assert status == 0, out
    assert "released: 2" in out and "cbr0 (leases 2, candidates 2, kept 0): overridden: " in out
    assert held(data_dir) == []


# -- the on-the-wire check --------------------------------------------------------------
def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def namespace():
    """A namespace with a veth end (its peer on the host), removed whatever happens."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's ip (ip netns add)")
    tag = uuid.uuid4().hex[:6]
    name, host_end = "hlsgc" + tag, "hlsgc" + tag + "h"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name)
        yield name
    finally:
        ip("link", "del", host_end, check=False)
        ip("netns", "del", name, check=False)


@pytest.mark.root
def test_an_address_held_by_a_namespace_is_kept(data_dir, pool, namespace):
    pool("podnet", "orphan", "gone", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    ip("-n", namespace, "addr", "add", address + "/24", "dev", "eth0")
    ip("-n", namespace, "link", "set", "eth0", "up")
    answer = gc_json(data_dir, "--valid", "live", "--apply")
    assert [r["container_id"] for r in answer["released"]] == ["gone"]
    assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
        ("orphan", "namespace /run/netns/%s (eth0) holds %s" % (namespace, address))]
    text = ipamctl("gc", "--valid", "live", data_dir=data_dir).stdout
    assert "namespace /run/netns/%s (eth0) holds %s" % (namespace, address) in text
    answer = gc_json(data_dir, "--valid", "live", "--apply", "--ignore-netns")
    assert [r["container_id"] for r in answer["released"]] == ["orphan"]
    assert [c for _, _, c, _ in held(data_dir)] == ["live"]


@pytest.mark.root
def test_a_namespace_kept_alive_by_a_process_only_is_found(data_dir, pool, namespace):
    """No bind mount left (as after a runtime removed it), one process inside: found
    through /proc/<pid>/ns/net, named by the process."""
    pool("podnet", "orphan", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    ip("-n", namespace, "addr", "add", address + "/24", "dev", "eth0")
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink("/proc/%d/ns/net" % sleeper.pid) == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "ip netns exec did not enter %s" % namespace
            time.sleep(0.01)
        ip("netns", "del", namespace)   # the name and its bind mount go; sleep keeps it
        answer = gc_json(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
            ("orphan", "namespace /proc/%d/ns/net (sleep) (eth0) holds %s"
             % (sleeper.pid, address))]
    finally:
        sleeper.kill()
        sleeper.wait()
    answer = gc_json(data_dir, "--valid", "live", "--apply")   # gone with its process
    assert [r["container_id"] for r in answer["released"]] == ["orphan"]


@pytest.mark.root
def test_a_leftover_namespace_name_is_skipped(data_dir, pool, namespace):
    """A name whose namespace is gone (its bind mount undone, the file left: what a
    failed 'ip netns del' leaves) is no namespace: skipped, not an error."""
    pool("podnet", "gone", "live")
    subprocess.run(["umount", "/run/netns/" + namespace], check=True)
    assert os.path.exists("/run/netns/" + namespace)
    proc = ipamctl("-o", "json", "gc", "--valid", "live", "--apply", data_dir=data_dir)
    assert namespace not in proc.stderr
    assert [r["container_id"] for r in json.loads(proc.stdout)["released"]] == ["gone"]


def test_the_wire_check_is_bounded_and_survives_vanishing_namespaces(store, monkeypatch,
                                                                    tmp_path):
    from ipam.admin import netns

    put(store, "n", "10.1.2.9", "gone", at=time.time() - HOUR)
    monkeypatch.setattr(netns, "TIMEOUT", 0.001)
    monkeypatch.setattr(netns.holders, "__defaults__", (0.001,))
    report = gc.gc(store, ["n"], gc.Valid(["x"]), 600, apply=True, force=True,
                   data_dir=str(tmp_path))
    assert report.released == []
    assert report.kept()[0][1].startswith(
        "reading the network namespaces did not finish in 0.001 s (--ignore-netns")


def test_a_task_that_exits_between_two_reads_is_gone_not_unreadable():
    """find() reads a thread's namespace links, then its mount namespace's mountinfo: a
    thread that exits in between (containerd's shims and runc start and end many) is
    answered EINVAL there, as a zombie is; it held nothing, and is no reason to keep
    every candidate."""
    from ipam.admin import nsfind

    zombie = subprocess.Popen(["true"])
    task = "/proc/%d/task/%d" % (zombie.pid, zombie.pid)
    try:
        wait_until(lambda: _state(zombie.pid) == "Z", "the child to exit, unreaped")
        with pytest.raises(OSError) as e:
            open(task + "/mountinfo", "rb").close()
        assert e.value.errno == errno.EINVAL
        found = nsfind.Found()
        assert nsfind._mountinfo(found, task) is None
        assert found.unreadable == []
    finally:
        zombie.wait()


def _state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()[0]


@pytest.mark.root
def test_what_is_found_is_a_namespace_and_opens_as_itself(namespace):
    """Only holders are found: a bind-mounted namespace by its path, never a leftover
    name (its bind mount undone, the file left: what a failed 'ip netns del' leaves);
    each opens as the namespace it was found as, and root leaves nothing unread."""
    from ipam.admin import nsfind

    leftover = namespace + "x"
    ip("netns", "add", leftover)
    try:
        subprocess.run(["umount", "/run/netns/" + leftover], check=True)
        found = nsfind.find()
        try:
            assert found.unreadable == []
            labels = [space.label for space in found.ordered()]
            assert "/run/netns/" + namespace in labels
            assert not any(leftover in label for label in labels)
            for space in found.ordered():
                fd = space.open()
                if fd is not None:  # None: gone meanwhile
                    st = os.fstat(fd)
                    os.close(fd)
                    assert (st.st_dev, st.st_ino) == space.key
        finally:
            found.close()
    finally:
        ip("netns", "del", leftover, check=False)


NOBODY = 65534
# A process whose main thread stays in the host's namespace while a second thread enters
# the namespace named by argv[1] (setns), prints its thread id and waits for stdin's end.
THREAD_IN = r"""
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)


def enter():
    fd = os.open(sys.argv[1], os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    print(threading.get_native_id(), flush=True)
    sys.stdin.read()


thread = threading.Thread(target=enter)
thread.start()
thread.join()
"""
# A network namespace bind-mounted on the empty file $1, its end of a veth holding the
# address $2.
NAMESPACE_AT = r"""
unshare --net="$1" true
nsenter --net="$1" sh -ec "
    ip link add eth0 type veth peer name host0
    ip addr add $2/24 dev eth0
    ip link set eth0 up"
"""
# What rootless podman does, in its user namespace and private mount namespace: an empty
# file under its runtime directory, the namespace mounted on it; then the process stays
# (podman's pause process) and holds that mount namespace.
ROOTLESS = 'touch "$1"\n' + NAMESPACE_AT + "echo ready\nexec cat\n"


def started(argv, **kw):
    """``(process, its first line)``: a helper that says it is ready by printing a line."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            **kw)
    readable, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if readable else ""
    if not line:
        proc.kill()
        proc.communicate()
        pytest.fail("%s did not say it was ready" % argv[0])
    return proc, line


def stopped(proc):
    """End a helper from :func:`started` (its stdin closed), and wait for it."""
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def comm(pid, tid=None):
    with open("/proc/%d/task/%d/comm" % (pid, tid or pid)) as f:
        return f.read().strip()


@contextlib.contextmanager
def rootless_namespace(address):
    """A network namespace made as rootless podman makes it (an unprivileged user's user
    namespace, a private mount namespace, a bind mount under a directory standing in for
    /run/user/UID/netns, with a space in its path) holding ``address``: yields the pid
    that holds the mount namespace and the mount point, from here an empty file."""
    top = tempfile.mkdtemp(prefix="hlsgc run-user-")
    try:
        os.chmod(top, 0o755)
        runtime = os.path.join(top, "netns")
        os.mkdir(runtime)
        os.chown(runtime, NOBODY, NOBODY)
        path = os.path.join(runtime, "netns-" + uuid.uuid4().hex)
        proc, _ = started(["unshare", "--user", "--map-root-user", "--mount",
                           "--propagation", "private", "--", "sh", "-ec", ROOTLESS, "sh",
                           path, address], user=NOBODY, group=NOBODY, extra_groups=[])
        try:
            yield proc.pid, path
        finally:
            stopped(proc)
    finally:
        shutil.rmtree(top)


def gc_without_ptrace(data_dir, *args):
    """gc as root without CAP_SYS_PTRACE, as in a container that lacks it: the kernel
    refuses it a look at the namespaces of a process more privileged than itself."""
    env = {"PATH": os.environ.get("PATH", ""), "IPAM_DATA_DIR": str(data_dir)}
    proc = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps",
                           "-sys_ptrace", IPAMCTL, "-o", "json", "gc", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


@contextlib.contextmanager
def held_by_a_thread(data_dir, pool, namespace):
    """Lease ``orphan``'s address on ``namespace``, which then only a thread of a running
    process is in (its bind mount removed): ``(process, tid, address)``."""
    pool("podnet", "orphan", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    ip("-n", namespace, "addr", "add", address + "/24", "dev", "eth0")
    proc, tid = started([sys.executable, "-c", THREAD_IN, "/run/netns/" + namespace])
    try:
        ip("netns", "del", namespace)
        yield proc, tid, address
    finally:
        stopped(proc)


@pytest.mark.root
def test_a_namespace_only_a_thread_is_in_is_found(data_dir, pool, namespace):
    """A thread that entered a namespace whose bind mount was then removed keeps it, and
    its address, alive while its process's main thread is elsewhere: found through
    /proc/PID/task/TID, named by the thread."""
    with held_by_a_thread(data_dir, pool, namespace) as (proc, tid, address):
        answer = gc_json(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
            ("orphan", "namespace /proc/%d/task/%s/ns/net (%s) (eth0) holds %s"
             % (proc.pid, tid, comm(proc.pid, int(tid)), address))]
    answer = gc_json(data_dir, "--valid", "live", "--apply")   # gone with its thread
    assert [r["container_id"] for r in answer["released"]] == ["orphan"]


@pytest.mark.root
def test_a_rootless_podman_namespace_in_its_own_mount_namespace_is_found(data_dir, pool):
    """Bind-mounted only inside another mount namespace, with no process in it: found
    through the mount namespace's /proc/PID/mountinfo, entered through /proc/PID/root."""
    pool("podnet", "orphan", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    with rootless_namespace(address) as (pid, path):
        assert os.stat(path).st_size == 0 and not os.path.ismount(path)
        answer = gc_json(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
            ("orphan", "namespace /proc/%d/root%s (cat) (eth0) holds %s"
             % (pid, path, address))]
    answer = gc_json(data_dir, "--valid", "live", "--apply")   # gone with its pause process
    assert [r["container_id"] for r in answer["released"]] == ["orphan"]


def pinned_mount_namespace(path, argv):
    """``unshare --mount=PATH`` running ``argv``: a new mount namespace, kept by a bind
    mount of it on ``path``. The kernel refuses (EINVAL) to bind a mount namespace whose
    id is not above the binder's own, lest a namespace hold itself. Linux 6.18 hands out
    those ids from per-CPU batches, so a namespace made on one CPU can have a lower id
    than an older one made on another: inside a suite's own mount namespace
    (``.ci/run`` side by side), whose id may be the higher, the bind then fails for a
    while. Made on the CPU whose batch is the higher, its id is above; so each CPU is
    tried in turn, until one bind succeeds."""
    failures = []
    for cpu in sorted(os.sched_getaffinity(0)):
        proc = subprocess.run(["taskset", "-c", str(cpu), "unshare", "--mount=%s" % path,
                               "--propagation", "private", "--", *argv],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            return
        refused = "ns/mnt on %s failed: Invalid argument" % path
        assert refused in proc.stderr, proc.stderr  # anything else is a failure
        failures.append("CPU %d: %s" % (cpu, proc.stderr.strip()))
    raise AssertionError("no CPU made a mount namespace that could be bound:\n"
                         + "\n".join(failures))


@pytest.mark.root
def test_a_namespace_in_a_mount_namespace_no_process_is_in_is_found(data_dir, pool,
                                                                    tmp_path):
    """A mount namespace kept only by a bind mount of it (``unshare --mount=FILE``), a
    network namespace mounted inside it: gc enters the mount namespace to find it."""
    pool("podnet", "orphan", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    pins = tmp_path / "pins"
    pins.mkdir()
    subprocess.run(["mount", "--bind", str(pins), str(pins)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(pins)], check=True)
        (pins / "mnt").touch()
        (pins / "net").touch()
        pinned_mount_namespace(pins / "mnt", ["sh", "-ec", NAMESPACE_AT, "sh",
                                              str(pins / "net"), address])
        answer = gc_json(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
            ("orphan", "namespace %s (in mount namespace %s) (eth0) holds %s"
             % (pins / "net", pins / "mnt", address))]
    finally:
        subprocess.run(["umount", str(pins / "mnt")], check=False)
        subprocess.run(["umount", str(pins)], check=False)
    answer = gc_json(data_dir, "--valid", "live", "--apply")   # gone with its mount
    assert [r["container_id"] for r in answer["released"]] == ["orphan"]


@pytest.mark.root
def test_a_namespace_root_may_not_look_at_is_read_through_proc(data_dir, pool, namespace):
    """gc refused a look at a process's namespace (no CAP_SYS_PTRACE) reads the
    addresses /proc/PID/net shows, which it may read: the lease is kept all the same."""
    with held_by_a_thread(data_dir, pool, namespace) as (proc, tid, address):
        answer = gc_without_ptrace(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        assert [(r["container_id"], r["reason"]) for r in answer["kept"]] == [
            ("orphan", "namespace /proc/%d/task/%s/net (%s) holds %s"
             % (proc.pid, tid, comm(proc.pid, int(tid)), address))]


@pytest.mark.root
def test_a_mount_gc_may_not_reach_keeps_every_candidate(data_dir, pool):
    """A namespace mounted in a mount namespace gc may not enter (/proc/PID/root refused
    without CAP_SYS_PTRACE) could hold any address: every candidate is kept, saying why."""
    pool("podnet", "orphan", "gone", "live")
    address = [a for n, a, c, _ in held(data_dir) if c == "orphan"][0]
    with rootless_namespace(address) as (pid, path):
        answer = gc_without_ptrace(data_dir, "--valid", "live", "--apply")
        assert answer["released"] == []
        reasons = {r["container_id"]: r["reason"] for r in answer["kept"]}
        assert set(reasons) == {"orphan", "gone"}
        assert "/proc/%d/task/%d/root%s: Permission denied" % (pid, pid, path) \
            in reasons["gone"]
        assert reasons["gone"].endswith("(--ignore-netns to skip the check)")


@pytest.mark.root
def test_addresses_read_from_outside_a_namespace(namespace):
    """What /proc/PID/task/TID/net shows of a thread's namespace (read where root may
    not look inside): IPv6 addresses with their interface (if_inet6), IPv4 ones without
    (fib_trie's local routes), those of an interface that is down included."""
    from ipam.admin import nsaddr

    ip("-n", namespace, "addr", "add", "10.1.2.77/24", "dev", "eth0")
    ip("-n", namespace, "addr", "add", "2001:db8::77/64", "dev", "eth0")
    ip("-n", namespace, "link", "set", "eth0", "up")
    ip("-n", namespace, "link", "set", "lo", "up")
    ip("-n", namespace, "link", "add", "down0", "type", "veth", "peer", "name", "down1")
    ip("-n", namespace, "addr", "add", "10.5.5.5/24", "dev", "down0")
    proc, tid = started([sys.executable, "-c", THREAD_IN, "/run/netns/" + namespace])
    try:
        seen = nsaddr.proc_addresses("/proc/%d/task/%s" % (proc.pid, tid))
    finally:
        stopped(proc)
    assert sorted((a, i) for a, i in seen if not a.startswith("fe80:")) == [
        ("10.1.2.77", None), ("10.5.5.5", None), ("127.0.0.1", None),
        ("2001:db8::77", "eth0"), ("::1", "lo")]


# -- the documented recipes, against fake runtime commands ---------------------------------
FAKE = r'''#!/bin/sh
# A fake %(name)s: prints what the real one prints for exactly these arguments.
case "$*" in
%(cases)s
*) echo "fake %(name)s: unexpected arguments: $*" >&2; exit 64 ;;
esac
'''
NODE_ID = "5a2f1b8e-3c1d-4e6f-9a0b-7c8d9e0f1a2b"
ALLOCS = ["0c7a9f3e-6b1d-4a2e-8f5c-3d9e1b7a0c42", "9e1d4c7b-2a5f-4e8d-b3c6-1f0a7e9d2c85"]


def fake_runtimes(bindir, live):
    """crictl, podman, nerdctl and nomad printing ``live`` as each does."""
    def write(name, cases):
        body = "\n".join("%s) cat <<'EOF'\n%sEOF\n;;" % (args, out) for args, out in cases)
        path = bindir / name
        path.write_text(FAKE % {"name": name, "cases": body})
        path.chmod(0o755)

    lines = "".join(x + "\n" for x in live)
    write("crictl", [('"pods -q"', lines)])  # -q prints full IDs, Ready and NotReady
    write("podman", [('"ps -a -q --no-trunc"', lines)])
    write("nerdctl", [('"ps -a -q --no-trunc"', "".join(
        x[len("default-"):] + "\n" for x in live))])
    allocations = json.dumps([{"ID": x, "NodeID": NODE_ID, "ClientStatus": "running"}
                              for x in live])
    write("nomad", [("\"node status -self -t {{.ID}}\"", NODE_ID + "\n"),
                    ('"operator api /v1/node/%s/allocations"' % NODE_ID, allocations + "\n")])


def documented_recipes():
    """``{runtime: shell text}``: the first ```sh block that feeds gc a list
    (``--valid-file``) under each heading of "Cleaning up after runtimes" (docs/gc.md)
    that has one (Kubernetes' ``gc --cri`` block before it runs in tests/test_readme.py,
    and against containerd in tests/test_containerd.py)."""
    recipes = {}
    for heading, body in subsections("Cleaning up after runtimes").items():
        blocks = [b.split("```", 1)[0] for b in body.split("```sh\n")[1:]]
        lists = [b for b in blocks if "--valid-file" in b]
        if lists:
            recipes[heading] = lists[0]
    return recipes


RUNTIMES = {  # the recipe's heading -> the IDs that runtime gives CNI as CNI_CONTAINERID
    "Kubernetes (CRI)": ["%064x" % (0xab00 + i) for i in range(4)],
    "podman": ["%064x" % (0xcd00 + i) for i in range(4)],
    "nerdctl": ["default-%064x" % (0xef00 + i) for i in range(4)],
    "Nomad": ALLOCS + ["1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b",
                       "2c3d4e5f-6071-4829-9bac-1d2e3f4a5b6c"],
}


def test_the_docs_have_a_recipe_per_runtime():
    assert set(documented_recipes()) == set(RUNTIMES)


def run_shell(text, data_dir, bindir):
    env = {"PATH": "%s:%s:%s" % (bindir, os.path.dirname(IPAMCTL), os.environ["PATH"]),
           "IPAM_DATA_DIR": str(data_dir)}
    return subprocess.run(["sh", "-ec", text], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_documented_recipe_releases_only_what_is_gone(runtime, data_dir, pool, tmp_path):
    ids = RUNTIMES[runtime]
    live, gone = ids[:3], ids[3:]
    pool("net1", *ids)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_runtimes(bindir, live)
    proc = run_shell(documented_recipes()[runtime], data_dir, bindir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(c for _, _, c, _ in held(data_dir)) == sorted(live)
    assert [r[4] for r in events(data_dir) if r[0] == "release"] == gone


def test_a_wrong_recipe_fails(data_dir, pool, tmp_path):
    """The fakes refuse flags other than the recipes': 'crictl ps -q' is not 'pods'."""
    pool("net1", *RUNTIMES["Kubernetes (CRI)"])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_runtimes(bindir, RUNTIMES["Kubernetes (CRI)"])
    proc = run_shell("crictl ps -q | ipamctl gc --valid-file - --apply", data_dir, bindir)
    assert proc.returncode == 1
    assert "fake crictl: unexpected arguments: ps -q" in proc.stderr
    assert "the list of live containers is empty" in proc.stderr
    assert len(held(data_dir)) == 4


# -- the systemd units ----------------------------------------------------------------
def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    names = sorted(n for n in os.listdir(SYSTEMD) if n.startswith("ipamctl-gc"))
    assert names == ["ipamctl-gc-boot.service", "ipamctl-gc.service", "ipamctl-gc.timer"]
    for name in names:  # ipamctl where this venv has it, as systemd-analyze checks paths
        (tmp_path / name).write_text(unit_lines(name).replace("/usr/local/bin/ipamctl",
                                                              IPAMCTL))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                           *[str(tmp_path / n) for n in names]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ipamctl-gc" not in proc.stderr, proc.stderr  # not one warning about ours


def test_boot_unit_releases_earlier_boots_only(data_dir, pool, tmp_path):
    pool("net1", "a", "b", age=False)
    sql(data_dir, "UPDATE leases SET boot_id = 'an-earlier-boot' WHERE container_id = 'a'")
    command = unit_exec_start("ipamctl-gc-boot.service").replace("/usr/local/bin/ipamctl", IPAMCTL)
    proc = run_shell(command, data_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c for _, _, c, _ in held(data_dir)] == ["b"]


def test_periodic_unit_runs_a_live_command(data_dir, pool, tmp_path):
    """LIVE set as its comment says (here the crictl recipe): the command's list, and
    --cri dropped. Its default, --cri, is run against containerd in test_containerd."""
    ids = RUNTIMES["Kubernetes (CRI)"]
    pool("net1", *ids)
    fake_runtimes(tmp_path, ids[:3])
    env = unit_environment("ipamctl-gc.service")
    assert env["LIVE"] == "" and env["GC_ARGS"] == "--cri"
    env.update(LIVE="crictl pods -q", GC_ARGS="")
    command = unit_exec_start("ipamctl-gc.service")
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                          env=dict(env, IPAMCTL=IPAMCTL, IPAM_DATA_DIR=str(data_dir),
                                   PATH="%s:%s" % (tmp_path, os.environ["PATH"])))
    assert proc.returncode == 0, proc.stderr
    assert sorted(c for _, _, c, _ in held(data_dir)) == sorted(ids[:3])
    # The runtime down: the unit fails, and gc never runs on an empty list.
    (tmp_path / "crictl").write_text("#!/bin/sh\necho 'connect: no such file' >&2\nexit 1\n")
    pool("net1", "extra")
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                          env=dict(env, IPAMCTL=IPAMCTL, IPAM_DATA_DIR=str(data_dir),
                                   PATH="%s:%s" % (tmp_path, os.environ["PATH"])))
    assert proc.returncode != 0
    assert len(held(data_dir)) == 4
