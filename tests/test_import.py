"""Taking over from host-local, end to end: ``ipamctl import`` (the installed binary and
through CliRunner), the plugin's automatic adoption on first use, and the round trips
with ``ipamctl export``.

The directories come from running Debian's Go host-local (/usr/lib/cni/host-local)
through several networks (IPv4, IPv6, dual stack, two ranges in one set) with ADDs and
DELs, so that cursors and holes exist; hand-made legacy (``ID``), LF (``ID\\nifname``),
empty and junk files are added. After the import (or the adoption) Go continues on a copy
and ours on the imported directory, step by step: every result and, at the end, every
file must be the same. Tests that need Go are marked ``reference`` and skip without it.
"""
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import time

import pytest
from click.testing import CliRunner
from cniexec import GO_HOST_LOCAL, contents, snapshot_networks
from cniexec import run as run_binary
from helpers import IPAMCTL, ipamctl, run_plugin, wait_queued

from host_local_sqlite_cli.main import cli
from ipam import addr, paths

needs_go = pytest.mark.skipif(not os.access(GO_HOST_LOCAL, os.X_OK),
                              reason=f"Go reference {GO_HOST_LOCAL} missing: "
                                     "apt-get install containernetworking-plugins")

# The networks Go builds. Range set 0 of "v4" is a /28: .2-.14, gateway .1.
NETS = {
    "v4": {"subnet": "10.1.2.0/28"},
    "v6": {"ranges": [[{"subnet": "2001:db8:0:1::1:0/124"}]]},   # Go: 2001:db8:0:1::1:2
    # IPv4 (13 addresses) runs out before IPv6 (14): an ADD then fails in range set 0,
    # before anything is reserved. (A failure in set 1 would leave Go's cursor 0 moved
    # and ours not: an allowed difference, tested in test_reference.py, not here.)
    "dual": {"ranges": [[{"subnet": "10.2.0.0/28"}], [{"subnet": "fd00:2::/124"}]]},
    "multi": {"ranges": [[{"subnet": "10.3.0.0/30"}, {"subnet": "10.3.1.0/29"}]]},
}
# What Go does before the switch: holes (c2, c4 gone), cursors, a second interface.
GO_HISTORY = [("ADD", "c1", "eth0"), ("ADD", "c2", "eth0"), ("ADD", "c1", "eth1"),
              ("ADD", "c3", "eth0"), ("DEL", "c2", "eth0"), ("ADD", "c4", "eth0"),
              ("ADD", "c5", "eth0"), ("DEL", "c4", "eth0"), ("ADD", "c6", "eth0")]
# What both do after it: fills the holes, wraps round, exhausts the small pools, and
# frees the imported legacy lease by its container ID alone ("old" on another ifname).
CONTINUE = [("ADD", "n1", "eth0"), ("ADD", "n2", "eth0"), ("DEL", "c3", "eth0"),
            ("ADD", "n3", "eth0"), ("DEL", "old", "eth3"), ("ADD", "n4", "eth0"),
            ("ADD", "n5", "eth0"), ("ADD", "n6", "eth0"), ("ADD", "n7", "eth0"),
            ("ADD", "n8", "eth0"), ("ADD", "n9", "eth0"), ("DEL", "n1", "eth0"),
            ("ADD", "n10", "eth0"), ("ADD", "n11", "eth0"), ("DEL", "c1", "eth1"),
            ("ADD", "n12", "eth0")]
# Hand-made files host-local's allocator treats as taken (legacy, LF), and files it never
# allocates over (outside every range: empty, junk, names that are no address).
LEGACY = {"10.1.2.12": b"old", "10.1.2.13": b"lf\neth1"}
JUNK = {"10.1.2.100": b"", "10.1.2.101": b"not an id!", "README": b"hello",
        "10.1.2.300": b"x\r\neth0"}


RESERVATION = re.compile(r"([a-zA-Z0-9][a-zA-Z0-9_.-]*)(?:\r?\n(\S{1,15}))?\Z")


def conf(name, data_dir, **ipam):
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge",
            "ipam": dict({"type": "host-local", "dataDir": str(data_dir)}, **NETS[name],
                         **ipam)}


