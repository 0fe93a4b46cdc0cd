"""``make bench``: host-local-sqlite side by side with Go's host-local, in one run.

Not a test: it measures and reports. Every figure comes from this one run and the two
plugins are interleaved call by call, so ratios compare like with like on a machine whose
speed drifts. Without the Go plugin it measures ours alone and says so.

Reported: median ADD and DEL latency (whole process, as a runtime sees it) at pools of
N existing leases, the CPython floor beside them, import time, a burst of parallel
invocations, peak RSS of one ADD; a PNG plot under docs/ and a Markdown table. Then the
shared pool on a throwaway PostgreSQL server: ADD and DEL latency with connection setup
(``--baseline`` beside it), statements per command and the per-network lock's hold
time, and a burst spread over four simulated nodes. Last, the cost of a large config: one range
set of 3,000 ranges (Go too) and 20,000 excluded addresses (ours only).

The node daemon (``ipamctl serve``, started here on a socket of its own, one per engine,
and stopped with SIGTERM) gets rows of its own beside the others, with issue 16's targets:
the launcher forwarding to it, per call and in bursts (its CPU counted with the clients'),
on SQLite and on the shared pool, and how many server connections one node holds during
a burst, in process and through the daemon. ``--no-daemon`` leaves them out. Beside the
launcher forwarding to it, "native": the native thin client (native/client.c, as
``ipamctl install-plugin --client native`` installs it, where ``make install`` built it)
forwarding to the same daemon, interleaved with the others, per call and in bursts.

The self-contained build (``make dist``, which ``make bench`` runs first) gets a row
too, "frozen": its plugin and its ipamctl, interleaved with the others, and its ratio to
the launcher (issue 17's target: within 1.5x). ``--frozen DIR`` names another build
directory; ``--frozen ''`` leaves it out.
"""
import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from ipam import paths

BIN = os.path.dirname(sys.executable)
OURS = os.path.join(BIN, "host-local-sqlite")
IPAMCTL = os.path.join(BIN, "ipamctl")
GO = os.environ.get("HLS_GO_PLUGIN", "/usr/lib/cni/host-local")
SUBNET = ipaddress.ip_network("10.128.0.0/16")
NETWORK = "bench"
DAEMON_POOL = 4  # ipamctl serve's default --pool-size
DAEMON_START_WAIT = 30.0  # seconds for a new daemon to answer its health check
DAEMON_STOP_WAIT = 60.0  # past its 30 s drain timeout
BURST_SETTLE = 1.0  # seconds of quiet before each burst
FELL_BACK = b"running the call in process"  # the client's word when no daemon answered
REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DOCS = os.path.join(REPO, "docs")
# make dist's build: the copy that its unpacked tarball's ipamctl links to.
FROZEN = os.path.dirname(os.path.realpath(os.path.join(REPO, "build", "frozen", "ipamctl")))


def write_host_local_dir(data_dir, n, network=NETWORK):
    """``n`` leases as host-local writes them, from .0.2 upwards, and its cursor."""
    d = os.path.join(data_dir, network)
    os.makedirs(d, exist_ok=True)
    base = int(SUBNET.network_address) + 2
    for i in range(n):
        with open(os.path.join(d, str(ipaddress.ip_address(base + i))), "wb") as f:
            f.write(b"pod%d\r\neth0" % i)
    if n:
        with open(os.path.join(d, paths.cursor_name(0)), "w") as f:
            f.write(str(ipaddress.ip_address(base + n - 1)))
    open(os.path.join(d, paths.MIRROR_LOCK), "w").close()
    return d


def config(data_dir, **extra):
    return json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                       "ipam": dict({"type": "host-local", "subnet": str(SUBNET),
                                     "dataDir": data_dir}, **extra)}).encode()


def invoke(binary, command, conf, cid):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": BIN, paths.DAEMON_ENV: "false"}
    t = time.perf_counter()
    proc = subprocess.run([binary], input=conf, env=env, capture_output=True)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit("%s %s failed: %s %s" % (binary, command, proc.stdout, proc.stderr))
    if FELL_BACK in proc.stderr:  # a daemon row must measure the daemon
        raise SystemExit("%s %s did not reach its daemon: %s" % (binary, command, proc.stderr))
    return took


def floor_once(code):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True)
    return time.perf_counter() - t


def install_launcher(tmp):
    """``ipamctl install-plugin``'s launcher (``python -I -S``), beside the console script."""
    bin_dir = os.path.join(tmp, "cni-bin")
    os.makedirs(bin_dir)
    subprocess.run([IPAMCTL, "install-plugin", bin_dir, "--client", "python"], check=True,
                   capture_output=True)
    return os.path.join(bin_dir, "host-local-sqlite")


def install_native(tmp, rows="native rows"):
    """``ipamctl install-plugin --client native`` into ``tmp``/native-bin: the native
    thin client, the launcher beside it as its in-process plugin (a link to the client
    runs that launcher: it is beside the file the link leads to); None, saying the
    ``rows`` left out, where this checkout has no client built (``make install`` builds
    it where a C compiler exists). tools/bench_cri.py installs it this way too."""
    bin_dir = os.path.join(tmp, "native-bin")
    os.makedirs(bin_dir)
    proc = subprocess.run([IPAMCTL, "install-plugin", bin_dir, "--client", "native"],
                          capture_output=True, text=True)
    if proc.returncode:
        print("no native thin client: no %s (%s)" % (rows, proc.stderr.strip()))
        return None
    return os.path.join(bin_dir, "host-local-sqlite")


