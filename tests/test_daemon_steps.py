"""Every step's cost of a forwarded call, and the syncs it makes (issue 28).

A real ``ipamctl serve`` and real plugin processes: ``--trace-steps`` records when each
call passed each step (:mod:`ipam.daemon.steps`, read by ``tools/bench_steps.py``); strace on
the daemon counts the syncs a call makes, and proves that none is answered before the
sync that makes its COMMIT durable.
"""
import json
import os
import re
import shutil
import signal
import subprocess
from contextlib import contextmanager

import pytest
from helpers import NodeDaemon, run_plugin, wait_until

from ipam import paths
from ipam.daemon import steps

SUBNET = {"subnet": "10.9.0.0/24"}


def _conf(tmp_path):
    return {"cniVersion": "1.0.0", "name": "steps", "type": "bridge",
            "ipam": dict(type="host-local-sqlite", dataDir=str(tmp_path / "data"), **SUBNET)}


def _call(daemon, conf, command, cid):
    out = run_plugin(command, conf, env_extra={paths.DAEMON_ENV: daemon.socket},
                     container_id=cid)
    assert out.status == 0, out.out
    return out


def _records(path, count):
    """The trace's records, once it holds ``count`` (a call's comes after its answer)."""
    def read():
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f.read().splitlines()]
    wait_until(lambda: len(read()) >= count, "%d traced calls in %s" % (count, path))
    return read()


def test_trace_steps_marks_each_step_of_a_forwarded_add_and_del(tmp_path):
    trace = tmp_path / "steps.jsonl"
    daemon = NodeDaemon(tmp_path, "--trace-steps", str(trace))
    try:
        daemon.wait_ready()
        conf = _conf(tmp_path)
        _call(daemon, conf, "ADD", "c1")
        _call(daemon, conf, "DEL", "c1")
        add, delete = _records(trace, 2)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert (add["command"], delete["command"]) == ("ADD", "DEL")
    for record in (add, delete):
        marks = record["marks"]
        assert list(marks) == list(steps.ORDER), marks  # every step, in a call's order
        assert sorted(marks.values()) == list(marks.values())
        assert all(ms >= 0 for ms in steps.durations(record).values())
    # the new address file's writes and sync are the mirror's share of ADD's body
    assert steps.MIRROR in steps.durations(add)
    assert steps.MIRROR not in steps.durations(delete)


def test_a_daemon_that_does_not_trace_writes_no_record(tmp_path):
    daemon = NodeDaemon(tmp_path)
    try:
        daemon.wait_ready()
        _call(daemon, _conf(tmp_path), "ADD", "c1")
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert sorted(os.listdir(tmp_path)) == ["d.sock.lock", "daemon-%d.log" % NodeDaemon._count,
                                            "data"]


# strace's lines for the daemon: "<tid> <call>(<fd><path>>, ...) = <result>"
SYSCALL = re.compile(r'^(\d+) +(\w+)\((?:(\d+)<([^>]*)>)?(.*)$')
TRACED = "trace=fsync,fdatasync,sync_file_range,syncfs,msync,ftruncate,truncate,sendto,sendmsg"


@contextmanager
def _straced(daemon, log):
    """strace -f on the daemon (every thread, new ones too), its syncs, truncations and
    sends, each with the file it names (-y), until the block ends."""
    tracer = subprocess.Popen(["strace", "-f", "-y", "-qq", "-s", "1", "-e", TRACED,
                               "-o", str(log), "-p", str(daemon.pid)])
    # attached once the daemon's status shows a tracer
    wait_until(lambda: _tracer_of(daemon.pid) == tracer.pid, "strace to attach")
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)


def _tracer_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("TracerPid:")).split()[1])


def _events(log):
    """(thread, call, path, rest) for each traced call, in order."""
    out = []
    with open(log) as f:
        for line in f:
            m = SYSCALL.match(line)
            if m and "resumed>" not in line:
                out.append((m.group(1), m.group(2), m.group(4) or "", m.group(5)))
    return out


