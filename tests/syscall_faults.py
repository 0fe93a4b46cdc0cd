"""Fault injection at every system call of a command, with strace (tests/test_syscall_faults.py).

A *path* is one command run as it runs in production (the console script
``host-local-sqlite`` with CNI_* variables and the config on stdin, or ``ipamctl``), from
a fixed starting state copied fresh for every run: three leases of ours, two that Go
host-local made and we adopted (one a legacy ID-only file), their mirror, and a network
directory only Go ever wrote.

The harness first runs the path once under ``strace -e trace=...`` and lists every call
of the syscalls below that the command makes from its first touch of dataDir on (what
comes before is the interpreter's start-up and imports, not ours; imports made lazily
on the way are counted). Then, for each such call and each errno that call can really
return, it runs the path again under ``strace -e inject=SYSCALL:error=ERRNO:when=N``,
checks that the N-th call strace failed is the call the trace listed (so the
enumeration is exact, not a sample), and checks what the run left (see
:func:`run_case`).

The copy is patched (its recorded dataDir and mirror stamp) with a connection that,
closing, removes the WAL, as every ipamctl command's does: so each path also creates
the WAL, and those calls are failed too. A lazy import's own file failing (``re``,
``ipam.mirror.reconcile``) is the interpreter's ImportError; the plugin answers it with code
999 ``internal error`` naming the errno and file, which is accepted there only.

Syscall names: Python's ``os.rename``, ``os.unlink``, ``os.link`` and ``os.mkdir`` with
``dir_fd`` use the ``*at`` variants, and SQLite uses ``pwrite64`` and ``fdatasync``, so
each family below names every variant (``rename``: rename, renameat, renameat2).

Run it as a script to print the number of calls per path and family (docs/guarantees.md's
table): ``.venv/bin/python tests/syscall_faults.py``.
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from ipam.paths import DB_NAME, TMP_PREFIX
from ipam.paths import PENDING_PREFIX as PENDING

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
PLUGIN = os.path.join(BIN, "host-local-sqlite")
IPAMCTL = os.path.join(BIN, "ipamctl")
NET = "net1"
GONET = "gonet"

# Each family: its syscall names, and the errnos a call of it can return in practice.
# EINTR only where the call can block (open of a FIFO, writes to pipes, flock): there it
# is restartable, and Python (PEP 475) and SQLite retry it. Writes to stdout and stderr
# go to the runtime's pipes: EPIPE (the runtime gave up) and EINTR, not EIO or ENOSPC.
FAMILIES = {
    "openat": (("openat",), ("EACCES", "ENOSPC", "EIO", "EINTR")),
    "write": (("write",), ("EIO", "ENOSPC", "EINTR", "EPIPE")),
    "pwrite64": (("pwrite64",), ("EIO", "ENOSPC")),
    "rename": (("rename", "renameat", "renameat2"), ("EIO", "ENOSPC", "EACCES")),
    "unlink": (("unlink", "unlinkat"), ("EIO", "EACCES")),
    "link": (("link", "linkat"), ("EIO", "ENOSPC", "EACCES")),
    "mkdir": (("mkdir", "mkdirat"), ("EIO", "ENOSPC", "EACCES")),
    "fsync": (("fsync",), ("EIO", "ENOSPC")),
    "fdatasync": (("fdatasync",), ("EIO", "ENOSPC")),
    "flock": (("flock",), ("EINTR", "ENOLCK")),
}
PIPE_ERRNOS = ("EPIPE", "EINTR")
FILE_WRITE_ERRNOS = ("EIO", "ENOSPC", "EINTR")
SYSCALLS = tuple(name for names, _ in FAMILIES.values() for name in names)
FAMILY_OF = {name: fam for fam, (names, _) in FAMILIES.items() for name in names}

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*)$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?')


class Call:
    """One traced system call: its name, its place among the process's calls of that
    name (strace's ``when=`` counts per syscall and per process), and its arguments."""

    def __init__(self, pid, name, nth, args, result):
        self.pid, self.name, self.nth, self.args, self.result = pid, name, nth, args, result

    @property
    def fd(self):
        return int(self.args.split(",", 1)[0]) if self.name in ("write", "pwrite64") else None

    def errnos(self):
        if self.name == "write":
            return PIPE_ERRNOS if self.fd in (1, 2) else FILE_WRITE_ERRNOS
        return FAMILIES[FAMILY_OF[self.name]][1]

    def shape(self, data_dir):
        """The arguments with what differs between two runs taken out: the data dir,
        the pid (in temporary names), and the bytes written (times, WAL salts)."""
        args = self.args.replace(str(data_dir), "$D").replace(".%d." % self.pid, ".$PID.")
        if self.name == "write":  # its length too: messages name the data dir
            args = args.split(",", 1)[0]
        elif self.name == "pwrite64":
            args = _STRING.sub('"..."', args)
        return "%s(%s)" % (self.name, args)

    def path(self):
        """The first path argument, or None."""
        m = _STRING.search(self.args)
        return m.group(0)[1:-1] if m and self.name != "write" and self.name != "pwrite64" \
            else None

    def __repr__(self):
        return "%s#%d %s = %s" % (self.name, self.nth, self.args[:120], self.result)


def parse_trace(text):
    counts = {}
    calls = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, name, args, result = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        counts[(pid, name)] = counts.get((pid, name), 0) + 1
        calls.append(Call(pid, name, counts[(pid, name)], args, result))
    return calls


class Cmd:
    """One process as a runtime (or an operator) starts it."""

    def __init__(self, argv, env=None, stdin=b""):
        self.argv, self.env, self.stdin = argv, env or {}, stdin

    def environ(self):
        # No byte-code writes: a .pyc written by the first run would shift the second
        # run's calls (and others may be editing the sources meanwhile).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
               "LC_ALL": "C.UTF-8"}
        env.update(self.env)
        return env

    def run(self, strace=None, timeout=60):
        argv = (strace or []) + self.argv
        return subprocess.run(argv, input=self.stdin, env=self.environ(), capture_output=True,
                              timeout=timeout)


