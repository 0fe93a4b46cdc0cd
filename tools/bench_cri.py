"""What a pod's network costs through containerd's CRI (``make bench-cri``).

RunPodSandbox latency (median and p90) and the wall time of a burst of 20 sandboxes,
driven over CRI as kubelet drives them (tests/containerd.py: a private containerd per
variant, each with its own bridge, subnet and data dir), for Go host-local, ours in
process, ours through the node daemon (the launcher's Python client forwarding to it, and
the native thin client, as ``ipamctl install-plugin --client native`` installs it, where
``make install`` built it) and the self-contained build's plugin. The
variants are interleaved (one sandbox of each in turn, the order rotated) so that a
slow moment of this shared machine falls on all of them; every sandbox is stopped and
removed before the next, so the pool stays at its size: empty, then ``--leases`` leases
made beforehand (Go's as its files, ours by our plugin's own ADD, in process).

A separate pass counts the plugin calls containerd makes per RunPodSandbox and per
StopPodSandbox + RemovePodSandbox, with a wrapper that logs each CNI_COMMAND.

    make bench-cri                          # 30 sandboxes a variant, 2,000 leases
    make bench-cri BENCH_CRI_ARGS="--runs 10 --build none"
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from bench import install_native  # noqa: E402
from containerd import Containerd  # noqa: E402
from helpers import GO_PLUGINS, IPAMCTL, PLUGIN, cni_env  # noqa: E402

NET = "hlsb"
SUBNET = "10.125.%d.0/20"  # 4,094 addresses: room for 2,000 leases and a burst


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Variant:
    """One containerd whose network's IPAM is one of the plugins compared."""

    def __init__(self, name, index, ipam_type, program=None, daemon=None):
        self.name = name
        self.c = Containerd(**({"plugin": program} if program else {}))
        self.data_dir = os.path.join(self.c.directory, "ipam")
        self.subnet = SUBNET % (16 * index)
        extra = {}
        if ipam_type != "host-local":
            extra["daemon"] = daemon.socket if daemon is not None else False
        self.c.network(NET, self.subnet, ipam_type=ipam_type,
                                   data_dir=self.data_dir, **extra)
        self.ipam_type = ipam_type
        self.c.start()

    def fill(self, n):
        """``n`` leases in the pool (IDs containerd does not know, never collected)."""
        conf = {"cniVersion": "1.0.0", "name": NET, "type": "bridge",
                "ipam": {"type": "host-local-sqlite", "ranges": [[{"subnet": self.subnet}]],
                         "dataDir": self.data_dir, "daemon": False}}
        if self.ipam_type == "host-local":  # Go's store is its files
            import ipaddress
            d = os.path.join(self.data_dir, NET)
            os.makedirs(d, exist_ok=True)
            hosts = ipaddress.ip_network(self.subnet).hosts()
            next(hosts)  # the gateway
            for i in range(n):
                with open(os.path.join(d, str(next(hosts))), "w") as f:
                    f.write("%064x\r\neth0" % (0xf111 + i))
            return
        from ipam.cni import main as cni_main
        for i in range(n):
            out = io.StringIO()
            status = cni_main(cni_env("ADD", container_id="%064x" % (0xf111 + i)),
                              io.BytesIO(json.dumps(conf).encode()), out)
            assert status == 0, out.getvalue()

    def one(self, rt, name):
        t = time.perf_counter()
        sid = self.c.run_pod(name, rt=rt)
        run = time.perf_counter() - t
        t = time.perf_counter()
        self.c.stop_pod(sid, rt=rt)
        self.c.remove_pod(sid, rt=rt)
        return run, time.perf_counter() - t

    def burst(self, n=20):
        barrier = threading.Barrier(n)

        def run(i):
            with self.c.runtime() as rt:
                barrier.wait(60)
                return self.c.run_pod("burst-%d" % i, rt=rt)
        t = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            sids = list(pool.map(run, range(n)))
        wall = time.perf_counter() - t

        def down(sid):
            with self.c.runtime() as rt:
                self.c.stop_pod(sid, rt=rt)
                self.c.remove_pod(sid, rt=rt)
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(down, sids))
        return wall


