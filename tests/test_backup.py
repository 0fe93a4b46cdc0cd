"""ipamctl db backup and db restore (ipam.admin.backup): real plugin processes where they are
the point (a burst during the copy, commits still in the WAL), CliRunner elsewhere."""
import json
import os
import shutil
import sqlite3
import time

import pytest
from plugin_procs import (
    DB_NAME,
    Invocation,
    check_json,
    database_problems,
    expected_mirror,
    integrity,
    leases,
    mirror,
    query,
    run_all,
    wait_reading_stdin,
)

from host_local_sqlite_cli.main import cli
from ipam.admin import backup
from ipam.errors import IoFailure, SchemaError, TryAgain
from ipam.store import migrate, writer_lock
from ipam.store.schema_version import HEAD
from ipam.waits import Patience

NET = "mynet"
IPAM = {"subnet": "10.1.0.0/24"}


@pytest.fixture
def conf(netconf):
    return netconf(ipam=IPAM, name=NET)


def add(conf, *container_ids):
    """ADD each container with a plugin process; {container_id: ip}."""
    out = {}
    for cid in container_ids:
        inv = Invocation("ADD", cid, conf).finish()
        assert inv.rc == 0, inv
        out[cid] = inv.address
    return out


def live(data_dir):
    return os.path.join(str(data_dir), DB_NAME)


def copy_dir(tmp_path, name="copy"):
    """A directory for a backup named like a live database, so that plugin_procs'
    helpers (leases, integrity, database_problems) read it."""
    d = tmp_path / name
    d.mkdir()
    return d, str(d / DB_NAME)


def header_modes(path):
    """Bytes 18 and 19 of a SQLite header: (1, 1) rollback journal, (2, 2) WAL."""
    with open(path, "rb") as f:
        data = f.read(20)
    return data[18], data[19]


def history(data_dir):
    return query(data_dir, "SELECT id, event, ip, container_id FROM history ORDER BY id")


def cli_args(data_dir, *args):
    return ["--data-dir", str(data_dir), *args]


# -- backup, with real plugin processes ----------------------------------------------
def test_backup_during_a_burst_is_a_consistent_prefix(conf, data_dir, tmp_path):
    add(conf, "first")  # the schema exists before the burst
    burst = [Invocation("ADD", "c%02d" % i, conf) for i in range(50)]
    wait_reading_stdin(burst, timeout=30)
    for inv in burst:
        inv.feed()
    deadline = time.monotonic() + 30
    while query(data_dir, "SELECT count(*) FROM leases")[0][0] < 15:
        assert time.monotonic() < deadline, run_all(burst)
        time.sleep(0.002)
    d, dest = copy_dir(tmp_path)
    info = backup.backup(live(data_dir), dest)
    run_all(burst)
    assert all(inv.rc == 0 for inv in burst), [inv for inv in burst if inv.rc]

    assert integrity(d) == ["ok"]
    assert database_problems(d, NET) == []
    assert header_modes(dest) == (1, 1) and not os.path.exists(dest + "-wal")
    copied = leases(d, NET)
    assert info["leases"] == len(copied) >= 15
    # The backup is the database as it was after some commit: its history is the start
    # of the final history, and its leases are those that history allocated.
    final, kept = history(data_dir), history(d)
    assert kept == final[:len(kept)]
    assert copied == {cid: ip for _, event, ip, cid in kept if event == "allocate"}
    final_leases = leases(data_dir, NET)
    assert {cid: final_leases[cid] for cid in copied} == copied


def test_backup_holds_commits_still_in_the_wal(conf, data_dir, tmp_path):
    added = add(conf, "a", "b", "c")  # each process leaves without checkpointing
    assert os.path.getsize(live(data_dir) + "-wal") > 0
    plain, plain_db = copy_dir(tmp_path, "plain")
    shutil.copyfile(live(data_dir), plain_db)  # what a plain copy of the .db file gets
    assert len(leases(plain, NET)) < 3

    d, dest = copy_dir(tmp_path)
    info = backup.backup(live(data_dir), dest)
    assert (info["leases"], info["revision"], info["path"]) == (3, HEAD, dest)
    assert sorted(os.listdir(d)) == [DB_NAME]  # one file: no -wal, no -journal
    assert header_modes(dest) == (1, 1)
    alone, alone_db = copy_dir(tmp_path, "alone")
    shutil.copyfile(dest, alone_db)
    assert leases(alone, NET) == added
    assert sorted(os.listdir(alone)) == [DB_NAME]


