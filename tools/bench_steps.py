"""Every step's cost of a forwarded ADD and DEL (``make bench-steps``).

One node daemon runs with ``--trace-steps``: each call it serves appends when it passed
each step (:mod:`ipam.daemon.steps`), on CLOCK_MONOTONIC, which this process reads too. Each
round spawns one client of each kind in turn (interleaved, so the machine's load falls
on all alike: the native thin client, the Python launcher, and Go host-local for the
yardstick), ADD then DEL of a new container, and notes its spawn and its exit beside the
daemon's marks: client start (spawn to the daemon's accept), the hand-over, the
daemon's parse, the door, the views' round trip, the config, the locks, BEGIN, the
SQL, the mirror's writes and syncs, COMMIT (its WAL sync), what follows it, the render,
the answer, and the client's exit. The figures are medians.

Then the syncs: ``strace -f`` on the daemon over more calls, every fsync, fdatasync,
sync_file_range, syncfs and msync, with the file it synced (``-y``) and its time
(``-T``): how many a call makes, of what, and what they cost.

Then the burst: 100 plugin ADDs at once (then their DELs) through the daemon with the
native client, against Go host-local's, interleaved, the median of ``--bursts``.

With ``--cri`` (root, containerd, runc): the calls containerd makes for a pod
(RunPodSandbox, StopPodSandbox, RemovePodSandbox), counted and timed by the trace.

With ``--baseline REV``, a daemon of that revision beside ours (tools/bench.py's
``--baseline``), its calls interleaved with ours: a change's cost, before and after.

    .venv/bin/python tools/bench_steps.py [--rounds 200] [--bursts 5] [--baseline REV] [--cri]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from helpers import NodeDaemon  # noqa: E402

from ipam import paths  # noqa: E402
from ipam.daemon import steps  # noqa: E402
from ipam.install import launcher  # noqa: E402

NATIVE = os.path.join(REPO, "build", "native", "host-local-sqlite")
GO = os.environ.get("HLS_GO_PLUGIN", "/usr/lib/cni/host-local")
SYNCS = "fsync,fdatasync,sync_file_range,syncfs,msync"
FELL_BACK = b"running the call in process"
# The rows of the table, in a call's order: (what, how it is measured).
ROWS = [
    ("client start", "spawn to the daemon's accept"),
    ("request", "accept to the request read whole"),
    ("parse", "environment and config decoded"),
    ("door", "the peer's powers, the call's paths and bound"),
    ("views", "PROVE, the client's VIEWS, compared"),
    ("taken", "TAKEN sent"),
    ("config", "cni.main: skel's checks, config.load"),
    ("locks", "pool store ready, host-local's lock"),
    ("begin", "writers' queue, BEGIN IMMEDIATE, schema read"),
    ("body", "node stamp, network row, allocator's SQL"),
    (steps.MIRROR, "journal, address file, its data sync, link"),
    ("apply", "removed files, cursor file, stamp"),
    ("commit", "COMMIT (the WAL's sync)"),
    ("after-commit", "journal removed, locks released"),
    ("render", "result rendered"),
    ("answer", "ANSWER sent"),
    ("client exit", "answer sent to the client's exit"),
]


def conf(data_dir, daemon=None):
    ipam = {"type": "host-local-sqlite", "subnet": "10.128.0.0/16", "dataDir": data_dir}
    if daemon is not None:
        ipam["daemon"] = daemon
    return json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                       "ipam": ipam}).encode()


def env(command, cid):
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/bin:/bin"}


def invoke(program, config, command, cid):
    """One call: (spawn ns, exit ns, pid)."""
    start = time.monotonic_ns()
    proc = subprocess.Popen([program], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env(command, cid))
    out, err = proc.communicate(config)
    end = time.monotonic_ns()
    if proc.returncode or FELL_BACK in err:
        raise SystemExit("%s %s: %s %s" % (program, command, out, err))
    return start, end, proc.pid


def read_trace(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def step_rows(variants, go_conf, rounds):
    """Each variant's median step times for ADD and DEL, and Go's whole call.
    ``variants``: name -> (program, config, its daemon's trace file)."""
    seen = {trace: len(read_trace(trace)) for _, _, trace in variants.values()}
    spawned = {}  # pid -> (variant, command, spawn ns, exit ns)
    go = {"ADD": [], "DEL": []}
    names = list(variants)
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]  # none always first
        for command in ("ADD", "DEL"):
            for name in order:
                program, config, _ = variants[name]
                start, end, pid = invoke(program, config, command, "%s-%d" % (name, i))
                spawned[pid] = (name, command, start, end)
            start, end, _ = invoke(GO, go_conf, command, "steps-%d" % i)
            go[command].append((end - start) / 1e6)
    table = {}
    for trace, before in seen.items():
        wanted = before + 2 * rounds * sum(1 for v in variants.values() if v[2] == trace)
        while len(read_trace(trace)) < wanted:
            time.sleep(0.01)  # a call's record follows its answer by microseconds
        for record in read_trace(trace)[before:]:
            name, command, start, end = spawned.pop(record["client_pid"])
            marks = record["marks"]
            row = steps.durations(record)
            row["client start"] = (marks["accepted"] - start) / 1e6
            row["client exit"] = (end - marks["answer"]) / 1e6
            row["whole call"] = (end - start) / 1e6
            for step, ms in row.items():
                table.setdefault((name, command), {}).setdefault(step, []).append(ms)
    out = {key: {step: statistics.median(v) for step, v in row.items()}
           for key, row in table.items()}
    for command, times in go.items():
        out[("go", command)] = {"whole call": statistics.median(times)}
    return out


