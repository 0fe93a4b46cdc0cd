"""``make demo``: run the plugin exactly as a container runtime would, and show the results.

Each step sets the CNI_* environment, pipes the network config to the installed
``host-local-sqlite`` on stdin and prints what it answers, then the mirrored host-local
files. Everything happens in a temporary dataDir that is removed at the end.
"""
import json
import os
import subprocess
import sys
import tempfile

from ipam.paths import PLUGIN_NAME, default_database

PLUGIN = os.path.join(os.path.dirname(sys.executable), PLUGIN_NAME)


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


def invoke(command, conf, container):
    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container, "CNI_NETNS": "/var/run/netns/" + container,
           "CNI_IFNAME": "eth0", "CNI_PATH": os.path.dirname(PLUGIN)}
    print("$ CNI_COMMAND=%s CNI_CONTAINERID=%s CNI_IFNAME=eth0 host-local-sqlite < %s.json"
          % (command, container, conf["name"]))
    proc = subprocess.run([PLUGIN], input=json.dumps(conf).encode(), env=env,
                          capture_output=True)
    out = proc.stdout.decode()
    print(out if out else "(no output)")
    print("exit status %d\n" % proc.returncode)
    return proc.returncode


def show_files(data_dir, network):
    d = os.path.join(data_dir, network)
    print("mirrored files in <dataDir>/%s/:" % network)
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), "rb") as f:
            print("    %-22s %r" % (name, f.read()))
    print()


def main():
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hls-demo-") as tmp:
        data_dir = os.path.join(tmp, "networks")
        resolv = os.path.join(tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver 2001:db8:42::53\nsearch demo.example\n")
        for conf in configs(data_dir, resolv):
            print("=" * 72)
            print("network %s: %s\n" % (conf["name"], json.dumps(conf["ipam"])))
            failures += invoke("ADD", conf, "pod-a") + invoke("ADD", conf, "pod-b")
            show_files(data_dir, conf["name"])
            failures += invoke("CHECK", conf, "pod-a")
            failures += invoke("DEL", conf, "pod-a")
            show_files(data_dir, conf["name"])
        database = default_database(data_dir)
        print("database: %s (%d bytes)" % (database, os.path.getsize(database)))
    if failures:
        print("demo: %d step(s) failed" % failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