def start_daemon(tmp, name, pool_size):
    """``ipamctl serve --pool-size N`` on a socket of its own, ready (its health answered):
    the tests' own process wrapper (``tests/helpers.NodeDaemon``), its log beside the
    socket. The "daemon" rows' launcher forwards to it, named in their config
    (:func:`daemon_config`), while the other rows run in process
    (``HOST_LOCAL_SQLITE_DAEMON=false``). Stop it with ``stop(DAEMON_STOP_WAIT)``."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import helpers

    directory = os.path.join(tmp, "daemon-%s" % name)
    os.makedirs(directory, exist_ok=True)
    daemon = helpers.NodeDaemon(directory, "--pool-size", str(pool_size))
    try:
        daemon.wait_ready(DAEMON_START_WAIT)
    except AssertionError as e:
        daemon.kill()
        raise SystemExit(str(e)) from None
    return daemon


def daemon_config(daemon):
    """:func:`config` for calls forwarded to ``daemon``."""
    return lambda data_dir, **extra: config(data_dir, daemon=daemon.socket, **extra)


def cpu_seconds(pid):
    """A running process's CPU time so far (the daemon's: it has not exited, so
    RUSAGE_CHILDREN, which measures a burst's clients, does not count it)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def install_baseline(tmp, rev):
    """Another revision's plugin (``--baseline REV``), as a launcher of this interpreter,
    and the argv of its ipamctl: the cost of a change, measured beside it in one run.
    Its hot path gets its own byte-code bundle, as ``install-plugin`` would write it."""
    from ipam.install import launcher as launchers

    src = os.path.join(tmp, "baseline-src")
    os.makedirs(src)
    tar = subprocess.run(["git", "-C", REPO, "archive", rev, "ipam", "cli", "migrations"],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=tar, check=True)
    # A revision that installs cli/ and migrations/ under their package names imports
    # them by those names: links in src find them before this checkout's editable ones.
    ctl_package = "cli"
    with open(os.path.join(src, "cli", "main.py")) as f:
        if "host_local_sqlite_cli" in f.read():
            ctl_package = "host_local_sqlite_cli"
            os.symlink("cli", os.path.join(src, ctl_package))
            os.symlink("migrations", os.path.join(src, "host_local_sqlite_migrations"))
    site = [p for p in launchers.install_paths() if os.path.realpath(p) != REPO]
    subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path[:0] = %r\n"
                    "try:\n    from ipam.install import bundle\n"
                    "except ImportError:  # a revision from before ipam/install/\n"
                    "    from ipam import bundle\n"
                    "bundle.build()" % ([src] + site)], check=True)
    bin_dir = os.path.join(tmp, "baseline-bin")
    os.makedirs(bin_dir)
    path = os.path.join(bin_dir, "host-local-sqlite")
    launchers.replace_file(path, launchers.render(paths=[src] + site).encode(), 0o755)
    ctl = [sys.executable, "-c", "import sys; sys.path.insert(0, %r); sys.argv[0] = 'ipamctl'; "
           "from %s.main import run; run()" % (src, ctl_package)]
    return path, ctl


def prepare(tmp, n, with_go, launcher, baseline=None, daemon=None, frozen=None,
            native=None):
    """A pool of ``n`` leases for each plugin: files for Go, ``ipamctl import`` for ours
    (one copy for the console script, one for the launcher, one for the baseline, one
    for the launcher forwarding to ``daemon``, one for the ``native`` client forwarding
    to it, one for the ``frozen`` build's plugin and ipamctl)."""
    plugins = {}
    src = os.path.join(tmp, "src-%d" % n)
    write_host_local_dir(src, n)
    import_s = {}
    ours = [("ours", OURS, [IPAMCTL], config), ("launcher", launcher, [IPAMCTL], config)]
    if baseline is not None:
        ours.append(("baseline", baseline[0], baseline[1], config))
    if daemon is not None:
        ours.append(("daemon", launcher, [IPAMCTL], daemon_config(daemon)))
        if native is not None:
            ours.append(("native", native, [IPAMCTL], daemon_config(daemon)))
    if frozen:
        ours.append(("frozen", os.path.join(frozen, "host_local_sqlite"),
                     [os.path.join(frozen, "ipamctl")], config))
    for name, binary, ctl, conf in ours:
        data_dir = os.path.join(tmp, "%s-%d" % (name, n))
        shutil.copytree(src, data_dir)
        t = time.perf_counter()
        subprocess.run(ctl + ["--data-dir", data_dir, "-o", "json", "import"], check=True,
                       capture_output=True)
        import_s[name] = time.perf_counter() - t
        plugins[name] = (binary, conf(data_dir))
    if with_go:
        go_dir = os.path.join(tmp, "go-%d" % n)
        shutil.copytree(src, go_dir)
        plugins["go"] = (GO, config(go_dir))
    shutil.rmtree(src)
    return plugins, import_s["ours"]