def strace_argv(out, syscalls, inject=None):
    argv = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", out, "-e",
            "trace=" + ",".join(syscalls)]
    if inject is not None:
        name, n, err = inject
        argv += ["-e", "inject=%s:error=%s:when=%d" % (name, err, n)]
    return argv + ["--"]


def trace(cmd, data_dir, workdir):
    """The path's own calls: every traced call from the first that names dataDir on."""
    out = os.path.join(workdir, "trace.txt")
    proc = cmd.run(strace_argv(out, SYSCALLS))
    with open(out) as f:
        calls = parse_trace(f.read())
    start = next((i for i, c in enumerate(calls) if str(data_dir) in c.args), None)
    assert start is not None, "the command never touched %s: %r" % (data_dir, proc)
    pids = {c.pid for c in calls}
    assert len(pids) == 1, "one process expected (strace counts per process): %s" % pids
    return proc, calls[start:]


def injected(cmd, call, err, workdir):
    """Run ``cmd`` with ``call`` failing with ``err``; returns the process and the line
    strace marked INJECTED (None if no call was failed)."""
    out = os.path.join(workdir, "inject.txt")
    proc = cmd.run(strace_argv(out, (call.name,), (call.name, call.nth, err)))
    with open(out) as f:
        hits = [c for c in parse_trace(f.read()) if "(INJECTED)" in c.result]
    return proc, (hits[0] if hits else None)


# -- the fixed starting state -----------------------------------------------------------
def netconf(data_dir, **top):
    conf = {"cniVersion": "1.1.0", "name": NET, "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "dataDir": str(data_dir),
                     "subnet": "10.1.2.0/24"}}
    conf.update(top)
    return conf


def plugin(command, data_dir, container_id="c9", **top):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    return Cmd([PLUGIN], env, json.dumps(netconf(data_dir, **top)).encode())


def ipamctl(data_dir, *args):
    return Cmd([IPAMCTL, "--data-dir", str(data_dir), *args])


TEMPLATE_LEASES = {  # (network, ip, container_id, ifname)
    (NET, "10.1.2.2", "c1", "eth0"), (NET, "10.1.2.3", "c2", "eth0"),
    (NET, "10.1.2.4", "c3", "eth0"), (NET, "10.1.2.10", "legacy1", None),
    (NET, "10.1.2.11", "go1", "eth0"),
}
GONET_FILES = {"10.9.0.2": b"g1\r\neth0", "10.9.0.4": b"g3", "last_reserved_ip.0": b"10.9.0.4",
               "lock": b""}


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def build_template(data_dir):
    """Three ADDs of ours; two files Go host-local wrote (a legacy ID-only one) which the
    next call adopts; a network only Go wrote (``gonet``, for import). Checks clean."""
    os.makedirs(data_dir)
    for cid in ("c1", "c2", "c3"):
        p = plugin("ADD", data_dir, cid).run()
        assert p.returncode == 0, p
    write_file(os.path.join(data_dir, NET, "10.1.2.10"), b"legacy1")
    write_file(os.path.join(data_dir, NET, "10.1.2.11"), b"go1\r\neth0")
    p = plugin("CHECK", data_dir, "c1").run()  # sees Go's files and adopts them
    assert p.returncode == 0, p
    os.makedirs(os.path.join(data_dir, GONET))
    for name, data in GONET_FILES.items():
        write_file(os.path.join(data_dir, GONET, name), data)
    assert db_leases(data_dir) == TEMPLATE_LEASES, db_leases(data_dir)
    p = ipamctl(data_dir, "check").run()
    assert p.returncode == 0, p


def stamp(path):
    st = os.stat(path)
    return "%d:%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def copy_state(template, data_dir):
    """The template at ``data_dir``, as if it had always lived there: the recorded
    dataDir points here and the mirror's stamp is this directory's (a copy has another
    inode and times), so that a command takes its common path, not a reconcile."""
    shutil.copytree(template, data_dir, symlinks=True)
    db = sqlite3.connect(os.path.join(data_dir, DB_NAME), isolation_level=None)
    try:
        db.execute("UPDATE networks SET data_dir = ?", (str(data_dir),))
        db.execute("UPDATE mirror_stamps SET stamp = ? WHERE network = ?",
                   (stamp(os.path.join(data_dir, NET)), NET))
    finally:
        db.close()  # the last connection: checkpoints and removes the WAL


# -- what a state holds ------------------------------------------------------------------
def db_leases(data_dir):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, DB_NAME), uri=True)
    try:
        return set(db.execute("SELECT network, ip, container_id, ifname FROM leases"))
    finally:
        db.close()