# -- backup, in-process ---------------------------------------------------------------
def test_backup_cli_prints_path_leases_and_revision(runner, conf, data_dir, tmp_path):
    add(conf, "a", "b")
    dest = str(tmp_path / "b.db")
    result = runner.invoke(cli, cli_args(data_dir, "db", "backup", dest))
    assert result.exit_code == 0, result.output
    assert result.stdout == "%s: 2 lease(s), schema revision %s\n" % (dest, HEAD)
    dest2 = str(tmp_path / "c.db")
    result = runner.invoke(cli, cli_args(data_dir, "-o", "json", "db", "backup", dest2))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"database": live(data_dir), "path": dest2,
                                         "revision": HEAD, "leases": 2,
                                         "bytes": os.path.getsize(dest2)}


def test_backup_refuses_to_overwrite_unless_forced(runner, conf, data_dir, tmp_path):
    add(conf, "a")
    dest = tmp_path / "b.db"
    dest.write_bytes(b"precious")
    result = runner.invoke(cli, cli_args(data_dir, "db", "backup", str(dest)))
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert dest.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["b.db", "data"]  # no temporary file left
    result = runner.invoke(cli, cli_args(data_dir, "db", "backup", "--force", str(dest)))
    assert result.exit_code == 0, result.output
    assert backup.inspect(str(dest))["leases"] == 1