def cycles(plugins, k, n):
    """``k`` rounds of ADD then DEL of a new container, the plugins interleaved."""
    times = {name: {"ADD": [], "DEL": []} for name in plugins}
    times["floor"] = {"sqlite3+json": [], "bare": []}
    for binary, conf in plugins.values():  # warm caches and create the schema
        invoke(binary, "ADD", conf, "warm-%d" % n)
    for i in range(k):
        cid = "bench-%d-%d" % (n, i)
        for name, (binary, conf) in plugins.items():
            times[name]["ADD"].append(invoke(binary, "ADD", conf, cid))
        for name, (binary, conf) in plugins.items():
            times[name]["DEL"].append(invoke(binary, "DEL", conf, cid))
        times["floor"]["sqlite3+json"].append(floor_once("import sqlite3, json"))
        times["floor"]["bare"].append(floor_once("pass"))
    return {name: {op: statistics.median(v) * 1000 for op, v in ops.items()}
            for name, ops in times.items()}


def settle():
    """Before a burst: the previous one's dirty pages written and its hundred processes'
    teardown done, so that no contender pays for the one measured before it."""
    os.sync()
    time.sleep(BURST_SETTLE)


def burst(binary, conf, count, daemon=None):
    """``count`` processes started at once: ADD, then (after all end) DEL, on a pool that
    exists already (one ADD before: a node's first pod creates the database). ``conf``
    is the config, or a function of the process number giving it (one node each). The
    CPU per call counts the ``daemon``'s too, when the calls go to one."""
    import resource

    conf_of = conf if callable(conf) else (lambda i: conf)
    invoke(binary, "ADD", conf_of(0), "burst-warm")
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    daemon_cpu0 = cpu_seconds(daemon.pid) if daemon is not None else 0.0
    out = {}
    for command in ("ADD", "DEL"):
        settle()
        t = time.perf_counter()
        procs = []
        for i in range(count):
            env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "burst-%d" % i,
                   "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": BIN,
                   paths.DAEMON_ENV: "false"}
            procs.append(subprocess.Popen([binary], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env))
        for i, p in enumerate(procs):
            p.stdin.write(conf_of(i))
            p.stdin.close()
        results = []
        in_process = 0
        for p in procs:
            stdout = p.stdout.read()
            in_process += FELL_BACK in p.stderr.read()
            p.stdout.close()
            p.stderr.close()
            results.append((p.wait(), stdout))
        wall = time.perf_counter() - t
        failures = sum(1 for rc, _ in results if rc != 0)
        addresses = [json.loads(s)["ips"][0]["address"] for rc, s in results
                     if rc == 0 and command == "ADD"]
        out[command] = {"wall_s": wall, "failures": failures, "in_process": in_process,
                        "distinct": len(set(addresses)) == len(addresses)}
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu0 if daemon is not None else 0.0
    out["cpu_ms_per_call"] = 1000 * ((cpu1.ru_utime - cpu0.ru_utime)
                                     + (cpu1.ru_stime - cpu0.ru_stime)
                                     + daemon_cpu) / (2 * count)
    out["daemon_cpu_ms_per_call"] = 1000 * daemon_cpu / (2 * count)
    return out


def median_burst(rounds):
    """The median wall time of each command over the rounds; failures added up."""
    out = {"cpu_ms_per_call": statistics.median(r["cpu_ms_per_call"] for r in rounds),
           "daemon_cpu_ms_per_call": statistics.median(r["daemon_cpu_ms_per_call"]
                                                       for r in rounds),
           "rounds": len(rounds)}
    if "connections_max" in rounds[0]:
        out["connections_max"] = max(r["connections_max"] for r in rounds)
        out["connections_seen"] = statistics.median(r["connections_seen"] for r in rounds)
    for command in ("ADD", "DEL"):
        out[command] = {"wall_s": statistics.median(r[command]["wall_s"] for r in rounds),
                        "failures": sum(r[command]["failures"] for r in rounds),
                        "in_process": sum(r[command]["in_process"] for r in rounds),
                        "distinct": all(r[command]["distinct"] for r in rounds)}
    return out


