"""ipam.store.migrate: the migrations agree with ipam.store.schema, and upgrades are safe to
race."""
import os
import pathlib
import select
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from ipam.errors import SchemaError
from ipam.store import migrate, schema, schema_version, sqlite_db
from ipam.store.schema_version import HEAD

TABLES = ["alembic_version", "cursors", "history", "leases", "mirror_stamps", "networks",
          "node_boots"]


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "ipam.db")


def table_names(path):
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(r[0] for r in rows)
    finally:
        conn.close()


def ddl(path):
    """Every schema object but alembic's own, as SQLite stores it (whitespace collapsed:
    SQLite splices an added column into the stored CREATE TABLE text as written)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE tbl_name != 'alembic_version' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    return [(t, n, tbl, sql and " ".join(sql.split())) for t, n, tbl, sql in rows]


def test_single_head_is_schema_version_head():
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert script.get_heads() == [schema_version.HEAD]
    assert migrate.head() == schema_version.HEAD


def test_revisions_equal_alembic_history():
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    history = [rev.revision for rev in script.walk_revisions("base", "heads")]
    assert tuple(reversed(history)) == schema_version.REVISIONS


def test_alembic_config_points_at_installed_migrations():
    location = migrate.alembic_config("sqlite://").get_main_option("script_location")
    assert os.path.isabs(location)
    assert os.path.isfile(os.path.join(location, "versions", "0001_initial.py"))
    assert os.path.isfile(os.path.join(location, "script.py.mako"))


def test_importing_migrate_does_not_import_alembic():
    code = ("import sys, ipam.store.migrate; "
            "print(sorted({'alembic', 'sqlalchemy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_upgraded_database_matches_schema(db, tmp_path):
    assert migrate.upgrade(db) == schema_version.HEAD
    engine = create_engine("sqlite:///" + db)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
    finally:
        engine.dispose()
    # compare_metadata ignores partial-index predicates and primary key names: compare
    # the stored DDL with what create_all makes from ipam.store.schema as well.
    reference = str(tmp_path / "reference.db")
    engine = create_engine("sqlite:///" + reference)
    schema.metadata.create_all(engine)
    engine.dispose()
    assert ddl(db) == ddl(reference)
    assert any("WHERE next_free = 1" in (sql or "") for _, _, _, sql in ddl(db))


def test_fresh_database_is_private_and_wal(db):
    migrate.upgrade(db)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    finally:
        conn.close()


def test_upgrade_creates_missing_data_dir(tmp_path):
    path = str(tmp_path / "a" / "b" / "ipam.db")
    assert migrate.upgrade(path) == HEAD
    assert migrate.current(path) == HEAD


def test_upgrade_at_head_is_a_no_op(db):
    migrate.upgrade(db)
    assert migrate.upgrade(db) == HEAD
    assert table_names(db) == TABLES


def test_sqlite_url_is_treated_like_a_path(db):
    assert migrate.upgrade("sqlite:///" + db) == HEAD
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert migrate.current(db) == HEAD
    assert migrate.current("sqlite:///" + db) == HEAD


def test_upgrade_sqlite_connection_holds_the_write_lock(db):
    conn = sqlite_db.connect(db)
    conn.execute("BEGIN IMMEDIATE")
    probes = []

    def probe(connection, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(("CREATE", "ALTER", "INSERT", "UPDATE")):
            return
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            try:
                other.execute("BEGIN IMMEDIATE")
                locked = False
                other.execute("ROLLBACK")
            except sqlite3.OperationalError as e:
                locked = "locked" in str(e)
            # Other readers see none of the migration until its single COMMIT.
            visible = other.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            probes.append((locked, visible))
        finally:
            other.close()

    event.listen(Engine, "after_cursor_execute", probe)
    try:
        migrate.upgrade_sqlite_connection(conn)
    finally:
        event.remove(Engine, "after_cursor_execute", probe)
    assert not conn.in_transaction
    # 0001: 3 tables, 4 indexes, alembic_version and its row; 0002: a table and the
    # version update; 0003: two columns, an index and the version update; 0004: a table
    # and the version update; 0005: a column and the version update; 0006: six columns
    # and the version update; 0007: two indexes and the version update; 0008: a table
    # and the version update.
    assert len(probes) == 31
    assert set(probes) == {(True, 0)}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert migrate.current(db) == HEAD


def test_upgrade_sqlite_connection_rolls_back_on_error(db):
    conn = sqlite_db.connect(db)
    conn.execute("BEGIN IMMEDIATE")

    def fail(connection, cursor, statement, parameters, context, executemany):
        if "CREATE TABLE history" in statement:
            raise RuntimeError("boom")

    event.listen(Engine, "after_cursor_execute", fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            migrate.upgrade_sqlite_connection(conn)
    finally:
        event.remove(Engine, "after_cursor_execute", fail)
    assert not conn.in_transaction
    conn.close()
    assert table_names(db) == []
    assert migrate.upgrade(db) == HEAD


def test_upgrade_sqlite_connection_needs_a_transaction(db):
    conn = sqlite_db.connect(db)
    try:
        with pytest.raises(ValueError):
            migrate.upgrade_sqlite_connection(conn)
    finally:
        conn.close()


# Each racer does the slow imports first, says so, and waits for the start: the end of a
# pipe both share, which the test closes once both said ready (one event, seen by both).
RACER = textwrap.dedent(
    """
    import logging, os, sys
    from alembic import command  # the slow imports, before the start line
    import %s as migrate
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%%(message)s")
    print("ready", flush=True)
    os.read(int(sys.argv[2]), 1)  # the start: end of file once the test closes its end
    print(migrate.upgrade(sys.argv[1]))
    """
) % migrate.__name__
READY_TIMEOUT = 60.0  # seconds a racer may take to import alembic and the schema


def _ready(racers):
    """Wait for each racer's ready line; else fail saying what it said instead, every
    racer killed."""
    deadline = time.monotonic() + READY_TIMEOUT
    for racer in racers:
        left = max(deadline - time.monotonic(), 0)
        line = racer.stdout.readline() if select.select([racer.stdout], [], [], left)[0] \
            else ""
        if line != "ready\n":
            for r in racers:
                r.kill()
            said = [r.communicate(timeout=30) for r in racers]
            raise AssertionError("racer %d was not ready within %g s (said %r):\n%s" % (
                racer.pid, READY_TIMEOUT, line, said))


@pytest.mark.parametrize("round_", range(3))
def test_racing_first_upgrades_migrate_once(tmp_path, round_):
    path = str(tmp_path / "ipam.db")
    start, go = os.pipe()
    try:
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, path, str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(start,),
            )
            for _ in range(2)
        ]
    finally:
        os.close(start)
    try:
        _ready(racers)
    finally:
        os.close(go)  # the start, for both at once (or the end, for a racer not ready)
    results = [(p.wait(timeout=60), *p.communicate()) for p in racers]
    for code, out, err in results:
        assert code == 0, err
        assert out.strip() == HEAD
    applied = sum(err.count("Running upgrade  -> 0001,") for _, _, err in results)
    assert applied == 1, [err for _, _, err in results]
    assert migrate.current(path) == HEAD
    assert table_names(path) == TABLES


def test_newer_database_is_refused_and_untouched(db, tmp_path):
    migrate.upgrade(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    before = pathlib.Path(db).read_bytes()
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(SchemaError, match="9999"):
        migrate.upgrade(db)
    assert pathlib.Path(db).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing
    assert migrate.current(db) == "9999"


def test_foreign_database_is_refused(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE something (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not a host-local-sqlite database"):
        migrate.upgrade(db)
    assert table_names(db) == ["something"]


def test_current_of_missing_database_raises_and_creates_nothing(tmp_path):
    path = tmp_path / "sub" / "ipam.db"
    with pytest.raises(SchemaError, match="does not exist"):
        migrate.current(str(path))
    assert os.listdir(tmp_path) == []


def test_current_of_empty_database_is_none(db):
    sqlite_db.connect(db).close()
    assert migrate.current(db) is None


def test_downgrade_to_base_then_upgrade(db):
    migrate.upgrade(db)
    command.downgrade(migrate.alembic_config("sqlite:///" + db), "base")
    assert table_names(db) == ["alembic_version"]
    assert migrate.current(db) is None
    assert migrate.upgrade(db) == HEAD
    assert table_names(db) == TABLES


def test_migrations_on_threads_of_one_process_run_one_at_a_time(tmp_path):
    """The node daemon's threads may create eight new databases at once: alembic's
    context is the process's, so they take turns, and each ends at head."""
    import threading

    barrier = threading.Barrier(8, timeout=30)
    results = {}

    def create(i):
        barrier.wait()
        try:
            results[i] = migrate.upgrade(str(tmp_path / ("db%d.sqlite" % i)))
        except Exception as e:  # reported below, with the others
            results[i] = e

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {i: HEAD for i in range(8)}