def db_cursors(data_dir, network):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, DB_NAME), uri=True)
    try:
        return dict(db.execute("SELECT range_set, ip FROM cursors WHERE network = ?",
                               (network,)))
    finally:
        db.close()


def content(cid, ifname):
    return cid.encode() if ifname is None else ("%s\r\n%s" % (cid, ifname)).encode()


def owner(data):
    """Who a file names, in any host-local spelling; None for no one."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").strip()
    if not text:
        return None
    cid, _, ifname = text.partition("\n")
    return (cid, ifname or None)


def files_of(data_dir, network):
    d = os.path.join(data_dir, network)
    out = {}
    for name in os.listdir(d):
        path = os.path.join(d, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as f:
                out[name] = f.read()
        else:
            out[name] = None
    return out


def is_address(name):
    return re.fullmatch(r"[0-9.]+|[0-9a-f:]+", name) is not None and name.count(".") in (0, 3)


def held_twice(data_dir, reported=()):
    """Addresses told to two owners: a lease in the database and a file naming another
    owner (Go would honour the file, we the lease), or an ADD's reported address not
    leased to its container. ``reported``: ``(network, ip, container_id)`` of results."""
    leases = db_leases(data_dir)
    by_ip = {(n, ip): (cid, ifname) for n, ip, cid, ifname in leases}
    out = []
    for network in (NET, GONET):
        if not os.path.isdir(os.path.join(data_dir, network)):
            continue
        for name, data in files_of(data_dir, network).items():
            if not is_address(name) or data is None:
                continue
            who = owner(data)
            lease = by_ip.get((network, name))
            if who is not None and lease is not None and who != lease:
                out.append("%s/%s names %s, the database leases it to %s"
                           % (network, name, who, lease))
    for network, ip, cid in reported:
        lease = by_ip.get((network, ip))
        if lease is None or lease[0] != cid:
            out.append("%s was reported to %s but the database has %s" % (ip, cid, lease))
    owners = [(n, cid, ifname) for n, _, cid, ifname in leases]
    dup = {o for o in owners if owners.count(o) > 1}
    if dup:
        out.append("attachments holding two addresses: %s" % sorted(dup, key=str))
    return out


def mirror_mismatch(data_dir, networks=(NET,)):
    """Differences between the database and the mirror (what ``ipamctl check`` should
    find, computed independently), plus leftovers: markers, temporary files."""
    out = []
    leases = db_leases(data_dir)
    for network in networks:
        want = {ip: content(cid, ifname) for n, ip, cid, ifname in leases if n == network}
        have = files_of(data_dir, network)
        for name, data in sorted(have.items()):
            if name.startswith(TMP_PREFIX):
                out.append("%s/%s: temporary file left" % (network, name))
            elif is_address(name) and name not in want:
                out.append("%s/%s: file without a lease (%r)" % (network, name, data))
        for ip, data in sorted(want.items()):
            if have.get(ip) != data:
                out.append("%s/%s: %r, want %r" % (network, ip, have.get(ip), data))
        for idx, ip in db_cursors(data_dir, network).items():
            name = "last_reserved_ip.%d" % idx
            if have.get(name) != ip.encode():
                out.append("%s/%s: %r, the database's cursor is %s"
                           % (network, name, have.get(name), ip))
    markers = [n for n in os.listdir(data_dir) if n.startswith(PENDING)]
    if markers:
        out.append("pending marker(s) left: %s" % markers)
    return out


# -- paths ------------------------------------------------------------------------------
class Path:
    """One command from the starting state: how to run it, what it must leave."""

    plugin = True
    rerun_after_success = True
    # Owners a power cut can leave named by a file and nowhere else (the container
    # never got its answer, or was released): recorded as a lease by the next call.
    leakable = ("c9", "c2", "legacy1")

    def __init__(self, name, make, expect, mutate=None, networks=(NET,)):
        self.name = name
        self._make = make  # data_dir -> Cmd
        self._expect = expect  # set of leases -> set of leases
        self.mutate = mutate
        self.networks = networks

    def cmd(self, data_dir):
        return self._make(data_dir)

    def expected(self):
        return self._expect(set(TEMPLATE_LEASES))

    def prepare(self, template, data_dir):
        copy_state(template, data_dir)
        if self.mutate is not None:
            self.mutate(data_dir)


class AdminPath(Path):
    plugin = False

    def __init__(self, *a, rerun_after_success=True, **kw):
        super().__init__(*a, **kw)
        self.rerun_after_success = rerun_after_success


def _go_adds(data_dir):
    """Go host-local, since our last call: an ADD (file and cursor)."""
    write_file(os.path.join(data_dir, NET, "10.1.2.5"), b"go2\r\neth0")
    with open(os.path.join(data_dir, NET, "last_reserved_ip.0"), "wb") as f:
        f.write(b"10.1.2.5")


def _damaged_mirror(data_dir):
    """What export repairs: a file an operator removed, our temporary file left by a
    killed process, a cursor file that went back."""
    os.unlink(os.path.join(data_dir, NET, "10.1.2.3"))
    write_file(os.path.join(data_dir, NET, TMP_PREFIX + "10.1.2.7.4242.1"), b"c7\r\neth0")
    os.unlink(os.path.join(data_dir, NET, "last_reserved_ip.0"))
    write_file(os.path.join(data_dir, NET, "last_reserved_ip.0"), b"10.1.2.2")


def _without(*cids):
    return lambda leases: {x for x in leases if x[2] not in cids}


def _with(*extra):
    return lambda leases: leases | set(extra)


VALID = [{"containerID": cid, "ifname": "eth0"} for cid in ("c1", "c3", "go1")]

PATHS = {p.name: p for p in (
    Path("ADD", lambda d: plugin("ADD", d, "c9"), lambda s: s),
    Path("ADD-after-Go", lambda d: plugin("ADD", d, "c9"),
         _with((NET, "10.1.2.5", "go2", "eth0")), mutate=_go_adds),
    Path("DEL", lambda d: plugin("DEL", d, "c2"), _without("c2")),
    Path("GC", lambda d: plugin("GC", d, **{"cni.dev/valid-attachments": VALID}),
         _without("c2", "legacy1")),
    AdminPath("ipamctl-release", lambda d: ipamctl(d, "release", "10.1.2.3", "--yes"),
              _without("c2"), rerun_after_success=False),
    AdminPath("ipamctl-gc", lambda d: ipamctl(d, "gc", "--network", NET, "--valid", "c1",
                                              "--valid", "c3", "--valid", "go1", "--grace", "0",
                                              "--apply", "--ignore-netns"),
              _without("c2", "legacy1")),
    AdminPath("ipamctl-import", lambda d: ipamctl(d, "import"),
              _with((GONET, "10.9.0.2", "g1", "eth0"), (GONET, "10.9.0.4", "g3", None)),
              networks=(NET, GONET)),
    AdminPath("ipamctl-export", lambda d: ipamctl(d, "export"), lambda s: s,
              mutate=_damaged_mirror),
)}


# -- judging one run ---------------------------------------------------------------------
def _interpreter_file(call, data_dir):
    """A file of the interpreter or of our sources, opened by a lazy import on the way
    (``re``, ``ipam.mirror.reconcile``): its failure is the interpreter's ImportError, which the
    plugin reports as code 999 ``internal error: [Errno N] ... <file>``."""
    path = call.path() if call is not None and call.name == "openat" else None
    return path is not None and str(data_dir) not in path and path.startswith(
        (sys.base_prefix, sys.prefix, REPO))


def outcome_problems(path, proc, call=None, err=None, data_dir=None):
    """A clean answer: a CNI result or error object (plugin), or output / ``Error: ...``
    with exit 1 (ipamctl); never a traceback, never an untranslated exception (an
    ``internal error``) unless a lazy import's own file failed."""
    out = proc.stdout.decode("utf-8", "replace")
    text = proc.stderr.decode("utf-8", "replace")
    problems = []
    if "Traceback" in text:
        problems.append("traceback on stderr: %s" % text[-1500:])
    if not path.plugin:
        if proc.returncode not in (0, 1) or proc.returncode == 1 and "Error: " not in text:
            problems.append("exit %d, stderr %r" % (proc.returncode, text[-800:]))
        return problems
    if call is not None and call.name == "write" and call.fd == 1 and err == "EPIPE":
        # The runtime stopped reading: the answer is lost, and the exit status must not
        # say success (a repeated ADD returns what was committed).
        if proc.returncode == 0:
            problems.append("exit 0 although the result could not be written")
        return problems
    try:
        obj = json.loads(out) if out.strip() else None
    except ValueError:
        return problems + ["stdout is not JSON: %r" % out[:500]]
    if proc.returncode == 0:
        if path.name.startswith("ADD") and not (isinstance(obj, dict) and obj.get("ips")):
            problems.append("exit 0 without a result: %r" % out[:300])
    elif not (isinstance(obj, dict) and isinstance(obj.get("code"), int)
              and isinstance(obj.get("msg"), str)):
        problems.append("exit %d without a CNI error object: %r" % (proc.returncode, out))
    elif obj["msg"].startswith("internal error") and not _interpreter_file(call, data_dir):
        problems.append("untranslated exception: %r (stderr %r)" % (obj, text[-500:]))
    return problems