RSS_PROBE = """
import resource, subprocess, sys
subprocess.run([sys.argv[1]], input=sys.stdin.buffer.read(), capture_output=True, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kib(binary, conf, cid, warm=True):
    """Peak RSS of one ADD: on an existing database, or (``warm=False``) the very first,
    which creates the schema with alembic."""
    if warm:
        invoke(binary, "ADD", conf, cid + "-warm")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": BIN, paths.DAEMON_ENV: "false"}
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, binary], input=conf, env=env,
                          capture_output=True, check=True)
    return int(proc.stdout)


def plot(rows, path, with_go):
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib missing: no plot; 'make bench' installs it)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    series = [("ours", "ADD", "-o"), ("ours", "DEL", "--o"), ("launcher", "ADD", "-^"),
              ("launcher", "DEL", "--^")]
    if with_go:
        series += [("go", "ADD", "-s"), ("go", "DEL", "--s")]
    names = {"ours": "host-local-sqlite (console script)",
             "launcher": "host-local-sqlite (install-plugin launcher)",
             "go": "Go host-local"}
    for name, op, style in series:
        label = "%s %s" % (names[name], op)
        ax.plot(sizes, [r[name][op] for r in rows], style, label=label)
    ax.plot(sizes, [r["floor"]["sqlite3+json"] for r in rows], ":", color="grey",
            label="CPython floor (import sqlite3, json)")
    ax.set_xlabel("existing leases in the pool")
    ax.set_ylabel("median latency per call (ms)")
    ax.set_yscale("log")
    ax.set_title("ADD / DEL latency against pool size (whole process)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def shared_pool(tmp, k, count, launcher, baseline=None, nodes=4, with_daemon=True,
                node_burst=50, node_rounds=3, native=None):
    """PostgreSQL figures on a loopback server: ADD and DEL latency of one process
    (connection setup included) for the console script, the launcher, the launcher and
    the ``native`` client forwarding to a node daemon and, with ``--baseline``, that
    revision's launcher,
    interleaved call by call, each on a database of its own; the statements and the
    per-network lock's hold time of our ADD and DEL, measured in process; a burst of
    ``count`` ADDs then DELs spread over ``nodes`` simulated nodes; and the server
    connections one node holds during a burst of ``conn_burst`` calls, in process and
    through the daemon, ``node_rounds`` of each interleaved (the daemon's rows only with
    ``with_daemon``). None when no PostgreSQL server binaries are installed."""
    sys.path.insert(0, os.path.join(os.path.dirname(DOCS), "tests"))
    import pgserver

    bindir = pgserver.find_bindir()
    if bindir is None:
        return None
    server = pgserver.PgServer(bindir).init().start()
    daemon = None
    try:
        if with_daemon:
            daemon = start_daemon(tmp, "pg", DAEMON_POOL)
        contenders = {"ours": (OURS, [IPAMCTL], config),
                      "launcher": (launcher, [IPAMCTL], config)}
        if baseline is not None:
            contenders["baseline"] = baseline + (config,)
        if daemon is not None:
            contenders["daemon"] = (launcher, [IPAMCTL], daemon_config(daemon))
            if native is not None:
                contenders["native"] = (native, [IPAMCTL], daemon_config(daemon))
        confs = {}
        for name, (binary, ctl, conf) in contenders.items():
            url = server.create_database("bench_%s" % name)
            subprocess.run(ctl + ["--database", url, "db", "upgrade"], check=True,
                           capture_output=True)
            confs[name] = _pg_conf_of(tmp, name, url, nodes, conf)
            invoke(binary, "ADD", confs[name](0), "pg-warm")
        times = {name: {"ADD": [], "DEL": []} for name in contenders}
        for i in range(k):
            cid = "pg-%d" % i
            for command in ("ADD", "DEL"):
                for name, (binary, _, _) in contenders.items():
                    times[name][command].append(invoke(binary, command, confs[name](i), cid))
        out = {name: {op: statistics.median(v) * 1000 for op, v in ops.items()}
               for name, ops in times.items()}
        url = server.create_database("bench_probe")
        out["probe"] = lock_probe(_pg_conf_of(tmp, "probe", url, nodes, config), k)
        out["burst"] = burst(launcher, confs["launcher"], count)
        out["nodes"] = nodes
        if daemon is not None:
            if node_burst:
                out["connections"] = node_connections(server, tmp, launcher, daemon,
                                                      node_burst, node_rounds)
            out["daemon_health"] = daemon.health()
            out["daemon_exit"] = daemon.stop(DAEMON_STOP_WAIT)
        return out
    finally:
        if daemon is not None:
            daemon.stop(DAEMON_STOP_WAIT)
        server.cleanup()


def _pg_conf_of(tmp, name, url, nodes, conf=config):
    """Call ``i``'s config: node ``i % nodes``, each node its own dataDir."""
    def conf_of(i):
        node = i % nodes
        return conf(os.path.join(tmp, "pg-%s-node-%d" % (name, node)), database=url,
                    node="node-%d" % node)
    return conf_of


class BackendCount:
    """``with BackendCount(server, url) as seen:`` samples, every few ms, the server
    backends the plugin holds to the database of ``url`` (``application_name``
    host-local-sqlite in ``pg_stat_activity``): ``seen.max`` is the most at once,
    ``seen.pids`` every backend seen (connections opened, as many as a sample caught)."""

    def __init__(self, server, url):
        self.dsn = ("host=127.0.0.1 port=%d user=postgres dbname=%s "
                    "application_name=hls-bench-sampler" % (server.port, url.rsplit("/", 1)[1]))
        self.max = 0
        self.pids = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self):
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._ready.set()
            while not self._stop.is_set():
                pids = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = "
                    "'host-local-sqlite' AND datname = current_database()").fetchall()
                self.max = max(self.max, len(pids))
                self.pids.update(pid for pid, in pids)
                self._stop.wait(0.002)

    def __enter__(self):
        self._ready = threading.Event()
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit("the connection sampler did not connect within 30 s")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def node_connections(server, tmp, launcher, daemon, count, rounds):
    """One node's burst of ``count`` ADDs then DELs on a shared pool, in process (one
    connection per call) and through ``daemon`` (its pool's), ``rounds`` of each
    interleaved, each on a database of its own: median walls, the most backends seen."""
    contenders = {"launcher": config, "daemon": daemon_config(daemon)}
    confs = {}
    for name, conf in contenders.items():
        url = server.create_database("bench_node_%s" % name)
        subprocess.run([IPAMCTL, "--database", url, "db", "upgrade"], check=True,
                       capture_output=True)
        confs[name] = (url, conf(os.path.join(tmp, "pg-node-%s" % name), database=url,
                                 node="node-0"))
    results = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (url, conf) in confs.items():
            with BackendCount(server, url) as seen:
                b = burst(launcher, conf, count, daemon if name == "daemon" else None)
            b["connections_max"] = seen.max
            b["connections_seen"] = len(seen.pids)
            results[name].append(b)
    return {name: median_burst(r) for name, r in results.items()}


