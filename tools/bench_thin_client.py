"""Start-to-answer time of a forwarded call: the native thin client against the Python one.

Each round runs every client once, in turn (interleaved, so load on the machine falls on
all alike), with its wall time from spawn to exit; the figures are medians. Two daemons:
``ipamctl serve`` answering an idempotent ADD (the whole forwarded call), and a stub that
answers at once (the client's own cost: start, connect, hand-over, views, answer).

    .venv/bin/python tools/bench_thin_client.py [--rounds 200]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ipam import client, paths  # noqa: E402
from ipam.install import launcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


def stub(path):
    """A daemon that takes every call and answers a fixed result at once."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)

    def serve():
        while True:
            conn, _ = srv.accept()
            with conn:
                buf = b""
                while True:  # the request: magic, kind, three blobs
                    try:
                        at = len(client.MAGIC) + 1
                        for _ in range(3):
                            _, at = client.read_blob(buf, at)
                        break
                    except ValueError:
                        buf += conn.recv(65536)
                conn.sendall(client.PROVE + client.blob(b"/"))
                buf = b""
                while True:
                    try:
                        client.parse_message(buf)
                        break
                    except ValueError:
                        buf += conn.recv(65536)
                conn.sendall(client.TAKEN + client.blob(b"5") + client.ANSWER + b"\0"
                             + client.blob(b'{"cniVersion": "1.0.0"}') + client.blob(b""))
    threading.Thread(target=serve, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    rounds = ap.parse_args().rounds
    subprocess.run(["make", "-s", "-C", REPO, "native"], check=True)
    tmp = tempfile.mkdtemp(prefix="bench-thin-")
    data_dir = os.path.join(tmp, "data")
    os.mkdir(data_dir)
    launcher.install(tmp, "launcher")
    clients = {"native": os.path.join(REPO, "build/native/host-local-sqlite"),
               "python (launcher)": os.path.join(tmp, "launcher"),
               "python (console script)": os.path.join(VENV_BIN, "host-local-sqlite")}
    conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "ipvlan",
                       "ipam": {"type": "host-local-sqlite", "dataDir": data_dir,
                                "subnet": "10.77.0.0/24"}}).encode()
    daemon_sock = os.path.join(tmp, "d.sock")
    daemon = subprocess.Popen([os.path.join(VENV_BIN, "ipamctl"), "serve", "--socket",
                               daemon_sock], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    stub_sock = os.path.join(tmp, "stub.sock")
    stub(stub_sock)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(daemon_sock):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        for target, sock in (("ipamctl serve, ADD again", daemon_sock),
                             ("stub daemon", stub_sock)):
            env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "b1",
                   "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
                   paths.DAEMON_ENV: sock}
            times = {name: [] for name in clients}
            for _ in range(rounds):
                for name, program in clients.items():
                    start = time.perf_counter()
                    proc = subprocess.run([program], input=conf, env=env,
                                          capture_output=True)
                    times[name].append(time.perf_counter() - start)
                    assert proc.returncode == 0 and b"running the call in process" \
                        not in proc.stderr, (name, proc.stdout, proc.stderr)
            print("%s, %d rounds, median ms:" % (target, rounds))
            for name, t in times.items():
                print("  %-24s %6.2f  (p10 %.2f, p90 %.2f)" % (
                    name, statistics.median(t) * 1000,
                    sorted(t)[len(t) // 10] * 1000, sorted(t)[len(t) * 9 // 10] * 1000))
    finally:
        daemon.terminate()
        daemon.wait(30)


if __name__ == "__main__":
    main()
