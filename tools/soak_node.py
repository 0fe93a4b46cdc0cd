"""The node ``make soak`` churns (:mod:`soak`): a dataDir of networks, its node daemon,
the pods held live on each network, and every call made to it.

Calls go three ways, as on a node: through the daemon's socket, sent with the plugin's
own client (:func:`ipam.client.request`, :func:`ipam.client.call`: the daemon's wire
format, without a process per call, which would measure Python's start); as plugin
processes running in process (``HOST_LOCAL_SQLITE_DAEMON=false``); and as Go host-local
on the first network, the same dataDir. A daemon call the daemon does not take runs in
process, as the plugin's would, and is counted.

Every pair of the churn ADDs a new pod and DELs the oldest of its network, so each pool
stays as occupied as a node's and its cursor goes round many times. Go ADDs pods of its
own and DELs half of them; ours DELs the other half (a pod started before a swap). A
pod Go DELs leaves the lease ours adopted from its file, which ours keeps until a DEL
or GC (docs/switching.md, "Automatic adoption"): the runtime's CNI GC, with its valid attachments,
runs through the daemon after each twentieth of the run.
"""
import collections
import hashlib
import json
import os
import subprocess
import time

import helpers  # tests/helpers.py (soak.py puts tests/ on the path): the programs, NodeDaemon

from ipam import client, paths

GO = os.environ.get("HLS_GO_PLUGIN", "/usr/lib/cni/host-local")
DAEMON_START_WAIT = 30.0
DAEMON_STOP_WAIT = 60.0
IFNAME = "eth0"


class Failed(Exception):
    """A call failed, or the audit found a lease problem: the run stops there."""


def retention_seconds(text):
    """``historyRetention`` in seconds (the config's own syntax: ``5s``, ``90d``)."""
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[text[-1]]


class Pod:
    """A pod's attachment: its serial, container ID, network, the address it was told,
    and who ADDed it (ours or go)."""

    __slots__ = ("serial", "cid", "net", "ip", "who")

    def __init__(self, serial, net, who):
        self.serial = serial
        self.cid = hashlib.sha256(b"soak-%d" % serial).hexdigest()  # runtime-sized
        self.net = net
        self.ip = None
        self.who = who

    def env(self, command):
        """The CNI environment a runtime gives the plugin for this pod (kubelet's pod
        identity in CNI_ARGS, which ours records)."""
        uid = self.cid[:32]
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": self.cid,
                "CNI_NETNS": "/var/run/netns/cni-%s" % uid, "CNI_IFNAME": IFNAME,
                "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=soak;K8S_POD_NAME=pod-%d;"
                            "K8S_POD_UID=%s-%s-%s-%s-%s" % (self.serial, uid[:8], uid[8:12],
                                                           uid[12:16], uid[16:20], uid[20:]),
                "CNI_PATH": "/opt/cni/bin", "PATH": os.environ.get("PATH", "")}


