"""Shared fixtures, the markers that say what a test needs, and the CI rule: under
CI=true a skipped test fails the run. Plain helpers live in helpers.py."""
import json
import os
import random
import signal
import subprocess
import sys

import helpers
import pytest
from click.testing import CliRunner
from fake_store import FakeStore
from helpers import (
    CHAOS_CALLS,
    ENTRY_PATHS,
    PLUGIN,
    DaemonChaos,
    EntryPath,
    NodeDaemon,
    checked,
    daemon_env,
    run_inprocess,
)

from host_local_sqlite_cli.main import cli
from ipam.paths import DAEMON_ENV
from ipam.store.sqlite import SqliteStore

_skipped = []
# Every ipamctl a test starts (daemons included, which inherit this environment) looks for
# CNI network configs in an empty tree unless the test gives it one: never the host's.
os.environ["IPAM_ROOT"] = helpers.NO_ROOT


# What runs once in CI (the ``once`` marker): the build and the runtimes that run it, and
# the native thin client's entry path: one C program whatever the Python, before a daemon
# and a launcher that the daemon and in-process paths run on every Python.
ONCE_MODULES = {"test_podman", "test_containerd", "test_kubernetes", "test_dist"}
ONCE_FIXTURES = {"frozen_build", "installer_image"}
ONCE_PATHS = {"build", "native"}


def pytest_collection_modifyitems(config, items):
    """``postgres`` marks every test that needs the throwaway PostgreSQL server: those
    asking for pg_server or pg_url, and the ``store`` fixture's postgresql instance (which
    asks for pg_url only once it runs). ``network`` marks those run through the
    self-contained build (``make dist`` installs the freezer from the package index).
    ``make check`` leaves them out. ``once`` marks what tests the self-contained build,
    its image and the container runtimes (podman, containerd): .ci/run runs them on the
    Python the build is frozen with only; so does the native client's entry path.
    Through the daemon, a module that defines ``door_class`` (the differential suite)
    runs one instance of each class of each scenario: the rest are deselected."""
    one_per_door_class(config, items)
    for item in items:
        params = getattr(item, "callspec", None)
        if "pg_server" in item.fixturenames or (
                params is not None and params.params.get("store") == "postgresql"):
            item.add_marker(pytest.mark.postgres)
        if params is not None and params.params.get("through") == "build":
            item.add_marker(pytest.mark.network)
        if item.module.__name__ in ONCE_MODULES or ONCE_FIXTURES & set(item.fixturenames) \
                or params is not None and params.params.get("through") in ONCE_PATHS:
            item.add_marker(pytest.mark.once)


def one_per_door_class(config, items):
    """Deselect each ``daemon`` instance of a scenario whose class (its module's
    ``door_class(function name, parameters)``) an earlier instance has, but one named on
    the command line."""
    named = [arg.rsplit("/", 1)[-1] for arg in config.args if "[" in arg]
    seen, kept, left_out = set(), [], []
    for item in items:
        params = getattr(item, "callspec", None)
        door_class = getattr(item.module, "door_class", None)
        if door_class is not None and params is not None \
                and params.params.get("through") == "daemon" \
                and not any(item.nodeid.endswith(arg) for arg in named):
            key = (item.originalname, repr(door_class(item.originalname, params.params)))
            if key in seen:
                left_out.append(item)
                continue
            seen.add(key)
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def entry_paths_of(marks):
    """The entry paths a test taking ``through`` runs through: :data:`ENTRY_PATHS`, but
    those its ``not_through(*paths, why=...)`` marks leave out (each must say why)."""
    left_out = set()
    for mark in marks:
        if mark.name != "not_through":
            continue
        if not mark.kwargs.get("why") or not mark.args or not set(mark.args) <= set(
                ENTRY_PATHS):
            raise pytest.UsageError("not_through%r: name entry paths of %s, and say why"
                                    % (mark.args, ENTRY_PATHS))
        left_out.update(mark.args)
    return [path for path in ENTRY_PATHS if path not in left_out]


@pytest.hookimpl(tryfirst=True)  # the path's id first: "test_x[daemon-...]"
def pytest_generate_tests(metafunc):
    if "through" in metafunc.fixturenames:
        metafunc.parametrize("through", entry_paths_of(
            metafunc.definition.iter_markers("not_through")), indirect=True)