def test_backup_is_private_whatever_the_umask(conf, data_dir, tmp_path):
    add(conf, "a")
    old = os.umask(0)
    try:
        backup.backup(live(data_dir), str(tmp_path / "b.db"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "b.db").st_mode & 0o777 == 0o600


def test_backup_neither_waits_for_writers_nor_copies_their_open_transaction(
        runner, conf, data_dir, tmp_path):
    before = add(conf, "a", "b")
    (tmp_path / "copy").mkdir()
    queue = writer_lock.acquire(live(data_dir) + ".lock", Patience.each(1))  # a writer half-way
    writer = sqlite3.connect(live(data_dir), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM leases")
        started = time.monotonic()
        result = runner.invoke(cli, cli_args(data_dir, "db", "backup", "--timeout", "5",
                                             str(tmp_path / "copy" / DB_NAME)))
        assert time.monotonic() - started < 2
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        writer_lock.release(queue)
    assert result.exit_code == 0, result.output
    assert leases(tmp_path / "copy", NET) == before


def test_backup_refuses_what_it_cannot_copy(conf, data_dir, tmp_path):
    with pytest.raises(IoFailure, match="does not exist"):
        backup.backup(str(tmp_path / "none.db"), str(tmp_path / "b.db"))
    add(conf, "a")
    for target in (live(data_dir), live(data_dir) + "-wal"):
        with pytest.raises(Exception, match="live database"):
            backup.backup(live(data_dir), target, force=True)
    with pytest.raises(IoFailure, match="is a directory"):
        backup.backup(live(data_dir), str(tmp_path), force=True)
    assert leases(data_dir, NET)["a"]
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(SchemaError, match="no schema"):
        backup.backup(str(empty), str(tmp_path / "b.db"))
    assert not os.path.exists(tmp_path / "b.db")


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_postgresql_is_refused_with_its_own_tools(runner, tmp_path, command):
    url = "postgresql+psycopg://ipam:secret@db.example/ipam"
    result = runner.invoke(cli, ["--database", url, "db", command, str(tmp_path / "x.db")])
    assert result.exit_code == 1
    assert "pg_restore" in result.stderr
    assert "pg_dump" in result.stderr or command == "restore"
    assert "secret" not in result.output
    assert os.listdir(tmp_path) == []


# -- restore, with real plugin processes ---------------------------------------------
def test_restore_brings_the_leases_back_to_the_backup(runner, conf, data_dir, tmp_path):
    before = add(conf, "a", "b", "c")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    later = add(conf, "d", "e")
    result = runner.invoke(cli, cli_args(data_dir, "db", "restore", dest))
    assert result.exit_code == 0, result.output
    assert leases(data_dir, NET) == before
    assert integrity(data_dir) == ["ok"] and database_problems(data_dir, NET) == []
    assert set(later.values()) <= set(mirror(data_dir, NET))  # the mirror is not restored
    assert os.stat(live(data_dir)).st_mode & 0o777 == 0o600
    assert query(data_dir, "PRAGMA journal_mode") == [("wal",)]


def test_restore_beside_a_burst_of_plugins(conf, data_dir, tmp_path):
    before = add(conf, *("a%d" % i for i in range(5)))
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    add(conf, *("b%d" % i for i in range(5)))
    burst = [Invocation("ADD", "c%02d" % i, conf) for i in range(30)]
    wait_reading_stdin(burst, timeout=30)
    for inv in burst:
        inv.feed()
    info = backup.restore(live(data_dir), dest)
    run_all(burst)
    assert all(inv.rc == 0 and inv.json["ips"] for inv in burst), [inv for inv in burst
                                                                    if inv.rc]
    assert info["leases"] == 5
    assert integrity(data_dir) == ["ok"] and database_problems(data_dir, NET) == []
    final = leases(data_dir, NET)  # asserts: no address twice
    assert {cid: final[cid] for cid in before} == before
    assert not {inv.address for inv in burst} & set(before.values())


@pytest.mark.parametrize("failing", ["taken", "exhausted"])
def test_after_a_restore_a_failing_add_and_a_del_leave_check_clean(netconf, data_dir,
                                                                   tmp_path, failing):
    """The promise of docs/backup.md: the next call on the network reconciles it, whatever the
    command and whatever its outcome. An ADD that fails (its requested address is one
    the backup does not know, or the pool is full) still leaves the containers started
    since the backup recorded, and a DEL leaves ``last_reserved_ip.0`` what the
    database says: ``ipamctl check`` is clean after both."""
    conf = netconf(ipam={"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2",
                         "rangeEnd": "10.1.0.6"}, name=NET)
    before = add(conf, "a", "b", "c")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    later = add(conf, "d", "e")
    backup.restore(live(data_dir), dest)
    assert leases(data_dir, NET) == before
    # Five addresses, all held once d and e are recorded: a plain ADD finds the pool
    # full; asking for d's address finds it taken.
    args = {"taken": {"args": "IP=%s" % later["d"]}, "exhausted": {}}[failing]
    inv = Invocation("ADD", "f", conf, **args).finish()
    assert inv.rc != 0 and inv.json["msg"], inv
    assert ("not available" if failing == "taken" else "no IP addresses available") \
        in inv.json["msg"], inv
    assert leases(data_dir, NET) == dict(before, **later)  # recorded all the same
    inv = Invocation("DEL", "b", conf).finish()
    assert (inv.rc, inv.out) == (0, b""), inv
    assert integrity(data_dir) == ["ok"] and database_problems(data_dir, NET) == []
    assert check_json(data_dir) == (0, {"ok": True, "problems": [], "findings": []})
    kept = dict(before, **later)
    del kept["b"]
    assert leases(data_dir, NET) == kept
    assert mirror(data_dir, NET) == expected_mirror(kept)


def test_restore_brings_an_older_schema_up_to_date(conf, data_dir, tmp_path):
    before = add(conf, "a", "b")
    d, old = copy_dir(tmp_path, "old")
    backup.backup(live(data_dir), old)
    from alembic import command

    command.downgrade(migrate.alembic_config("sqlite:///" + old), "0002")
    with open(old, "rb") as f:
        original = f.read()
    add(conf, "c")
    info = backup.restore(live(data_dir), old)
    assert (info["source_revision"], info["revision"], info["migrated"]) == ("0002", HEAD, True)
    assert migrate.current(live(data_dir)) == HEAD
    assert leases(data_dir, NET) == before
    with open(old, "rb") as f:
        assert f.read() == original  # the backup itself is never changed
    assert sorted(os.listdir(d)) == [DB_NAME]
    assert add(conf, "d")["d"] not in before.values()


def test_restore_creates_a_missing_database(conf, data_dir, tmp_path):
    before = add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    target = tmp_path / "new" / "sub" / DB_NAME
    backup.restore(str(target), dest)
    assert leases(target.parent, NET) == before
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert query(target.parent, "PRAGMA journal_mode") == [("wal",)]


def test_restore_of_another_page_size(conf, data_dir, tmp_path):
    before = add(conf, "a", "b")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    conn.execute("PRAGMA page_size=1024")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    conn.close()
    add(conf, "c")
    backup.restore(live(data_dir), dest)
    assert leases(data_dir, NET) == before
    assert query(data_dir, "PRAGMA page_size") == [(4096,)]


# -- restore refusals, in-process ----------------------------------------------------
def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"not a database" * 100)


def _empty(path):
    with open(path, "wb"):
        pass


def _foreign(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something (x)")
    conn.close()


def _newer(path):
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()


def _corrupt(path):
    """Change a container id in one place only: the table and its index disagree."""
    with open(path, "r+b") as f:
        at = f.read().index(b"corruptme")
        f.seek(at)
        f.write(b"CORRUPTME")


def _spoil_schema(name, *statements):
    def spoil(path):
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
    spoil.__name__ = name
    return spoil


# A schema object that the backup's revision does not create, or creates otherwise:
# each could change what later ADDs and DELs do, or what they cost.
_TRIGGER = _spoil_schema("trigger", "CREATE TRIGGER eat AFTER INSERT ON leases "
                         "BEGIN DELETE FROM leases WHERE id = new.id; END")
_VIEW = _spoil_schema("view", "CREATE VIEW seen AS SELECT ip FROM leases")
_INDEX = _spoil_schema("index", "CREATE INDEX ix_extra ON leases (container_id)")
_TABLE = _spoil_schema("table", "CREATE TABLE notes (x)")
# Without it every ADD walks the leases; then the same name over other columns.
_DROPPED = _spoil_schema("dropped", "DROP INDEX ix_leases_run_end")
_CHANGED = _spoil_schema("changed", "DROP INDEX ix_leases_owner",
                         "CREATE INDEX ix_leases_owner ON leases (network)")
_COLUMN = _spoil_schema("column", "ALTER TABLE leases ADD COLUMN x DEFAULT 1")
_CHECK = _spoil_schema(  # the same columns, but an interface named eth9 is refused
    "check", "PRAGMA writable_schema = ON",
    "UPDATE sqlite_master SET sql = replace(sql, 'ifname VARCHAR, ', "
    "'ifname VARCHAR CHECK (ifname != ''eth9''), ') WHERE name = 'leases'")


@pytest.mark.parametrize("spoil, message", [
    (_garbage, "is not a SQLite database"),
    (_empty, "is not a SQLite database"),
    (_foreign, "not a host-local-sqlite database"),
    (_newer, "schema revision 9999"),
    (_corrupt, "fails SQLite's integrity check"),
    (_TRIGGER, "trigger eat: not created by revision"),
    (_VIEW, "view seen: not created by revision"),
    (_INDEX, "index ix_extra: not created by revision"),
    (_TABLE, "table notes: not created by revision"),
    (_DROPPED, "index ix_leases_run_end: missing"),
    (_CHANGED, "index ix_leases_owner: differs from revision"),
    (_COLUMN, "table leases: differs from revision"),
    (_CHECK, "table leases: differs from revision"),
])
def test_restore_refuses_a_file_it_cannot_trust(runner, conf, data_dir, tmp_path, spoil,
                                                message):
    add(conf, "corruptme-" + "x" * 40)
    bad = tmp_path / "bad.db"
    if spoil not in (_garbage, _empty, _foreign):
        backup.backup(live(data_dir), str(bad))
    spoil(str(bad))
    add(conf, "after")
    expected = leases(data_dir, NET)
    for yes in (["--yes"], []):
        result = runner.invoke(cli, cli_args(data_dir, "db", "restore", *yes, str(bad)))
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and message in result.stderr
        assert "Traceback" not in result.output
    assert leases(data_dir, NET) == expected
    assert not [name for name in os.listdir(data_dir) if name.endswith(".tmp")]


def test_restore_checks_an_older_backup_against_its_own_revision(conf, data_dir, tmp_path):
    """A backup at 0002 is held to what 0002 creates: one spoiled there is refused
    before any migration runs; one holding a later revision's index is refused too."""
    add(conf, "a")
    from alembic import command

    clean = str(tmp_path / "clean.db")
    backup.backup(live(data_dir), clean)
    command.downgrade(migrate.alembic_config("sqlite:///" + clean), "0002")
    spoiled = str(tmp_path / "spoiled.db")
    shutil.copyfile(clean, spoiled)
    _TRIGGER(spoiled)
    ahead = str(tmp_path / "ahead.db")
    shutil.copyfile(clean, ahead)
    _spoil_schema("later", "CREATE INDEX ix_leases_network_node ON leases (network)")(ahead)
    add(conf, "b")
    expected = leases(data_dir, NET)
    with pytest.raises(SchemaError, match="trigger eat: not created by revision 0002"):
        backup.restore(live(data_dir), spoiled)
    with pytest.raises(SchemaError, match="index ix_leases_network_node: not created by "
                                          "revision 0002"):
        backup.restore(live(data_dir), ahead)
    assert leases(data_dir, NET) == expected
    assert backup.restore(live(data_dir), clean)["source_revision"] == "0002"
    assert set(leases(data_dir, NET)) == {"a"}


def test_restore_drops_statistics_no_revision_creates(conf, data_dir, tmp_path):
    """ANALYZE's tables (an operator's, never ours) are no reason to refuse a backup;
    they are not restored: the database plans its queries as a new one does."""
    before = add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    _spoil_schema("analyze", "ANALYZE")(dest)
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'"
                        ).fetchall() == [("sqlite_stat1",)]
    conn.close()
    add(conf, "b")
    backup.restore(live(data_dir), dest)
    assert leases(data_dir, NET) == before
    assert query(data_dir, "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'"
                 ) == []


def test_restore_refuses_the_live_database(conf, data_dir):
    add(conf, "a")
    with pytest.raises(Exception, match="live database"):
        backup.restore(live(data_dir), live(data_dir))


def test_restore_refuses_to_write_over_a_foreign_database(conf, data_dir, tmp_path):
    add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    other = str(tmp_path / "other.db")
    _foreign(other)
    with pytest.raises(SchemaError, match="not a host-local-sqlite database"):
        backup.restore(other, dest)
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["something"]
    conn.close()


def test_restore_waits_for_the_writers_queue_within_its_timeout(conf, data_dir, tmp_path):
    before = add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    add(conf, "b")
    queue = writer_lock.acquire(live(data_dir) + ".lock", Patience.each(1))
    try:
        with pytest.raises(TryAgain):
            backup.restore(live(data_dir), dest, timeout=0.2)
    finally:
        writer_lock.release(queue)
    assert set(leases(data_dir, NET)) == {"a", "b"}
    assert not [n for n in os.listdir(data_dir) if n.endswith(".tmp")]
    backup.restore(live(data_dir), dest, timeout=0.2)
    assert leases(data_dir, NET) == before


@pytest.fixture
def terminal(monkeypatch):
    import host_local_sqlite_cli.db

    monkeypatch.setattr(host_local_sqlite_cli.db, "is_terminal", lambda: True)


def test_restore_on_a_terminal_asks(runner, terminal, conf, data_dir, tmp_path):
    before = add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    add(conf, "b", "c")
    result = runner.invoke(cli, cli_args(data_dir, "db", "restore", dest), input="n\n")
    assert result.exit_code == 1
    assert ("Replace the database %s (3 lease(s)) with %s (1 lease(s), schema revision %s)?"
            % (live(data_dir), dest, HEAD)) in result.output
    assert "Aborted" in result.output
    assert set(leases(data_dir, NET)) == {"a", "b", "c"}
    result = runner.invoke(cli, cli_args(data_dir, "db", "restore", dest), input="y\n")
    assert result.exit_code == 0, result.output
    assert leases(data_dir, NET) == before
    add(conf, "b")
    result = runner.invoke(cli, cli_args(data_dir, "db", "restore", "--yes", dest))
    assert result.exit_code == 0, result.output
    assert "Replace" not in result.output
    assert leases(data_dir, NET) == before


def test_restore_cli_output(runner, conf, data_dir, tmp_path):
    add(conf, "a")
    dest = str(tmp_path / "b.db")
    backup.backup(live(data_dir), dest)
    result = runner.invoke(cli, cli_args(data_dir, "-o", "json", "db", "restore", dest))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "database": live(data_dir), "source": dest, "source_revision": HEAD,
        "revision": HEAD, "leases": 1, "migrated": False}
    result = runner.invoke(cli, cli_args(data_dir, "db", "restore", dest))
    assert result.stdout == "%s: restored from %s, 1 lease(s), schema revision %s\n" % (
        live(data_dir), dest, HEAD)