class _ProbePool:
    """A stand-in for the daemon's pool (``CallContext.pool``) that opens a new store
    per command and closes it after, as a plugin process does, and keeps the last one for
    its counters."""

    def __init__(self):
        self.last = None

    def ready(self, database, busy_timeout, node, data_dir, patience):
        from ipam.store.backend import open_store

        self.last = open_store(database, busy_timeout, node=node, data_dir=data_dir)
        self.last.connect()

    def take(self, database, busy_timeout, node, data_dir):
        return self.last

    def give(self, store, reuse):
        store.close()


def lock_probe(conf_of, k):
    """Our ADD and DEL run in this process, each on a new store and connection as a
    plugin call has: statements sent per command (BEGIN and COMMIT included) and the
    time from the network's row lock to COMMIT, the section every node's commands to
    that network queue for (median and maximum, ms)."""
    sys.path.insert(0, REPO)
    from ipam import commands

    pool = _ProbePool()
    context = commands.CallContext(pool=pool)
    stats = {"ADD": ([], []), "DEL": ([], [])}
    for i in range(k + 1):
        env = {"CNI_CONTAINERID": "probe-%d" % i, "CNI_IFNAME": "eth0", "CNI_ARGS": ""}
        for command, run in (("ADD", commands.cmd_add), ("DEL", commands.cmd_del)):
            run(env, json.loads(conf_of(i)), context)
            if i:  # the first creates the cursor rows and warms the server
                stats[command][0].append(pool.last.round_trips)
                stats[command][1].append(pool.last.lock_hold * 1000)
    return {op: {"statements": statistics.median(trips), "hold_ms": statistics.median(holds),
                 "hold_max_ms": max(holds)} for op, (trips, holds) in stats.items()}


RANGE_COUNT = 3000  # /24s in one range set: host-local checks each pair for overlap
EXCLUDE_COUNT = 20000  # single-address exclude entries
SIZE_CYCLES = 10  # ADD+DEL rounds per large config: enough for a median, a few seconds


def config_sizes():
    """The config-size rows: (label, the ipam keys besides type and dataDir, Go too)."""
    base = int(SUBNET.network_address) + 2

    def excluded(step, first):
        return [str(ipaddress.ip_address(first + step * i)) for i in range(EXCLUDE_COUNT)]
    return [
        ("one /16 subnet (reference)", {"subnet": str(SUBNET)}, True),
        ("one range set of %s /24 ranges" % format(RANGE_COUNT, ","),
         {"ranges": [[{"subnet": "10.%d.%d.0/24" % divmod(i, 256)}
                      for i in range(RANGE_COUNT)]]}, True),
        ("%s excluded addresses, all of the range but two" % format(EXCLUDE_COUNT, ","),
         {"subnet": str(SUBNET), "rangeStart": str(ipaddress.ip_address(base)),
          "rangeEnd": str(ipaddress.ip_address(base + EXCLUDE_COUNT + 1)),
          "exclude": excluded(1, base + 1)}, False),
        ("%s excluded addresses, every second one" % format(EXCLUDE_COUNT, ","),
         {"subnet": str(SUBNET), "exclude": excluded(2, base)}, False),
    ]


def config_size(tmp, launcher, with_go, k=SIZE_CYCLES):
    """ADD+DEL medians with large configs, every plugin and config interleaved call by
    call, each in its own dataDir. With all of the range excluded but its first and last
    address (the first held by the warm-up ADD), every ADD goes round past the 20,000
    (one by one, a step each, before they were merged); every second address excluded
    leaves 20,000 blocks that cannot merge."""
    plugins = {}
    for label, ipam, go_has_it in config_sizes():
        for name, binary in (("ours", OURS), ("launcher", launcher), ("go", GO)):
            if name != "go" or with_go and go_has_it:
                data_dir = os.path.join(tmp, "size-%d-%s" % (len(plugins), name))
                conf = json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                                   "ipam": dict({"type": "host-local", "dataDir": data_dir},
                                                **ipam)}).encode()
                plugins[(label, name)] = (binary, conf)
    return cycles(plugins, k, 0)


