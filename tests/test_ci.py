"""CI itself (.ci/run, the Makefile's targets it runs): the gates come first, the
Pythons' suites run side by side, each in a pid and mount namespace of its own, and
nothing two suites do at once collides (issue 29).

.ci/run runs here for real, in a copy of its directory with a ``make`` of the test's
first on PATH: a suite is that make's ``test``, which says what it sees (its
namespaces, whether an orphan of it is reaped, the other suites) instead of running
pytest. The namespaces, ``unshare``, ``.ci/init`` and gc's namespace finder are real."""
import subprocess
import sys

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