def _address(proc):
    return json.loads(proc.stdout)["ips"][0]["address"].split("/")[0]


class Mismatch(Exception):
    """strace failed another call than the trace listed: the trace is stale."""


def run_case(path, template, root, call, err, expected_shape):
    """Inject ``err`` at ``call``, then judge. Returns the problems found ([] = pass):

    1. strace failed exactly the call the trace listed (else :class:`Mismatch`), and
       the answer is clean (:func:`outcome_problems`);
    2. no address is held twice right after the fault;
    3. the next call succeeds: the same command again, or, where there is nothing to
       do again (``ipamctl release`` that released), an ADD for a new container; a
       failure reported for a release that was done is a problem, unless only the
       output was lost;
    4. ``ipamctl check`` is clean, the mirror equals the database, no marker or
       temporary file is left, and the leases are exactly what the command asked for
       (plus the new containers').
    """
    d = os.path.join(root, "data")
    work = os.path.join(root, "work")
    os.makedirs(work)
    path.prepare(template, d)
    cmd = path.cmd(d)
    proc, hit = injected(cmd, call, err, work)
    tag = "%s: %s #%d %s" % (path.name, call.name, call.nth, err)
    if hit is None or hit.shape(d) != expected_shape:
        shutil.rmtree(root, ignore_errors=True)
        raise Mismatch("%s: the call failed was %s, the trace listed %s"
                       % (tag, hit and hit.shape(d), expected_shape))
    problems = outcome_problems(path, proc, call, err, d)
    reported = []
    if path.name.startswith("ADD") and proc.returncode == 0 and not problems:
        reported.append((NET, _address(proc), "c9"))
    problems += ["after the fault: %s" % p for p in held_twice(d, reported)]
    rerun = proc.returncode != 0 or path.rerun_after_success
    if not path.rerun_after_success and proc.returncode != 0 and path.expected() >= db_leases(d):
        rerun = False  # done, though it said it failed
        if not (call.name == "write" and call.fd in (1, 2)):
            problems.append("reported a failure, but the command's change was committed")
    if rerun:
        again = cmd.run()
        problems += ["the next call: %s" % p for p in outcome_problems(path, again)]
        if again.returncode != 0:
            problems.append("the next call failed: exit %d, %r %r"
                            % (again.returncode, again.stdout[-500:], again.stderr[-800:]))
        elif path.name.startswith("ADD"):
            if reported and _address(again) != reported[0][1]:
                problems.append("the repeated ADD returned %s, the first %s"
                                % (_address(again), reported[0][1]))
            reported = [(NET, _address(again), "c9")]
    else:  # nothing to do again: the next call is an ADD for a new container
        new = plugin("ADD", d, "n1").run()
        if new.returncode != 0:
            problems.append("an ADD for a new container failed: %r %r"
                            % (new.stdout, new.stderr))
        else:
            reported.append((NET, _address(new), "n1"))
    check = ipamctl(d, "-o", "json", "check").run()
    if check.returncode != 0:
        problems.append("ipamctl check is not clean after the next call: %s %s"
                        % (check.stdout.decode()[-1500:], check.stderr.decode()[-500:]))
    problems += held_twice(d, reported)
    problems += mirror_mismatch(d, path.networks)
    want = path.expected() | {(NET, ip, cid, "eth0") for _, ip, cid in reported}
    have = db_leases(d)
    if have != want:
        problems.append("leases: missing %s, unexpected %s"
                        % (sorted(want - have, key=str), sorted(have - want, key=str)))
    if problems:
        problems = ["%s (%s) -> exit %d, stdout %r, stderr %r:\n    %s"
                    % (tag, expected_shape[:160], proc.returncode, proc.stdout[-400:],
                       proc.stderr[-600:], "\n    ".join(problems))]
    shutil.rmtree(root, ignore_errors=True)
    return problems