def report_config_size(sizes, with_go, k=SIZE_CYCLES):
    print()
    print("config size (median of %d ADD+DEL cycles, every plugin and config interleaved; "
          "host-local has no exclude, so no Go figure there):" % k)
    print("| config | console script ADD / DEL ms | launcher ADD / DEL ms |%s" % (
        " Go ADD / DEL ms | Go ÷ launcher, ADD / DEL |" if with_go else ""))
    print("|---|---:|---:|%s" % ("---:|---:|" if with_go else ""))
    labels = [label for label, _, _ in config_sizes()]
    for label in labels:
        ours, launched = sizes[(label, "ours")], sizes[(label, "launcher")]
        line = "| %s | %.1f / %.1f | %.1f / %.1f |" % (label, ours["ADD"], ours["DEL"],
                                                     launched["ADD"], launched["DEL"])
        if with_go:
            go = sizes.get((label, "go"))
            line += (" %.1f / %.1f | %.2f / %.2f |" % (
                go["ADD"], go["DEL"], go["ADD"] / launched["ADD"],
                go["DEL"] / launched["DEL"]) if go else " (no exclude) | |")
        print(line)
    ref = sizes[(labels[0], "launcher")]
    for label in labels[1:]:
        r = sizes[(label, "launcher")]
        print("launcher, %s: ADD %+.1f ms, DEL %+.1f ms over the reference" % (
            label, r["ADD"] - ref["ADD"], r["DEL"] - ref["DEL"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,2000,10000,60000")
    ap.add_argument("--cycles", type=int, default=40, help="ADD+DEL rounds per size")
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--burst-rounds", type=int, default=5,
                    help="bursts per plugin, interleaved; the median is reported")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--pg-cycles", type=int, default=20,
                    help="ADD+DEL rounds on PostgreSQL (0: skip the shared-pool figures)")
    ap.add_argument("--pg-burst", type=int, default=200)
    ap.add_argument("--pg-node-burst", type=int, default=50,
                    help="calls in one node's burst, for its connections to the shared pool "
                         "(0: skip)")
    ap.add_argument("--no-daemon", action="store_true",
                    help="leave out the node daemon's rows (ipamctl serve)")
    ap.add_argument("--frozen", metavar="DIR", default=FROZEN,
                    help="the self-contained build to measure beside the launcher "
                         "(default: make dist's; '' for none)")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure the launcher of git revision REV, interleaved")
    args = ap.parse_args()
    if args.frozen and not os.access(os.path.join(args.frozen, "host_local_sqlite"), os.X_OK):
        ap.error("no self-contained build at %s: run make dist, or pass --frozen ''"
                 % args.frozen)
    with_go = os.access(GO, os.X_OK)
    if not with_go:
        print("Go host-local not found at %s: measuring host-local-sqlite alone" % GO)
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="hls-bench-")
    rows = []
    daemon = None
    try:
        launcher = install_launcher(tmp)
        native = None if args.no_daemon else install_native(tmp)
        baseline = install_baseline(tmp, args.baseline) if args.baseline else None
        if not args.no_daemon:
            daemon = start_daemon(tmp, "sqlite", DAEMON_POOL)
        for n in sizes:
            plugins, import_s = prepare(tmp, n, with_go, launcher, baseline, daemon,
                                        args.frozen, native)
            r = cycles(plugins, args.cycles, n)
            r.update(n=n, import_s=import_s)
            rows.append(r)
            line = "N=%6d  ours ADD %6.1f DEL %6.1f ms  launcher ADD %6.1f DEL %6.1f ms" % (
                n, r["ours"]["ADD"], r["ours"]["DEL"], r["launcher"]["ADD"],
                r["launcher"]["DEL"])
            if with_go:
                line += "  go ADD %6.1f DEL %6.1f ms  ratio go/ours ADD %5.2f DEL %5.2f" % (
                    r["go"]["ADD"], r["go"]["DEL"], r["go"]["ADD"] / r["ours"]["ADD"],
                    r["go"]["DEL"] / r["ours"]["DEL"])
            line += "  floor %.1f ms  import %.2f s" % (r["floor"]["sqlite3+json"], import_s)
            if baseline is not None:
                line += "  baseline ADD %6.1f DEL %6.1f ms" % (r["baseline"]["ADD"],
                                                             r["baseline"]["DEL"])
            if daemon is not None:
                line += "  daemon ADD %6.1f DEL %6.1f ms" % (r["daemon"]["ADD"],
                                                           r["daemon"]["DEL"])
            if "native" in r:
                line += "  native ADD %6.1f DEL %6.1f ms" % (r["native"]["ADD"],
                                                           r["native"]["DEL"])
            if args.frozen:
                line += "  frozen ADD %6.1f DEL %6.1f ms (x%.2f, x%.2f the launcher)" % (
                    r["frozen"]["ADD"], r["frozen"]["DEL"],
                    r["frozen"]["ADD"] / r["launcher"]["ADD"],
                    r["frozen"]["DEL"] / r["launcher"]["DEL"])
            print(line, flush=True)
        burst_dir = os.path.join(tmp, "burst")
        contenders = {"ours": (OURS, config), "launcher": (launcher, config)}
        if daemon is not None:
            contenders["daemon"] = (launcher, daemon_config(daemon))
            if native is not None:
                contenders["native"] = (native, daemon_config(daemon))
        if with_go:
            contenders["go"] = (GO, config)
        rounds = {name: [] for name in contenders}
        for k in range(args.burst_rounds):  # interleaved, like the latency cycles
            for name, (binary, conf) in contenders.items():
                data_dir = os.path.join(burst_dir, "%s-%d" % (name, k))
                rounds[name].append(burst(binary, conf(data_dir), args.burst,
                                          daemon if name in ("daemon", "native") else None))
        bursts = {name: median_burst(r) for name, r in rounds.items()}
        if daemon is not None:
            bursts["daemon"]["health"] = daemon.health()
            bursts["daemon"]["exit"] = daemon.stop(DAEMON_STOP_WAIT)
        rss = {"ours": peak_rss_kib(OURS, config(os.path.join(tmp, "rss-ours")), "rss"),
               "ours, first ADD (creates the schema)": peak_rss_kib(
                   OURS, config(os.path.join(tmp, "rss-first")), "rss", warm=False)}
        if with_go:
            rss["go"] = peak_rss_kib(GO, config(os.path.join(tmp, "rss-go")), "rss")
        shared = (shared_pool(tmp, args.pg_cycles, args.pg_burst, launcher, baseline,
                              with_daemon=not args.no_daemon, node_burst=args.pg_node_burst,
                              node_rounds=args.burst_rounds, native=native)
                  if args.pg_cycles else None)
        sizes = config_size(tmp, launcher, with_go)
    finally:
        if daemon is not None:
            daemon.stop(DAEMON_STOP_WAIT)
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, bursts, rss, with_go, args)
    report_shared(shared, args)
    report_config_size(sizes, with_go)
    if not args.no_plot:
        os.makedirs(DOCS, exist_ok=True)
        path = os.path.join(DOCS, "latency.png")
        if plot(rows, path, with_go):
            print("plot: %s" % os.path.relpath(path))


