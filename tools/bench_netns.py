"""What gc's on-the-wire check costs on a busy node: ``python -m ipam.admin.netns`` (the child
``ipamctl gc`` runs) timed on this host as it is, then with 2,000 threads, 2,000
processes, 2,000 mount namespaces and 2,000 network namespaces added. Needs root and
util-linux's ``unshare``; prints a Markdown table (docs/performance.md).

    sudo .venv/bin/python tools/bench_netns.py
"""
import os
import statistics
import subprocess
import sys
import time

N = 2000
RUNS = 5


def probe_seconds():
    times = []
    for _ in range(RUNS):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-I", "-m", "ipam.admin.netns"], capture_output=True,
                              text=True, check=True)
        times.append(time.monotonic() - start)
        if '"unreadable": []' not in proc.stdout:
            sys.exit("the check could not read everything: %s" % proc.stdout[-300:])
    return statistics.median(times)


def threads():
    count = 0
    for pid in os.listdir("/proc"):
        try:
            count += len(os.listdir("/proc/%s/task" % pid)) if pid.isdigit() else 0
        except OSError:
            pass
    return count


def started(argv_of, ready):
    """N processes, each of ``argv_of(i)``, once ``ready(pid)`` says each is set up."""
    procs = [subprocess.Popen(argv_of(i)) for i in range(N)]
    deadline = time.monotonic() + 120
    for proc in procs:
        while not ready(proc.pid):
            if time.monotonic() > deadline:
                sys.exit("process %d was not ready in 120 s" % proc.pid)
            time.sleep(0.01)
    return procs


def runs_sleep(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip() == "sleep"
    except OSError:
        return False


def row(shape):
    print("| %s | %d | %.2f |" % (shape, threads(), probe_seconds()), flush=True)


def main():
    print("| host | threads | check s |\n|---|---:|---:|")
    row("as it is")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, threading\nev = threading.Event()\n"
        "for _ in range(%d): threading.Thread(target=ev.wait, daemon=True).start()\n"
        "print(flush=True)\nsys.stdin.read()") % N], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    holder.stdout.readline()
    row("+ %d threads of one process" % N)
    holder.stdin.close()
    holder.wait()
    shapes = [
        ("+ %d processes" % N, lambda i: ["sleep", "600"]),
        ("+ %d processes, a mount namespace each" % N,
         lambda i: ["unshare", "--mount", "--propagation", "private", "sleep", "600"]),
        ("+ %d processes, a mount and a network namespace each (an address in it)" % N,
         lambda i: ["unshare", "--mount", "--propagation", "private", "--net", "sh", "-c",
                    "ip addr add 10.201.%d.%d/32 dev lo && exec sleep 600"
                    % (i // 250, i % 250 + 1)]),
    ]
    for shape, argv_of in shapes:
        procs = started(argv_of, runs_sleep)
        try:
            row(shape)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