def go(command, name, data_dir, cid, ifname="eth0"):
    out = run_binary(GO_HOST_LOCAL, command, conf(name, data_dir), container_id=cid,
                     ifname=ifname)
    return out.status, out.json


def ours(command, name, data_dir, cid, ifname="eth0", **ipam):
    out = run_plugin(command, conf(name, data_dir, **ipam), container_id=cid, ifname=ifname)
    return out.status, out.json


def go_made(data_dir, extras=True):
    """Run GO_HISTORY through Go for every network; add the hand-made files to "v4"."""
    for name in NETS:
        for command, cid, ifname in GO_HISTORY:
            rc, out = go(command, name, data_dir, cid, ifname)
            assert rc == 0, (name, cid, out)
    if extras:
        for fname, data in {**LEGACY, **JUNK}.items():
            (data_dir / "v4" / fname).write_bytes(data)
        (data_dir / "v4" / "10.1.2.102").mkdir()                     # a directory
        (data_dir / "v4" / "10.1.2.103").symlink_to("/nonexistent")  # dangling symlink
    return data_dir


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def files_leases(data_dir):
    """The leases a host-local directory holds, read straight from its files."""
    out = set()
    for name in sorted(os.listdir(data_dir)):
        d = data_dir / name
        if not d.is_dir() or name.startswith("."):
            continue
        for f in os.listdir(d):
            path = d / f
            ip = addr.parse_ip(f)
            if ip is None or path.is_symlink() or not path.is_file():
                continue
            m = RESERVATION.match(path.read_bytes().decode(errors="replace").strip())
            if m:
                out.add((name, str(ip), m.group(1), m.group(2)))
    return out


def cursors_in(data_dir, name):
    d = data_dir / name
    return {f.split(".")[-1]: (d / f).read_text() for f in os.listdir(d)
            if f.startswith("last_reserved_ip.")}


def ctl_json(data_dir, *args, expect=0):
    return json.loads(ipamctl("-o", "json", *args, data_dir=data_dir, expect=expect).stdout)


def db_leases(data_dir):
    return {(x["network"], x["ip"], x["container_id"], x["ifname"])
            for x in ctl_json(data_dir, "list")}


def fingerprint(top):
    """name -> (bytes or link target, full mode, mtime ns) of everything under ``top``;
    the top directory's own entry included, special files never opened."""
    out = {}
    for root, dirs, files in os.walk(top):
        for name in [os.curdir] + dirs + files:
            full = os.path.normpath(os.path.join(root, name))
            st = os.lstat(full)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(full).encode()
            out[os.path.relpath(full, top)] = (data, st.st_mode, st.st_mtime_ns)
    return out


def networks_fingerprint(data_dir):
    """:func:`fingerprint` of each network directory (not our database beside them)."""
    return {name: fingerprint(data_dir / name) for name in sorted(os.listdir(data_dir))
            if (data_dir / name).is_dir() and not name.startswith(".")}


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.delenv("IPAM_DATA_DIR", raising=False)
    monkeypatch.delenv("IPAM_DATABASE", raising=False)
    return CliRunner()


# -- Go's directories: import (or adopt), then Go and ours continue side by side -------
@pytest.mark.reference
@needs_go
@pytest.mark.parametrize("how", ["import", "adopt"])
def test_continue_where_go_left_off(tmp_path, how):
    made = go_made(tmp_path / "made")
    theirs = copy(made, tmp_path / "go")
    mine = copy(made, tmp_path / "ours")
    expected = files_leases(made)
    assert ("v4", "10.1.2.12", "old", None) in expected
    assert ("v4", "10.1.2.13", "lf", "eth1") in expected
    assert any(":" in ip for _, ip, _, _ in expected)
    if how == "import":
        summaries = ctl_json(mine, "import")
        assert [s["network"] for s in summaries] == sorted(NETS)
        for s in summaries:
            assert {(s["network"], x["ip"], x["container_id"], x["ifname"])
                    for x in s["imported"]} == {e for e in expected if e[0] == s["network"]}
            assert s["cursors"] == cursors_in(made, s["network"])
            assert s["conflicts"] == []
        assert db_leases(mine) == expected
    else:
        assert not (mine / paths.DB_NAME).exists()
    handed_out = {}
    for name in NETS:
        for step, (command, cid, ifname) in enumerate(CONTINUE):
            want = go(command, name, theirs, cid, ifname)
            got = ours(command, name, mine, cid, ifname)
            assert got == want, (how, name, step, command, cid, ifname)
            if command == "ADD":
                handed_out.setdefault(name, []).append(
                    [i["address"] for i in got[1]["ips"]] if got[0] == 0 else None)
        if how == "adopt":
            assert {e for e in db_leases(mine) if e[0] == name} == {
                e for e in files_leases(theirs) if e[0] == name}
    # The scenario does what it is meant to: holes refilled (.3, .5, .6), the legacy
    # lease freed by DEL old/eth3 and handed out again (.12), the LF lease kept (.13),
    # wrap-round, exhaustion (None), and an address freed by DEL reused.
    assert handed_out["v4"] == [["10.1.2.%d/28" % n] if n else None for n in (
        9, 10, 11, 12, 14, 3, 5, 6, 0, 9, 0, 4)]
    assert contents(snapshot_networks(mine)) == contents(snapshot_networks(theirs))
    assert db_leases(mine) == files_leases(theirs)