def phase(variants, runs, label):
    """``runs`` sandboxes per variant, interleaved; then a burst of each."""
    lat = {v.name: [] for v in variants}
    teardown = {v.name: [] for v in variants}
    rts = {v.name: v.c.runtime() for v in variants}
    for v in variants:  # a warm-up each (page cache, first bridge port)
        v.one(rts[v.name], "warm")
    for i in range(runs):
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        for v in order:
            run, down = v.one(rts[v.name], "p%d" % i)
            lat[v.name].append(run)
            teardown[v.name].append(down)
    for rt in rts.values():
        rt.close()
    bursts = {v.name: v.burst() for v in variants}
    rows = []
    for v in variants:
        ms = [x * 1000 for x in lat[v.name]]
        rows.append({"pool": label, "variant": v.name, "runs": runs,
                     "run_median_ms": round(statistics.median(ms), 1),
                     "run_p90_ms": round(percentile(ms, 90), 1),
                     "stop_remove_median_ms": round(statistics.median(
                         [x * 1000 for x in teardown[v.name]]), 1),
                     "burst20_s": round(bursts[v.name], 2)})
    return rows


def count_calls():
    """Plugin calls per RunPodSandbox and per Stop+Remove, logged by a wrapper."""
    c = Containerd()
    try:
        log = os.path.join(c.directory, "calls.log")
        wrapper = os.path.join(c.directory, "counting-plugin")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\necho "$CNI_COMMAND" >> %s\nexec %s "$@"\n' % (log, PLUGIN))
        os.chmod(wrapper, 0o755)
        c.install_plugin(wrapper)
        c.network(NET, SUBNET % 200, data_dir=os.path.join(c.directory, "ipam"), daemon=False)
        c.start()

        def calls():
            if not os.path.exists(log):
                return []
            with open(log) as f:
                return f.read().split()
        sid = c.run_pod("counted")
        after_run = calls()
        c.stop_pod(sid)
        after_stop = calls()
        c.remove_pod(sid)
        after_remove = calls()
        return {"RunPodSandbox": after_run,
                "StopPodSandbox": after_stop[len(after_run):],
                "RemovePodSandbox": after_remove[len(after_stop):]}
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="sandboxes per variant and pool")
    ap.add_argument("--leases", type=int, default=2000, help="the full pool's leases")
    ap.add_argument("--build", default=os.path.join(REPO, "build", "frozen", "host-local-sqlite"),
                    help="the self-contained build's plugin ('none': leave it out)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    daemon_dir = tempfile.mkdtemp(prefix="hls-bench-cri-")
    socket = os.path.join(daemon_dir, "d.sock")
    daemon = subprocess.Popen([IPAMCTL, "serve", "--socket", socket],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    variants = []
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket):
            assert daemon.poll() is None and time.monotonic() < deadline, "no daemon"
            time.sleep(0.05)
        variants.append(Variant("go-host-local", 0, "host-local"))
        variants.append(Variant("ours-in-process", 1, "host-local-sqlite"))
        variants.append(Variant("ours-daemon", 2, "host-local-sqlite",
                                daemon=type("D", (), {"socket": socket})))
        native = install_native(daemon_dir, rows="ours-daemon-native row")
        if native is not None:
            variants.append(Variant("ours-daemon-native", 4, "host-local-sqlite",
                                    program=native, daemon=type("D", (), {"socket": socket})))
        if args.build != "none":
            build = os.path.realpath(args.build)
            assert os.access(build, os.X_OK), "no build at %s (make dist)" % args.build
            variants.append(Variant("ours-build", 3, "host-local-sqlite", program=build))
        rows = phase(variants, args.runs, "empty")
        for v in variants:
            v.fill(args.leases)
        rows += phase(variants, args.runs, "%d leases" % args.leases)
    finally:
        for v in variants:
            v.c.close()
        daemon.terminate()
        daemon.wait(30)
    counts = count_calls()
    cols = list(rows[0])
    print("  ".join("%-22s" % c if i < 2 else "%12s" % c for i, c in enumerate(cols)))
    for r in rows:
        print("  ".join("%-22s" % r[c] if i < 2 else "%12s" % r[c] for i, c in enumerate(cols)))
    print("plugin calls (IPAM): %s" % json.dumps(counts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "calls": counts, "go": GO_PLUGINS}, f, indent=1)


if __name__ == "__main__":
    main()
