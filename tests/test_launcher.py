"""``ipamctl install-plugin``: the launcher behaves exactly as the console script does,
starts without site processing, and fails as a CNI error object when it is stale or its
interpreter is gone."""
import fcntl
import json
import os
import stat
import subprocess
import sys
import threading

import pytest
from helpers import PLUGIN, cni_env, ipamctl, launcher_probe

from ipam import paths
from ipam.install import bundle, launcher
from ipam.store import migrate
from ipam.store.schema_version import HEAD


def install(tmp_path, *args):
    """The launcher alone (--client python), as install-plugin writes it: the native
    thin client's own tests are in test_install_plugin.py and test_native_client.py."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    out = ipamctl("-o", "json", "install-plugin", str(bin_dir), "--client", "python", *args)
    return json.loads(out.stdout)


def run(binary, command, conf, **kw):
    env = {"PATH": os.environ.get("PATH", "")}
    env.update(cni_env(command, **kw))
    proc = subprocess.run([binary], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc.returncode, proc.stdout


def test_writes_an_executable_with_the_installation_paths(tmp_path):
    info = install(tmp_path)
    path = tmp_path / "bin" / "host-local-sqlite"
    assert info["path"] == str(path) and info["python"] == sys.executable
    assert info["bundle"] == bundle.path() and os.path.isfile(info["bundle"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert '\n[ -x {0} ] && exec {0} -I -S "$0" "$@"\n'.format(sys.executable) in text
    assert all(repr(p) in text for p in info["paths"])
    assert not [p for p in os.listdir(tmp_path / "bin") if p.startswith(".")]  # no temp file
    assert install(tmp_path, "--name", "host-local")["path"].endswith("/bin/host-local")


def test_answers_exactly_as_the_console_script(tmp_path, netconf):
    launched = install(tmp_path)["path"]
    fresh = {}
    for name, binary in (("script", PLUGIN), ("launcher", launched)):
        # Each on its own new database: the first ADD creates the schema with alembic,
        # which the launcher must find without site processing.
        conf = netconf({"subnet": "10.80.0.0/24", "dataDir": str(tmp_path / name)})
        fresh[name] = [run(binary, "VERSION", conf),
                       run(binary, "ADD", conf, container_id="c1"),
                       run(binary, "ADD", conf, container_id="c2"),
                       run(binary, "CHECK", conf, container_id="c1"),
                       run(binary, "DEL", conf, container_id="c1"),
                       run(binary, "CHECK", conf, container_id="c1")]
        # The first ADD created the schema: alembic's scripts were found (the launcher's
        # paths hold ipam's directory, not an editable install's import finder).
        assert migrate.current(paths.default_database(str(tmp_path / name))) == HEAD
    assert fresh["launcher"] == fresh["script"]
    assert [rc for rc, _ in fresh["launcher"]] == [0, 0, 0, 0, 0, 1]


def test_the_launcher_starts_without_site_and_isolated(tmp_path):
    text = launcher.render().replace(
        "\nrun(bundled=True)\n",
        "\nprint(sys.flags.no_site, sys.flags.isolated, 'site' in sys.modules)\n")
    probe = tmp_path / "probe"
    probe.write_text(text)
    probe.chmod(0o755)
    out = subprocess.run([str(probe)], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "1", "False"], out


def test_a_stale_launcher_is_a_cni_error_not_a_traceback(tmp_path, netconf):
    text = launcher.render(paths=[str(tmp_path / "gone")])
    stale = tmp_path / "stale"
    stale.write_text(text)
    stale.chmod(0o755)
    rc, out = run(str(stale), "ADD", netconf({"subnet": "10.80.0.0/24"}))
    assert rc == 1
    err = json.loads(out)
    assert err["code"] == 5 and "install-plugin" in err["msg"], err


def test_refuses_bad_names_and_directories(tmp_path):
    for args in (["--name", "a/b"], ["--name", ".."]):
        ipamctl("install-plugin", str(tmp_path), *args, expect=2)
    ipamctl("install-plugin", str(tmp_path / "missing"), expect=2)


def test_an_interpreter_path_the_shell_would_read_is_refused():
    for python in ("/opt/my python/bin/python", "/opt/it's/python", "/opt/$HOME/python",
                   "/opt/a\\b/python", "bin/python", "/opt/\u00e9/python"):
        try:
            launcher.render(python=python, paths=[])
        except ValueError as e:
            assert "console script" in str(e)
        else:
            raise AssertionError(python)


def test_an_interpreter_path_longer_than_a_shebang_line_works(tmp_path):
    """No "#!" line holds the interpreter's path any more: Linux cut one at 255 bytes."""
    deep = tmp_path / ("d" * 100) / ("e" * 100) / ("f" * 60)
    deep.mkdir(parents=True)
    (deep / "python").symlink_to(sys.executable)
    python = str(deep / "python")
    assert len(python) > 255
    long = tmp_path / "long"
    long.write_text(launcher.render(python=python, paths=launcher.install_paths()))
    long.chmod(0o755)
    rc, out = run(str(long), "VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0 and "1.1.0" in json.loads(out)["supportedVersions"], out


def test_a_missing_interpreter_is_a_cni_error_that_says_what_to_do(tmp_path, netconf):
    """A virtualenv moved away from under its launcher, the launcher run as a runtime
    runs a plugin (libcni: execve of the path, CNI_* environment, config on stdin): the
    runtime reads an error object, where a "#!<python>" line made execve itself fail
    ("fork/exec ...: no such file or directory", for a file that is there)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=60)
    python = str(venv / "bin" / "python")
    plugin = tmp_path / "host-local-sqlite"
    plugin.write_text(launcher.render(python=python, paths=launcher.install_paths()))
    plugin.chmod(0o755)
    conf = netconf({"subnet": "10.80.0.0/24"})
    assert run(str(plugin), "ADD", conf, container_id="c1")[0] == 0

    venv.rename(tmp_path / "moved")
    for command in ("ADD", "DEL", "VERSION"):
        env = {"PATH": os.environ.get("PATH", "")}
        env.update(cni_env(command, container_id="c1"))
        proc = subprocess.run([str(plugin)], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60)
        assert (proc.returncode, proc.stderr) == (1, b""), (command, proc)
        assert json.loads(proc.stdout) == {"code": 5, "msg": (
            "host-local-sqlite: the Python interpreter %s that this launcher was written "
            "for is missing (the virtualenv was removed or moved) or not executable by "
            "this user: reinstall it, then run 'ipamctl install-plugin' again" % python)}, command

    # What the old "#!<python> -IS" line made of it: no answer at all, ENOENT from execve.
    shebang = tmp_path / "shebang"
    shebang.write_text("#!%s -IS\nprint('never')\n" % python)
    shebang.chmod(0o755)
    with pytest.raises(FileNotFoundError):
        subprocess.run([str(shebang)], capture_output=True, timeout=60)


def test_the_launcher_reaches_a_shared_pool(tmp_path, netconf, pg_url):
    """SQLAlchemy and the PostgreSQL driver come from the recorded paths too."""
    launched = install(tmp_path)["path"]
    conf = netconf({"subnet": "10.80.0.0/24", "database": pg_url, "node": "n1"})
    rc, out = run(launched, "ADD", conf, container_id="c1")
    assert rc == 0, out
    assert json.loads(out)["ips"][0]["address"] == "10.80.0.2/24"


def test_the_launchers_commands_import_only_the_lean_set(tmp_path, netconf):
    """What the launcher saves (site, os and its ABCs, functools, importlib's search)
    stays saved: the modules loaded by the time the process exits, for each hot-path
    command, and for an ADD that first waits for host-local's lock (as most of a burst's
    calls do), and the bundle serves every one of the plugin's own modules."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\nsearch example.org\n")
    conf = netconf({"subnet": "10.80.0.0/24", "resolvConf": str(resolv)})
    assert run(install(tmp_path)["path"], "ADD", conf, container_id="warm")[0] == 0
    probe = launcher_probe(tmp_path / "probe", (
        "'LOADED=' + ','.join(sorted(n for n in sys.modules if n.split('.')[0] != 'ipam'))"
        " + ' OURS=' + ','.join(sorted('%s:%s' % (n, type(m.__spec__.loader).__name__)"
        " for n, m in sys.modules.items() if n.split('.')[0] == 'ipam'))"))
    unwanted = {"os", "site", "functools", "collections", "_collections_abc", "sqlite3",
                "json", "re", "enum", "typing", "__future__", "importlib", "sqlalchemy", "alembic",
                "click", "contextlib", "_socket",  # _socket: only a call the daemon takes
                "h2", "hpack", "hyperframe"}  # ipam.cri's HTTP/2: ipamctl gc --cri only
    before_the_bundle = {"ipam", "ipam.install", "ipam.install.bundle", "ipam.system",
                         "ipam.client", "ipam.process", "ipam.paths"}
    seen = set()
    for command, waits in (("ADD", False), ("CHECK", False), ("DEL", False), ("ADD", True)):
        env = {"PATH": os.environ.get("PATH", "")}
        env.update(cni_env(command, container_id="c1"))
        lock = None
        if waits:  # host-local's lock held for a moment: the call polls it
            lock = os.open(tmp_path / "data" / "mynet" / "lock", os.O_RDONLY)
            fcntl.flock(lock, fcntl.LOCK_EX)
            threading.Timer(0.3, os.close, (lock,)).start()
        proc = subprocess.run([str(probe)], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stdout
        report = proc.stderr.decode().rsplit("LOADED=", 1)[1].split()
        loaded = set(report[0].split(","))
        assert not loaded & unwanted, (command, loaded & unwanted)
        ours = dict(x.split(":") for x in report[1][len("OURS="):].split(","))
        assert "ipam.store.sqlite" in ours, command
        assert {n for n, how in ours.items() if how != "_Finder"} == before_the_bundle, ours
        seen |= set(ours)
    assert seen - before_the_bundle == set(bundle.HOT_PATH)  # the list is exact


def test_a_call_forwarded_to_the_daemon_loads_only_the_client(tmp_path, netconf,
                                                             start_daemon):
    """A call that the node daemon answers costs the launcher an interpreter's start and
    the client's few modules: not the bundle, not the plugin, not even ``ipam.system``."""
    daemon = start_daemon()
    probe = launcher_probe(tmp_path / "probe", "'LOADED=' + ','.join(sorted(sys.modules))")
    conf = netconf({"subnet": "10.82.0.0/24", "daemon": daemon.socket})
    for command in ("ADD", "CHECK", "DEL"):
        env = {"PATH": os.environ.get("PATH", "")}
        env.update(cni_env(command, container_id="c1"))
        proc = subprocess.run([str(probe)], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        loaded = set(proc.stderr.decode().rsplit("LOADED=", 1)[1].split()[0].split(","))
        ours = {n for n in loaded if n.split(".")[0] == "ipam"}
        assert ours == {"ipam", "ipam.client", "ipam.process", "ipam.paths",
                        "ipam.jsonio"}, (command, ours)  # jsonio: the config's key
        assert not loaded & {"os", "sqlite3", "json", "re", "typing", "enum"}, command
    assert daemon.stop() == 0
    assert "CHECK network=mynet container=c1 ifname=eth0 result=ok" in daemon.log()