def report(rows, bursts, rss, with_go, args):
    for ours, title in (("ours", "console script"), ("launcher", "launcher")):
        print()
        print("%s (%s):" % (title, OURS if ours == "ours" else "ipamctl install-plugin"))
        print("| pool size | ours ADD ms | ours DEL ms |%s floor ms | import s |" % (
            " Go ADD ms | Go DEL ms | ADD ratio Go/ours | DEL ratio Go/ours |"
            if with_go else ""))
        print("|---:|---:|---:|%s---:|---:|" % ("---:|---:|---:|---:|" if with_go else ""))
        for r in rows:
            go = ""
            if with_go:
                go = " %.1f | %.1f | %.2f | %.2f |" % (r["go"]["ADD"], r["go"]["DEL"],
                                                     r["go"]["ADD"] / r[ours]["ADD"],
                                                     r["go"]["DEL"] / r[ours]["DEL"])
            print("| %d | %.1f | %.1f |%s %.1f | %.2f |" % (
                r["n"], r[ours]["ADD"], r[ours]["DEL"], go, r["floor"]["sqlite3+json"],
                r["import_s"]))
    first = rows[0]
    print()
    floor = first["floor"]["sqlite3+json"]
    for ours in ("ours", "launcher"):
        print("CPython floor: bare interpreter %.1f ms, with sqlite3+json %.1f ms; %s at N=%d "
              "is %+.1f ms from it" % (first["floor"]["bare"], floor, ours, first["n"],
                                       first[ours]["ADD"] - floor))
        if len(rows) > 1:
            print("%s at N=%d vs N=%d: ADD x%.2f, DEL x%.2f" % (
                ours, rows[-1]["n"], first["n"], rows[-1][ours]["ADD"] / first[ours]["ADD"],
                rows[-1][ours]["DEL"] / first[ours]["DEL"]))
    for name, b in bursts.items():
        print("burst of %d %s (median of %d): ADD %.2f s (%d failures, distinct %s), "
              "DEL %.2f s (%d failures); CPU %.1f ms per call" % (
                  args.burst, name, b.get("rounds", 1), b["ADD"]["wall_s"],
                  b["ADD"]["failures"], b["ADD"]["distinct"], b["DEL"]["wall_s"],
                  b["DEL"]["failures"], b["cpu_ms_per_call"]))
    if with_go:
        for ours in [name for name in bursts if name != "go"]:
            print("burst wall ratio %s/Go: ADD %.2f, DEL %.2f" % (
                ours, bursts[ours]["ADD"]["wall_s"] / bursts["go"]["ADD"]["wall_s"],
                bursts[ours]["DEL"]["wall_s"] / bursts["go"]["DEL"]["wall_s"]))
    if "daemon" in bursts:
        report_daemon(rows, bursts, with_go, args)
    for name, kib in rss.items():
        print("peak RSS of one ADD, %s: %.1f MB" % (name, kib / 1024))
    if args.baseline:
        print()
        print("launcher against %s's launcher, interleaved (median ms; + is slower now):"
              % args.baseline)
        print("| pool size | ADD now | ADD %s | ADD diff | DEL now | DEL %s | DEL diff |"
              % (args.baseline, args.baseline))
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            now, then = r["launcher"], r["baseline"]
            print("| %d | %.1f | %.1f | %+.2f | %.1f | %.1f | %+.2f |" % (
                r["n"], now["ADD"], then["ADD"], now["ADD"] - then["ADD"], now["DEL"],
                then["DEL"], now["DEL"] - then["DEL"]))
    print("reproduce: make bench BENCH_ARGS='%s'   (sizes %s, %d cycles each)" % (
        "--baseline %s" % args.baseline if args.baseline else "", args.sizes, args.cycles))


TARGET_DAEMON_VS_LAUNCHER = 0.75  # issue 16: per call on SQLite, at most this x the launcher
TARGET_BURST_VS_GO = 2.5  # a burst's wall time, at most this x Go host-local's
TARGET_SHARED_MS = 50.0  # per call on a shared pool through the daemon


def met(ok):
    return "met" if ok else "NOT met"