def baseline_daemon(tmp, rev, trace):
    """A node daemon of revision ``rev`` (tools/bench.py's --baseline, which must know
    --trace-steps), tracing into ``trace``: a change's cost, measured beside it."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import bench

    _, ctl = bench.install_baseline(tmp, rev)
    directory = os.path.join(tmp, "baseline-daemon")
    os.makedirs(directory)
    sock = os.path.join(directory, "d.sock")
    daemon = NodeDaemon(directory, socket=sock,
                        argv=ctl + ["serve", "--socket", sock, "--trace-steps", trace])
    daemon.wait_ready(30)
    return daemon


def sync_counts(daemon, program, config, calls):
    """The daemon's syncs over ``calls`` ADDs and as many DELs (strace -f -y -T)."""
    log = os.path.join(os.path.dirname(daemon.socket), "syncs-%d.strace" % daemon.pid)
    tracer = subprocess.Popen(["strace", "-f", "-y", "-T", "-e", "trace=" + SYNCS,
                               "-o", log, "-p", str(daemon.pid)],
                              stderr=subprocess.PIPE)
    tracer.stderr.readline()  # "strace: Process N attached" (one line per thread follows)
    time.sleep(0.5)  # its other threads attached: strace says so only on its stderr
    per = {}
    for command in ("ADD", "DEL"):
        mark = os.path.getsize(log) if os.path.exists(log) else 0
        for i in range(calls):
            invoke(program, config, command, "syncs-%d" % i)
        time.sleep(0.2)
        with open(log) as f:
            f.seek(mark)
            per[command] = [line for line in f.read().splitlines() if "(" in line]
    tracer.send_signal(signal.SIGINT)
    tracer.wait(10)
    out = {}
    for command, lines in per.items():
        kinds = {}
        for line in lines:
            call = line.split(None, 1)[1].split("(", 1)[0]
            target = line.split("<", 1)[1].split(">", 1)[0] if "<" in line else "?"
            what = "WAL" if target.endswith(paths.SQLITE_WAL) else (
                "database" if target.endswith(".db") else
                "address file" if ".tmp." in target else os.path.basename(target))
            took = float(line.rsplit("<", 1)[1].rstrip(">")) * 1000
            kinds.setdefault("%s %s" % (call, what), []).append(took)
        out[command] = {k: (len(v) / calls, statistics.median(v)) for k, v in kinds.items()}
    return out


def cpu_ms(pid):
    """A running process's CPU time so far, in ms."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def burst(program, config, count, daemon):
    """``count`` ADDs at once, then their DELs: each one's wall time (s), and the
    daemon's CPU per call (ms)."""
    walls = {}
    cpu = cpu_ms(daemon.pid)
    for command in ("ADD", "DEL"):
        os.sync()
        time.sleep(0.5)
        start = time.perf_counter()
        procs = [subprocess.Popen([program], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env(command, "burst-%d" % i))
                 for i in range(count)]
        for p in procs:
            p.stdin.write(config)
            p.stdin.close()
        for p in procs:
            p.stdout.read()
            err = p.stderr.read()
            if p.wait() or FELL_BACK in err:
                raise SystemExit("%s burst %s: %s" % (program, command, err))
        walls[command] = time.perf_counter() - start
    walls["daemon cpu"] = (cpu_ms(daemon.pid) - cpu) / (2 * count)
    return walls


