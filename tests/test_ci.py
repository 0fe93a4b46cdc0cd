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
from helpers import REPO


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