def report_daemon(rows, bursts, with_go, args):
    """The node daemon's rows beside the launcher's (same run, interleaved), with the
    issue's targets."""
    print()
    print("node daemon (the launcher forwarding to 'ipamctl serve --pool-size %d'; "
          "launcher = the same file in process):" % DAEMON_POOL)
    print("| pool size | daemon ADD / DEL ms | launcher ADD / DEL ms | "
          "daemon ÷ launcher, ADD / DEL |")
    print("|---:|---:|---:|---:|")
    worst = 0.0
    for r in rows:
        d, lc = r["daemon"], r["launcher"]
        worst = max(worst, d["ADD"] / lc["ADD"], d["DEL"] / lc["DEL"])
        print("| %d | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f |" % (
            r["n"], d["ADD"], d["DEL"], lc["ADD"], lc["DEL"], d["ADD"] / lc["ADD"],
            d["DEL"] / lc["DEL"]))
    print("target daemon <= %.2fx launcher per call: worst %.2fx, %s" % (
        TARGET_DAEMON_VS_LAUNCHER, worst, met(worst <= TARGET_DAEMON_VS_LAUNCHER)))
    if "native" in rows[0]:
        print()
        print("the native thin client forwarding to the same daemon (interleaved):")
        print("| pool size | native ADD / DEL ms | daemon (launcher) ADD / DEL ms | "
              "native ÷ daemon, ADD / DEL | native ÷ launcher, ADD / DEL |")
        print("|---:|---:|---:|---:|---:|")
        for r in rows:
            nc, d, lc = r["native"], r["daemon"], r["launcher"]
            print("| %d | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f | %.2f / %.2f |" % (
                r["n"], nc["ADD"], nc["DEL"], d["ADD"], d["DEL"], nc["ADD"] / d["ADD"],
                nc["DEL"] / d["DEL"], nc["ADD"] / lc["ADD"], nc["DEL"] / lc["DEL"]))
    for name, client in (("daemon", "the launcher"), ("native", "the native client")):
        if name not in bursts:
            continue
        b = bursts[name]
        print("burst of %d through the daemon (%s): CPU %.1f ms per call, of which %.1f "
              "ms in the daemon; %d calls ran in process instead" % (
                  args.burst, client, b["cpu_ms_per_call"], b["daemon_cpu_ms_per_call"],
                  b["ADD"]["in_process"] + b["DEL"]["in_process"]))
    b = bursts["daemon"]
    if with_go:
        go = bursts["go"]
        ratio = max(b[op]["wall_s"] / go[op]["wall_s"] for op in ("ADD", "DEL"))
        print("target burst <= %.1fx Go's wall: worst %.2fx, %s" % (
            TARGET_BURST_VS_GO, ratio, met(ratio <= TARGET_BURST_VS_GO)))
    health = b.get("health")
    if health:
        print("daemon health after the bursts: %d calls, %d refused, %d stores opened, "
              "%d open; exit status on SIGTERM %s" % (
                  health["calls"], health["refused"], health["stores_opened"],
                  health["stores_open"], b.get("exit")))


def report_shared(shared, args):
    if not args.pg_cycles:
        return
    if shared is None:
        print("PostgreSQL server binaries not found: no shared-pool figures "
              "(Debian: apt-get install postgresql)")
        return
    b = shared["burst"]
    for name in ("ours", "launcher", "baseline", "daemon", "native"):
        if name in shared:
            print("shared pool on PostgreSQL (loopback), %-8s ADD %5.1f ms, DEL %5.1f ms per "
                  "call, median of %d interleaved, %s" % (
                      name, shared[name]["ADD"], shared[name]["DEL"], args.pg_cycles,
                      "the daemon's connections kept open" if name in ("daemon", "native")
                      else "connection setup included"))
    for op, p in shared["probe"].items():
        print("shared pool %s in process: %d statements; network lock held %.1f ms median, "
              "%.1f ms max" % (op, p["statements"], p["hold_ms"], p["hold_max_ms"]))
    print("shared pool burst of %d over %d nodes (launcher): ADD %.2f s (%d failures, "
          "distinct %s), DEL %.2f s (%d failures); CPU %.0f ms per call" % (
              args.pg_burst, shared["nodes"], b["ADD"]["wall_s"], b["ADD"]["failures"],
              b["ADD"]["distinct"], b["DEL"]["wall_s"], b["DEL"]["failures"],
              b["cpu_ms_per_call"]))
    if "daemon" in shared:
        worst = max(shared["daemon"]["ADD"], shared["daemon"]["DEL"])
        print("target shared pool through the daemon <= %.0f ms per call: worst %.1f ms, %s"
              % (TARGET_SHARED_MS, worst, met(worst <= TARGET_SHARED_MS)))
    for name, c in shared.get("connections", {}).items():
        print("one node's burst of %d on the shared pool, %-8s: ADD %.2f s, DEL %.2f s "
              "(median of %d; %d failures, distinct %s, %d in process); CPU %.1f ms per "
              "call; server connections at once, most seen: %d; backends seen per burst "
              "(median): %d" % (
                  args.pg_node_burst, name, c["ADD"]["wall_s"], c["DEL"]["wall_s"],
                  c["rounds"], c["ADD"]["failures"] + c["DEL"]["failures"],
                  c["ADD"]["distinct"], c["ADD"]["in_process"] + c["DEL"]["in_process"],
                  c["cpu_ms_per_call"], c["connections_max"], c["connections_seen"]))
    if "connections" in shared:
        most = shared["connections"]["daemon"]["connections_max"]
        print("target connections per node <= the daemon's pool (%d): %d, %s" % (
            DAEMON_POOL, most, met(most <= DAEMON_POOL)))
    if "daemon_health" in shared:
        h = shared["daemon_health"]
        print("shared-pool daemon health: %d calls, %d refused, %d stores opened, %d open; "
              "exit status on SIGTERM %s" % (h["calls"], h["refused"], h["stores_opened"],
                                             h["stores_open"], shared["daemon_exit"]))


if __name__ == "__main__":
    main()
