"""``make demo``: run the plugin exactly as a container runtime would, and show the results.

Each step sets the CNI_* environment, pipes the network config to the installed
``host-local-sqlite`` on stdin and prints what it answers, then the mirrored host-local
files; then what ``ipamctl list``, ``history`` and ``stats`` make of it. The data stays
(``build/demo/`` of the repository, or the directory given), to explore with the
``ipamctl`` command lines printed: every command shown is a line to paste as it is (full
paths, quoted for the shell). Run again, it starts afresh in the same directory.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys

from ipam.paths import PLUGIN_NAME, default_database

BIN = os.path.dirname(os.path.abspath(sys.executable))  # the venv's bin: its console scripts
PLUGIN = os.path.join(BIN, PLUGIN_NAME)
IPAMCTL = os.path.join(BIN, "ipamctl")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, "build", "demo")
MARKER = ".made-by-make-demo"  # a directory the demo made, and may empty again
EXPLORE = ("list", "history", "stats")  # what the demo ends with


def configs(data_dir, resolv):
    v4 = {"cniVersion": "1.0.0", "name": "demo-v4", "type": "bridge",
          "ipam": {"type": "host-local-sqlite",
                   # host bits set, as in host-local's own docs: we accept it as /24
                   "subnet": "203.0.113.1/24",
                   "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.20",
                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir}}
    v6 = {"cniVersion": "1.0.0", "name": "demo-v6", "type": "bridge",
          "ipam": {"type": "host-local-sqlite", "subnet": "2001:db8:42::/64",
                   "rangeStart": "2001:db8:42::10", "rangeEnd": "2001:db8:42::20",
                   "routes": [{"dst": "::/0"}], "resolvConf": resolv, "dataDir": data_dir}}
    return v4, v6


def invoke(command, conf_file, container):
    """One call of the plugin, as the runtime makes it; printed as a shell line that
    makes the same call."""
    cni = {"CNI_COMMAND": command, "CNI_CONTAINERID": container,
           "CNI_NETNS": "/var/run/netns/" + container, "CNI_IFNAME": "eth0",
           "CNI_PATH": BIN}
    print("$ %s %s < %s" % (" ".join("%s=%s" % (k, shlex.quote(v)) for k, v in cni.items()),
                            shlex.quote(PLUGIN), shlex.quote(conf_file)))
    with open(conf_file, "rb") as f:
        proc = subprocess.run([PLUGIN], stdin=f, env=dict(os.environ, **cni),
                              capture_output=True)
    out = proc.stdout.decode()
    print(out if out else "(no output)")
    print("exit status %d\n" % proc.returncode)
    return proc.returncode


def ipamctl(data_dir, *args):
    """One ipamctl command on the demo's data, printed as the line that runs it."""
    argv = [IPAMCTL, "--data-dir", data_dir, *args]
    print("$ " + shlex.join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    return proc.returncode


def fresh(directory):
    """Make ``directory`` empty for the demo: a directory of an earlier demo is emptied,
    anything else that is not empty is left alone (SystemExit)."""
    if os.path.isdir(directory) and os.listdir(directory):
        if not os.path.exists(os.path.join(directory, MARKER)):
            raise SystemExit("demo: %s is not empty and not an earlier demo's: not "
                             "touching it" % directory)
        shutil.rmtree(directory)
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, MARKER), "w").close()


def show_files(data_dir, network):
    d = os.path.join(data_dir, network)
    print("mirrored files in <dataDir>/%s/:" % network)
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), "rb") as f:
            print("    %-22s %r" % (name, f.read()))
    print()


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print("usage: demo.py [DIRECTORY]  (default: %s)" % DEFAULT_DIR)
        return 2
    top = os.path.abspath(args[0] if args else DEFAULT_DIR)
    fresh(top)
    failures = 0
    data_dir = os.path.join(top, "networks")
    resolv = os.path.join(top, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 2001:db8:42::53\nsearch demo.example\n")
    for conf in configs(data_dir, resolv):
        conf_file = os.path.join(top, conf["name"] + ".json")
        with open(conf_file, "w") as f:
            json.dump(conf, f, indent=2)
        print("=" * 72)
        print("network %s: %s\n" % (conf["name"], json.dumps(conf["ipam"])))
        failures += invoke("ADD", conf_file, "pod-a") + invoke("ADD", conf_file, "pod-b")
        show_files(data_dir, conf["name"])
        failures += invoke("CHECK", conf_file, "pod-a")
        failures += invoke("DEL", conf_file, "pod-a")
        show_files(data_dir, conf["name"])
    database = default_database(data_dir)
    print("database: %s (%d bytes)\n" % (database, os.path.getsize(database)))
    print("=" * 72)
    print("what ipamctl makes of it:\n")
    for command in EXPLORE:
        failures += ipamctl(data_dir, command)
    print("=" * 72)
    print("The data stays in %s (the demo, run again, starts afresh%s)."
          % (top, "; make clean removes it" if top == DEFAULT_DIR else ""))
    print("Explore it with the venv's ipamctl and this --data-dir, for example:\n")
    print("$ %s --data-dir %s history --ip 203.0.113.10" % (
        shlex.quote(IPAMCTL), shlex.quote(data_dir)))
    print("$ %s --help\n" % shlex.quote(IPAMCTL))
    print("or with the venv's bin first on PATH, in bash:\n")
    print("$ . %s" % shlex.quote(os.path.join(BIN, "activate")))
    print("$ ipamctl --data-dir %s list" % shlex.quote(data_dir))
    if failures:
        print("demo: %d step(s) failed" % failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