# -- ipamctl import: what it reports ---------------------------------------------------
@pytest.mark.reference
@needs_go
def test_import_reports_per_network(tmp_path):
    data = go_made(tmp_path / "data")
    v4 = data / "v4"
    os.mkfifo(v4 / "10.1.2.104")                                   # unreadable: a FIFO
    (v4 / "2001_db8__5").write_bytes(b"win\r\neth0")               # Windows spelling
    (v4 / "last_reserved_ip").write_bytes(b"10.1.2.1")             # old cursor, .0 wins
    summaries = ctl_json(data, "import")
    by = {s["network"]: s for s in summaries}
    assert sorted(by) == sorted(NETS)
    for s in summaries:
        assert s["dry_run"] is False and s["source"] == str(data / s["network"])
        assert s["counts"] == {"imported": len(s["imported"]), "unchanged": 0,
                               "skipped": len(s["skipped"]), "conflicts": 0,
                               "cursors": len(s["cursors"])}
        assert s["conflicts"] == [] and s["unchanged"] == 0
        assert s["cursors"] == cursors_in(data, s["network"])
    for name in ("v6", "dual", "multi"):
        assert by[name]["skipped"] == []
    skipped = {x["file"]: x["reason"] for x in by["v4"]["skipped"]}
    assert set(skipped) == set(JUNK) | {"10.1.2.102", "10.1.2.103", "10.1.2.104"}
    assert all(skipped.values())
    assert "empty" in skipped["10.1.2.100"]
    assert "not an address" in skipped["README"] and "not an address" in skipped["10.1.2.300"]
    imported = {(x["ip"], x["container_id"], x["ifname"]) for x in by["v4"]["imported"]}
    assert {("10.1.2.12", "old", None), ("10.1.2.13", "lf", "eth1"),
            ("2001:db8::5", "win", "eth0"), ("10.1.2.2", "c1", "eth0"),
            ("10.1.2.4", "c1", "eth1")} <= imported
    assert db_leases(data) == files_leases(data) | {("v4", "2001:db8::5", "win", "eth0")}
    # The history says where these leases came from.
    events = ctl_json(data, "history")
    assert len(events) == sum(len(s["imported"]) for s in summaries)
    assert {(e["event"], e["reason"]) for e in events} == {("allocate", "import")}
    assert [(e["event"], e["reason"], e["network"], e["container_id"], e["ifname"])
            for e in ctl_json(data, "history", "--ip", "10.1.2.12")] == [
        ("allocate", "import", "v4", "old", None)]
    table = ipamctl("history", "--network", "v6", data_dir=data).stdout
    assert "import" in table and "2001:db8:0:1::1:2" in table


