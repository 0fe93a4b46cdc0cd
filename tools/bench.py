"""``make bench``: side-by-side figures for host-local-sqlite and Go's host-local.

Not a test: it measures and reports. Every figure comes from this one run, so ratios
compare like with like. Without the Go plugin it measures ours alone and says so.
"""
import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)
OURS = os.path.join(BIN, "host-local-sqlite")
IPAMCTL = os.path.join(BIN, "ipamctl")
GO = "/usr/lib/cni/host-local"
SUBNET = ipaddress.ip_network("10.128.0.0/16")


def write_host_local_dir(path, n, network="bench"):
    """``n`` leases as host-local writes them, from .0.2 upwards, and its cursor."""
    d = os.path.join(path, network)
    os.makedirs(d, exist_ok=True)
    base = int(SUBNET.network_address) + 2
    for i in range(n):
        with open(os.path.join(d, str(ipaddress.ip_address(base + i))), "wb") as f:
            f.write(b"pod%d\r\neth0" % i)
    last = str(ipaddress.ip_address(base + n - 1)) if n else None
    if last:
        with open(os.path.join(d, "last_reserved_ip.0"), "w") as f:
            f.write(last)
    open(os.path.join(d, "lock"), "w").close()
    return d


def bench_import(n, tmp):
    src = os.path.join(tmp, "src-%d" % n)
    t = time.perf_counter()
    write_host_local_dir(src, n)
    made = time.perf_counter() - t
    db = os.path.join(tmp, "import-%d.db" % n)
    t = time.perf_counter()
    proc = subprocess.run([IPAMCTL, "--database", db, "-o", "json", "import", "--from", src],
                          capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit("import failed: " + proc.stderr)
    imported = sum(len(s["imported"]) for s in json.loads(proc.stdout))
    return {"leases": n, "imported": imported, "seconds": took, "files_written_s": made}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--import-size", type=int, default=60000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hls-bench-")
    try:
        r = bench_import(args.import_size, tmp)
        print("import of %d host-local leases with 'ipamctl import': %.2f s (target <= 5 s)"
              % (r["imported"], r["seconds"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
