"""Permission errors say so: the installed ipamctl and plugin, run as another user
(nobody) on root's files, name the path that stops them, its owner and mode, and what
to do; nothing is changed, and no traceback is shown.

Root is needed to switch users; the directories are made under /tmp, open to nobody,
since pytest's own tmp_path is root's alone (0700)."""
import json
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest
from helpers import IPAMCTL, NOBODY, PLUGIN, RUN_AS_NOBODY, cni_env

from ipam import paths

pytestmark = pytest.mark.root  # every test runs ipamctl as another user (setpriv)

HINT = "run as root, or use a path this user may open (ipamctl --database"


def as_nobody(*argv, input=None, env=None):
    proc = subprocess.run([*RUN_AS_NOBODY, *argv], input=input, capture_output=True, text=True,
                          env=dict({"PATH": os.environ.get("PATH", ""),
                                    "IPAM_ROOT": os.environ["IPAM_ROOT"]}, **(env or {})),
                          timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def nobody_runs():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run ipamctl as another user")
    proc = as_nobody(IPAMCTL, "--version")
    assert proc.returncode == 0, proc.stderr  # the runner above makes it reachable


@pytest.fixture
def data_dir(nobody_runs):
    """A dataDir with a database the plugin (root) made: mode 0600, as it always is."""
    top = tempfile.mkdtemp(prefix="ipam-perm-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "data")
    os.mkdir(d, 0o755)
    yield d
    shutil.rmtree(top)


def conf(data_dir):
    return {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge",
            "ipam": {"type": "host-local-sqlite", "subnet": "10.1.2.0/24",
                     "dataDir": data_dir}}


def plugin_add(data_dir, cid, runner=()):
    env = dict({"PATH": os.environ.get("PATH", "")}, **cni_env("ADD", container_id=cid))
    proc = subprocess.run([*runner, PLUGIN], input=json.dumps(conf(data_dir)), env=env,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def snapshot(data_dir):
    out = {}
    for root, _, files in os.walk(data_dir):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[p] = (os.stat(p).st_mode, fh.read())
    return out


@pytest.fixture
def leased(data_dir):
    assert plugin_add(data_dir, "a").returncode == 0
    return paths.default_database(data_dir)


@pytest.mark.parametrize("args", [["list"], ["stats"], ["history"], ["network", "list"],
                                  ["-o", "json", "list"]])
def test_reading_a_root_only_database_says_permission_denied(data_dir, leased, args):
    before = snapshot(data_dir)
    proc = as_nobody(IPAMCTL, "--data-dir", data_dir, *args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"Error: permission denied: user nobody (uid {NOBODY}) cannot read {leased} "
        "(owner root:root, mode 0600)",
        HINT + ", or the config's \"database\")"]
    assert snapshot(data_dir) == before


@pytest.mark.parametrize("args, verb", [
    (["release", "10.1.2.2", "--yes"], "read and write"),
    (["gc", "--network", "mynet", "--valid", "x", "--apply"], "read and write"),
    # forget reads first (an unknown network must create nothing), so reading stops it
    (["network", "forget", "mynet", "--release", "--yes"], "read"),
])
def test_writing_a_root_only_database_says_permission_denied(data_dir, leased, args, verb):
    before = snapshot(data_dir)
    proc = as_nobody(IPAMCTL, "--data-dir", data_dir, *args)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"Error: permission denied: user nobody (uid {NOBODY}) cannot {verb} "
        f"{leased} (owner root:root, mode 0600)\n{HINT}"), proc.stderr
    assert snapshot(data_dir) == before


def test_a_data_dir_that_may_not_be_entered_is_named(data_dir, leased):
    os.chmod(data_dir, 0o700)
    for args in (["list"], ["release", "10.1.2.2", "--yes"]):
        proc = as_nobody(IPAMCTL, "--data-dir", data_dir, *args)
        assert proc.returncode == 1
        assert proc.stderr.startswith(  # not "does not exist"
            f"Error: permission denied: user nobody (uid {NOBODY}) cannot enter {data_dir} "
            "(owner root:root, mode 0700)\n"), proc.stderr


def test_the_owner_is_named_when_it_is_not_root(data_dir, leased):
    owner = pwd.getpwuid(1)
    for name in os.listdir(data_dir):
        os.chown(os.path.join(data_dir, name), owner.pw_uid, owner.pw_gid)
    proc = as_nobody(IPAMCTL, "--data-dir", data_dir, "list")
    assert proc.returncode == 1
    assert f"cannot read {leased} (owner {owner.pw_name}:" in proc.stderr
    assert f"run as root or as {owner.pw_name} (the owner), or use" in proc.stderr


def test_an_unreadable_mirror_directory_is_named(data_dir, leased):
    """The database readable (as an operator may make it), the network's directory not:
    check names that directory."""
    for name in os.listdir(data_dir):
        if name.startswith(".host-local-sqlite"):
            os.chmod(os.path.join(data_dir, name), 0o644)
    mine = os.path.join(data_dir, "mynet")
    os.chmod(mine, 0o700)
    proc = as_nobody(IPAMCTL, "--data-dir", data_dir, "-o", "json", "check")
    assert proc.returncode == 1
    problems = json.loads(proc.stdout)["problems"]
    assert problems == [f"mynet: permission denied: user nobody (uid {NOBODY}) cannot read "
                        f"{mine} (owner root:root, mode 0700)"]


def test_the_plugin_says_permission_denied_in_its_error_object(data_dir, leased):
    before = snapshot(data_dir)
    proc = plugin_add(data_dir, "b", runner=RUN_AS_NOBODY)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["code"] == 5
    assert error["msg"] == (f"permission denied: user nobody (uid {NOBODY}) cannot read and "
                            f"write {leased} (owner root:root, mode 0600)")
    assert error["details"].startswith(HINT)
    assert snapshot(data_dir) == before


def test_not_a_permission_problem_keeps_its_message(data_dir, nobody_runs):
    missing = os.path.join(data_dir, "none")
    proc = as_nobody(IPAMCTL, "--data-dir", missing, "list")
    assert proc.returncode == 1
    # Its message, then where leases were found instead (here: nowhere), and no word of
    # permissions.
    assert proc.stderr.startswith(
        f"Error: database {missing}/.host-local-sqlite.db does not exist; no network config"
    ), proc.stderr
    assert "permission" not in proc.stderr.lower() and HINT not in proc.stderr
