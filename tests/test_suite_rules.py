"""The test suite's own rules, read from its source: a rule kept by review alone erodes
one test at a time.

- A test waits for the event, never for a time: a ``sleep`` outside a polling loop is
  a guess at how long something takes, which a loaded machine makes wrong (the test
  then fails, or passes without testing anything). The few whose duration is the
  subject are listed here, each with why.
- One concept, one helper (helpers.py): one ``Outcome`` of a plugin call; one runner
  of the installed ipamctl to its end (``helpers.ipamctl``: its environment, stdin and
  checks decided once; a Popen, of a daemon or of a command raced against, is apart).
- Our on-disk names are spelled in ipam.paths alone: a test that spells the database's
  file name keeps passing after a rename that strands every operator's backup.
"""
import ast
import pathlib
import subprocess
import time

import pytest
from helpers import wait_queued

from ipam import paths

TESTS = pathlib.Path(__file__).resolve().parent

# (module, function) -> why its sleep outside a loop is no wait for an event.
TIMED = {
    ("helpers.py", "_relay"): "a holder's turn of a set length: what the relay is for",
    ("test_signals.py", "_signalled_run"): "the sweep's delay before the signal: its subject",
    ("test_deploy.py", "test_the_daemon_on_pid1s_socket_serves_and_leaves_it_listening"):
        "a stretch of idleness in which nothing may happen (no worker spins)",
    ("test_history.py", "test_prune_history_deletes_the_oldest_first_at_most_limit"):
        "wall-clock time between the leases on either side of a cutoff",
    ("test_import.py", "test_source_files_never_modified"):
        "a change after it would show in the files' timestamps (a coarse clock)",
}
# Modules whose every sleep is the subject: ipam.waits' clock arithmetic.
TIMED_MODULES = {"test_waits.py": "the waits' bounds are measured against set delays"}


def _is_sleep(node):
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "sleep")
        or (isinstance(node.func, ast.Name) and node.func.id == "sleep"))


def lone_sleeps(source, name="<test>"):
    """``(line, function)`` of each sleep outside a loop in ``source`` (a loop's sleep
    paces a look at a condition; a function's own body starts outside any loop)."""
    found = []

    def visit(node, in_loop, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, getattr(child, "name", function))
                continue
            if _is_sleep(child) and not in_loop:
                found.append((child.lineno, function))
            visit(child, in_loop or isinstance(child, (ast.While, ast.For)), function)

    visit(ast.parse(source, name), False, None)
    return found


def modules():
    return sorted(p.name for p in TESTS.glob("*.py"))


@pytest.mark.parametrize("module", modules())
def test_no_sleep_stands_in_for_an_event(module):
    if module in TIMED_MODULES:
        return
    found = [(line, function) for line, function in
             lone_sleeps((TESTS / module).read_text(), module)
             if (module, function) not in TIMED]
    assert not found, (
        "%s sleeps outside a polling loop (%s): wait for the event instead (a waiter in "
        "/proc/locks: helpers.wait_queued; a ready line; a socket), or list it in TIMED "
        "saying why its duration is the subject" % (
            module, ", ".join("line %d in %s" % f for f in found)))


def test_the_check_finds_a_lone_sleep():
    source = ("import time\n"
              "def test_x(proc):\n"
              "    time.sleep(0.5)\n"
              "    assert proc.poll() is None\n"
              "    while proc.poll() is None:\n"
              "        time.sleep(0.01)\n"
              "    for _ in range(3):\n"
              "        def later():\n"
              "            sleep(1)\n")
    assert lone_sleeps(source) == [(3, "test_x"), (9, "later")]


def test_a_wait_for_a_queue_ends_when_the_process_did(tmp_path):
    """A call that ended never queues: the wait says so at once, not at its timeout."""
    lock = tmp_path / "lock"
    lock.write_bytes(b"")
    proc = subprocess.Popen(["true"])
    proc.wait(30)
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="process %d ended before it queued" % proc.pid):
        wait_queued(lock, proc.pid, timeout=30)
    assert time.monotonic() - t0 < 5


def classes_named(name):
    """``(module, line)`` of each class ``name`` defined in tests/."""
    return [(module, node.lineno) for module in modules()
            for node in ast.walk(ast.parse((TESTS / module).read_text(), module))
            if isinstance(node, ast.ClassDef) and node.name == name]


def test_one_outcome_of_a_plugin_call():
    found = classes_named("Outcome")
    assert [module for module, _ in found] == ["helpers.py"], found


RUNS = {"run", "check_output", "check_call", "call"}  # subprocess's, to the end


def ipamctl_runs(source, name="<test>"):
    """``(line, function)`` of each ``subprocess.run([IPAMCTL, ...])`` (or check_output,
    call, check_call) in ``source``."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else function
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) \
                    and child.func.attr in RUNS and child.args \
                    and isinstance(child.args[0], ast.List) and child.args[0].elts \
                    and isinstance(child.args[0].elts[0], ast.Name) \
                    and child.args[0].elts[0].id == "IPAMCTL":
                found.append((child.lineno, function))
            visit(child, inner)

    visit(ast.parse(source, name), None)
    return found


@pytest.mark.parametrize("module", modules())
def test_ipamctl_runs_through_the_one_helper(module):
    found = [f for f in ipamctl_runs((TESTS / module).read_text(), module)
             if (module, f[1]) != ("helpers.py", "ipamctl")]
    assert not found, "%s runs ipamctl itself (%s): use helpers.ipamctl" % (
        module, ", ".join("line %d in %s" % f for f in found))


def test_the_check_finds_an_ipamctl_run():
    source = ("def ctl(d, *args):\n"
              "    return subprocess.run([IPAMCTL, '--data-dir', d, *args])\n"
              "daemon = subprocess.Popen([IPAMCTL, 'serve'])\n")
    assert ipamctl_runs(source) == [(2, "ctl")]


# Whole names of ours a test may otherwise spell as a string of its own (a message that
# names one, in part of a longer string, is expected output).
OUR_NAMES = (paths.DB_NAME, paths.PENDING_PREFIX, paths.TMP_PREFIX)


@pytest.mark.parametrize("module", modules())
def test_our_file_names_come_from_ipam_paths(module):
    tree = ast.parse((TESTS / module).read_text(), module)
    found = sorted({(node.lineno, node.value) for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value in OUR_NAMES})
    assert not found, "%s spells %s: take it from ipam.paths" % (
        module, ", ".join("%r (line %d)" % (name, line) for line, name in found))
