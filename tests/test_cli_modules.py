"""ipamctl's modules have no import cycle: each imports alone in a fresh interpreter, and
none but the root group's own pulls in ``host_local_sqlite_cli.main`` (a command module
that needed it would depend on the module that registers it)."""
import os
import pkgutil
import subprocess
import sys

import pytest

import host_local_sqlite_cli

MODULES = sorted(m.name for m in pkgutil.iter_modules(host_local_sqlite_cli.__path__))
MAIN = "host_local_sqlite_cli.main"


def test_every_module_is_found():
    assert {"main", "output", "common", "db", "gc", "plugin"} <= set(MODULES), MODULES


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(tmp_path, module):
    name = "host_local_sqlite_cli." + module
    probe = "import sys, %s; print(%r in sys.modules)" % (name, MAIN)
    # From an empty directory: the repository's own cli/ must not stand in for the package.
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(name == MAIN), "%s imports %s" % (name, MAIN)


def test_nothing_imports_the_folders_by_their_repository_names():
    """``cli`` and ``migrations`` are folder names only: code importing them so would run a
    second copy of ipamctl from the checkout (and fail from an installed wheel)."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pattern = re.compile(r"^\s*(from|import)\s+(cli|migrations)(\.|\s|$)", re.M)
    found = []
    for folder in ("ipam", "cli", "migrations", "tests", "tools"):
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path) as f:
                        if pattern.search(f.read()):
                            found.append(os.path.relpath(path, root))
    assert found == []