def test_import_table_output_and_options(tmp_path):
    data = tmp_path / "data"
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        (src / name).mkdir(parents=True)
        (src / name / "10.1.2.2").write_bytes(b"x-%s\r\neth0" % name.encode())
        (src / name / "10.1.2.3").write_bytes(b"")
        (src / name / "last_reserved_ip.0").write_bytes(b"10.1.2.2")
    out = ipamctl("import", "--from", str(src), "--network", "a", "--network", "c",
                  data_dir=data).stdout
    assert "a: imported 1, unchanged 0, skipped 1, conflicts 0, cursors 0=10.1.2.2" in out
    assert "skipped   10.1.2.3" in out and "empty" in out
    assert "\nb:" not in out and "c: imported 1" in out
    assert {x[0] for x in db_leases(data)} == {"a", "c"}
    out = ipamctl("import", "--from", str(src), "--dry-run", data_dir=data).stdout
    assert "a: would import 0, unchanged 1" in out and "b: would import 1" in out
    proc = ipamctl("import", "--from", str(src), "--network", "zz", data_dir=data, expect=1)
    assert proc.stderr.startswith("Error: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = ipamctl("import", "--from", str(empty), data_dir=data)
    assert "(no host-local directories under" in proc.stdout


def test_from_defaults_to_the_data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "net").mkdir(parents=True)
    (data / "net" / "10.1.2.7").write_bytes(b"a\r\neth0")
    [summary] = ctl_json(data, "import")
    assert summary["source"] == str(data / "net")
    assert db_leases(data) == {("net", "10.1.2.7", "a", "eth0")}
    # Our own database and markers beside the networks are not networks.
    [again] = ctl_json(data, "import")
    assert again["network"] == "net" and again["imported"] == [] and again["unchanged"] == 1


def test_unreadable_file_is_reported(tmp_path, runner, monkeypatch):

    src = tmp_path / "src"
    (src / "net").mkdir(parents=True)
    (src / "net" / "10.1.2.2").write_bytes(b"a\r\neth0")
    (src / "net" / "10.1.2.3").write_bytes(b"b\r\neth0")
    real_open = os.open  # the importer reads each file through a bare descriptor

    def fake_open(path, *a, **kw):
        if os.path.basename(path) == "10.1.2.3":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    result = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "-o", "json", "import",
                                 "--from", str(src)])
    assert result.exit_code == 0, result.output
    [s] = json.loads(result.stdout)
    assert [x["ip"] for x in s["imported"]] == ["10.1.2.2"]
    assert s["skipped"] == [{"file": "10.1.2.3", "reason": "unreadable: Permission denied"}]


@pytest.mark.reference
@needs_go
def test_second_import_imports_nothing(tmp_path):
    data = go_made(tmp_path / "data")
    first = ctl_json(data, "import")
    leases, events = ctl_json(data, "list"), ctl_json(data, "history")
    second = ctl_json(data, "import")
    assert ctl_json(data, "list") == leases and ctl_json(data, "history") == events
    for a, b in zip(first, second, strict=True):
        assert b["imported"] == [] and b["conflicts"] == [] and b["cursors"] == {}
        assert b["unchanged"] == len(a["imported"]) > 0
        assert b["skipped"] == a["skipped"]
        assert b["counts"] == dict(a["counts"], imported=0, unchanged=len(a["imported"]),
                                   cursors=0)


@pytest.mark.reference
@needs_go
def test_conflict_database_wins(tmp_path):
    """Our plugin already leased 10.1.2.2 in "v4"; Go's directory says c1 holds it."""
    src = go_made(tmp_path / "go")
    data = tmp_path / "data"
    assert ours("ADD", "v4", data, "mine") == (0, {
        "cniVersion": "1.0.0", "ips": [{"address": "10.1.2.2/28", "gateway": "10.1.2.1"}],
        "dns": {}})
    before_src = networks_fingerprint(src)
    before_mirror = contents(snapshot_networks(data))
    by = {s["network"]: s for s in ctl_json(data, "import", "--from", str(src))}
    assert by["v4"]["conflicts"] == [{"ip": "10.1.2.2", "container_id": "c1", "ifname": "eth0",
                                      "held_by": {"ip": "10.1.2.2", "container_id": "mine",
                                                  "ifname": "eth0"}}]
    assert by["v4"]["counts"]["conflicts"] == 1
    assert by["v4"]["cursors"] == {}  # the database's own cursor stays
    assert "10.1.2.2" not in {x["ip"] for x in by["v4"]["imported"]}
    assert ("v4", "10.1.2.2", "mine", "eth0") in db_leases(data)
    assert ("v4", "10.1.2.2", "c1", "eth0") not in db_leases(data)
    assert db_leases(data) == {("v4", "10.1.2.2", "mine", "eth0")} | {
        e for e in files_leases(src) if e[:2] != ("v4", "10.1.2.2")}
    assert [e["reason"] for e in ctl_json(data, "history", "--ip", "10.1.2.2")] == ["add"]
    assert networks_fingerprint(src) == before_src
    assert contents(snapshot_networks(data)) == before_mirror  # import writes no mirror
    table = ipamctl("import", "--from", str(src), "--network", "v4", data_dir=data).stdout
    assert "conflict  10.1.2.2: file says c1/eth0, database has mine/eth0" in table
    # Our next ADD goes on from the database's cursor, not from the file's.
    assert ours("ADD", "v4", data, "next")[1]["ips"][0]["address"] == "10.1.2.3/28"