class Harness:
    """The starting state and each path's trace, made once and shared by the tests."""

    def __init__(self, root):
        self.root = root
        self.template = os.path.join(root, "template")
        build_template(self.template)
        self._traces = {}
        self._lock = threading.Lock()
        self._seq = 0

    def scratch(self):
        with self._lock:
            self._seq += 1
            return os.path.join(self.root, "case%d" % self._seq)

    def calls(self, name, fresh=False):
        """The path's own calls (see :func:`trace`), from a fault-free run."""
        if fresh or name not in self._traces:
            path = PATHS[name]
            root = self.scratch()
            d = os.path.join(root, "data")
            path.prepare(self.template, d)
            os.makedirs(os.path.join(root, "work"))
            proc, calls = trace(path.cmd(d), d, os.path.join(root, "work"))
            assert proc.returncode == 0, proc
            self._traces[name] = [(c, c.shape(d)) for c in calls]
            shutil.rmtree(root)
        return self._traces[name]

    def cases(self, name, family, err, select=None):
        """The calls of ``family`` that can fail with ``err``; ``select(call, calls)``
        narrows them (``calls``: the path's whole trace)."""
        names = FAMILIES[family][0]
        calls = [c for c, _ in self.calls(name)]
        return [(c, shape) for c, shape in self.calls(name)
                if c.name in names and err in c.errnos()
                and (select is None or select(c, calls))]

    def run(self, name, family, err, workers=2, select=None):
        """Every case of one path, family and errno (and ``select``, see :meth:`cases`);
        returns (number run, problems). A stale trace (the sources changed since it was
        taken) is taken again, once."""
        path = PATHS[name]
        for attempt in (1, 2):
            cases = self.cases(name, family, err, select)
            try:
                with ThreadPoolExecutor(workers) as pool:
                    results = list(pool.map(
                        lambda c: run_case(path, self.template, self.scratch(), c[0], err,
                                           c[1]), cases))
                return len(cases), [p for r in results for p in r]
            except Mismatch:
                if attempt == 2:
                    raise
                self.calls(name, fresh=True)


# -- power loss ---------------------------------------------------------------------------
# What the command does to the mirror, replayed as a power cut could leave it. Nothing in
# the mirror is fsynced: only the database is (synchronous=FULL). So after a cut, any
# subset of the mirror's metadata operations made before it may be on disk (file systems
# that journal metadata in order, ext4 and XFS, keep a prefix; others promise nothing),
# and a new file's data may be missing, leaving it zero-length (ext4's delayed
# allocation in data=ordered) or holding only its first writes.
MIRROR_CALLS = ("openat", "close", "write", "pwrite64", "link", "linkat", "rename",
                "renameat", "renameat2", "unlink", "unlinkat", "fsync", "fdatasync")
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')


