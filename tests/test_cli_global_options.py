"""ipamctl's global options (--data-dir, --database, --node, -o/--output) where an operator
types them: before the command, after it, after a subcommand; the later one wins."""
import contextlib
import json
import sqlite3

import click
import pytest
from helpers import checked, ipamctl, owners

from host_local_sqlite_cli.main import cli
from ipam import paths

GLOBAL_OPTIONS = {"data_dir", "database", "node", "output"}
MINE = [("mynet", "10.1.2.2", "a", "eth0")]


def test_global_options_after_the_command_in_the_installed_ipamctl(add, data_dir, tmp_path):
    add("a")
    elsewhere = tmp_path / "elsewhere"
    # Before the command, as always; then after it: the operator's word order.
    for args in (["-o", "json", "--data-dir", str(data_dir), "list"],
                 ["list", "-o", "json", "--data-dir", str(data_dir)],
                 ["list", "--output=json", f"--data-dir={data_dir}"],
                 ["list", "--database", paths.default_database(str(data_dir)), "-o", "json"]):
        proc = ipamctl(*args, data_dir=elsewhere)
        assert owners(json.loads(proc.stdout)) == MINE, args
    assert not elsewhere.exists()  # never looked at: the later --data-dir won
    nets = json.loads(ipamctl("network", "list", "-o", "json", data_dir=data_dir).stdout)
    assert [n["network"] for n in nets] == ["mynet"]
    events = json.loads(ipamctl("history", "--network", "mynet", "-o", "json",
                                data_dir=elsewhere, expect=1).stdout or "[]")
    assert events == []  # IPAM_DATA_DIR=elsewhere: no database there, an error
    events = json.loads(ipamctl("history", "-o", "json", "--data-dir", str(data_dir),
                                data_dir=elsewhere).stdout)
    assert [e["container_id"] for e in events] == ["a"]
    prune = json.loads(ipamctl("history", "prune", "--before", "1d", "--dry-run", "-o", "json",
                               "--data-dir", str(data_dir)).stdout)
    assert prune["deleted"] == 0
    copy = tmp_path / "copy.db"
    ipamctl("db", "backup", str(copy), "--data-dir", str(data_dir))
    with contextlib.closing(sqlite3.connect(copy)) as db:  # `with connect()` never closes
        assert db.execute("SELECT container_id FROM leases").fetchall() == [("a",)]


def test_given_twice_the_later_one_wins(runner, add, data_dir, tmp_path):
    add("a")
    wrong = str(tmp_path / "wrong")
    for args in (["--data-dir", wrong, "list", "--data-dir", str(data_dir), "-o", "json"],
                 ["-o", "table", "list", "-o", "json", "--data-dir", str(data_dir)],
                 ["--data-dir", wrong, "db", "--data-dir", wrong, "current",
                  "--data-dir", str(data_dir), "-o", "json"]):
        result = checked(runner.invoke(cli, args))
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
    # --database given before stays: a later --data-dir does not move it.
    result = checked(runner.invoke(cli, ["--database", paths.default_database(str(data_dir)),
                                         "list", "--data-dir", wrong, "-o", "json"]))
    assert owners(json.loads(result.stdout)) == MINE
    # An environment variable is the earliest of all.
    result = checked(runner.invoke(cli, ["list", "-o", "json", "--data-dir", str(data_dir)],
                                   env={"IPAM_DATA_DIR": wrong}))
    assert owners(json.loads(result.stdout)) == MINE
    result = checked(runner.invoke(cli, ["list", "-o", "yaml", "--data-dir", str(data_dir)]))
    assert result.exit_code == 2 and "'yaml' is not one of" in result.stderr


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))


def test_every_command_takes_and_shows_the_global_options(runner):
    seen = 0
    for path, command in _commands(cli):
        names = {p.name for p in command.params}
        assert GLOBAL_OPTIONS <= names, path
        text = checked(runner.invoke(cli, [*path, "--help"])).stdout
        for flag in ("--data-dir", "--database", "--node", "-o, --output"):
            assert flag in text, (path, flag)
        seen += 1
    assert seen >= 20


# Commands that print no result of their own: groups, and the daemon (a log on stderr).
PRINT_NOTHING = {("db",), ("network",), ("node",), ("serve",)}


def test_each_command_declares_the_formats_it_prints_and_its_help_shows_them(runner):
    """One declaration per command (host_local_sqlite_cli.formats.output_formats), not a
    guard in each body: its -o help lists what it prints, and a format it does not print
    is refused, given before the command or after it, before anything is done."""
    from host_local_sqlite_cli.formats import declared

    for path, command in _commands(cli):
        formats = declared(command)
        if path in PRINT_NOTHING:
            assert formats is None, path
            continue
        expected = ("table", "json", "prometheus") if path == ("stats",) else ("table", "json")
        assert formats == expected, path
        text = checked(runner.invoke(cli, [*path, "--help"])).stdout
        assert "-o, --output [%s]" % "|".join(expected) in text, (path, text)


@pytest.mark.parametrize("args", [["list"], ["db", "current"], ["history", "prune",
                                                                  "--before", "1d"]])
def test_a_format_the_command_does_not_print_is_refused_after_it_too(runner, add,
                                                                      data_dir, args):
    add("a")
    before = checked(runner.invoke(cli, ["--data-dir", str(data_dir), "-o", "json", "history"]))
    for where in (["-o", "prometheus", *args], [*args, "-o", "prometheus"]):
        result = checked(runner.invoke(cli, ["--data-dir", str(data_dir), *where]))
        assert result.exit_code == 2, (where, result.output)
        assert "Usage: " in result.stderr and result.stdout == ""
        assert "Error: -o prometheus is only for 'ipamctl stats'" in result.stderr, where
    after = checked(runner.invoke(cli, ["--data-dir", str(data_dir), "-o", "json", "history"]))
    assert after.stdout == before.stdout
