"""``make soak``: a quarter of churn in one run, and whether anything grows with it.

A node whose 110 pods are replaced every hour makes about 250,000 ADD/DEL pairs in three
months. This run makes that many (``--calls``, 500,000 by default) on a node of its own
(:mod:`soak_node`): ``--networks`` networks of ``--pods`` live pods each, in one dataDir
with ``historyRetention`` set, a node daemon answering most calls through its socket,
``--process-share`` percent of them made by plugin processes in process, and
``--go-share`` percent by Go host-local beside us on the first network.

Every pool is filled first, and the churn runs unmeasured until ``historyRetention`` has
passed, so that history is as long as it will stay. Then the measured calls, one at a
time (a node's churn is a pod every half minute; one at a time times each call alone).
After each hundredth of them :mod:`soak_probe` samples the daemon, the database and the
mirror and audits every lease against the pods held live (a problem stops the run).
The calls of the first and of the last tenth are interleaved, pair by pair, with the
same pairs on a fresh node (made, filled and settled for each): the machine's load
cancels out of the ratio of their times. At the end ``ipamctl check`` must be clean and
the daemon must drain on SIGTERM (exit 0), having logged no internal error.

:mod:`soak_judge` says what "flat" means for each figure; the report is its table, and
the exit status 1 when any limit is passed. ``--json FILE`` keeps every sample and time.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))  # helpers.py: the programs, NodeDaemon

import soak_judge  # noqa: E402
import soak_node  # noqa: E402
import soak_probe  # noqa: E402

SLICES = 100  # samples, one after each hundredth of the measured calls
GC_EVERY = 5  # slices between the runtime's GC rounds
WINDOW = round(SLICES * soak_judge.WINDOW)


class Run:
    """The nodes of one run (the soaked one, a fresh one per window), each stopped or
    killed at its end."""

    def __init__(self, args, directory):
        self.args = args
        self.directory = directory
        self.nodes = []

    def node(self, name):
        """A new node in ``name``, filled and settled."""
        node = soak_node.Node(os.path.join(self.directory, name), self.args)
        self.nodes.append(node)
        node.settle()
        return node

    def kill(self):
        for node in self.nodes:
            node.daemon.kill()

    def fresh_done(self, fresh, into):
        """A fresh node's window is over: its call times kept, its daemon drained."""
        for kind, by_slice in fresh.times.items():
            into.setdefault(kind, {}).update((k, v) for k, v in by_slice.items() if k >= 0)
        status, internal = fresh.stop()
        if status or internal:
            raise soak_node.Failed("the fresh node's daemon exited %d and logged %d "
                                   "internal error(s):\n%s" % (status, internal,
                                                              fresh.daemon.log()[-3000:]))

    def soak(self):
        """``(samples, times, the fresh nodes' times, totals)``."""
        started = time.monotonic()
        node = self.node("soaked")
        probe = soak_probe.Probe(node)
        pairs = self.args.calls // 2
        say("filled and settled in %.0f s; measuring %d calls"
            % (time.monotonic() - started, pairs * 2))
        samples = [probe.sample(-1)]
        t0 = time.monotonic()
        fresh, fresh_times = None, {}
        for s in range(SLICES):
            if s in (0, SLICES - WINDOW):
                fresh = self.node("fresh-%d" % s)
            for n in (node, fresh):
                if n is not None:
                    n.slice = s
            for p in range(pairs * s // SLICES, pairs * (s + 1) // SLICES):
                node.pair(p)
                if fresh is not None:
                    fresh.pair(p)
            node.slice = None
            if fresh is not None and s in (WINDOW - 1, SLICES - 1):
                self.fresh_done(fresh, fresh_times)
                fresh = None
            if (s + 1) % GC_EVERY == 0:
                node.gc()
            samples.append(probe.sample(s))
            progress(samples[0], samples[-1], t0)
        seconds = time.monotonic() - t0
        probe.close()
        check = soak_probe.check(node)
        health = node.daemon.health()
        exit_status, internal = node.stop()
        totals = {"calls": samples[-1]["calls"] - samples[0]["calls"], "seconds": seconds,
                  "counts": dict(node.counts), "daemon_calls": node.counts["daemon"],
                  "fell_back": sum(node.fell_back.values()),
                  "fell_back_why": dict(node.fell_back), "check": check,
                  "internal_errors": internal, "daemon_exit": exit_status,
                  "health": health, "fd_floor": probe.floor, "audits": len(samples)}
        return samples, node.times, fresh_times, totals


def say(text):
    print(text, file=sys.stderr, flush=True)


def progress(first, sample, t0):
    if (sample["slice"] + 1) % (SLICES // 20):
        return
    calls = sample["calls"] - first["calls"]
    say("%3d%%  %7d calls  %5.0f calls/s  rss %.1f MiB  fds %d  db %.0f KiB  wal %.0f KiB  "
        "mirror %d entries" % (sample["slice"] + 1, calls, calls / (time.monotonic() - t0),
                               sample["rss_bytes"] / (1 << 20), sample["fds"],
                               sample["db_bytes"] / 1024, sample["wal_bytes"] / 1024,
                               sample["mirror_entries"]))


def report(samples, times, fresh, totals, args):
    """Print the verdict; whether the run was flat."""
    rows = soak_judge.judge(samples, times, fresh, totals)
    calls, first, last = totals["calls"], samples[0], samples[-1]
    print("soak: %d calls in %.0f s (%.0f calls/s) on %d networks of %d pods, "
          "historyRetention %s" % (calls, totals["seconds"], calls / totals["seconds"],
                                   args.networks, args.pods, args.history_retention))
    measured = {kind: sum(len(v) for k, v in by_slice.items() if k >= 0)
                for kind, by_slice in times.items() if kind != "gc"}
    print("measured calls: %s; fell back in process: %s; daemon CPU %.2f ms a call"
          % (", ".join("%s %d (%.1f%%)" % (kind, n, 100 * n / max(calls, 1))
                       for kind, n in measured.items()),
             totals["fell_back_why"] or 0,
             1000 * (last["cpu_s"] - first["cpu_s"]) / max(
                 last["daemon_calls"] - first["daemon_calls"], 1)))
    print()
    print(soak_judge.table(rows))
    ok = soak_judge.passed(rows)
    for r in rows:
        if r["ok"] is False:
            print("FAILED: %s (first %s, last %s, limit %s)" % (
                r["measure"], r["first"], r["last"], r["limit"]))
    if totals["check"]:
        print("ipamctl check:\n  " + "\n  ".join(totals["check"][:20]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "totals": totals, "samples": samples,
                       "rows": rows, "ok": ok, "times": times, "fresh": fresh}, f)
    print("soak: %s" % ("flat" if ok else "NOT flat"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500_000,
                    help="measured calls (ADD/DEL pairs times two)")
    ap.add_argument("--networks", type=int, default=10)
    ap.add_argument("--pods", type=int, default=110, help="live pods per network")
    ap.add_argument("--go-pods", type=int, default=10,
                    help="live pods of Go host-local's on the first network")
    ap.add_argument("--process-share", type=float, default=2.0,
                    help="percent of calls made by plugin processes, in process")
    ap.add_argument("--go-share", type=float, default=1.0,
                    help="percent of calls made by Go host-local (0: none)")
    ap.add_argument("--history-retention", default="5s",
                    help="the networks' historyRetention (seconds: the run's minutes stand "
                         "for a quarter's weeks); the churn settles this long first")
    ap.add_argument("--dir", help="work here (kept) instead of a new temporary directory")
    ap.add_argument("--json", metavar="FILE", help="write every sample and time here")
    args = ap.parse_args()
    if args.calls < 2 * SLICES:
        ap.error("--calls: at least %d (a pair in every hundredth)" % (2 * SLICES))
    if args.go_share and not os.access(soak_node.GO, os.X_OK):
        ap.error("Go host-local not found at %s (set HLS_GO_PLUGIN, or --go-share 0)"
                 % soak_node.GO)
    directory = args.dir or tempfile.mkdtemp(prefix="hls-soak-")
    os.makedirs(directory, exist_ok=True)
    run = Run(args, directory)
    try:
        try:
            samples, times, fresh, totals = run.soak()
        except soak_node.Failed as e:
            print("soak: FAILED: %s" % e)
            return 1
        finally:
            run.kill()  # a daemon left by a failure (the others have exited)
        return 0 if report(samples, times, fresh, totals, args) else 1
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