@pytest.fixture(autouse=True)
def no_thread_queues_left():
    """Every test leaves this process's writers' thread queues off, as a plugin process
    has them: a daemon run in process sets them, and left set they made every later
    lock taken here queue and stamp its lock file (test_importer once met one)."""
    yield
    from ipam.store import writer_lock

    assert writer_lock._THREAD_LOCKS is None, "the test left the writers' thread queues on"


ENTRY_KEY = pytest.StashKey()  # the daemon logs of a test's entry path
FAILED_KEY = pytest.StashKey()  # the test itself failed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed through a node daemon shows the daemon's log (its part since the
    test began; under the chaos, every daemon's)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call":
        item.stash[FAILED_KEY] = True
    logs = item.stash.get(ENTRY_KEY, None)
    if report.failed and logs is not None:
        for title, text in logs():
            report.sections.append((title, text[-30000:]))


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _skipped:
        sys.stderr.write("\nCI=true: %d test(s) were skipped, which CI does not allow:\n%s\n"
                         % (len(_skipped), "\n".join("  " + s for s in _skipped)))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (skips without the binaries,
    which under CI=true fails the run)."""
    import pgserver

    bindir = pgserver.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install "
                    "postgresql)")
    server = pgserver.PgServer(bindir).init().start()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path):
    """The Store contract's implementations, driven by the same tests."""
    if request.param == "memory":
        s = FakeStore()
    elif request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "leases.db"))
    else:
        from ipam.store.postgres import PostgresStore

        url = request.getfixturevalue("pg_url")
        s = PostgresStore(url, lock_path=str(tmp_path / "writers.lock"))
    yield s
    s.close()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def netconf(data_dir):
    """A config factory: ``netconf(ipam={...}, cniVersion=...)`` with our dataDir."""
    def make(ipam=None, name="mynet", version="1.0.0", **top):
        conf = {"cniVersion": version, "name": name, "type": "ipvlan", "master": "foo0",
                "ipam": dict({"type": "host-local-sqlite", "dataDir": str(data_dir)},
                             **(ipam or {}))}
        if version is None:
            del conf["cniVersion"]
        conf.update(top)
        return conf
    return make


# -- ipamctl in process (click's CliRunner) and the plugin in process, on data_dir ----------
SUBNET = {"subnet": "10.1.2.0/24"}


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.delenv("IPAM_DATA_DIR", raising=False)
    monkeypatch.delenv("IPAM_DATABASE", raising=False)
    return CliRunner()


@pytest.fixture
def ctl(runner, data_dir):
    """``ctl(*args, expect=0)``: ipamctl --data-dir DATA_DIR ARGS, checked."""
    def run(*args, expect=0, input=None):
        result = checked(runner.invoke(cli, ["--data-dir", str(data_dir), *args], input=input))
        if expect is not None:
            assert result.exit_code == expect, result.output
        return result
    return run


@pytest.fixture
def ctl_json(ctl):
    def run(*args, expect=0, input=None):
        return json.loads(ctl("-o", "json", *args, expect=expect, input=input).stdout)
    return run


@pytest.fixture
def add(netconf):
    """ADD through the plugin (in process); returns the addresses handed out. ``args``:
    more of CNI_ARGS (``K8S_POD_NAME=web-0``; IgnoreUnknown=1 is added)."""
    def do(container_id, ifname="eth0", network="mynet", ipam=SUBNET, ip=None, args=None):
        cni_args = ([] if ip is None else ["IP=%s" % ip]) + (
            [] if args is None else ["IgnoreUnknown=1", args])
        out = run_inprocess("ADD", netconf(ipam, name=network), container_id=container_id,
                            ifname=ifname, args=";".join(cni_args) or None)
        assert out.status == 0, out.out
        return [i["address"].split("/")[0] for i in out.json["ips"]]
    return do


@pytest.fixture
def delete(netconf):
    def do(container_id, ifname="eth0", network="mynet", ipam=SUBNET):
        out = run_inprocess("DEL", netconf(ipam, name=network), container_id=container_id,
                            ifname=ifname)
        assert out.status == 0, out.out
    return do


