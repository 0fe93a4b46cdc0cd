"""ipam.system: the hot path's OS calls without ``os``, agreeing with ``os.path``."""
import os
import subprocess
import sys

import pytest

from ipam import paths, system

PATHS = ["", "/", "//", "a", "a/", "a//", "/a", "/a/", "a/b", "a/b/", "a//b", "/a/b/c",
         "/var/lib/cni/networks/", "./x", "../x/y", "a/./b", "/a/../b", ".", ".."]


@pytest.mark.parametrize("base", PATHS)
@pytest.mark.parametrize("name", ["n", "n/", "/abs", "x/y", paths.DB_NAME])
def test_join_is_os_path_join(base, name):
    assert system.join(base, name) == os.path.join(base, name)


@pytest.mark.parametrize("path", PATHS)
def test_dirname_is_os_path_dirname(path):
    assert system.dirname(path) == os.path.dirname(path)


def test_file_type_probes_agree_with_os_path(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("file", "dir", "to-dir", "dangling", "nowhere", "file/below", "bad\0name"):
        p = str(tmp_path / name)
        for ours, theirs in ((system.exists, os.path.exists), (system.lexists, os.path.lexists),
                             (system.isdir, os.path.isdir), (system.islink, os.path.islink)):
            assert ours(p) == theirs(p), (ours.__name__, name)


def test_environ_decodes_as_os_environ_does():
    code = ("import os, sys; from ipam import system\n"
            "print(system.environ() == dict(os.environ))\n"
            "print(system.environ()['ODD'] == os.environ['ODD'])\n")
    env = dict(os.environ)
    env_b = {k.encode(): v.encode() for k, v in env.items()}
    env_b[b"ODD"] = b"caf\xe9 \xff"  # not UTF-8: surrogate escapes, as in os.environ
    out = subprocess.run([sys.executable, "-c", code], env=env_b, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_importing_it_imports_no_os():
    root = os.path.dirname(os.path.dirname(system.__file__))
    code = "import sys; sys.path.append(%r); import ipam.system; print('os' in sys.modules)" % root
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["False"], out.stderr
