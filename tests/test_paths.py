"""Every on-disk name is spelled once, in ipam/paths.py.

The names are a contract with Go host-local, SQLite and operators; spelled in one
module, a rename cannot miss a reader. The check reads the source (string constants
outside docstrings), so a new module spelling one of them fails here, not in production.
"""
import ast
import pathlib

import pytest

from ipam import paths

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Names distinctive enough to be found inside any string: messages name files through
# the constants, never by spelling them.
# (Not the plugin's name or the bin directory: the distribution, the config's ``type``
# and the runtimes' own defaults spell the same words.)
CONTAINED = [".host-local-sqlite", paths.LEGACY_CURSOR, paths.DEFAULT_DATA_DIR,
             "launcher-bundle"]
# Short names, found only as a whole string (a message may well say "lock").
WHOLE = [paths.MIRROR_LOCK, paths.WRITER_QUEUE_SUFFIX, *paths.SQLITE_SIDECARS]
# The launcher reads its bundle before it may import ipam.paths (see paths' docstring).
ALLOWED = {"ipam/install/bundle.py": {"launcher-bundle"}}


def _docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                yield first.value


def spelled(path):
    tree = ast.parse(path.read_text(), str(path))
    skip = set(map(id, _docstrings(tree)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in skip:
            text = node.value
            for name in CONTAINED:
                if name in text:
                    yield node.lineno, name
            if text in WHOLE:
                yield node.lineno, text


def sources():
    for top in ("ipam", "cli", "migrations", "tools"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel != "ipam/paths.py":
                yield rel


@pytest.mark.parametrize("rel", list(sources()))
def test_no_module_but_paths_spells_an_on_disk_name(rel):
    found = [(line, name) for line, name in spelled(ROOT / rel)
             if name not in ALLOWED.get(rel, ())]
    assert not found, "%s spells %s: import it from ipam.paths" % (
        rel, ", ".join("%r (line %d)" % (name, line) for line, name in found))


def test_the_check_finds_a_spelled_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Docstrings may say .host-local-sqlite.db."""\n'
                   'LOCK = "lock"\nname = f"{x}/last_reserved_ip.{n}"\n')
    assert list(spelled(bad)) == [(2, "lock"), (3, "last_reserved_ip")]


def test_cursor_names():
    assert paths.cursor_name(3) == "last_reserved_ip.3"
    assert paths.is_cursor_name("last_reserved_ip.3")
    assert paths.cursor_index("last_reserved_ip.12") == 12
    # Not cursors: the legacy name (importer reads it apart), digits int() refuses.
    for name in ("last_reserved_ip", "last_reserved_ip.", "last_reserved_ip.²",
                 "last_reserved_ip.-1", "last_reserved_ip.1a"):
        assert not paths.is_cursor_name(name), name
