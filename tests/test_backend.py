"""What a ``database`` value names, asked of the plugin and of ipamctl alike.

``ipamctl db upgrade`` exists to prepare the database the plugin will open, so both must
read every ``database`` value the same way: the same file, the same server, or the same
refusal. Each row goes through the plugin (an ADD, in process) and through ipamctl
(``db upgrade``, through click), and their answers are compared.
"""
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner
from helpers import run_inprocess

from host_local_sqlite_cli.main import cli
from ipam.errors import ConfigError
from ipam.store import location
from ipam.store.schema_version import HEAD

# (database value, the file it names relative to the working directory) for SQLite.
FILES = [
    ("plain.db", "plain.db"),
    ("sub/dir/plain.db", "sub/dir/plain.db"),
    ("sqlite:///url.db", "url.db"),
    ("sqlite+pysqlite:///driver.db", "driver.db"),
    ("sqlite+anydriver:///any.db", "any.db"),
    ("SQLite:///upper.db", "upper.db"),  # schemes know no case (RFC 3986)
]
# (database value, what the refusal says): never a file, never a traceback.
REFUSED = [
    (":memory:", "is not a file: leases must persist"),
    ("sqlite:///:memory:", "is not a file: leases must persist"),
    ("sqlite://", "is not a file: leases must persist"),
    ("sqlite:///", "invalid SQLite URL"),
    ("sqlite://host/x.db", "invalid SQLite URL"),
    ("sqlite:///x.db?mode=ro", "invalid SQLite URL"),
    ("sqlite:///x.db#frag", "invalid SQLite URL"),
    # SQLite itself would read x.db: refused, rather than one side opening file:x.db.
    ("file:x.db", "is a SQLite URI filename, which is not supported"),
    ("sqlite:///file:x.db", "is a SQLite URI filename, which is not supported"),
    ("mysql://u@h/db", "scheme 'mysql' is not supported: use a SQLite file path, "
                       "sqlite:///path or a postgresql:// URL"),
    ("mysql+pymysql://u:secret@h/db", "scheme 'mysql+pymysql' is not supported"),
    ("http://h/x.db", "scheme 'http' is not supported"),
    ("postgresql://u:secret@h:notaport/db", "invalid PostgreSQL URL"),
    ("postgres://u:secret@h:1,h2:99999/db", "invalid PostgreSQL URL"),
    ("postgresql://u:secret@[::1/db", "invalid PostgreSQL URL"),
]
# The spellings of a PostgreSQL URL, each turned into the session server's URL.
SERVER_SCHEMES = ["postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgres",
                  "PostgreSQL"]

SUBNET = {"subnet": "10.9.0.0/24"}


def conf(data_dir, database):
    return {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": dict(SUBNET, type="host-local-sqlite", dataDir=str(data_dir),
                         database=database)}


def ipamctl(data_dir, database, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), "--database", database,
                                    *args], env={"IPAM_NODE": None})


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working directory: relative paths land here, nothing else may."""
    d = tmp_path / "cwd"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.mark.parametrize("database,file", FILES)
def test_both_open_the_same_sqlite_file(database, file, cwd, tmp_path):
    assert location.locate(database) == (location.SQLITE, file)
    data = tmp_path / "data"
    upgraded = ipamctl(data, database, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == HEAD + "\n"
    assert listing(cwd) == [file]  # no -wal left: the upgrade switched WAL on and closed
    out = run_inprocess("ADD", conf(data, database), container_id="c1")
    assert out.status == 0, out
    with closing(sqlite3.connect(cwd / file)) as db:  # the lease is in the file ipamctl made
        assert db.execute("SELECT ip, container_id FROM leases").fetchall() == [
            ("10.9.0.2", "c1")]
    assert ipamctl(data, database, "db", "current").stdout == HEAD + "\n"


@pytest.mark.parametrize("database,says", REFUSED)
def test_both_refuse_alike(database, says, cwd, tmp_path):
    with pytest.raises(ConfigError) as refused:
        location.locate(database)
    assert says in refused.value.msg
    assert "secret" not in refused.value.msg  # a URL's password never reaches a message
    data = tmp_path / "data"
    out = run_inprocess("ADD", conf(data, database), container_id="c1")
    assert out.status == 1 and out.json == {"code": 7, "msg": refused.value.msg}, out
    for command in ("upgrade", "current"):
        result = ipamctl(data, database, "db", command)
        assert result.exit_code == 1 and result.exception.__class__ is SystemExit
        assert result.stderr == "Error: %s\n" % refused.value.msg
    assert listing(tmp_path) == []


@pytest.mark.parametrize("scheme", SERVER_SCHEMES)
def test_both_reach_the_same_server(scheme, pg_server, pg_url, tmp_path):
    database = scheme + "://" + pg_url.partition("://")[2]
    kind, url = location.locate(database)
    assert (kind, url) == (location.POSTGRESQL, "postgresql://" + pg_url.partition("://")[2])
    data = tmp_path / "data"
    upgraded = ipamctl(data, database, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    out = run_inprocess("ADD", conf(data, database), container_id="c1")
    assert out.status == 0, out
    assert pg_server.sql(pg_url, "SELECT ip, container_id FROM leases") == [
        ("10.9.0.2", "c1")]
    assert ipamctl(data, database, "db", "current").stdout == HEAD + "\n"