class Op:
    """One metadata operation on a mirror file: ``create``, ``link``, ``rename`` or
    ``unlink`` of ``name`` (relative to dataDir), on inode ``ino``; or a ``sync`` that
    makes what came before it durable (``ino``: a file's data; ``name``: a directory's
    entries)."""

    def __init__(self, kind, name, ino=None, dst=None):
        self.kind, self.name, self.ino, self.dst = kind, name, ino, dst

    def __repr__(self):
        return "%s %s%s" % (self.kind, self.name, " -> " + self.dst if self.dst else "")


class Recording:
    """A command's mirror operations, its new files' writes, and where its COMMIT became
    durable (``commit``: the number of operations made before the COMMIT's sync, the
    last sync of the WAL that follows writes to it; a checkpoint's sync follows none)."""

    def __init__(self, ops, writes, commit):
        self.ops, self.writes, self.commit = ops, writes, commit


def _hexstrings(args):
    return [bytes.fromhex(m.group(1).replace("\\x", "")) for m in _HEX.finditer(args)]


def record_mirror(cmd, data_dir, workdir):
    """Run ``cmd`` under strace and return its :class:`Recording`."""
    out = os.path.join(workdir, "mirror-trace.txt")
    names = {}  # name -> inode, as the command sees them
    for dirpath, _, files in os.walk(data_dir):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), data_dir)
            names[rel] = "pre:" + rel
    proc = cmd.run(["strace", "-f", "-qq", "-s", "65536", "-xx", "-o", out, "-e",
                    "trace=" + ",".join(MIRROR_CALLS), "--"])
    assert proc.returncode == 0, proc
    with open(out) as f:
        calls = parse_trace(f.read())
    root = os.fsencode(str(data_dir)) + b"/"
    dirs, files, ops, writes = {}, {}, [], {}
    wal, commit, seq, framed = None, None, 0, False

    def resolve(dirfd, path):
        """A mirror file's name relative to dataDir; None for anything else (the
        database's own files included: SQLite syncs those)."""
        if not path.startswith(b"/"):
            path = dirs.get(dirfd, b"?/") + path
        if not path.startswith(root) or os.path.basename(path).startswith(DB_NAME.encode()):
            return None
        return os.fsdecode(path[len(root):])

    for c in calls:
        if c.result.startswith("-1"):
            continue
        strings = _hexstrings(c.args)
        first = c.args.split(",", 1)[0]
        dirfd = None if first == "AT_FDCWD" or first.startswith('"') else int(first)
        if c.name == "openat":
            fd, rel = int(c.result.split()[0]), resolve(dirfd, strings[0])
            if "O_DIRECTORY" in c.args:
                dirs[fd] = (strings[0] if strings[0].startswith(b"/")
                            else dirs[dirfd] + strings[0]) + b"/"
            elif strings[0].endswith(b"-wal"):
                wal = fd
            elif rel is not None:
                if "O_CREAT" in c.args and rel not in names:
                    seq += 1
                    names[rel] = "new%d" % seq
                    ops.append(Op("create", rel, names[rel]))
                    writes[names[rel]] = []
                files[fd] = names.get(rel)
        elif c.name == "close":
            fd = int(c.args)
            files.pop(fd, None)
            dirs.pop(fd, None)
        elif c.name == "pwrite64":
            framed = framed or int(first) == wal
        elif c.name == "write" and int(first) in files and files[int(first)] in writes:
            writes[files[int(first)]].append(strings[0])
        elif c.name in ("link", "linkat", "rename", "renameat", "renameat2"):
            at = c.name.endswith(("at", "at2"))
            parts = [p.strip() for p in c.args.split(",")]
            src = resolve(int(parts[0]) if at and parts[0] != "AT_FDCWD" else None, strings[0])
            dst = resolve(int(parts[2]) if at and parts[2] != "AT_FDCWD" else None, strings[1])
            if src is None or dst is None:
                continue
            ino = names.get(src)
            ops.append(Op("link" if "link" in c.name else "rename", src, ino, dst))
            names[dst] = ino
            if "rename" in c.name:
                names.pop(src, None)
        elif c.name in ("unlink", "unlinkat"):
            rel = resolve(dirfd, strings[0])
            if rel is not None:
                ops.append(Op("unlink", rel, names.pop(rel, None)))
        elif c.name in ("fsync", "fdatasync"):
            fd = int(first)
            if fd == wal:
                if framed:
                    commit = len(ops)
                framed = False
            elif fd in files:
                ops.append(Op("sync", None, files[fd]))
            elif fd in dirs and dirs[fd].startswith(root):
                ops.append(Op("sync", os.fsdecode(dirs[fd][len(root):-1])))
    assert commit is not None, "no COMMIT seen"
    return Recording(ops, writes, commit)


def _durable(ops, cut):
    """The operations before ``cut`` that a sync before ``cut`` made durable."""
    out = set()
    for i, op in enumerate(ops[:cut]):
        if op.kind != "sync":
            continue
        for j, prior in enumerate(ops[:i]):
            if prior.kind == "sync":
                continue
            if op.name is not None and os.path.dirname(prior.dst or prior.name) == op.name:
                out.add(j)
            if op.ino is not None and prior.kind == "create" and prior.ino == op.ino:
                out.add(j)
    return out