# -- the node daemon as a process (helpers.NodeDaemon) ------------------------------------
@pytest.fixture
def start_daemon(tmp_path):
    """``start_daemon(*serve_options, socket=None, argv=None, env_extra=None)``: an
    ``ipamctl serve`` process on ``<tmp>/d.sock`` (or ``socket``; ``argv``: a command that
    execs one; ``env_extra``: more of its environment), its health answered. A daemon the
    test left running is killed at teardown (and continued first, if stopped)."""
    started = []

    def start(*options, socket=None, argv=None, env_extra=None):
        daemon = NodeDaemon(tmp_path, *options, socket=socket, argv=argv, env_extra=env_extra)
        started.append(daemon)
        daemon.wait_ready()
        return daemon
    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            os.kill(daemon.pid, signal.SIGCONT)
        daemon.kill()


@pytest.fixture(scope="module")
def node_daemon(tmp_path_factory):
    """One daemon for a module's tests "through the daemon": started once (its first
    health check answered by ``ipamctl health``, the operator's probe), stopped by SIGTERM
    at the module's end, which must drain cleanly (exit 0). Module-scoped, not the
    session's: the daemon keeps every database it served open, one per test."""
    daemon = NodeDaemon(tmp_path_factory.mktemp("node-daemon"))
    try:
        daemon.wait_ready()
        probe = helpers.ipamctl("-o", "json", "health", "--socket", daemon.socket,
                                env=daemon_env())
        assert json.loads(probe.stdout)["pid"] == daemon.pid
        yield daemon
    finally:
        status = daemon.stop()
    assert status == 0, daemon.log()
    assert "stopped after" in daemon.log()


@pytest.fixture
def through(request, monkeypatch, tmp_path_factory):
    """The entry path (helpers.ENTRY_PATHS) of the test's plugin processes, run once each
    (pytest_generate_tests; ``not_through`` leaves some out, saying why): an
    :class:`helpers.EntryPath`, also put in ``helpers.ENTRY`` for the duration, where
    run_plugin, Invocation and cniexec.run find the program to run (plugin_program)
    and account for their answers (note_plugin_run). Forwarding goes by the
    environment, which plugin processes inherit (``HOST_LOCAL_SQLITE_DAEMON``).

    - in-process: forwarding off;
    - daemon: the module's :func:`node_daemon`. A call that fell back in process fails
      at once, and the daemon must have served at least as many calls as the test's
      plugin processes made (its own ``calls`` counter);
    - daemon-stopped-and-killed: a :class:`helpers.DaemonChaos` of the test's own. Calls
      may fall back in process (saying so); a test that makes ``CHAOS_CALLS`` calls or
      more must have had some fall back: the chaos hit calls;
    - native: the native thin client (:func:`native_client`) forwarding to the module's
      :func:`node_daemon`, held to it as the daemon path is (its fallback, the launcher
      beside it, runs the calls the client does not forward: VERSION); at least one
      process of it must have run;
    - build: the self-contained build's plugin (:func:`frozen_build`), forwarding off;
      at least one process of it must have run."""
    name = request.param
    node_daemon = request.getfixturevalue("node_daemon") \
        if name in ("daemon", "native") else None
    plugin = request.getfixturevalue("frozen_build").plugin if name == "build" else \
        request.getfixturevalue("native_client") if name == "native" else PLUGIN
    entry = EntryPath(name, plugin, node_daemon)
    if name == "daemon-stopped-and-killed":
        entry.chaos = DaemonChaos(tmp_path_factory.mktemp("chaos"), random.randrange(1 << 30),
                                  lambda: entry.started + entry.fed, lambda: entry.fed)
    chaos = entry.chaos
    monkeypatch.setattr(helpers, "ENTRY", entry)
    monkeypatch.setenv(DAEMON_ENV, entry.socket or "false")
    if node_daemon is not None:
        before, since = node_daemon.health()["calls"], len(node_daemon.log())
        request.node.stash[ENTRY_KEY] = lambda: [("daemon log (this test)",
                                                  node_daemon.log()[since:])]
    elif chaos is not None:
        request.node.stash[ENTRY_KEY] = chaos.logs
    try:
        yield entry
    finally:
        if chaos is not None:
            chaos.close()
    if request.node.stash.get(FAILED_KEY, False):
        return  # its calls were cut short: nothing to count
    if name in ("build", "native"):
        assert entry.started > 0, "the test ran no process of the %s" % (
            "build's plugin" if name == "build" else "native client")
    if chaos is not None:
        what = ("%d calls, %d fell back in process %s; the chaos (seed %d) stopped the "
                "daemon %d times, killed it %d times" % (
                    entry.forwarded, entry.fell_back, entry.reasons, chaos.seed,
                    chaos.stops, chaos.kills))
        print(what)
        assert entry.forwarded < CHAOS_CALLS or entry.fell_back > 0, (
            "the chaos hit no call: " + what)
    elif node_daemon is not None:
        made = entry.forwarded
        served = node_daemon.calls_served(before + made) - before
        assert served >= made, ("the daemon served %d calls, the test's plugin processes "
                                "made %d" % (served, made))