def schema_of(path):
    conn = sqlite3.connect(path)
    try:
        return migrate.sqlite_schema(conn)
    finally:
        conn.close()


def test_each_revision_has_one_schema_whichever_way_it_was_reached(tmp_path):
    """What ``db restore`` holds a backup to: the schema a new database migrated to the
    backup's revision has. A database that reached that revision otherwise (created at
    an older one and upgraded step by step, or brought down from head by alembic's
    batch mode, which quotes names and reorders constraints) has the same one."""
    for revision in schema_version.REVISIONS:
        want = migrate.fresh_sqlite_schema(revision)
        assert ("table", "alembic_version") in want and ("table", "leases") in want
        up, down = str(tmp_path / ("up-%s.db" % revision)), str(tmp_path / ("down-%s.db"
                                                                             % revision))
        for step in schema_version.REVISIONS[:schema_version.REVISIONS.index(revision) + 1]:
            command.upgrade(migrate.alembic_config("sqlite:///" + up), step)
        command.upgrade(migrate.alembic_config("sqlite:///" + down), "head")
        command.downgrade(migrate.alembic_config("sqlite:///" + down), revision)
        assert schema_of(up) == want, revision
        assert schema_of(down) == want, revision
    plain = str(tmp_path / "plain.db")  # as the plugin's first call creates one
    migrate.upgrade(plain)
    assert schema_of(plain) == migrate.fresh_sqlite_schema(HEAD)


