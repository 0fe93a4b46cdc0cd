"""CI itself (.ci/run, the Makefile's targets it runs): the gates come first, the
Pythons' suites run side by side, each in a pid and mount namespace of its own, and
nothing two suites do at once collides (issue 29).

.ci/run runs here for real, in a copy of its directory with a ``make`` of the test's
first on PATH: a suite is that make's ``test``, which says what it sees (its
namespaces, whether an orphan of it is reaped, the other suites) instead of running
pytest. The namespaces, ``unshare``, ``.ci/init`` and gc's namespace finder are real."""
import os
import subprocess
import sys

import pytest
from helpers import ENTRY_PATHS, REPO


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
