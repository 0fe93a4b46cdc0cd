"""A new entry path cannot ship without the guarantees (issue 24): every test of a
guarantee suite (helpers.GUARANTEE_SUITES) takes conftest's ``through``, which runs it
through every entry path of helpers.ENTRY_PATHS but those a ``not_through`` mark leaves
out, or is marked ``in_process_only`` (its calls run in process only) or
``no_entry_path`` (it runs no call of our plugin); each mark says why. A path added to
ENTRY_PATHS then runs every guarantee test that does not say why not.

What the suites' tests run is docs/guarantees.md's business (tests/test_docs.py holds its
columns to the collected tests)."""
import importlib
import inspect

import pytest
from helpers import ENTRY_PATHS, GUARANTEE_SUITES, marks_of, takes_through


def functions_of(suite):
    """``(name, function, marks, whether it takes through)`` of each test function of the
    module ``suite``."""
    module = importlib.import_module(suite)
    assert not [n for n in vars(module) if n.startswith("Test")], (
        "%s: a test class: its tests would not be checked here" % suite)
    for name, function in sorted(vars(module).items()):
        if name.startswith("test_") and inspect.isfunction(function):
            yield name, function, marks_of(module, function), takes_through(module, function)


@pytest.mark.parametrize("suite", GUARANTEE_SUITES)
def test_every_guarantee_test_runs_through_the_entry_paths_or_says_why_not(suite):
    loose = []
    for name, _function, marks, through in functions_of(suite):
        said = [m for m in marks if m.name in ("in_process_only", "no_entry_path")]
        if len(said) + through != 1 or not all(m.kwargs.get("why") for m in said):
            loose.append(name)
        for mark in marks:
            if mark.name == "not_through":
                assert through and mark.args and set(mark.args) <= set(ENTRY_PATHS) and \
                    mark.kwargs.get("why"), (name, mark)
    assert loose == [], ("%s: these take not the through fixture or one "
                         "in_process_only(why=...) or no_entry_path(why=...) mark: %s"
                         % (suite, loose))


def test_the_guarantee_suites_run_through_every_path():
    """Each path is one some test of the suites runs through: a path every test leaves
    out would be a path the guarantees never saw."""
    left = set(ENTRY_PATHS)
    for suite in GUARANTEE_SUITES:
        for _name, _function, marks, through in functions_of(suite):
            if through:
                out = {p for m in marks if m.name == "not_through" for p in m.args}
                left -= set(ENTRY_PATHS) - out
    assert left == set(), left


def test_the_check_catches_a_test_that_says_nothing(tmp_path, monkeypatch):
    """The check itself, on a suite with a test of each kind."""
    (tmp_path / "suite_for_the_check.py").write_text(
        "import pytest\n"
        "def test_through(through): pass\n"
        "@pytest.mark.in_process_only(why='a reason')\n"
        "def test_said(): pass\n"
        "@pytest.mark.in_process_only\n"
        "def test_said_no_why(): pass\n"
        "@pytest.mark.no_entry_path(why='a reason')\n"
        "def test_said_otherwise(): pass\n"
        "@pytest.mark.no_entry_path(why='a reason')\n"
        "def test_said_and_through(through): pass\n"
        "def test_silent(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AssertionError, match=r": \['test_said_and_through', 'test_said_no_why', "
                                             r"'test_silent'\]"):
        test_every_guarantee_test_runs_through_the_entry_paths_or_says_why_not(
            "suite_for_the_check")
