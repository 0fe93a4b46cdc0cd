"""CI itself (.ci/run, the Makefile's targets it runs): the gates come first, the
Pythons' suites run each in a pid and mount namespace of its own (side by side, one per
lane: CI_LANES, which these tests set), and nothing two suites do at once collides
(issue 29).

.ci/run runs here for real, in a copy of its directory with a ``make`` of the test's
first on PATH: a suite is that make's ``test``, which says what it sees (its
namespaces, whether an orphan of it is reaped, the other suites) instead of running
pytest. The namespaces, ``unshare``, ``.ci/init`` and gc's namespace finder are real."""
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from helpers import ENTRY_PATHS, REPO, wait_until


def test_make_check_leaves_out_the_slow_tests():
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", "lint", "-o", "typecheck", "-o", "compile",
         "check", "PY=" + sys.executable,
         "PYTEST_ARGS=--collect-only -p no:cacheprovider tests/test_crash.py"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected and not [line for line in collected if "random_sigkills" in line], (
        proc.stdout[-3000:])


FAKE_CC = r'''#!%(python)s
import os, sys, time
out = sys.argv[sys.argv.index("-o") + 1]
source = sys.argv[-1]
log = os.path.join(os.environ["CC_PROBE"], "compiles")
with open(log, "a") as f:
    f.write(source + "\n")
with open(out, "w") as f:
    f.write(str(os.getpid()))
deadline = time.monotonic() + 20  # until the other make's compile of it has begun too
while open(log).read().splitlines().count(source) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
with open(out) as f:
    sys.exit(0 if f.read() == str(os.getpid()) else 1)
'''


@pytest.mark.parametrize("target, compiler", [
    ("native", "NATIVE_CC"), ("native-asan", "ASAN_CC"), ("native-fuzz", "FUZZ_CC")])
