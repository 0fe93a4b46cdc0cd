"""The folders are the architecture: no import circle between our modules, packages whose
``__init__.py`` imports nothing, and docs/architecture.md's directory listing naming
every module of ``ipam/`` and ``cli/`` exactly once.

An import circle is one however it is spelled: at the top of a module, inside a
function (a "lazy" import), or through a package. Only imports under ``if
TYPE_CHECKING:`` are left out: no process ever runs them (``TYPE_CHECKING`` is False at
run time), and mypy resolves the annotations they serve however the modules refer to
each other.
"""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# cli/ installs as host_local_sqlite_cli (setup.cfg's package_dir).
PACKAGES = {"ipam": "ipam", "cli": "host_local_sqlite_cli"}
ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")
LISTING_HEADING = "## Modules by folder"


def modules():
    """``{module name: path}`` of every Python file of the shipped packages."""
    found = {}
    for folder, package in PACKAGES.items():
        for base, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(base, name), os.path.join(ROOT, folder))
                parts = [package] + rel[:-len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = os.path.join(base, name)
    return found


def _is_type_checking(test):
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree):
    """Every import statement of a module, at any depth, but those under ``if
    TYPE_CHECKING:`` (their ``else:`` runs, so it counts)."""
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_one(sub)
                continue
            visit_one(child)

    def visit_one(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def _resolve(module, is_package, node):
    """The modules an import statement may load: for ``from X import y``, ``X.y`` when
    that is a module, else ``X``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if not is_package:
            parts.pop()
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return ["%s.%s" % (base, alias.name) for alias in node.names] + [base]


def import_graph():
    """``{module: set of our modules it imports}``, a package's submodule importing the
    package's ``__init__`` as Python does (an import of ``a.b.c`` runs ``a`` and
    ``a.b`` first)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        edges = set()
        for node in _imports(tree):
            targets = _resolve(name, is_package, node)
            if isinstance(node, ast.ImportFrom):  # X.y if a module, else X itself
                submodules = [t for t in targets[:-1] if t in mods]
                targets = submodules or targets[-1:]
            for target in targets:
                while target and target not in mods:  # an attribute of a module
                    target = target.rpartition(".")[0]
                while target:  # the packages on the way are run too
                    if target in mods and target != name:
                        edges.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = edges
    return graph


def circles(graph):
    """One circle (``[a, b, ..., a]``) for each group of modules that import each other,
    directly or not (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph, group):
    """A shortest circle through the group's first module (breadth first, in the group)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError("not a circle: %s" % sorted(group))


def test_the_circle_finder_finds_a_lazy_circle():
    """The check itself: a circle through a function-level import is found and named,
    one under ``if TYPE_CHECKING:`` is not."""
    a = ast.parse("import ipam.b\n")
    b = ast.parse("def f():\n    from ipam import a\n")
    c = ast.parse("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from ipam.a import x\n")
    assert [len(_imports(t)) for t in (a, b, c)] == [1, 1, 0]
    graph = {"ipam.a": {"ipam.b"}, "ipam.b": {"ipam.a"}, "ipam.c": set()}
    assert circles(graph) == [["ipam.a", "ipam.b", "ipam.a"]]


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles (move what both sides share into a leaf):\n" + \
        "\n".join("  " + " -> ".join(c) for c in found)


@pytest.mark.parametrize("package", sorted(n for n, p in modules().items()
                                           if p.endswith("__init__.py")))
def test_a_package_init_imports_nothing(package):
    """Importing ``ipam.store.sqlite`` runs ``ipam/__init__.py`` and
    ``ipam/store/__init__.py`` first: anything they imported, every plugin call would
    load, and a package that imports its modules closes a circle with each of them."""
    with open(modules()[package], encoding="utf-8") as f:
        tree = ast.parse(f.read())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def listing():
    """The paths (``ipam/store/sqlite.py``, ``ipam/store/``) that docs/architecture.md's
    directory listing names, in order: one entry a line, indented two spaces a level."""
    with open(ARCHITECTURE, encoding="utf-8") as f:
        text = f.read()
    assert LISTING_HEADING in text, "docs/architecture.md has no %r" % LISTING_HEADING
    section = text.split(LISTING_HEADING, 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "no ```text block under %r" % LISTING_HEADING
    entries, parents = [], []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, line
        name = line.split()[0]
        if not (name.endswith("/") or name.endswith(".py")):
            continue  # a description's next line
        level = indent // 2
        assert level <= len(parents), "indented too far: %r" % line
        parents[level:] = []
        entries.append("".join(parents) + name)
        if name.endswith("/"):
            parents.append(name)
    return entries


def test_the_architecture_listing_names_every_module_once():
    listed = listing()
    doubled = sorted({p for p in listed if listed.count(p) > 1})
    assert not doubled, "listed more than once: %s" % doubled
    files = {os.path.relpath(p, ROOT) for p in modules().values()
             if not p.endswith("__init__.py")}
    folders = {os.path.relpath(os.path.dirname(p), ROOT) + "/" for p in modules().values()}
    named = {p for p in listed if p.endswith(".py")}
    assert sorted(files - named) == [], "modules the listing does not name"
    assert sorted(named - files) == [], "listed modules that do not exist"
    assert sorted(folders - set(listed)) == [], "packages the listing does not name"
    assert sorted(set(listed) - named - folders) == [], "listed folders that do not exist"
