"""Every step's cost of a forwarded call, and the syncs it makes (issue 28).

A real ``ipamctl serve`` and real plugin processes: ``--trace-steps`` records when each
call passed each step (:mod:`ipam.steps`, read by ``tools/bench_steps.py``); strace on
the daemon counts the syncs a call makes, and proves that none is answered before the
sync that makes its COMMIT durable.
"""
import json
import os

from helpers import NodeDaemon, run_plugin, wait_until

from ipam import paths, steps

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