@pytest.mark.strace
def test_each_call_syncs_its_commit_and_new_file_and_answers_after_them(tmp_path):
    """The syncs a forwarded call makes, pinned: ADD syncs its new address file's data
    and the WAL at COMMIT (synchronous=FULL), DEL the WAL alone; nothing else but the
    checkpoints' few. And a thread sends ANSWER only after the WAL sync of its call."""
    assert shutil.which("strace"), "strace is needed (Debian: apt-get install strace)"
    daemon = NodeDaemon(tmp_path)
    log = tmp_path / "daemon.strace"
    calls = 40
    try:
        daemon.wait_ready()
        conf = _conf(tmp_path)
        _call(daemon, conf, "ADD", "warm")  # the schema made, the store pooled
        with _straced(daemon, log):
            for i in range(calls):
                _call(daemon, conf, "ADD", "c%d" % i)
            for i in range(calls):
                _call(daemon, conf, "DEL", "c%d" % i)  # its answer sent: its client got it
    finally:
        assert daemon.stop() == 0, daemon.log()
    events = _events(log)
    syncs = [(call, path) for _, call, path, _ in events if "sync" in call]
    address_files = [s for s in syncs if paths.TMP_PREFIX in s[1]]
    wal = [s for s in syncs if s[1].endswith("-wal")]
    database = [s for s in syncs if s[1].endswith(".db")]
    assert len(address_files) == calls and {c for c, _ in address_files} == {"fdatasync"}
    assert len(wal) >= 2 * calls  # one COMMIT each ...
    # ... and each checkpoint's (the WAL before it, the database after, a restarted
    # WAL's header): a few every 20 calls or so
    assert len(wal) + len(database) <= 2 * calls + calls // 3, syncs
    assert len(syncs) == len(address_files) + len(wal) + len(database), syncs
    answers = 0
    for thread in {t for t, *_ in events}:
        synced = False  # since this thread's last answer
        for t, call, path, rest in events:
            if t != thread:
                continue
            if call == "fdatasync" and path.endswith("-wal"):
                synced = True
            elif call == "sendto" and rest.startswith(', "A"'):
                assert synced, "thread %s answered before its COMMIT's sync" % thread
                synced = False
                answers += 1
    assert answers == 2 * calls


@pytest.mark.strace
def test_the_daemons_wal_is_reused_in_place_never_truncated(tmp_path):
    """The daemon's connections stay open, so SQLite's own checkpoints restart its WAL
    from the start: a COMMIT overwrites blocks the file has, and its sync (still
    synchronous=FULL) writes no metadata. Truncating the WAL, as a plugin process must
    (sqlite_db.trim_wal), would make each COMMIT extend the file again."""
    from ipam.store.sqlite_db import WAL_TRIM_BYTES

    assert shutil.which("strace"), "strace is needed (Debian: apt-get install strace)"
    daemon = NodeDaemon(tmp_path)
    log = tmp_path / "daemon.strace"
    calls = 150  # a WAL of 1 MiB holds about 50 calls' frames
    wal = tmp_path / "data" / ".host-local-sqlite.db-wal"
    sizes = []
    try:
        daemon.wait_ready()
        conf = _conf(tmp_path)
        _call(daemon, conf, "ADD", "warm")
        with _straced(daemon, log):
            for i in range(calls):
                _call(daemon, conf, "ADD", "c%d" % i)
                _call(daemon, conf, "DEL", "c%d" % i)
                sizes.append(wal.stat().st_size)
    finally:
        assert daemon.stop() == 0, daemon.log()
    truncated = [e for e in _events(log) if "truncate" in e[1] and e[2].endswith("-wal")]
    assert truncated == []
    assert max(sizes) <= WAL_TRIM_BYTES  # a plugin process beside it leaves it alone too
    assert sizes[-1] > 0
