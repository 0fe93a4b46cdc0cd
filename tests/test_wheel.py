"""The built wheel works on its own: proof that the migrations actually ship.

Builds the wheel as ``make wheel`` does (from the sdist, so no stale ``build/`` can leak
in), checks that the README's install line names it, installs it (with the pins) into a
fresh venv outside the repo, and runs the installed console scripts from a
directory where the repo is not importable.
"""
import fnmatch
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from ipam.store.schema_version import HEAD

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env(**extra):
    """The caller's environment without anything that would point Python at the repo."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("CNI_")
    }
    env.update(extra)
    return env


def check(cmd, **kwargs):
    kwargs.setdefault("env", clean_env())
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{cmd}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.mark.slow
@pytest.mark.network  # pip fetches the wheel's dependencies from the package index
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    # `make wheel` as the README says (its venv, this one, is installed already).
    check(["make", "--no-print-directory", "-o", "install", "wheel", "PY=" + sys.executable,
           "WHEEL_DIR=" + str(dist)], cwd=REPO)
    (wheel,) = dist.glob("*.whl")
    with open(os.path.join(REPO, "README.md")) as f:
        globs = re.findall(r"pip install [^\n]*?(\S+\.whl)", f.read())
    assert globs and all(fnmatch.fnmatch(wheel.name, os.path.basename(g)) for g in globs), (
        "the README's %s does not match %s" % (globs, wheel.name))
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
    # cli/ and migrations/ install under distinctive names: a top-level "cli" or
    # "migrations" would collide with other distributions' in site-packages.
    assert "cli" not in top and "migrations" not in top, sorted(top)
    assert {"ipam", "host_local_sqlite_cli", "host_local_sqlite_migrations"} <= top, sorted(top)

    venv = tmp_path / "venv"
    check([sys.executable, "-m", "venv", str(venv)])
    bin_ = venv / "bin"
    check([str(bin_ / "python"), "-m", "pip", "install", "-q", "-c",
           os.path.join(REPO, "constraints.txt"), str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ipamctl = str(bin_ / "ipamctl")
    out = check([ipamctl, "--data-dir", str(data_dir), "db", "upgrade"], cwd=work)
    assert out.stdout.strip() == HEAD
    out = check([ipamctl, "--data-dir", str(data_dir), "db", "current"], cwd=work)
    assert out.stdout.strip() == HEAD

    out = check(
        [str(bin_ / "python"), "-c",
         "import host_local_sqlite_migrations as m, ipam.store.migrate; "
         "print(m.__path__[0]); print(ipam.store.migrate.script_location())"],
        cwd=work,
    )
    installed, located = out.stdout.split()
    assert located == installed
    assert installed.startswith(str(venv)), installed
    assert "site-packages" in installed
    assert os.path.isfile(os.path.join(installed, "versions", "0001_initial.py"))
    assert os.path.isfile(os.path.join(installed, "script.py.mako"))

    config = {
        "cniVersion": "1.0.0",
        "name": "net1",
        # A dataDir of its own: the plugin's first ADD creates the schema from the wheel.
        "ipam": {"type": "host-local-sqlite", "subnet": "10.9.0.0/24",
                 "dataDir": str(tmp_path / "plugin-data")},
    }
    runtime_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/x",
    }
    out = check(
        [str(bin_ / "host-local-sqlite")], input=json.dumps(config), cwd=work, env=runtime_env
    )
    assert json.loads(out.stdout)["ips"][0]["address"] == "10.9.0.2/24"
    out = check([ipamctl, "--data-dir", str(tmp_path / "plugin-data"), "db", "current"],
                cwd=work)
    assert out.stdout.strip() == HEAD

    # No native thin client in the wheel (make wheel says so): install-plugin writes the
    # launcher, the Python client, and --client native says there is none.
    cni_bin = tmp_path / "cni-bin"
    cni_bin.mkdir()
    out = check([ipamctl, "-o", "json", "install-plugin", str(cni_bin)], cwd=work)
    report = json.loads(out.stdout)
    assert (report["client"], report["native"], report["in_process"]) == ("python", None, None)
    assert os.listdir(cni_bin) == ["host-local-sqlite"]
    refused = subprocess.run([ipamctl, "install-plugin", str(cni_bin), "--client", "native"],
                             cwd=work, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no native thin client in this installation" in \
        refused.stderr, refused.stderr