@pytest.mark.reference
@needs_go
def test_dry_run_changes_nothing(tmp_path):
    data = go_made(tmp_path / "data")
    before = networks_fingerprint(data)
    dry = ctl_json(data, "import", "--dry-run")
    assert networks_fingerprint(data) == before
    assert sorted(os.listdir(data)) == sorted(NETS), "a dry run created a file"
    assert [s["dry_run"] for s in dry] == [True] * len(NETS)
    real = ctl_json(data, "import")
    for d, r in zip(dry, real, strict=True):
        assert dict(d, dry_run=False) == r
    # With a database that already holds them: nothing to do, nothing changed.
    leases, events = ctl_json(data, "list"), ctl_json(data, "history")
    db = data / paths.DB_NAME
    db_bytes = db.read_bytes()
    again = ctl_json(data, "import", "--dry-run")
    assert [s["imported"] for s in again] == [[]] * len(NETS)
    assert ctl_json(data, "list") == leases and ctl_json(data, "history") == events
    assert db.read_bytes() == db_bytes


@pytest.mark.reference
@needs_go
def test_source_files_never_modified(tmp_path):
    src = go_made(tmp_path / "go")
    os.mkfifo(src / "v4" / "10.1.2.104")
    before = networks_fingerprint(src)
    time.sleep(0.01)
    ipamctl("import", "--from", str(src), "--dry-run", data_dir=tmp_path / "a")
    ipamctl("import", "--from", str(src), data_dir=tmp_path / "a")
    ipamctl("import", "--from", str(src), data_dir=tmp_path / "a")
    assert networks_fingerprint(src) == before
    # In place (the default): the network directories stay exactly as Go left them.
    ipamctl("import", data_dir=src)
    ipamctl("import", data_dir=src)
    assert networks_fingerprint(src) == before