def test_two_suites_building_the_native_programs_at_once_never_share_a_file(
        tmp_path, target, compiler):
    """Suites side by side build build/native's programs at the same moment (their
    fixtures run make): each compile writes a file of its own, moved into place whole."""
    cc = tmp_path / "cc"
    cc.write_text(FAKE_CC % {"python": sys.executable})
    cc.chmod(0o755)
    out = tmp_path / "native"
    makes = [subprocess.Popen(
        ["make", "--no-print-directory", "-s", "-B", target, "NATIVE_DIR=%s" % out,
         "%s=%s" % (compiler, cc)], cwd=REPO, env={**os.environ, "CC_PROBE": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    answers = [(m.wait(timeout=120), m.stdout.read()) for m in makes]
    for m in makes:
        m.stdout.close()
    assert [status for status, _ in answers] == [0, 0], answers
    assert sorted(os.listdir(out)) == {
        "native": ["host-local-sqlite"], "native-asan": ["host-local-sqlite-asan",
                                                         "probe-asan"],
        "native-fuzz": ["fuzz"]}[target]


@pytest.mark.postgres
def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(tmp_path):
    """A suite beside this one may take the port pgserver found free before the server
    binds it (initdb runs in between): the first start tries another."""
    import socket

    import pgserver

    bindir = pgserver.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install "
                    "postgresql)")
    server = pgserver.PgServer(bindir).init()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            server.port = taken.getsockname()[1]
            server.start()
            assert server.port != taken.getsockname()[1]
        url = server.create_database()
        assert server.sql(url, "SELECT 1") == [(1,)]
    finally:
        server.cleanup()


def test_the_daemon_runs_one_scenario_of_each_class_of_the_differential_suite():
    """Every scenario in process; through the daemon, each scenario's first instance and
    one of each further class (test_reference.door_class), and an instance named on the
    command line whatever its class."""
    import test_reference

    def collected(*args):
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                               "-p", "no:cacheprovider", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in os.environ.items()
                                   if k != "PYTEST_ADDOPTS"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return [line for line in proc.stdout.splitlines() if "::" in line]

    ids = collected("tests/test_reference.py")
    by_path = {}
    for nodeid in ids:
        function, _, rest = nodeid.split("::")[1].partition("[")
        path = [p for p in ENTRY_PATHS if rest.startswith((p + "-", p + "]"))]
        by_path.setdefault(max(path, key=len, default=None), []).append(function)
    in_process, daemon = by_path["in-process"], by_path["daemon"]
    assert set(daemon) == set(in_process), set(in_process) - set(daemon)
    skel = test_reference.SKEL_CASES
    assert daemon.count("test_skel_checks") == len({
        (case[1], 0 if case[4] is None else case[4][0]) for case in skel}) < len(skel)
    assert daemon.count("test_routes") == 1 < in_process.count("test_routes")
    assert len(daemon) < len(in_process) / 2, (len(daemon), len(in_process))
    one = [i for i in ids if i.startswith("tests/test_reference.py::test_routes[daemon-")][0]
    other = one.replace("[daemon-%s]" % one.split("daemon-")[1][:-1], "[daemon-0.4.0]")
    assert other not in ids
    assert collected(other) == [other]


PYTHONS = ["3.11", "3.12", "3.13"]  # .ci/run's PYTHONS
MAIN = "3.12"  # the main Python the copy is given (PYTHON)
OTHERS = "-m 'not once and not slow' -p no:cacheprovider"

# The make of the copy: records each call; `lint` fails when asked to; `test` is a suite.
FAKE_MAKE = r'''#!%(python)s
import json, os, signal, subprocess, sys, time
state = os.environ["CI_PROBE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as f:
    f.write(" ".join(a for a in args if not a.startswith("PYTHON=")) + "\n")
if "lint" in args:
    sys.exit(int(os.environ.get("CI_PROBE_LINT", "0")))
if args[0] != "test":
    sys.exit(0)
venv = ([a[5:] for a in args if a.startswith("VENV=")] or [".venv"])[0]


def ns(kind):
    return os.stat("/proc/self/ns/" + kind).st_ino


def until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def there(name):
    return os.path.exists(os.path.join(state, name))


def touch(name, text=""):
    with open(os.path.join(state, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(state, name + ".tmp"), os.path.join(state, name))


with open("/proc/1/cmdline", "rb") as f:
    init = f.read().split(b"\0")
with open("/proc/%%d/cmdline" %% os.getppid(), "rb") as f:
    parent = f.read().split(b"\0")
with open("/proc/self/status") as f:
    status = dict(line.split(":\t", 1) for line in f.read().splitlines())
# Of the signals a program can set (not glibc's own 32 and 33, which GNU make leaves
# ignored in its children and no one can change back through libc).
record = {"ignored": [n for n in range(1, 65) if int(status["SigIgn"], 16) >> (n - 1) & 1
                      and n in signal.valid_signals()],
          "blocked": int(status["SigBlk"], 16), "ppid": os.getppid(),
          "init": [a.decode() for a in init if a.endswith(b"init")],
          "parent": [a.decode() for a in parent if a.endswith(b"init")],
          "pidns": ns("pid"), "mntns": ns("mnt"),
          "addopts": os.environ.get("PYTEST_ADDOPTS")}
# An orphan: its parent exits at once, and it is the namespace's pid 1's to reap.
orphan = int(subprocess.run(["sh", "-c", "sleep 0.2 & echo $!"], capture_output=True,
                            text=True).stdout)
record["orphan_reaped"] = until(lambda: not os.path.exists("/proc/%%d" %% orphan), 10)
role = os.environ.get("CI_PROBE_ROLE_" + venv.replace("-", "_").replace(".", "_"), "")
if role == "maker":  # namespaces of this suite: one mounted, one a process is in
    name = os.environ["CI_PROBE_NETNS"]
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "echo ready; exec cat"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    keys = [[st.st_dev, st.st_ino] for st in (
        os.stat("/run/netns/" + name), os.stat("/proc/%%d/ns/net" %% holder.pid))]
    touch("made", json.dumps(keys))
    record["looked_at"] = until(lambda: there("looked") and there("outside-looked"), 30)
    holder.stdin.close()
    holder.wait()
    subprocess.run(["ip", "netns", "del", name], check=True)
    touch("released")
elif role == "finder":  # what gc's finder sees from here while the maker holds them
    from ipam.admin import nsfind
    record["made_seen"] = until(lambda: there("made"), 30)
    found = nsfind.find()
    record["found"] = [list(key) for key in found.spaces]
    found.close()
    record["while_held"] = not there("released")
    touch("looked")
# The suites of a lane's worth (CI_PROBE_TOGETHER, default: every one) start before any
# ends; how many run at once is counted as each starts.
touch("started" + venv)
touch("running" + venv)
together = int(os.environ.get("CI_PROBE_TOGETHER", "%(suites)d"))
record["all_started"] = until(
    lambda: sum(n.startswith("started") for n in os.listdir(state)) >= together, 15)
record["running"] = sum(n.startswith("running") for n in os.listdir(state))
touch(venv + ".json", json.dumps(record))
os.unlink(os.path.join(state, "running" + venv))
print("=" * 20 + " 7 passed in 0.01s " + "=" * 20)
sys.exit(1 if venv == os.environ.get("CI_PROBE_FAIL") else 0)
'''


@pytest.fixture
def ci(tmp_path):
    """``ci(**env)``: .ci/run --no-packages of a copy of .ci/ whose make and Pythons are
    the test's (the host's Pythons play no part), started; returns (process, state dir,
    calls(), record(venv))."""
    top = tmp_path / "tree"
    shutil.copytree(os.path.join(REPO, ".ci"), top / ".ci")
    (top / "tools").mkdir()
    find = top / "tools" / "find-python"
    find.write_text('#!/bin/sh\necho "/nowhere/python$1"\n')
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "make").write_text(FAKE_MAKE % {"python": sys.executable,
                                             "suites": len(PYTHONS)})
    (fakes / "python-main").write_text("#!/bin/sh\necho %s\n" % MAIN)
    # Never the host's packages: a copy of the old .ci/run would run apt-get as root.
    (fakes / "apt-get").write_text('#!/bin/sh\necho "$@" >> "$CI_PROBE/apt-get"; exit 1\n')
    for f in (find, fakes / "make", fakes / "python-main", fakes / "apt-get"):
        f.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()

    def start(**env):
        return subprocess.Popen(
            [str(top / ".ci" / "run"), "--no-packages"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PATH": "%s:%s" % (fakes, os.environ["PATH"]), "CI": "true",
                 "CI_LANES": str(len(PYTHONS)),
                 "PYTHON": str(fakes / "python-main"), "CI_PROBE": str(state),
                 **env})

    def calls():
        return (state / "calls").read_text().splitlines()

    def record(venv):
        return json.loads((state / (venv + ".json")).read_text())
    yield start, state, calls, record
    assert not (state / "apt-get").exists()


def finish(proc):
    out, _ = proc.communicate(timeout=180)
    return proc.returncode, out


def test_the_gates_come_first_and_a_failed_one_ends_the_run(ci):
    start, _, calls, _ = ci
    status, out = finish(start(CI_PROBE_LINT="2"))
    assert status != 0, out
    assert calls() == ["lint typecheck"], out


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (a pid namespace per suite)")


@pytest.mark.root
@needs_root
def test_the_pythons_run_side_by_side_each_in_namespaces_of_its_own(ci):
    """The gates, the venvs one after another, then every suite at once: each as the
    child of a pid 1 (.ci/init) that reaps orphans, in its own pid and mount namespace;
    the other Pythons without the `once` and `slow` tests. A failed suite is named."""
    start, _, calls, record = ci
    status, out = finish(start(CI_PROBE_FAIL=".venv-3.13"))
    assert status == 1, out
    others = [v for v in PYTHONS if v != MAIN]
    venvs = [".venv"] + [".venv-" + v for v in others]
    assert calls()[:4] == ["lint typecheck", "compile"] + [
        "compile VENV=.venv-%s" % v for v in others], out
    assert sorted(calls()[4:]) == sorted(["test"] + ["test VENV=.venv-%s" % v
                                                     for v in others]), out
    records = {venv: record(venv) for venv in venvs}
    for venv, r in records.items():
        assert r["all_started"] and r["orphan_reaped"], (venv, r, out)
        assert r["ppid"] == 1 and r["init"][0].endswith("/.ci/init"), (venv, r)
        # Python (this make) ignores SIGPIPE and SIGXFSZ itself; nothing else is.
        assert r["ignored"] == [13, 25] and r["blocked"] == 0, (venv, r)
        assert r["addopts"] == ("" if venv == ".venv" else OTHERS), (venv, r)
    own = os.stat("/proc/self/ns/pid").st_ino, os.stat("/proc/self/ns/mnt").st_ino
    for kind, index in (("pidns", 0), ("mntns", 1)):
        seen = {r[kind] for r in records.values()}
        assert len(seen) == len(venvs) and own[index] not in seen, (kind, records)
    summary = out[out.index("=== Every promised Python:"):].splitlines()[1:len(PYTHONS) + 1]
    assert [line.split(" (")[0] for line in summary] == [
        "Python %s: %s" % (v, "FAILED" if v == "3.13" else "ok") for v in [MAIN] + others]
    assert all(line.endswith("= 7 passed in 0.01s " + "=" * 20) for line in summary), out


@pytest.mark.root
@needs_root
def test_no_more_suites_run_at_once_than_there_are_lanes(ci):
    """CI_LANES=2 (one per CPU on CI's 2 cores): the main Python's suite and the next
    start together, the third once one of them has ended; each in its own namespaces."""
    start, _, _, record = ci
    status, out = finish(start(CI_LANES="2", CI_PROBE_TOGETHER="2"))
    assert status == 0, out
    venvs = [".venv"] + [".venv-" + v for v in PYTHONS if v != MAIN]
    records = [record(venv) for venv in venvs]
    assert [r["all_started"] for r in records] == [True, True, True], records
    assert max(r["running"] for r in records) == 2, records
    assert len({r["pidns"] for r in records}) == 3, records
    assert "=== The suites: 2 at a time" in out, out


@pytest.mark.root
@needs_root
def test_one_after_another_when_asked(ci):
    """CI_SIDE_BY_SIDE=no: one suite at a time, in this host's namespaces, still under
    .ci/init."""
    start, _, _, record = ci
    status, out = finish(start(CI_SIDE_BY_SIDE="no", CI_PROBE_TOGETHER="1"))
    assert status == 0, out
    for venv in [".venv"] + [".venv-" + v for v in PYTHONS if v != MAIN]:
        r = record(venv)
        assert r["running"] == 1 and r["parent"][0].endswith("/.ci/init"), (venv, r)
        assert r["pidns"] == os.stat("/proc/self/ns/pid").st_ino, (venv, r)
    assert "=== The suites: 1 at a time" in out, out


@pytest.mark.root
@needs_root
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_gc_in_one_suite_finds_no_namespace_of_another(ci):
    """gc's finder reads every process and mount it can see: one suite's namespaces (one
    mounted with ip netns, one a process is in), which this test finds from outside,
    are not found from another suite while the first holds them."""
    from ipam.admin import nsfind

    start, state, _, record = ci
    name = "hlsci" + uuid.uuid4().hex[:8]
    proc = start(CI_PROBE_NETNS=name, CI_PROBE_ROLE__venv="maker",
                 CI_PROBE_ROLE__venv_3_11="finder")
    try:
        wait_until(lambda: (state / "made").exists() or proc.poll() is not None,
                   "the first suite's namespaces", timeout=60)
        made = json.loads((state / "made").read_text())
        found = nsfind.find()
        try:
            assert all(tuple(key) in found.spaces for key in made), (made, found.spaces)
        finally:
            found.close()
            (state / "outside-looked").touch()
        status, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.lexists("/run/netns/" + name):  # only a name: its mount went with
            os.unlink("/run/netns/" + name)        # the suite's mount namespace
    assert status == 0, out
    maker, finder = record(".venv"), record(".venv-3.11")
    assert maker["looked_at"] and finder["made_seen"] and finder["while_held"], (
        maker, finder)
    assert not [key for key in made if key in finder["found"]], (made, finder["found"])
