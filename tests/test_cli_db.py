"""ipamctl's root group and its db commands, through click's CliRunner."""
import json
import os
import re
import sqlite3

import click
import pytest
from click.testing import CliRunner

from host_local_sqlite_cli.main import cli
from ipam import paths
from ipam.store.schema_version import HEAD


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.delenv("IPAM_DATA_DIR", raising=False)
    monkeypatch.delenv("IPAM_DATABASE", raising=False)
    return CliRunner()


def test_db_upgrade_then_current(runner, tmp_path):
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.stdout == HEAD + "\n"
    assert os.path.exists(paths.default_database(str(tmp_path)))
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "db", "current"])
    assert result.exit_code == 0, result.output
    assert result.stdout == HEAD + "\n"


def test_database_option_overrides_data_dir(runner, tmp_path):
    db = str(tmp_path / "other.db")
    args = ["--data-dir", str(tmp_path / "unused"), "--database", db, "db", "upgrade"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert os.path.exists(db)
    assert not os.path.exists(tmp_path / "unused")


def test_environment_variables(runner, tmp_path):
    result = runner.invoke(cli, ["db", "upgrade"], env={"IPAM_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert os.path.exists(paths.default_database(str(tmp_path)))
    db = str(tmp_path / "env.db")
    result = runner.invoke(cli, ["db", "upgrade"], env={"IPAM_DATABASE": db})
    assert result.exit_code == 0, result.output
    assert os.path.exists(db)


def test_json_output(runner, tmp_path):
    db = str(tmp_path / "ipam.db")
    result = runner.invoke(cli, ["-o", "json", "--database", db, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"database": db, "revision": HEAD}
    result = runner.invoke(cli, ["--output", "json", "--database", db, "db", "current"])
    assert json.loads(result.stdout) == {"database": db, "revision": HEAD}


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("ipamctl, version ")


def test_current_of_missing_database_is_an_error(runner, tmp_path):
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "db", "current"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: database ")
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output
    assert os.listdir(tmp_path) == []


def test_current_without_schema_is_an_error(runner, tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    result = runner.invoke(cli, ["--database", str(db), "db", "current"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: database {db} has no schema")


def test_newer_database_is_an_error(runner, tmp_path):
    db = str(tmp_path / "ipam.db")
    assert runner.invoke(cli, ["--database", db, "db", "upgrade"]).exit_code == 0
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    result = runner.invoke(cli, ["--database", db, "db", "upgrade"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: database {db} is at schema revision 9999")


def test_sqlite_error_is_an_error(runner, tmp_path):
    db = tmp_path / "garbage.db"
    db.write_bytes(b"not a database" * 100)
    result = runner.invoke(cli, ["--database", str(db), "db", "upgrade"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {db}: ")
    assert "Traceback" not in result.output


def test_os_error_is_an_error(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.touch()
    result = runner.invoke(cli, ["--data-dir", str(blocker / "sub"), "db", "upgrade"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [["--output", "xml", "db", "current"], ["db", "nope"], ["db", "upgrade", "extra"], ["--bogus"]],
)
def test_usage_errors_exit_2(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert "Usage:" in result.stderr


def all_commands(command, path=()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from all_commands(sub, path + (name,))


def test_every_command_has_help_ending_with_an_example(runner):
    commands = list(all_commands(cli))
    assert {path for path, _ in commands} >= {
        (), ("db",), ("db", "upgrade"), ("db", "current"), ("list",), ("release",), ("gc",),
        ("stats",), ("history",), ("export",), ("check",)}
    for path, command in commands:
        assert command.help, path
        last = command.help.strip().split("\n\n")[-1].splitlines()
        assert last[0].strip() == "\b" and last[1].strip() == "Example:", path
        # Each example line runs ipamctl, possibly fed by a pipe (crictl pods -q | ipamctl gc).
        examples = [line.strip() for line in last[2:]]
        assert examples and all(re.match(r"(\S.* \| )?ipamctl ", line) for line in examples), path
        if path:
            assert all(" ".join(path) in line for line in examples), path
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.stdout, path