def test_import_waits_for_host_locals_lock(tmp_path):
    data = tmp_path / "data"
    (data / "net").mkdir(parents=True)
    (data / "net" / "10.1.2.2").write_bytes(b"a\r\neth0")
    (data / "net" / "lock").write_bytes(b"")
    holder = os.open(data / "net" / "lock", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    proc = subprocess.Popen([IPAMCTL, "--data-dir", str(data), "-o", "json", "import"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_queued(data / "net" / "lock", proc.pid, polling=True)
        assert proc.poll() is None, "import finished while host-local held the lock"
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [x["ip"] for x in json.loads(out)[0]["imported"]] == ["10.1.2.2"]


def test_progress_bar_on_a_terminal(tmp_path, runner, monkeypatch):
    src = tmp_path / "src"
    (src / "big").mkdir(parents=True)
    for n in range(2, 250):
        (src / "big" / ("10.1.2.%d" % n)).write_bytes(b"c%d\r\neth0" % n)
    args = ["--data-dir", str(tmp_path / "data"), "import", "--from", str(src), "--dry-run"]
    plain = runner.invoke(cli, args)
    assert plain.exit_code == 0, plain.output
    assert "importing" not in plain.stderr
    monkeypatch.setattr("host_local_sqlite_cli.output.is_terminal", lambda: True)
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert "importing" in shown.stderr
    assert "big: would import 248" in shown.stdout
    # JSON is for programs: never a bar.
    as_json = runner.invoke(cli, ["-o", "json"] + args)
    assert "importing" not in as_json.stderr
    assert json.loads(as_json.stdout)[0]["counts"]["imported"] == 248


# -- legacy leases ---------------------------------------------------------------------
def test_imported_legacy_lease(tmp_path):
    """An ID-only lease: CHECK and DEL by container ID alone find it (as in host-local),
    and the mirror writes it back as it was."""
    data = tmp_path / "data"
    (data / "v4").mkdir(parents=True)
    (data / "v4" / "10.1.2.12").write_bytes(b"old")
    (data / "v4" / "10.1.2.13").write_bytes(b"new\r\neth0")
    ipamctl("import", data_dir=data)
    assert db_leases(data) == {("v4", "10.1.2.12", "old", None),
                               ("v4", "10.1.2.13", "new", "eth0")}
    out = tmp_path / "out"
    assert ctl_json(data, "export", "--to", str(out)) == {"v4": [
        ["missing", "10.1.2.12"], ["missing", "10.1.2.13"]]}
    assert (out / "v4" / "10.1.2.12").read_bytes() == b"old"
    assert ctl_json(data, "check") == {"ok": True, "problems": [], "findings": []}
    assert ours("CHECK", "v4", data, "old", "eth5") == (0, None)
    assert ours("DEL", "v4", data, "old", "eth3") == (0, None)
    assert db_leases(data) == {("v4", "10.1.2.13", "new", "eth0")}
    assert sorted(os.listdir(data / "v4")) == ["10.1.2.13", "lock"]
    assert [(e["event"], e["reason"], e["ifname"]) for e in ctl_json(
        data, "history", "--ip", "10.1.2.12")] == [("allocate", "import", None),
                                                   ("release", "del", None)]


# -- round trips with export -----------------------------------------------------------
@pytest.mark.reference
@needs_go
def test_export_after_import_reproduces_go_byte_for_byte(tmp_path):
    src = go_made(tmp_path / "go", extras=False)
    (src / "v4" / "10.1.2.12").write_bytes(b"old")  # modern host-local still keeps these
    data = tmp_path / "data"
    ipamctl("import", "--from", str(src), data_dir=data)
    out = tmp_path / "out"
    ipamctl("export", "--to", str(out), data_dir=data)
    exported = contents(snapshot_networks(out))
    assert exported == contents(snapshot_networks(src))
    assert exported["v4/lock"] == b"" and exported["v4/10.1.2.2"] == b"c1\r\neth0"


def test_import_after_export_reproduces_the_database(tmp_path):
    first = tmp_path / "first"
    (first / "v4").mkdir(parents=True)
    (first / "v4" / "10.1.2.12").write_bytes(b"old")  # adopted: a legacy lease
    for name in NETS:
        for command, cid, ifname in GO_HISTORY:
            ours(command, name, first, cid, ifname)
    ours("DEL", "dual", first, "c6")
    out = tmp_path / "out"
    ipamctl("export", "--to", str(out), data_dir=first)
    second = tmp_path / "second"
    summaries = ctl_json(second, "import", "--from", str(out))

    def leases(data_dir):
        return sorted((x["network"], x["ip"], x["range_set"], x["container_id"], x["ifname"])
                      for x in ctl_json(data_dir, "list"))

    assert leases(second) == leases(first)
    assert ("v4", "10.1.2.12", 0, "old", None) in leases(second)
    assert any(x[0] == "dual" and x[2] == 1 for x in leases(second))
    for s in summaries:
        assert s["skipped"] == [] and s["conflicts"] == []
        assert s["cursors"] == cursors_in(first, s["network"])
    again = tmp_path / "again"
    ipamctl("export", "--to", str(again), data_dir=second)
    assert contents(snapshot_networks(again)) == contents(snapshot_networks(out))


# -- automatic adoption by the plugin ------------------------------------------------
@pytest.mark.reference
@needs_go
def test_adoption_on_first_add(tmp_path):
    made = go_made(tmp_path / "made")
    theirs = copy(made, tmp_path / "go")
    mine = copy(made, tmp_path / "ours")
    for name in NETS:
        assert ours("ADD", name, mine, "new") == go("ADD", name, theirs, "new"), name
    assert db_leases(mine) == files_leases(theirs)
    assert contents(snapshot_networks(mine)) == contents(snapshot_networks(theirs))
    # A repeated ADD of an adopted attachment returns the address Go gave it (Go itself
    # would refuse: "duplicate allocation is not allowed").
    held = files_leases(made)
    for name in NETS:
        for cid, ifname in (("c1", "eth0"), ("c1", "eth1"), ("c6", "eth0")):
            want = sorted(ip for net, ip, c, i in held if (net, c, i) == (name, cid, ifname))
            rc, out = ours("ADD", name, mine, cid, ifname)
            if not want:
                continue  # "multi": c6 found no address in Go
            assert rc == 0, out
            assert sorted(i["address"].split("/")[0] for i in out["ips"]) == want
    assert db_leases(mine) == files_leases(theirs)
    adopted = [e for e in ctl_json(mine, "history") if e["reason"] == "adopt"]
    assert {(e["network"], e["ip"], e["container_id"], e["ifname"]) for e in adopted} == held


@pytest.mark.reference
@needs_go
def test_adoption_reports_skipped_files(tmp_path):
    from cniexec import OURS, run

    data = go_made(tmp_path / "data")
    out = run(OURS, "ADD", conf("v4", data), container_id="new")
    assert out.status == 0, out
    err = out.stderr.decode()
    assert "address file(s) name no owner: their addresses stay unused" in err
    for name in JUNK:  # files not named like an address are nobody's lease: not mentioned
        assert (name in err) == (name in ("10.1.2.100", "10.1.2.101")), name
    assert ("v4", "10.1.2.12", "old", None) in db_leases(data)
    assert {x[0] for x in db_leases(data)} == {"v4"}  # only the network that was opened


@pytest.mark.reference
@needs_go
def test_adoption_outlives_a_failing_add(tmp_path):
    """"multi"'s pool is full in Go's files: the ADD fails as Go's does, but the
    adoption, committed on its own before the ADD's transaction, stays (issue 25: a
    failing call must not take the reconcile back); the files are left alone."""
    made = go_made(tmp_path / "made", extras=False)
    assert go("ADD", "multi", made, "fill")[0] == 0
    theirs = copy(made, tmp_path / "go")
    mine = copy(made, tmp_path / "ours")
    want = go("ADD", "multi", theirs, "x")
    assert want == (1, {"code": 999, "msg": "failed to allocate for range 0: no IP addresses "
                        "available in range set: 10.3.0.1-10.3.0.2,10.3.1.1-10.3.1.6"})
    assert ours("ADD", "multi", mine, "x") == want
    held = {x for x in files_leases(made) if x[0] == "multi"}
    assert held and db_leases(mine) == held
    assert {(e["network"], e["ip"], e["container_id"], e["ifname"], e["reason"])
            for e in ctl_json(mine, "history")} == {x + ("adopt",) for x in held}
    assert contents(snapshot_networks(mine)) == contents(snapshot_networks(made))
    assert ctl_json(mine, "check") == {"ok": True, "problems": [], "findings": []}
    # Both go on alike.
    for command, cid in (("DEL", "c3"), ("ADD", "x"), ("ADD", "y")):
        assert ours(command, "multi", mine, cid) == go(command, "multi", theirs, cid)
    assert db_leases(mine) == {x for x in files_leases(theirs) if x[0] == "multi"}
    assert contents(snapshot_networks(mine)) == contents(snapshot_networks(theirs))


@pytest.mark.reference
@needs_go
@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_adoption_by_del_and_check(tmp_path, command):
    made = go_made(tmp_path / "made", extras=False)
    theirs = copy(made, tmp_path / "go")
    mine = copy(made, tmp_path / "ours")
    for name in NETS:
        assert ours(command, name, mine, "c3") == go(command, name, theirs, "c3"), name
        assert ours(command, name, mine, "c1", "eth1") == go(command, name, theirs, "c1",
                                                             "eth1")
    assert db_leases(mine) == files_leases(theirs)
    assert contents(snapshot_networks(mine)) == contents(snapshot_networks(theirs))


def test_adopt_false_imports_nothing(tmp_path):
    data = tmp_path / "data"
    (data / "v4").mkdir(parents=True)
    (data / "v4" / "10.1.2.9").write_bytes(b"c1\r\neth0")
    (data / "v4" / "last_reserved_ip.0").write_bytes(b"10.1.2.9")
    rc, out = ours("ADD", "v4", data, "new", adopt=False)
    assert rc == 0, out
    assert {(x[2], x[3]) for x in db_leases(data)} == {("new", "eth0")}
    assert [e["reason"] for e in ctl_json(data, "history")] == ["add"]
    # The database now knows the network: adoption never happens later either.
    rc, out = ours("ADD", "v4", data, "other")
    assert rc == 0, out
    assert {x[2] for x in db_leases(data)} == {"new", "other"}
    assert "import" not in {e["reason"] for e in ctl_json(data, "history")}


def test_no_adoption_once_the_database_knows_the_network(tmp_path):
    """The database has a record of "v4" (served with export off); host-local files that
    show up later are not adopted by the plugin (ipamctl import is for that)."""
    data = tmp_path / "data"
    assert ours("ADD", "v4", data, "a", export=False)[0] == 0
    assert not (data / "v4").exists()
    (data / "v4").mkdir()
    (data / "v4" / "10.1.2.9").write_bytes(b"c1\r\neth0")
    assert ours("ADD", "v4", data, "b", export=False)[0] == 0
    assert {x[2] for x in db_leases(data)} == {"a", "b"}
    [s] = ctl_json(data, "import")
    assert [x["ip"] for x in s["imported"]] == ["10.1.2.9"]


def test_adoption_without_go(tmp_path):
    """Hand-made files of every version: the first ADD adopts them and continues after
    the cursor; a repeated ADD of an adopted legacy container returns its address."""
    data = tmp_path / "data"
    d = data / "v4"
    d.mkdir(parents=True)
    for name, content in {"10.1.2.2": b"a\r\neth0", "10.1.2.3": b"b\neth0",
                          "10.1.2.4": b"old", "10.1.2.6": b"", "junk": b"?",
                          "last_reserved_ip": b"10.1.2.4", "lock": b""}.items():
        (d / name).write_bytes(content)
    before = fingerprint(d)
    rc, out = ours("ADD", "v4", data, "new")
    assert rc == 0 and out["ips"][0]["address"] == "10.1.2.5/28"
    assert db_leases(data) == {("v4", "10.1.2.2", "a", "eth0"), ("v4", "10.1.2.3", "b", "eth0"),
                               ("v4", "10.1.2.4", "old", None), ("v4", "10.1.2.5", "new", "eth0")}
    after = fingerprint(d)
    for name in ("10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.6", "junk", "last_reserved_ip"):
        assert after[name] == before[name], name
    assert ours("ADD", "v4", data, "old", "eth9")[1]["ips"][0]["address"] == "10.1.2.4/28"
    assert ours("ADD", "v4", data, "b")[1]["ips"][0]["address"] == "10.1.2.3/28"


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_open_the_network_too(tmp_path, command):
    """CNI 1.1's GC and STATUS are the first command on a node often enough: they adopt
    host-local's files as well (GC then releases the stale ones; STATUS sees them)."""
    data = tmp_path / "data"
    d = data / "small"
    d.mkdir(parents=True)
    for n in range(2, 7):  # a /29 (.2-.6) that host-local filled
        (d / ("10.9.0.%d" % n)).write_bytes(b"c%d\r\neth0" % n)
    (d / "last_reserved_ip.0").write_bytes(b"10.9.0.6")
    config = {"cniVersion": "1.1.0", "name": "small", "type": "bridge",
              "ipam": {"type": "host-local", "dataDir": str(data), "subnet": "10.9.0.0/29"},
              "cni.dev/valid-attachments": [{"containerID": "c3", "ifname": "eth0"}]}
    out = run_plugin(command, config)
    if command == "STATUS":
        assert out.status != 0 and "no IP addresses available" in out.json["msg"], out
        assert len(db_leases(data)) == 5
    else:
        assert (out.status, out.out) == (0, ""), out
        assert db_leases(data) == {("small", "10.9.0.3", "c3", "eth0")}
        assert sorted(os.listdir(d)) == ["10.9.0.3", "last_reserved_ip.0", "lock"]
        assert [(e["reason"], e["event"]) for e in ctl_json(data, "history", "--ip",
                                                             "10.9.0.2")] == [
            ("adopt", "allocate"), ("gc", "release")]