def crash_states(rec, limit=4096):
    """Every state a power cut can leave, deduplicated: ``(db, files)`` with ``db``
    "pre" or "post" (the COMMIT durable or not) and ``files`` a sorted tuple of
    ``(name, bytes or None)`` for each name the command touched (None: absent).

    A cut falls between any two operations. Before the COMMIT's sync the database is
    the old one, from its sync on the new one (at the sync itself, either); any subset
    of the operations before the cut persisted (those a sync covered always); each new
    file shows any prefix of its writes (the data of a synced file all of them)."""
    import itertools

    ops = [op for op in rec.ops]
    touched = sorted({op.name for op in ops if op.kind != "sync"}
                     | {op.dst for op in ops if op.dst})
    states = set()
    for cut in range(len(ops) + 1):
        dbs = ["pre"] if cut < rec.commit else ["post"] if cut > rec.commit else ["pre", "post"]
        durable = _durable(ops, cut)
        synced = {op.ino for op in ops[:cut] if op.kind == "sync" and op.ino}
        free = [i for i in range(cut) if ops[i].kind != "sync" and i not in durable]
        for k in range(len(free) + 1):
            for chosen in itertools.combinations(free, k):
                kept = durable | set(chosen)
                names = {}
                for i, op in enumerate(ops[:cut]):
                    if i not in kept:
                        continue
                    if op.kind == "create":
                        names[op.name] = op.ino
                    elif op.kind == "link":
                        names[op.dst] = op.ino
                    elif op.kind == "rename":
                        names[op.dst] = op.ino
                        names.pop(op.name, None)
                    elif op.kind == "unlink":
                        names[op.name] = None
                new = sorted({ino for ino in names.values() if ino in rec.writes})
                choices = [range(len(rec.writes[ino]) + 1) if ino not in synced
                           else [len(rec.writes[ino])] for ino in new]
                for picks in itertools.product(*choices):
                    data = {ino: b"".join(rec.writes[ino][:n])
                            for ino, n in zip(new, picks, strict=True)}
                    files = tuple((name, _content(name, names, data, rec))
                                  for name in touched)
                    for db in dbs:
                        states.add((db, files))
                        assert len(states) <= limit, "too many states"
    return _fewest_temporaries(states)


def _is_temporary(name):
    return os.path.basename(name).startswith(TMP_PREFIX)


def _fewest_temporaries(states):
    """Temporary files are judged one by one, by their name alone (removed by a
    reconcile, reported by check): of the states that differ only in which of them
    exist, keep the one with the most and the one with the fewest."""
    groups = {}
    for db, files in states:
        key = (db, tuple(f for f in files if not _is_temporary(f[0])))
        groups.setdefault(key, []).append((db, files))
    out = set()
    for members in groups.values():
        def temps(state):
            return sum(1 for name, data in state[1]
                       if _is_temporary(name) and data not in ("absent", "pre"))
        members.sort(key=lambda st: (temps(st), repr(st)))
        out.add(members[0])
        out.add(members[-1])
    return sorted(out, key=repr)


def _content(name, names, data, rec):
    if name not in names:
        return "pre"
    ino = names[name]
    if ino is None:
        return "absent"
    if ino not in data:
        return "pre"
    if os.path.basename(name).startswith(TMP_PREFIX):
        # Whatever a temporary file holds, it is removed as one: one representative.
        return b"".join(rec.writes[ino])
    return data[ino]


def build_crash_state(path, template, post_db, data_dir, state, stamp_matches):
    """The starting state with the database before or after the command (``post_db``:
    a directory holding the committed database files) and the mirror as ``state``
    says. ``stamp_matches``: record the directory's stamp as if our last change had left
    it (the hint says "unchanged"; the guarantee must not rest on it)."""
    db, files = state
    path.prepare(template, data_dir)
    if db == "post":
        for name in os.listdir(data_dir):
            if name.startswith(DB_NAME):
                os.unlink(os.path.join(data_dir, name))
        for name in os.listdir(post_db):
            shutil.copy2(os.path.join(post_db, name), os.path.join(data_dir, name))
    for name, data in files:
        target = os.path.join(data_dir, name)
        if data == "pre":
            continue
        if os.path.lexists(target):
            os.unlink(target)
        if data != "absent":
            with open(target, "wb") as f:
                f.write(data)
            os.chmod(target, 0o600)
    dbc = sqlite3.connect(os.path.join(data_dir, DB_NAME), isolation_level=None)
    try:
        dbc.execute("UPDATE networks SET data_dir = ?", (str(data_dir),))
        if stamp_matches:
            dbc.execute("UPDATE mirror_stamps SET stamp = ? WHERE network = ?",
                        (stamp(os.path.join(data_dir, NET)), NET))
    finally:
        dbc.close()


