"""The hot path's annotations cost nothing at run time.

A plugin call imports neither ``typing`` nor ``__future__`` (``from __future__ import
annotations`` would load the ``__future__`` module: under ``-I -S`` nothing else does).
The names the annotations use are imported under ``TYPE_CHECKING = False``, which mypy
takes as true; and every annotation Python evaluates when it defines a function or a
class is a string: a tuple of string constants is made at compile time, whereas ``str``
or ``list[Lease]`` is looked up or built at every start (measured: 0.15 to 0.25 us per
annotated function, some 60 us over the hot path's 300 functions). The constants still
take unmarshalling (about 60 us from the ``.pyc`` files); the launcher's bundle is
compiled without them.
"""
import ast
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import cni_env, launcher_probe

from ipam.install import bundle

PACKAGE_DIR = bundle.PACKAGE_DIR


def _source(module):
    path = os.path.join(PACKAGE_DIR, *module.split(".")[1:])
    with open(os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py") as f:
        return f.read()


def _is_type_checking(test):
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _evaluated_annotations(tree):
    """Annotations Python evaluates at definition: those of functions and of module- or
    class-level names, outside ``if TYPE_CHECKING:``; not those of a function's locals."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_one(sub, in_function)
                continue
            visit_one(child, in_function)

    def visit_one(node, in_function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if arg is not None and arg.annotation is not None:
                    found.append(arg.annotation)
            if node.returns is not None:
                found.append(node.returns)
            visit(node, True)
        elif isinstance(node, ast.AnnAssign):
            if not in_function:
                found.append(node.annotation)
        elif isinstance(node, ast.ClassDef):
            visit(node, False)
        else:
            visit(node, in_function)

    visit(tree, False)
    return found


@pytest.mark.parametrize("module", bundle.HOT_PATH)
def test_hot_path_annotations_are_strings(module):
    source = _source(module)
    bare = [ast.get_source_segment(source, a) for a in _evaluated_annotations(ast.parse(source))
            if not (isinstance(a, ast.Constant) and isinstance(a.value, str))]
    assert not bare, "%s: write these annotations as strings: %s" % (module, bare)


@pytest.mark.parametrize("module", bundle.HOT_PATH)
def test_hot_path_modules_import_typing_only_for_the_type_checker(module):
    """``typing`` and ``__future__`` appear only under ``if TYPE_CHECKING:``."""
    tree = ast.parse(_source(module))
    guarded = {id(n) for block in ast.walk(tree)
               if isinstance(block, ast.If) and _is_type_checking(block.test)
               for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("typing", "__future__"):
            assert id(node) in guarded, (module, node.lineno)
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
            assert not names & {"typing", "__future__"} or id(node) in guarded, \
                (module, node.lineno)


def test_a_plugin_call_imports_neither_typing_nor_future(tmp_path, netconf):
    """Every command, as the installed launcher runs it (``-I -S``), once the database
    exists (the call that creates it runs the migrations: alembic, typing and all)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    conf = netconf({"subnet": "10.81.0.0/24", "resolvConf": str(resolv)}, version="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    probe = launcher_probe(tmp_path / "probe", (
        "'UNWANTED=%r' % sorted({'typing', '__future__'} & set(sys.modules))"))
    for command, cid in (("ADD", "warm"), ("ADD", "c1"), ("CHECK", "c1"), ("STATUS", "c1"),
                         ("GC", "c1"), ("DEL", "c1")):
        env = {"PATH": os.environ.get("PATH", "")}
        env.update(cni_env(command, container_id=cid))
        proc = subprocess.run([str(probe)], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        unwanted = proc.stderr.decode().rsplit("UNWANTED=", 1)[1].strip()
        assert unwanted == "[]" or cid == "warm", command


def test_the_probe_sees_typing_when_it_is_imported(tmp_path):
    """The check above can fail: the same report after ``import typing`` names it."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          "import sys, typing; print(sorted({'typing', '__future__'}"
                          " & set(sys.modules)))"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['typing']"


def test_the_bundle_serves_the_code_without_its_annotations(tmp_path):
    """The launcher's byte-code drops the functions' annotations (their constants cost
    it some 50 us of unmarshalling a call); the sources keep them for mypy."""
    from ipam import allocator

    assert allocator.add.__annotations__["store"] == "Store"
    root = tmp_path / "root"
    shutil.copytree(PACKAGE_DIR, root / "ipam", ignore=shutil.ignore_patterns("__pycache__"))
    bundle.build(str(root / "ipam"))
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          "import sys; sys.path.insert(0, %r)\n"
                          "from ipam.install import bundle\n"
                          "assert bundle.load()\n"
                          "from ipam import allocator, cni\n"
                          "print(type(allocator.__spec__.loader).__name__,\n"
                          "      allocator.add.__annotations__, cni.main.__annotations__)"
                          % str(root)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["_Finder", "{}", "{}"], out.stderr
