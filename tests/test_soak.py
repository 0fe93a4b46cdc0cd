"""``make soak`` (tools/soak.py), the CI version: 5,000 calls with the same driver, the
same mix and the same checks, and the checks themselves: what the judge calls flat,
and the lease audit catching a lease lost or a file left behind.

The full run (500,000 calls) takes hours on two cores; its figures are in
docs/performance.md ("A quarter of churn").
"""
import argparse
import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, ipamctl

TOOLS = os.path.join(REPO, "tools")
sys.path.insert(0, TOOLS)

import soak_judge  # noqa: E402
import soak_node  # noqa: E402
import soak_probe  # noqa: E402

CI_CALLS = 5000


@pytest.mark.slow
@pytest.mark.reference
def test_a_ci_soak_stays_flat(tmp_path):
    """The soak's CI run: exit 0, every judged figure flat, every audit clean, and the
    calls it made were the mix the issue asks for: 2% plugin processes, 1% Go, the
    rest through the daemon's socket."""
    report = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "soak.py"),
                           "--calls", str(CI_CALLS), "--dir", str(tmp_path / "work"),
                           "--json", str(report)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    assert "soak: flat" in proc.stdout, proc.stdout
    result = json.loads(report.read_text())
    assert result["ok"]
    failed = [r for r in result["rows"] if r["ok"] is False]
    assert failed == [], failed
    judged = {r["measure"] for r in result["rows"] if r["ok"]}
    for measure in ("per-call time, daemon, ÷ a fresh node's beside it", "database file",
                    "daemon RSS", "daemon open descriptors", "mirror bytes",
                    "ipamctl check problems"):
        assert measure in judged, measure
    totals = result["totals"]
    assert totals["calls"] == CI_CALLS
    assert totals["audits"] == 101 and totals["check"] == []
    measured = {kind: sum(len(v) for s, v in by_slice.items() if int(s) >= 0)
                for kind, by_slice in result["times"].items()}
    assert measured["process"] == CI_CALLS * 2 // 100
    assert abs(measured["go"] - CI_CALLS // 100) <= 2, measured
    assert measured["daemon"] + measured["process"] + measured["go"] + \
        totals["fell_back"] >= CI_CALLS - CI_CALLS // 100  # ours DELs half of Go's pods
    assert totals["health"]["calls"] >= measured["daemon"]


# -- the judge ---------------------------------------------------------------------------
def _flat_run():
    """A run as soak.py records it, every figure flat: samples (the baseline's slice
    -1), this node's times and the fresh nodes' (10 ms a call, 100 calls a slice)."""
    samples = [{"slice": s, "calls": 100 * (s + 1), "daemon_calls": 100 * (s + 1),
                "cpu_s": 0.2 * (s + 1), "db_bytes": 1 << 20, "wal_bytes": 1 << 19,
                "rss_bytes": 50 << 20, "mirror_bytes": 100 << 10, "fds": 14,
                "mirror_entries": 1130, "threads": 5, "history": 300}
               for s in range(-1, 100)]
    times = {"daemon": {s: [0.010] * 100 for s in range(100)}}
    fresh = {"daemon": {s: [0.010] * 100 for s in range(100)}}
    totals = {"daemon_calls": 10000, "fell_back": 0, "check": [], "internal_errors": 0,
              "daemon_exit": 0, "audits": 101}
    return samples, times, fresh, totals


def _failed(samples, times, fresh, totals):
    rows = soak_judge.judge(samples, times, fresh, totals)
    assert soak_judge.passed(rows) == (not [r for r in rows if r["ok"] is False])
    return [r["measure"] for r in rows if r["ok"] is False]


def test_the_judge_passes_a_flat_run():
    assert _failed(*_flat_run()) == []


@pytest.mark.parametrize("measure,grow", [
    ("daemon open descriptors", lambda s: s.update(fds=15)),
    ("mirror entries", lambda s: s.update(mirror_entries=1131)),
    ("database file", lambda s: s.update(db_bytes=2 << 20)),
    ("database WAL", lambda s: s.update(wal_bytes=3 << 20)),
    ("daemon RSS", lambda s: s.update(rss_bytes=60 << 20)),
    ("mirror bytes", lambda s: s.update(mirror_bytes=200 << 10)),
])
def test_the_judge_fails_a_figure_that_grows_in_the_last_tenth(measure, grow):
    samples, times, fresh, totals = _flat_run()
    grow(samples[95])
    assert _failed(samples, times, fresh, totals) == [measure]
    samples, times, fresh, totals = _flat_run()
    grow(samples[50])  # between the windows: not judged
    assert _failed(samples, times, fresh, totals) == []


def test_the_database_file_may_keep_a_high_water_mark_but_not_grow():
    """History is kept for a time, so a fast moment leaves the file larger (SQLite never
    gives pages back): flat as long as the last tenth adds nothing. Growing with the
    calls made, it grows in the last tenth too."""
    samples, times, fresh, totals = _flat_run()
    for s in samples[40:]:
        s["db_bytes"] = 2 << 20
    assert _failed(samples, times, fresh, totals) == []
    for s in samples:
        s["db_bytes"] = (1 << 20) + 340 * 100 * (s["slice"] + 1)  # unpruned history
    assert _failed(samples, times, fresh, totals) == ["database file"]


def test_the_judge_weighs_time_against_the_fresh_node_beside_it():
    samples, times, fresh, totals = _flat_run()
    for s in range(90, 100):  # the machine twice as busy in the last tenth: both slower
        times["daemon"][s] = [0.020] * 100
        fresh["daemon"][s] = [0.020] * 100
    assert _failed(samples, times, fresh, totals) == []
    for s in range(90, 100):  # ours alone slower: it grew
        fresh["daemon"][s] = [0.012] * 100
    assert _failed(samples, times, fresh, totals) == [
        "per-call time, daemon, ÷ a fresh node's beside it"]


def test_the_judge_fails_cpu_growth_and_what_the_end_found():
    samples, times, fresh, totals = _flat_run()
    for s in samples[91:]:
        s["cpu_s"] = samples[90]["cpu_s"] + 0.004 * (s["slice"] - 89) * 100
    assert _failed(samples, times, fresh, totals) == ["daemon CPU ms per call"]
    samples, times, fresh, totals = _flat_run()
    totals.update(check=["soak0/10.100.0.7: missing"], internal_errors=1, daemon_exit=1,
                  fell_back=11)
    assert _failed(samples, times, fresh, totals) == [
        "daemon calls run in process instead", "ipamctl check problems",
        "daemon internal errors logged", "daemon exit status on SIGTERM"]


# -- the lease audit, on a real node -----------------------------------------------------
@pytest.fixture
def node(tmp_path):
    args = argparse.Namespace(networks=2, pods=3, go_pods=0, go_share=0, process_share=0,
                              history_retention="1s")
    node = soak_node.Node(str(tmp_path / "node"), args)
    try:
        node.settle()
        yield node
    finally:
        node.daemon.kill()


def test_the_audit_passes_a_sound_node(node):
    probe = soak_probe.Probe(node)
    try:
        sample = probe.sample(0)
    finally:
        probe.close()
    assert sample["leases"] == 6 and sample["mirror_entries"] == 2 * (3 + 2)  # lock, cursor
    assert soak_probe.check(node) == []


def test_the_audit_finds_a_lease_lost(node):
    pod = node.live[1][0]
    ipamctl("release", "--yes", "--network", node.names[1], pod.ip, data_dir=node.data_dir)
    probe = soak_probe.Probe(node)
    with pytest.raises(soak_node.Failed, match="pod %d on soak1 .* lost its lease of %s"
                       % (pod.serial, pod.ip)):
        probe.sample(0)
    probe.close()


def test_the_audit_finds_a_file_left_behind(node):
    stray = os.path.join(node.data_dir, node.names[0], "10.100.0.250")
    with open(stray, "wb") as f:
        f.write(b"gone\r\neth0")
    probe = soak_probe.Probe(node)
    with pytest.raises(soak_node.Failed, match="soak0/10.100.0.250 names no live pod"):
        probe.sample(0)
    probe.close()