class Node:
    """A node in ``directory`` (its dataDir under it, its daemon's socket and log in
    it), churned as ``args`` say: ``networks``, ``pods``, ``go_pods``, ``go_share``,
    ``process_share``, ``history_retention``."""

    def __init__(self, directory, args):
        self.args = args
        self.data_dir = os.path.join(directory, "networks")
        os.makedirs(self.data_dir)
        self.db = paths.default_database(self.data_dir)
        self.names = ["soak%d" % n for n in range(args.networks)]
        self.conf = [self._conf(n, "1.1.0") for n in range(args.networks)]
        self.go_conf = self._conf(0, "1.0.0")  # Go 1.1.1 stops at CNI 1.0.0
        self.live = [collections.deque() for _ in range(args.networks)]
        self.go_live = collections.deque()
        self.go_gone = {}  # cid -> Pod: Go DELed it; ours may keep its lease until GC
        self.serial = 0
        self.cwd = os.getcwd().encode("utf-8", "surrogateescape")
        self.times = {"daemon": {}, "process": {}, "go": {}, "gc": {}}
        self.slice = None  # while measuring: the slice the calls are timed into
        self.counts = collections.Counter()
        self.fell_back = collections.Counter()
        self.daemon = helpers.NodeDaemon(directory)
        try:
            self.daemon.wait_ready(DAEMON_START_WAIT)
        except AssertionError as e:
            self.daemon.kill()
            raise Failed(str(e)) from None

    def _conf(self, net, version):
        return {"cniVersion": version, "name": self.names[net], "type": "bridge",
                "ipam": {"type": "host-local", "subnet": "10.%d.0.0/24" % (100 + net),
                         "dataDir": self.data_dir,
                         "historyRetention": self.args.history_retention}}

    # -- one call -------------------------------------------------------------------
    def _time(self, kind, seconds):
        """A call's time, into the slice being measured (-1: filling, settling)."""
        slice_ = -1 if self.slice is None else self.slice
        self.times[kind].setdefault(slice_, []).append(seconds)
        self.counts[kind] += 1

    def calls(self):
        """Calls made for pods so far (not the runtime's GC)."""
        return sum(n for kind, n in self.counts.items() if kind != "gc")

    def daemon_calls(self):
        return self.counts["daemon"] + self.counts["gc"]

    def call(self, how, command, pod, conf=None):
        """One CNI call for ``pod``: ``how`` is daemon, process (ours, in process) or go;
        its stdout. A failed call stops the run."""
        data = json.dumps(conf or (self.go_conf if how == "go" else self.conf[pod.net])
                          ).encode()
        env = pod.env(command)
        if how == "daemon":
            request = client.request({k.encode(): v.encode() for k, v in env.items()},
                                     self.cwd, data)
            started = time.perf_counter()
            try:
                status, out, err = client.call(self.daemon.socket, request)
            except client.Unanswered as e:  # as the plugin does: run it in process
                self.fell_back[str(e.args[0]).split(" (")[0]] += 1
                how = "process"
            else:
                self._time("gc" if command == "GC" else "daemon",
                           time.perf_counter() - started)
        if how != "daemon":
            argv = [GO] if how == "go" else [helpers.PLUGIN]
            if how == "process":
                env[paths.DAEMON_ENV] = "false"
            started = time.perf_counter()
            proc = subprocess.run(argv, input=data, env=env, capture_output=True,
                                  timeout=120)
            self._time(how, time.perf_counter() - started)
            status, out, err = proc.returncode, proc.stdout, proc.stderr
        if status != 0 or b"Traceback" in err or (command != "ADD" and out.strip()):
            raise Failed("%s %s of pod %d on %s (%s): status %d\n%s\n%s" % (
                how, command, pod.serial, self.names[pod.net], pod.cid, status,
                out.decode(errors="replace"), err.decode(errors="replace")))
        return out

    def add(self, how, net, who="ours"):
        """ADD a new pod; its address must be no other live pod's."""
        self.serial += 1
        pod = Pod(self.serial, net, who)
        out = self.call(how, "ADD", pod)
        pod.ip = json.loads(out)["ips"][0]["address"].split("/")[0]
        other = next((p for p in self.holders(net) if p.ip == pod.ip), None)
        if other is not None:
            raise Failed("%s was told to pod %d (%s) on %s, which live pod %d (%s) holds"
                         % (pod.ip, pod.serial, who, self.names[net], other.serial,
                            other.who))
        (self.go_live if who == "go" else self.live[net]).append(pod)
        return pod

    def delete(self, how, pod):
        self.call(how, "DEL", pod)
        if pod.who == "go" and how == "go":
            self.go_gone[pod.cid] = pod

    def holders(self, net):
        """The live pods of network ``net``, ours and (on the first) Go's."""
        return list(self.live[net]) + (list(self.go_live) if net == 0 else [])

    # -- the churn --------------------------------------------------------------------
    def settle(self):
        """Every pool filled, then the same churn, unmeasured, until ``historyRetention``
        has passed (history as long as it will stay), then the runtime's GC."""
        for _ in range(self.args.go_pods if self.go_period else 0):
            self.add("go", 0, "go")
        for _ in range(self.args.pods):
            for net in range(self.args.networks):
                self.add("daemon", net)
        until = time.monotonic() + retention_seconds(self.args.history_retention)
        i = 10 ** 9  # further along the same schedule than the measured pairs go
        while time.monotonic() < until:
            self.pair(i)
            i += 1
        self.gc()

    def pair(self, i):
        """Pair ``i`` of the churn: a new pod ADDed, the oldest DELed. Go's pairs are
        every ``go_period``-th, on the first network; the plugin processes' every
        ``process_period``-th; the others go through the daemon, network by network."""
        if self.go_period and i % self.go_period == self.go_period // 3:
            self.add("go", 0, "go")
            oldest = self.go_live.popleft()
            self.delete("go" if (i // self.go_period) % 2 else "daemon", oldest)
            return
        how = "process" if self.process_period and i % self.process_period == \
            self.process_period // 7 else "daemon"
        net = i % self.args.networks
        self.add(how, net)
        self.delete(how, self.live[net].popleft())

    @property
    def go_period(self):
        """Pairs per Go pair: one is 1.5 Go calls (its ADD; its DEL every other time)."""
        share = self.args.go_share
        return round(100 * 0.75 / share) if share else 0

    @property
    def process_period(self):
        share = self.args.process_share
        return round(100 / share) if share else 0

    def gc(self):
        """The runtime's CNI GC on every network, its live pods the valid attachments."""
        for net in range(self.args.networks):
            conf = dict(self.conf[net], **{"cni.dev/valid-attachments": [
                {"containerID": p.cid, "ifname": IFNAME} for p in self.holders(net)]})
            self.call("daemon", "GC", Pod(0, net, "runtime"), conf)
        self.go_gone.clear()

    # -- the end ----------------------------------------------------------------------
    def stop(self):
        """Drain the daemon (SIGTERM); its exit status and the internal errors it
        logged."""
        status = self.daemon.stop(DAEMON_STOP_WAIT)
        errors = 0
        with open(self.daemon.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                errors += "internal error" in line
        return status, errors