@pytest.mark.parametrize("sql, same", [
    ('CREATE TABLE "t" (\n\ta INTEGER, "b" VARCHAR,\n\tCONSTRAINT u UNIQUE (a, b), '
     'CONSTRAINT pk PRIMARY KEY (a))', True),
    ("CREATE TABLE t (a INTEGER, b VARCHAR, CONSTRAINT u UNIQUE (a, b), "
     "CONSTRAINT pk PRIMARY KEY (a), CHECK (b != 'x,y'))", False),
    ("CREATE TABLE t (b VARCHAR, a INTEGER, CONSTRAINT pk PRIMARY KEY (a), "
     "CONSTRAINT u UNIQUE (a, b))", False),  # the columns' order is kept
    ("CREATE TABLE t (a INTEGER DEFAULT 7, b VARCHAR, CONSTRAINT pk PRIMARY KEY (a), "
     "CONSTRAINT u UNIQUE (a, b))", False),
    ("CREATE TABLE t (a INTEGER, b VARCHAR, CONSTRAINT pk PRIMARY KEY (a), "
     "CONSTRAINT u UNIQUE (a))", False),
])
def test_canonical_sql_is_one_spelling_for_one_meaning(sql, same):
    reference = ("CREATE TABLE t (a INTEGER, b VARCHAR, CONSTRAINT pk PRIMARY KEY (a), "
                 "CONSTRAINT u UNIQUE (a, b))")
    assert migrate.canonical_sql(reference) == reference
    assert (migrate.canonical_sql(sql) == reference) is same
    # A name in double quotes is that name (a string there would be no column's).
    assert migrate.canonical_sql('CREATE INDEX "ix" ON t ("a") WHERE "b" = \'"X"\' '
                                 'AND a = "1"') == \
        'CREATE INDEX ix ON t (a) WHERE b = \'"X"\' AND a = "1"'
