"""ipam.install.bundle: the launcher's byte-code file is served only while it matches the
sources and the interpreter, and anything else falls back to the usual imports."""
import json
import marshal
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from host_local_sqlite_cli.main import cli
from ipam.install import bundle

PROBE = """
import sys
sys.path.insert(0, %r)
from ipam.install import bundle
served = bundle.load()
import ipam.cni, ipam.store.sqlite
print(served, type(ipam.cni.__spec__.loader).__name__, ipam.cni.__file__)
"""


@pytest.fixture
def package(tmp_path):
    """A copy of the ipam package, with a bundle built from it."""
    root = tmp_path / "root"
    shutil.copytree(bundle.PACKAGE_DIR, root / "ipam",
                    ignore=shutil.ignore_patterns("__pycache__"))
    bundle.build(str(root / "ipam"))
    return root


def probe(root):
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE % str(root)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.split(), proc.stderr


def test_a_fresh_bundle_serves_the_hot_path(package):
    out, err = probe(package)
    assert out == ["True", "_Finder", str(package / "ipam" / "cni.py")] and err == ""
    assert oct(os.stat(bundle.path(str(package / "ipam"))).st_mode & 0o777) == "0o644"


def test_an_edited_source_makes_it_stale(package):
    with open(package / "ipam" / "config.py", "a") as f:
        f.write("\n# edited after the bundle was built\n")
    out, err = probe(package)
    assert out[:2] == ["False", "SourceFileLoader"]
    assert "config.py has changed" in err and "ipamctl install-plugin" in err


def test_another_pythons_bundle_is_not_served(package):
    target = bundle.path(str(package / "ipam"))
    with open(target, "rb") as f:
        _, entries = marshal.load(f)
    with open(target, "wb") as f:
        marshal.dump((b"\x00\x00\r\n", entries), f)
    out, err = probe(package)
    assert out[:2] == ["False", "SourceFileLoader"] and "another Python" in err


@pytest.mark.parametrize("content", [
    b"", b"garbage", marshal.dumps(("x", 1)), marshal.dumps(bundle._magic()),
    marshal.dumps((bundle._magic(), ((1, 2),))),  # the right magic, entries cut short
    marshal.dumps((bundle._magic(), (("ipam.cni", 5, 0, 0, None),))),
])
def test_a_damaged_bundle_is_not_served(package, content):
    target = bundle.path(str(package / "ipam"))
    with open(target, "wb") as f:
        f.write(content)
    out, err = probe(package)
    assert out[:2] == ["False", "SourceFileLoader"] and "out of date" in err


def test_no_bundle_is_the_usual_imports_silently(package):
    os.unlink(bundle.path(str(package / "ipam")))
    out, err = probe(package)
    assert out[:2] == ["False", "SourceFileLoader"] and err == ""


def test_install_plugin_warns_and_goes_on_without_a_bundle(tmp_path, monkeypatch):
    def read_only(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bundle, "build", read_only)
    result = CliRunner().invoke(cli, ["-o", "json", "install-plugin", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cannot write the byte-code bundle" in result.stderr
    assert "Permission denied" in result.stderr
    out = json.loads(result.stdout)
    assert out["bundle"] is None and os.access(out["path"], os.X_OK)
