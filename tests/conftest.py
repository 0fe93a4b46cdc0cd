"""Shared fixtures, and the CI rule: under CI=true a skipped test fails the run."""
import io
import json
import os
import subprocess
import sys

import pytest

from ipam.cni import main as cni_main
from ipam.store.memory import MemoryStore
from ipam.store.sqlite import SqliteStore

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
PLUGIN = os.path.join(os.path.dirname(sys.executable), "host-local-sqlite")
IPAMCTL = os.path.join(os.path.dirname(sys.executable), "ipamctl")

_skipped = []


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


def upgrade_pg_to(url, revision):
    """Bring the PostgreSQL database ``url`` to schema ``revision`` with the shipped
    migrations: a pool as an earlier version of ours left it."""
    import sqlalchemy
    from alembic import command

    from ipam import migrate

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(url, conn), revision)
    finally:
        engine.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path):
    """The Store contract's implementations, driven by the same tests."""
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "leases.db"))
    else:
        from ipam.store.postgres import PostgresStore

        url = request.getfixturevalue("pg_url")
        s = PostgresStore(url, lock_path=str(tmp_path / "writers.lock"))
    yield s
    s.close()


class Outcome:
    def __init__(self, status, out):
        self.status = status
        self.out = out
        self.json = json.loads(out) if out.strip() else None

    @property
    def error(self):
        return self.json if self.status else None

    def __repr__(self):
        return "Outcome(%d, %s)" % (self.status, self.out)


def cni_env(command, container_id="dummy", ifname="eth0", netns="/some/where", args=None,
            **extra):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin"}
    if args is not None:
        env["CNI_ARGS"] = args
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _stdin_bytes(conf):
    if isinstance(conf, bytes):
        return conf
    if isinstance(conf, str):
        return conf.encode()
    return json.dumps(conf).encode()


def run_inprocess(command, conf, **kw):
    """One plugin invocation in this process (fast; same code path as the binary)."""
    out = io.StringIO()
    status = cni_main(cni_env(command, **kw), io.BytesIO(_stdin_bytes(conf)), out)
    return Outcome(status, out.getvalue())


def run_plugin(command, conf, env_extra=None, **kw):
    """One invocation of the installed console script, as a runtime runs it."""
    env = {"PATH": os.environ.get("PATH", "")}
    env.update(cni_env(command, **kw))
    env.update(env_extra or {})
    proc = subprocess.run([PLUGIN], input=_stdin_bytes(conf), env=env, capture_output=True,
                          timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return Outcome(proc.returncode, proc.stdout.decode())


def run_ipamctl(data_dir, *args, input="", expect=0):
    """The installed ipamctl on ``data_dir``, as an operator runs it; its exit status
    checked. stdin is ``input``, never the terminal the tests run from (a command that
    asks on a terminal would wait for an answer)."""
    env = {"PATH": os.environ.get("PATH", ""), "IPAM_DATA_DIR": str(data_dir)}
    proc = subprocess.run([IPAMCTL, *args], input=input, env=env, capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
    return proc


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