def run_crash_case(path, template, post_db, root, state, stamp_matches):
    """One power cut: build ``state``, then the next call (an ADD for a new container:
    after a reboot the runtime starts new ones), ``ipamctl check --repair``, and
    ``ipamctl check``. Returns ``(problems, leaks)``: leaks are leases of owners that
    never got their answer, recorded from a file the cut left (an address kept until
    ``ipamctl gc --previous-boots`` or CNI GC collects it: never held twice)."""
    d = os.path.join(root, "data")
    build_crash_state(path, template, post_db, d, state, stamp_matches)
    problems = ["after the cut: %s" % p for p in held_twice(d)]
    new = plugin("ADD", d, "n1").run()
    problems += ["the next call: %s" % p for p in outcome_problems(PATHS["ADD"], new)]
    reported = []
    if new.returncode != 0:
        problems.append("the next call failed: %r %r" % (new.stdout, new.stderr[-600:]))
    else:
        reported.append((NET, _address(new), "n1"))
    problems += ["after the next call: %s" % p for p in held_twice(d, reported)]
    repair = ipamctl(d, "-o", "json", "check", "--repair").run()
    if "Traceback" in repair.stderr.decode("utf-8", "replace") or repair.returncode != 0:
        problems.append("check --repair: exit %d %s %s" % (
            repair.returncode, repair.stdout.decode()[-1200:], repair.stderr.decode()[-600:]))
    check = ipamctl(d, "-o", "json", "check").run()
    if check.returncode != 0:
        problems.append("check after the repair: %s %s" % (check.stdout.decode()[-1200:],
                                                           check.stderr.decode()[-600:]))
    problems += held_twice(d, reported)
    problems += mirror_mismatch(d, path.networks)
    want = (set(TEMPLATE_LEASES) if state[0] == "pre" else path.expected()) | \
        {(NET, ip, cid, "eth0") for _, ip, cid in reported}
    have = db_leases(d)
    leaks = sorted(have - want, key=str)
    if want - have:
        problems.append("leases lost: %s" % sorted(want - have, key=str))
    if any(cid not in path.leakable for _, _, cid, _ in leaks):
        problems.append("unexpected leases: %s" % leaks)
    if problems:
        problems = ["%s: db %s, stamp %s, files %s:\n    %s" % (
            path.name, state[0], "matching" if stamp_matches else "as recorded",
            _show_files(state[1]), "\n    ".join(problems))]
    shutil.rmtree(root, ignore_errors=True)
    return problems, leaks


def _show_files(files):
    return ", ".join("%s=%s" % (re.sub(r"\.\d+\.\d+$", "", name) if _is_temporary(name)
                                else name,
                                "unchanged" if data == "pre" else
                                data if isinstance(data, str) else
                                "empty" if not data else repr(data))
                     for name, data in files)


class PowerLoss:
    """Each path's recording, committed database and crash states, made once."""

    def __init__(self, harness):
        self.h = harness
        self._made = {}

    def states(self, name):
        if name not in self._made:
            path = PATHS[name]
            root = self.h.scratch()
            d = os.path.join(root, "data")
            work = os.path.join(root, "work")
            os.makedirs(work)
            path.prepare(self.h.template, d)
            rec = record_mirror(path.cmd(d), d, work)
            post = os.path.join(root, "post")
            os.makedirs(post)
            for suffix in ("", "-wal"):
                if os.path.exists(os.path.join(d, DB_NAME + suffix)):
                    shutil.copy2(os.path.join(d, DB_NAME + suffix), post)
            cases = []
            for state in crash_states(rec):
                cases.append((state, False))
                marker = dict(state[1]).get(PENDING + NET)
                if marker in (None, "pre", "absent"):
                    cases.append((state, True))  # no journal: only the stamp can tell
            self._made[name] = (rec, post, cases)
        return self._made[name]

    def run(self, name, workers=2, select=None):
        """Every crash state of a path (those ``select(state)`` accepts): (number of
        cases, problems, leaks)."""
        path = PATHS[name]
        rec, post, cases = self.states(name)
        cases = [c for c in cases if select is None or select(c[0])]
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(
                lambda c: run_crash_case(path, self.h.template, post, self.h.scratch(), *c),
                cases))
        return (len(cases), [p for r, _ in results for p in r],
                [leak for _, r in results for leak in r])


def counts(harness):
    """{path: {family: calls}} and {path: injected faults} (calls times their errnos)."""
    table, faults = {}, {}
    for name in PATHS:
        calls = harness.calls(name)
        table[name] = {fam: sum(1 for c, _ in calls if FAMILY_OF[c.name] == fam)
                       for fam in FAMILIES}
        faults[name] = sum(len(c.errnos()) for c, _ in calls)
    return table, faults


POWER_LOSS_PATHS = ("ADD", "DEL", "GC", "ipamctl-release", "ipamctl-gc", "ipamctl-export")


def main():
    root = tempfile.mkdtemp(prefix="syscall-faults-")
    try:
        harness = Harness(root)
        table, faults = counts(harness)
        power = PowerLoss(harness)
        states = {name: len(power.states(name)[2]) for name in POWER_LOSS_PATHS}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    fams = list(FAMILIES)
    print("%-16s %s %7s %7s" % ("path", " ".join("%9s" % f for f in fams), "faults",
                                "crashes"))
    for name, row in table.items():
        print("%-16s %s %7d %7s" % (name, " ".join("%9d" % row[f] for f in fams), faults[name],
                                    states.get(name, "-")))
    print("total: %d faults, %d crash states" % (sum(faults.values()), sum(states.values())))


if __name__ == "__main__":
    main()