# -- podman 4 on its CNI backend (helpers.Podman) -------------------------------------------
@pytest.fixture
def podman():
    """An isolated podman (its own containers.conf, storage, run and lock directories
    in a new directory); at teardown every container it made is removed, then that
    directory."""
    from helpers import Podman

    instance = Podman()
    yield instance
    instance.close()


# -- the native thin client (native/client.c) ---------------------------------------------
@pytest.fixture(scope="session")
def native_program():
    """``make native`` (as ``make install`` runs it where a C compiler exists): the native
    thin client a checkout's install-plugin installs, ``build/native/host-local-sqlite``.
    Skips where no C compiler is (which under CI=true fails the run: .ci/run installs
    one)."""
    from helpers import REPO

    from ipam.install import native

    made = subprocess.run(["make", "-s", "--no-print-directory", "native"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if made.returncode and "no C compiler" in made.stderr:
        pytest.skip("no C compiler (musl-gcc or cc) to build the native thin client")
    assert made.returncode == 0, made.stdout + made.stderr
    program = native.find()
    assert program == os.path.join(REPO, native.CHECKOUT_BUILD), program
    return program


@pytest.fixture(scope="session")
def native_client(native_program, tmp_path_factory):
    """The native thin client as ``ipamctl install-plugin --client native`` writes it into
    a CNI bin directory, the launcher beside it as its in-process plugin: its path."""
    bin_dir = tmp_path_factory.mktemp("native-bin")
    proc = helpers.ipamctl("-o", "json", "install-plugin", str(bin_dir), "--client", "native",
                           timeout=120)
    report = json.loads(proc.stdout)
    assert (report["client"], report["native"]) == ("native", native_program), report
    return report["path"]


# -- the self-contained build (make dist) ------------------------------------------------------
@pytest.fixture(scope="session")
def frozen_build(tmp_path_factory):
    """``make dist`` once per session, as the README says, from this run's Python (its
    build venv, ``build/dist-venv-X.Y``, is kept between runs): the build (its copy in
    the unpacked tarball's ``host-local-sqlite.d/``), its tarball and BUILD-INFO."""
    from helpers import REPO, FrozenBuild

    out = tmp_path_factory.mktemp("dist")
    version = "%d.%d" % sys.version_info[:2]
    proc = subprocess.run(
        ["make", "--no-print-directory", "dist", "PYTHON=" + sys._base_executable,
         "DIST_VENV=build/dist-venv-" + version,
         "DIST_ARGS=--out %s --work %s" % (out, out / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, "make dist failed:\n%s\n%s" % (proc.stdout[-4000:],
                                                                 proc.stderr[-4000:])
    return FrozenBuild(os.path.dirname(os.path.realpath(out / "work" / "ipamctl")), str(out))



# -- the Kubernetes installer image (deploy/kubernetes/) --------------------------------------
@pytest.fixture(scope="module")
def installer_image(frozen_build, tmp_path_factory):
    """The installer image of deploy/kubernetes/, built from the session's
    :func:`frozen_build` as ``make image`` builds it (tools/build_image.py makes the
    context and gives podman's arguments), in a podman of the module's own
    (helpers.Podman: nothing pulled, the host's images untouched). Yields that podman, the
    image's name (``tag``) and the script's report; at teardown every container goes."""
    from types import SimpleNamespace

    from helpers import Podman, image_context

    report = image_context(frozen_build.directory,
                           tmp_path_factory.mktemp("image") / "context")
    podman = Podman()
    try:
        podman(*report["build_args"], timeout=600)
        yield SimpleNamespace(podman=podman, tag=report["tag"], report=report)
    finally:
        podman.close()