def cri_calls(daemon_dir, trace):
    """The calls containerd makes per RunPodSandbox, StopPodSandbox and
    RemovePodSandbox, from a traced daemon's records: (command, daemon ms from accept
    to answer) each."""
    from containerd import Containerd

    daemon = NodeDaemon(daemon_dir, "--trace-steps", trace,
                        socket=os.path.join(daemon_dir, "cri.sock"))
    daemon.wait_ready(30)
    c = Containerd(plugin=NATIVE)
    try:
        c.network("hlss", "10.126.0.0/20", data_dir=os.path.join(c.directory, "ipam"),
                  daemon=daemon.socket)
        c.start()
        warm = c.run_pod("warm")  # the first ADD creates the database's schema
        c.stop_pod(warm)
        c.remove_pod(warm)
        phases = {}
        sid = None
        for phase in ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"):
            seen = daemon.health()["calls"]
            if sid is None:
                sid = c.run_pod("counted")
            elif phase == "StopPodSandbox":
                c.stop_pod(sid)
            else:
                c.remove_pod(sid)
            served = daemon.health()["calls"]
            while len(read_trace(trace) if os.path.exists(trace) else ()) < served:
                time.sleep(0.01)  # a call's record follows its count by microseconds
            phases[phase] = [
                (r["command"], round((r["marks"]["answer"] - r["marks"]["accepted"]) / 1e6, 2))
                for r in read_trace(trace)[seen:served]]
        return phases
    finally:
        c.close()
        daemon.stop(60)


def report(table, syncs, bursts, count):
    keys = [k for k in sorted(table) if k[0] != "go"]
    print("\n| step | what | " + " | ".join("%s %s ms" % k for k in keys) + " |")
    print("|---|---|" + "---:|" * len(keys))
    for step, what in ROWS + [("whole call", "spawn to exit")]:
        print("| %s | %s | %s |" % (step, what, " | ".join(
            "%.2f" % table[k][step] if step in table[k] else "" for k in keys)))
    print("\nGo host-local, whole call: ADD %.2f ms, DEL %.2f ms"
          % (table[("go", "ADD")]["whole call"], table[("go", "DEL")]["whole call"]))
    for name, per in syncs.items():
        for command, kinds in per.items():
            print("%s: syncs per %s: %s" % (name, command, ", ".join(
                "%s %.2f (%.2f ms)" % (k, n, ms) for k, (n, ms) in sorted(kinds.items()))
                or "none"))
    go = bursts.pop("go")
    for name, runs in bursts.items():
        for command in ("ADD", "DEL"):
            ours = statistics.median(b[command] for b in runs)
            theirs = statistics.median(b[command] for b in go)
            print("burst of %d %ss: %s %.3f s, Go %.3f s, ratio %.2f"
                  % (count, command, name, ours, theirs, ours / theirs))
        print("%s: daemon CPU per call in the bursts: %.2f ms"
              % (name, statistics.median(b["daemon cpu"] for b in runs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sync-calls", type=int, default=50)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--burst-size", type=int, default=100)
    ap.add_argument("--baseline", metavar="REV",
                    help="a daemon of this revision too, its calls interleaved with ours")
    ap.add_argument("--cri", action="store_true", help="count containerd's calls too")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", REPO, "native"], check=True)
    tmp = tempfile.mkdtemp(prefix="bench-steps-")
    trace = os.path.join(tmp, "steps.jsonl")
    daemons = {"native": NodeDaemon(tmp, "--trace-steps", trace)}
    try:
        daemons["native"].wait_ready(30)
        launcher.install(tmp, "launcher")
        theirs = os.path.join(tmp, "go")
        os.makedirs(theirs)
        variants = {}
        if args.baseline:
            base_trace = os.path.join(tmp, "baseline-steps.jsonl")
            daemons["baseline"] = baseline_daemon(tmp, args.baseline, base_trace)
            base = os.path.join(tmp, "baseline")
            os.makedirs(base)
            variants["baseline"] = (NATIVE, conf(base, daemons["baseline"].socket),
                                    base_trace)
        ours = os.path.join(tmp, "ours")
        os.makedirs(ours)
        forwarded = conf(ours, daemons["native"].socket)
        variants["native"] = (NATIVE, forwarded, trace)
        variants["python"] = (os.path.join(tmp, "launcher"), forwarded, trace)
        for program, config, _ in list(variants.values()) + [(GO, conf(theirs), None)]:
            invoke(program, config, "ADD", "warm")
        table = step_rows(variants, conf(theirs), args.rounds)
        syncs = {name: sync_counts(daemons[name], NATIVE, variants[name][1],
                                   args.sync_calls) for name in daemons}
        bursts = {name: [] for name in list(daemons) + ["go"]}
        for _ in range(args.bursts):
            for name, daemon in daemons.items():
                bursts[name].append(burst(NATIVE, variants[name][1], args.burst_size,
                                          daemon))
            bursts["go"].append(burst(GO, conf(theirs), args.burst_size, daemons["native"]))
        report(table, syncs, bursts, args.burst_size)
        if args.cri:
            print("containerd's calls (command, daemon ms):",
                  json.dumps(cri_calls(tmp, os.path.join(tmp, "cri.jsonl"))))
    finally:
        for daemon in daemons.values():
            daemon.stop(60)
    print("\n(%s)" % tmp)


if __name__ == "__main__":
    main()
