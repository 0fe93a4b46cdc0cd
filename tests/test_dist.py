"""The self-contained build (``make dist``, tools/build_dist.py): it runs where no Python
is, installs itself with ``ipamctl install-plugin``, serves and forwards like the
Python installation, and docs/install.md states what it needs."""
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from contextlib import contextmanager

import pytest
from docs_pages import every_page
from helpers import (
    REPO,
    cni_env,
    counted,
    elf_segment_types,
    has_open,
    holds_flock,
    image_context,
    wait_until,
)

pytestmark = pytest.mark.network  # make dist installs the freezer from the package index


@contextmanager
def tar_member(tarball, name):
    with tarfile.open(tarball) as tar:
        f = tar.extractfile(name)
        yield f.read()


def conf(data_dir, ipam_type="host-local-sqlite", **ipam):
    return json.dumps({"cniVersion": "1.0.0", "name": "dist", "type": "bridge",
                       "ipam": {"type": ipam_type, "dataDir": data_dir, "daemon": False,
                                "ranges": [[{"subnet": "10.66.0.0/24"}]], **ipam}}).encode()


def test_build_info_states_what_the_node_needs(frozen_build):
    info = frozen_build.info
    assert info["freezer"].startswith("cx_Freeze ")
    assert re.fullmatch(r"2\.\d+", info["glibc"]), info
    # The tarball unpacks into a CNI bin directory like the CNI plugins' release: the
    # two executables (symlinks into the build) and the build itself, laid out as
    # install-plugin installs it.
    with tarfile.open(frozen_build.tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    copy = "host-local-sqlite.d/%s-%s" % (info["version"], info["digest"][:12])
    assert members["host-local-sqlite"].issym()
    assert members["host-local-sqlite"].linkname == copy + (
        "/client" if info["client"] else "/host_local_sqlite")
    assert members["ipamctl"].linkname == copy + "/ipamctl"
    assert members["host-local-sqlite.d/current"].linkname == copy.split("/")[1]
    assert copy + "/BUILD-INFO" in members
    assert {n.split("/")[0] for n in members} == {"host-local-sqlite", "ipamctl",
                                                  "host-local-sqlite.d"}
    assert not [n for n in members if re.search(r"(^|/)python3?(\.\d+)?$", n)]


def native_build(frozen_build):
    """The build's native client (skips for a build made without a C compiler, which
    CI's is not)."""
    if frozen_build.info["client"] is None:
        pytest.skip("the build was made without a C compiler: it has no native client")
    return os.path.join(frozen_build.directory, "client")


def test_the_build_carries_its_native_client_linked_statically(frozen_build):
    """The tarball's plugin is the native client, static (no program interpreter, no
    dynamic section: no library of the node's, whatever its libc), and beside it the
    link to the plugin it runs a call with when no node daemon takes it."""
    client = native_build(frozen_build)
    assert frozen_build.info["client"]["static"] is True
    with tarfile.open(frozen_build.tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    copy = "host-local-sqlite.d/%s-%s" % (frozen_build.info["version"],
                                          frozen_build.info["digest"][:12])
    assert members[copy + "/client"].isfile() and members[copy + "/client"].mode & 0o111
    assert members[copy + "/client.in-process"].issym()
    assert members[copy + "/client.in-process"].linkname == "host_local_sqlite"
    with tar_member(frozen_build.tarball, copy + "/client") as data:
        types = elf_segment_types(data)
    assert 1 in types and not {2, 3} & set(types), types  # PT_LOAD; no DYNAMIC, INTERP
    with open(client, "rb") as f:
        assert f.read() == data


def test_install_plugin_from_the_build_installs_either_client(frozen_build, tmp_path,
                                                               start_daemon):
    """From the build, NAME links to its native client, by default; it forwards to the
    build's node daemon, and without one runs the build's plugin, which does not offer
    the call to a daemon again (one word on stderr that the call runs in process, not
    two). --client python links NAME to the plugin itself, as a build without a client
    does."""
    native_build(frozen_build)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(*args):
        proc = frozen_build.run(frozen_build.ipamctl, "-o", "json", "install-plugin",
                                str(bin_dir), *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    report = install()
    copy = report["build"]["build"]
    assert (report["client"], report["native"]) == (
        "native", os.path.join(frozen_build.directory, "client"))
    assert report["in_process"] == os.path.join(copy, "client.in-process")
    assert report["build"]["link"].endswith("/client")
    plugin = str(bin_dir / "host-local-sqlite")
    socket = str(tmp_path / "d.sock")
    data = str(tmp_path / "data")
    proc = frozen_build.run(plugin, input=conf(data, daemon=socket),
                            env=cni_env("ADD", container_id="c1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode() == ("host-local-sqlite: cannot reach the node daemon at %s "
                                    "(No such file or directory); running the call in "
                                    "process\n" % socket)
    daemon = start_daemon(socket=socket, argv=[frozen_build.ipamctl, "serve", "--socket",
                                               socket])
    assert frozen_build.cni(plugin, "CHECK", conf(data, daemon=daemon.socket)) is None
    assert counted(daemon.socket, 1)["calls"] == 1
    report = install("--client", "python")
    assert (report["client"], report["in_process"]) == ("python", None)
    assert report["build"]["link"].endswith("/host_local_sqlite")
    assert frozen_build.cni(plugin, "DEL", conf(data, daemon=daemon.socket)) is None
    assert counted(daemon.socket, 2)["calls"] == 2


def test_the_docs_state_the_glibc_and_size_it_needs(frozen_build):
    """The documents (docs/install.md) name the oldest glibc the build runs on: this
    build needs no newer."""
    docs = every_page()
    stated = re.search(r"glibc\s+(2\.\d+)\s+or\s+newer", docs)
    assert stated, "the documents do not say which glibc the self-contained build needs"
    need = tuple(map(int, frozen_build.info["glibc"].split(".")))
    assert need <= tuple(map(int, stated.group(1).split("."))), frozen_build.info
    assert re.search(r"\d+ MB\s+unpacked", docs)


@pytest.mark.root
def test_runs_with_no_python_on_the_node(frozen_build, tmp_path):
    """Unpacked into a root that has glibc and nothing else, the plugin adds, checks and
    deletes (migrating a new database on the way, which loads alembic), and ipamctl
    reads the result: no host Python, nor any other library of the host's."""
    # The installer image's first layer: glibc's shared libraries, /etc, /tmp.
    image_context(frozen_build.directory, tmp_path / "context")
    root = str(tmp_path / "context" / "base")
    os.makedirs(os.path.join(root, "proc"))
    with tarfile.open(frozen_build.tarball) as tar:
        tar.extractall(os.path.join(root, "opt/cni/bin"), filter="tar")
    found = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
             if f.startswith("python") or f.startswith("libpython")]
    assert not found, found
    config = conf("/var/lib/cni/networks")
    plugin = "/opt/cni/bin/host-local-sqlite"
    result = frozen_build.cni(plugin, "ADD", config, root=root)
    assert result["ips"][0]["address"] == "10.66.0.2/24"
    frozen_build.cni(plugin, "CHECK", config, root=root)
    ctl = frozen_build.run("/opt/cni/bin/ipamctl", "--data-dir", "/var/lib/cni/networks",
                           "-o", "json", "list", root=root)
    assert ctl.returncode == 0, ctl.stderr
    assert [lease["ip"] for lease in json.loads(ctl.stdout)] == ["10.66.0.2"]
    with open(os.path.join(root, "var/lib/cni/networks/dist/10.66.0.2"), "rb") as f:
        assert f.read() == b"c1\r\neth0"  # the mirror, as Go host-local writes it
    frozen_build.cni(plugin, "DEL", config, root=root)
    version = frozen_build.run(plugin, root=root, env={"CNI_COMMAND": "VERSION"},
                               input=b'{"cniVersion": "1.0.0"}')
    assert json.loads(version.stdout)["cniVersion"] == "1.1.0"


def test_install_plugin_installs_the_build(frozen_build, tmp_path):
    """From the build, install-plugin copies the build into DIR and links NAME to it,
    relative, in one rename; again, it reuses the copy; a new build switches the link,
    keeps the previous copy and removes older ones; a foreign file stays unless
    --force."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(build_dir, *args):
        proc = frozen_build.run(os.path.join(build_dir, "ipamctl"), "-o", "json",
                                "install-plugin", str(bin_dir), *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = install(frozen_build.directory)
    link = os.readlink(bin_dir / "host-local-sqlite")
    assert not os.path.isabs(link) and link.startswith("host-local-sqlite.d/0.1.0-")
    assert first["build"]["reused"] is False and first["python"] is None
    assert install(frozen_build.directory)["build"]["reused"] is True
    data = str(tmp_path / "data")
    assert frozen_build.cni(str(bin_dir / "host-local-sqlite"), "ADD", conf(data))

    # Two later builds: each a copy of this one with another digest in its BUILD-INFO.
    builds = [install(frozen_build.variant(tmp_path / ("build-%d" % n), str(n)))
              for n in (1, 2)]
    assert builds[0]["build"]["removed"] == []  # the first copy was in use just before
    assert [os.path.basename(p) for p in builds[1]["build"]["removed"]] == [
        os.path.basename(first["build"]["build"])]
    assert sorted(os.listdir(bin_dir / "host-local-sqlite.d")) == [
        "0.1.0-111111111111", "0.1.0-222222222222", "current"]
    # current/ipamctl: a path to the ipamctl of the build installed last, that stays.
    ctl = frozen_build.run(str(bin_dir / "host-local-sqlite.d/current/ipamctl"), "--version")
    assert ctl.returncode == 0 and b"0.1.0" in ctl.stdout, ctl
    assert os.path.realpath(bin_dir / "host-local-sqlite.d/current/ipamctl") == \
        os.path.join(builds[1]["build"]["build"], "ipamctl")
    assert frozen_build.cni(str(bin_dir / "host-local-sqlite"), "DEL", conf(data)) is None

    # A drop-in beside it, and a foreign file at the name: refused, untouched.
    assert install(frozen_build.directory, "--name", "host-local")["path"].endswith(
        "/host-local")
    shutil.copy("/bin/true", bin_dir / "foreign")
    proc = frozen_build.run(frozen_build.ipamctl, "install-plugin", str(bin_dir),
                            "--name", "foreign")
    assert proc.returncode == 1 and b"not replacing it" in proc.stderr
    assert not os.path.islink(bin_dir / "foreign")
    kept = install(frozen_build.directory, "--name", "foreign", "--force")["kept"]
    assert kept["path"] == str(bin_dir / "foreign.orig")


def test_the_tarball_unpacked_into_a_bin_directory_is_an_installed_build(frozen_build,
                                                                          tmp_path):
    """Unpacked as the CNI plugins' release is (tar -C DIR), it is what install-plugin
    would have written: install-plugin from it finds its own copy there, and a later
    build installed over it keeps the copy that the tarball's ipamctl still uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    with tarfile.open(frozen_build.tarball) as tar:
        tar.extractall(bin_dir, filter="tar")
    unpacked = os.readlink(bin_dir / "host-local-sqlite")
    proc = frozen_build.run(str(bin_dir / "ipamctl"), "-o", "json", "install-plugin",
                            str(bin_dir))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["build"]
    assert (report["reused"], report["link"], report["removed"]) == (True, unpacked, [])

    newer = frozen_build.variant(tmp_path / "newer", "f")
    for _ in range(2):  # the second time, the copy it replaced is no longer "previous"
        proc = frozen_build.run(os.path.join(newer, "ipamctl"), "install-plugin",
                                str(bin_dir))
        assert proc.returncode == 0, proc.stderr
    assert os.readlink(bin_dir / "host-local-sqlite").startswith(
        "host-local-sqlite.d/0.1.0-ffffffffffff/")
    ctl = frozen_build.run(str(bin_dir / "ipamctl"), "--version")
    assert ctl.returncode == 0 and b"0.1.0" in ctl.stdout, ctl  # its copy is still there


def test_a_damaged_build_answers_a_cni_error(frozen_build, tmp_path):
    """A copy missing a module of the plugin's answers the runtime with a CNI error
    object saying what to do, not a traceback."""
    broken = str(tmp_path / "broken")
    shutil.copytree(frozen_build.directory, broken, symlinks=True)
    for path in glob.glob(os.path.join(broken, "lib", "ipam", "commands*.pyc")):
        os.unlink(path)
    proc = frozen_build.run(os.path.join(broken, "host_local_sqlite"),
                            input=conf(str(tmp_path / "data")), env=cni_env("ADD"))
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stdout + proc.stderr
    error = json.loads(proc.stdout)
    assert error["code"] == 5 and "unpack it again" in error["msg"]


def test_a_damaged_build_s_ipamctl_says_so_without_a_traceback(frozen_build, tmp_path):
    """ipamctl from a copy missing a module it imports prints one Error line naming the
    copy, not a traceback with the paths of the machine that built it."""
    broken = str(tmp_path / "broken")
    shutil.copytree(frozen_build.directory, broken, symlinks=True)
    shutil.rmtree(os.path.join(broken, "lib", "click"))
    for args in (["--version"], ["-o", "json", "list"]):
        proc = frozen_build.run(os.path.join(broken, "ipamctl"), *args)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert err.startswith("Error: ipamctl cannot load its modules (No module named "
                              "'click'): the build at %s/lib is damaged" % broken), err
        assert "unpack it again" in err and REPO not in err and "dist-venv" not in err


def test_a_launcher_and_the_build_installed_over_each_other(frozen_build, tmp_path,
                                                            native_program):
    """This venv's native client and launcher over the installed build say what they
    replaced and remove the build's copy (and the emptied host-local-sqlite.d/); the
    build over them names the launcher's interpreter, and removes the in-process
    launcher the build's client does not run. The plugin works through each."""
    native_build(frozen_build)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    venv_ipamctl = os.path.join(os.path.dirname(sys.executable), "ipamctl")
    data = str(tmp_path / "data")

    def install(ipamctl):
        proc = subprocess.run([ipamctl, "-o", "json", "install-plugin", str(bin_dir),
                               "--client", "native"], capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    copy = install(frozen_build.ipamctl)["build"]["build"]
    assert frozen_build.cni(str(bin_dir / "host-local-sqlite"), "ADD", conf(data))
    report = install(venv_ipamctl)["replaced"]
    assert report["what"] == "the self-contained build %s" % os.path.basename(copy)
    assert report["removed"] == [copy] and report["bytes"] > 10e6
    assert report["directory"] is True
    assert sorted(os.listdir(bin_dir)) == ["host-local-sqlite", "host-local-sqlite.in-process"]
    assert frozen_build.cni(str(bin_dir / "host-local-sqlite"), "CHECK", conf(data)) is None

    installed = install(frozen_build.ipamctl)
    assert installed["replaced"] == {"kind": "launcher", "what": "the native thin client and "
                                     "the launcher of the Python installation %s"
                                     % sys.executable}
    assert installed["stale_in_process"] == {
        "path": str(bin_dir / "host-local-sqlite.in-process"), "removed": True}
    assert sorted(os.listdir(bin_dir)) == ["host-local-sqlite", "host-local-sqlite.d"]
    assert frozen_build.cni(str(bin_dir / "host-local-sqlite"), "DEL", conf(data)) is None


def start_behind_go(plugin, config, data_dir, network="dist"):
    """Start an ADD (container c1) of ``plugin`` that waits for the network's lock, held
    as Go host-local holds it for a command of its own, in which it writes a lease file:
    so the call, once it has the lock, reconciles, which loads ``ipam.mirror.reconcile``, a
    module no call had imported before. Returns the call (a process) and the lock's
    descriptor: closing it lets the call go on."""
    directory = os.path.join(data_dir, network)
    lock = os.open(os.path.join(directory, "lock"), os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(os.path.join(directory, "10.66.0.50"), "wb") as f:
        f.write(b"go-owned\r\neth0")
    stdin = os.path.join(data_dir, "c1.conf")
    with open(stdin, "wb") as f:
        f.write(config)
    with open(stdin, "rb") as f:
        call = subprocess.Popen([plugin], env=cni_env("ADD", container_id="c1"), stdin=f,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: has_open(call.pid, os.path.join(directory, "lock")),
               "the call to wait for the network's lock", timeout=60)
    return call, lock


@pytest.mark.root
def test_a_copy_in_use_is_kept_until_its_call_ends(frozen_build, tmp_path):
    """Issue 24: a call from build copy v1 waits for a network's lock while v2, then
    v3, are installed. v1 is neither linked nor the copy just replaced, but the call
    runs from it (it holds v1's lock file shared, as /proc/locks shows): v1 stays,
    reported in use, and the call, let go, succeeds with modules it loads only then.
    Once it has ended, the next install removes v1. The installer runs in a PID
    namespace of its own, as in the DaemonSet's container: its /proc shows none of the
    node's processes, so the lock alone keeps v1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(build_dir):
        proc = frozen_build.run(shutil.which("unshare"), "--pid", "--fork", "--mount-proc",
                                os.path.join(build_dir, "ipamctl"), "-o", "json",
                                "install-plugin", str(bin_dir))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["build"]

    v1 = install(frozen_build.directory)["build"]
    plugin = str(bin_dir / "host-local-sqlite")
    data = str(tmp_path / "data")
    config = conf(data, busyTimeout=300)
    assert frozen_build.cni(plugin, "ADD", config, container="c0")  # the network's files
    v2, v3 = (frozen_build.variant(tmp_path / ("v%d" % n), str(n)) for n in (2, 3))
    call, lock = start_behind_go(plugin, config, data)
    try:
        assert install(v2)["removed"] == []
        report = install(v3)
        assert os.path.isfile(os.path.join(v1, "lib", "ipam", "mirror", "reconcile.pyc")), \
            "the copy the call runs from was removed under it"
        assert (report["removed"], report["in_use"]) == ([], [v1])
        assert holds_flock(call.pid, os.path.join(v1, "IN-USE.lock"), "READ")
    finally:
        os.close(lock)  # the call goes on
        out, err = call.communicate(timeout=300)
    assert (call.returncode, b"Traceback" in err) == (0, False), (out, err)
    assert json.loads(out)["ips"][0]["address"] == "10.66.0.3/24"
    report = install(v2)  # v3 was the one just replaced
    assert (report["removed"], report["in_use"]) == ([v1], [])
    assert not os.path.exists(v1)


def test_a_build_whose_files_vanish_mid_call_answers_code_5(frozen_build, tmp_path):
    """A call whose build is removed under it all the same (by hand, or by an
    installer of an older version), failing to load a module it needs only then,
    answers with a CNI error object, code 5, saying what to do: never 999."""
    copy = frozen_build.variant(tmp_path / "copy", "c")
    plugin = os.path.join(copy, "host_local_sqlite")
    data = str(tmp_path / "data")
    config = conf(data, busyTimeout=300)
    assert frozen_build.cni(plugin, "ADD", config, container="c0")
    call, lock = start_behind_go(plugin, config, data)
    try:
        shutil.rmtree(copy)
    finally:
        os.close(lock)
        out, err = call.communicate(timeout=300)
    assert call.returncode == 1
    assert b"Traceback" not in err and b"internal error" not in err, err
    error = json.loads(out)
    assert error["code"] == 5, error
    assert "changed or is damaged under this call; unpack it again" in error["msg"], error


def test_the_node_daemon_of_the_build_serves_its_plugin(frozen_build, start_daemon,
                                                         tmp_path):
    """The build's ipamctl serves, and the build's plugin forwards to it."""
    socket = str(tmp_path / "d.sock")
    daemon = start_daemon(socket=socket, argv=[frozen_build.ipamctl, "serve", "--socket",
                                               socket])
    config = conf(str(tmp_path / "data"), daemon=daemon.socket)
    assert frozen_build.cni(frozen_build.plugin, "ADD", config)["ips"]
    assert counted(daemon.socket, 1)["calls"] == 1
    daemon.wait_log(lambda log: "ADD network=dist container=c1" in log, "the call's log line")


def load_build_dist():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_dist", os.path.join(REPO, "tools", "build_dist.py"))
    build_dist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_dist)
    return build_dist


def test_a_module_this_tree_no_longer_has_is_found(frozen_build, tmp_path):
    """A module left in the build venv's install by an earlier layout (setuptools'
    build/lib keeps one the tree has moved) is named, so make dist fails rather than ship
    it; the session's build has none."""
    build_dist = load_build_dist()
    assert build_dist.stale_modules(frozen_build.directory) == []
    copy = frozen_build.variant(tmp_path / "copy", "c")
    shutil.copy(os.path.join(copy, "lib", "ipam", "mirror", "reconcile.pyc"),
                os.path.join(copy, "lib", "ipam", "reconcile.pyc"))
    # The CLI installs as host_local_sqlite_cli, from the tree's cli/.
    shutil.copy(os.path.join(copy, "lib", "host_local_sqlite_cli", "main.pyc"),
                os.path.join(copy, "lib", "host_local_sqlite_cli", "old_main.pyc"))
    assert build_dist.stale_modules(copy) == ["host_local_sqlite_cli.old_main",
                                              "ipam.reconcile"]


def test_a_rebuild_of_the_same_sources_is_the_same_build(tmp_path):
    """The digest that names an installed copy ignores what differs between two builds
    of the same sources: the .pyc headers' source mtimes, cx_Freeze's build stamp."""
    build_dist = load_build_dist()

    def tree(name, mtime, stamp, code=b"code"):
        lib = tmp_path / name / "lib"
        lib.mkdir(parents=True)
        (lib / "m.pyc").write_bytes(b"\xa7\r\r\n\0\0\0\0" + mtime + b"\x10\0\0\0" + code)
        (lib / "BUILD_CONSTANTS.pyc").write_bytes(stamp)
        return str(tmp_path / name)

    a = build_dist.digest(tree("a", b"\1\2\3\4", b"04:05:15"))
    assert build_dist.digest(tree("b", b"\5\6\7\x08", b"04:05:34")) == a
    assert build_dist.digest(tree("c", b"\1\2\3\4", b"04:05:15", code=b"other")) != a
