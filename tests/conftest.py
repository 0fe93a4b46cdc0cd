"""Shared fixtures, the markers that say what a test needs, and the CI rule: under
CI=true a skipped test fails the run. Plain helpers live in helpers.py."""
import json
import os
import sys

import pytest
from click.testing import CliRunner
from helpers import (
    checked,
    run_inprocess,
)

from host_local_sqlite_cli.main import cli
from ipam.store.memory import MemoryStore
from ipam.store.sqlite import SqliteStore

_skipped = []


def pytest_collection_modifyitems(items):
    """``postgres`` marks every test that needs the throwaway PostgreSQL server: those
    asking for pg_server or pg_url, and the ``store`` fixture's postgresql instance (which
    asks for pg_url only once it runs). ``make check`` leaves them out."""
    for item in items:
        params = getattr(item, "callspec", None)
        if "pg_server" in item.fixturenames or (
                params is not None and params.params.get("store") == "postgresql"):
            item.add_marker(pytest.mark.postgres)


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
        s = MemoryStore()
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
    """ADD through the plugin (in process); returns the addresses handed out."""
    def do(container_id, ifname="eth0", network="mynet", ipam=SUBNET, ip=None):
        out = run_inprocess("ADD", netconf(ipam, name=network), container_id=container_id,
                            ifname=ifname, args=None if ip is None else "IP=%s" % ip)
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
