"""Creating and upgrading the database schema with alembic.

The only module that imports alembic, and nothing on the plugin's hot path imports it at
module level: alembic and SQLAlchemy cost hundreds of milliseconds, which a CNI ADD must
only pay on the first run against a fresh or older database.

A SQLite database is migrated through the caller's own stdlib connection, inside a
``BEGIN IMMEDIATE`` that it already holds: SQLite's write lock is what stops two first
invocations (two pods started at once) from both creating the tables.

alembic keeps a migration's context in module globals (``alembic.context``,
``alembic.op``), so one process runs one migration at a time (:data:`_ALEMBIC`): the
node daemon's threads may meet new or older databases at once (two dataDirs, a shared
pool's first calls), and two migrations in one process ran each other's DDL.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

from ipam import paths
from ipam.errors import IoFailure, IpamError, SchemaError
from ipam.store import sqlite_db
from ipam.store.location import SQLITE, locate, redacted
from ipam.store.schema_version import HEAD, REVISIONS

if TYPE_CHECKING:
    from alembic.config import Config


MIGRATIONS = "host_local_sqlite_migrations"
_ALEMBIC = threading.Lock()  # held around every alembic migration of this process


def script_location() -> str:
    """The alembic script directory: the installed :data:`MIGRATIONS` package, else
    the source checkout's ``migrations/`` beside the ``ipam/`` folder.

    The plugin's first call on a fresh database migrates it, possibly under the
    ``install-plugin`` launcher (``python -I -S``), where an editable install's import
    finder is not installed and only ``ipam``'s directory is on ``sys.path``. The
    package is located, never imported: alembic loads ``env.py`` and the versions from
    the directory itself.
    """
    import importlib.util

    spec = importlib.util.find_spec(MIGRATIONS)
    if spec is not None and spec.submodule_search_locations:
        return os.path.abspath(list(spec.submodule_search_locations)[0])
    here = os.path.dirname(os.path.abspath(__file__))  # ipam/store/
    checkout = os.path.join(os.path.dirname(os.path.dirname(here)), "migrations")
    if os.path.isfile(os.path.join(checkout, "env.py")):
        return checkout
    raise IpamError(f"cannot find the schema migrations (package {MIGRATIONS}, or "
                      f"{checkout}): reinstall host-local-sqlite")


def alembic_config(url: str, connection: Any = None) -> Config:
    """An alembic ``Config`` built in code, pointing at :func:`script_location`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    # The ini parser interpolates '%', which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def sqlalchemy_url(database: str) -> str:
    """The SQLAlchemy URL of a PostgreSQL ``database`` (any spelling :func:`locate`
    accepts): psycopg 3 named, as SQLAlchemy before 2.1 would otherwise load psycopg2."""
    return "postgresql+psycopg://" + locate(database)[1].partition("://")[2]


def head() -> str:
    """The single head revision of the shipped migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


class _Borrowed:
    """The caller's sqlite3 connection, lent to SQLAlchemy without its transaction.

    SQLAlchemy rolls back a new pooled connection after probing it, and again when it is
    returned to the pool; either would end the caller's ``BEGIN IMMEDIATE`` and so release
    the write lock halfway through. The transaction stays the caller's to finish.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def upgrade_sqlite_connection(conn: sqlite3.Connection, database: str = "") -> None:
    """Run ``upgrade head`` inside ``conn``'s open ``BEGIN IMMEDIATE``, then COMMIT it.

    ``conn`` comes from :func:`ipam.store.sqlite_db.connect` (autocommit mode, so every
    statement runs in the transaction the caller began). On any error the transaction is
    rolled back and the error re-raised; either way ``conn`` is left outside a
    transaction. WAL is switched on after the commit: the journal mode cannot change
    inside a transaction.
    """
    if not conn.in_transaction:
        raise ValueError("upgrade_sqlite_connection needs a connection inside BEGIN IMMEDIATE")
    try:  # the same "is this our database?" as ipamctl db upgrade, for the plugin too
        _check(database or "file", _sqlite_revision(conn), _sqlite_tables(conn))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    borrowed = _Borrowed(conn)
    engine = create_engine("sqlite://", creator=lambda: borrowed, poolclass=StaticPool)
    try:
        # begin() makes alembic see an external transaction and leave it alone; its
        # commit reaches only _Borrowed.commit.
        with _ALEMBIC, engine.connect() as connection, connection.begin():
            command.upgrade(alembic_config("sqlite://", connection), "head")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        engine.dispose()
    sqlite_db.enable_wal(conn)


def sqlite_schema(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Every schema object of a SQLite database (tables, indexes, triggers, views):
    ``{(type, name): (table, sql)}``, the SQL in :func:`canonical_sql`'s form. SQLite's
    own ``sqlite_stat*`` tables (ANALYZE's statistics, which this tool never writes)
    are left out: they are no part of any revision."""
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    return {(kind, name): (table, sql and canonical_sql(sql))
            for kind, name, table, sql in rows if not name.startswith("sqlite_stat")}


# A string literal (kept as it is), or a plain name in double quotes (unquoted).
_QUOTED_NAME = re.compile(r"'(?:[^']|'')*'" + r'|"([A-Za-z_][A-Za-z0-9_]*)"')
_TABLE_CONSTRAINT = ("CONSTRAINT ", "PRIMARY KEY", "UNIQUE ", "UNIQUE(", "CHECK ", "CHECK(",
                     "FOREIGN KEY")


def canonical_sql(sql: str) -> str:
    """The stored CREATE statement of a schema object, in one spelling for one meaning.

    The same revision reached by other paths is stored as other text: SQLite splices an
    added column into the CREATE TABLE text as written, alembic's batch mode (a table
    copied and moved, as in a downgrade) quotes its names and lists the table's
    constraints in another order. So whitespace is collapsed, a double-quoted plain
    name unquoted, and a CREATE TABLE's table constraints sorted after its columns
    (which keep their order). Anything else, a CHECK or a DEFAULT included, stays."""
    text = " ".join(_QUOTED_NAME.sub(lambda m: m.group(1) or m.group(0), sql).split())
    if not text.upper().startswith("CREATE TABLE ") or "(" not in text:
        return text
    head, _, rest = text.partition("(")
    items, tail = _split_items(rest)
    columns = [i for i in items if not i.upper().startswith(_TABLE_CONSTRAINT)]
    constraints = sorted(i for i in items if i.upper().startswith(_TABLE_CONSTRAINT))
    return "%s (%s)%s" % (head.strip(), ", ".join(columns + constraints), tail)


def _split_items(body: str) -> tuple[list[str], str]:
    """A CREATE TABLE's parenthesized list, after its ``(``: its items, split at the
    commas outside parentheses and quotes, and what follows the closing ``)``."""
    items, depth, quote, start = [], 0, "", 0
    for at, char in enumerate(body):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`[":
            quote = "]" if char == "[" else char
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char in ",)" and not depth:
            items.append(body[start:at].strip())
            start = at + 1
            if char == ")":
                return items, body[at + 1:]
    return items + [body[start:].strip()], ""


def fresh_sqlite_schema(revision: str) -> dict[tuple[str, str], tuple[str, str | None]]:
    """:func:`sqlite_schema` of a new SQLite database that the migrations brought to
    ``revision``, built in memory: what a database at that revision must hold, and
    nothing else (a backup is checked against it before it is restored)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    conn = sqlite3.connect(":memory:", isolation_level=None)
    engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
    try:
        with _ALEMBIC, engine.begin() as connection:
            command.upgrade(alembic_config("sqlite://", connection), revision)
        return sqlite_schema(conn)
    finally:
        engine.dispose()
        conn.close()


def upgrade(database: str) -> str:
    """Bring ``database`` (anything :func:`ipam.store.location.locate` accepts) to head; return
    the revision.

    A database stamped by a newer version is refused with :class:`SchemaError` and left
    untouched: downgrading would drop what that version relies on.
    """
    kind, path = locate(database)
    if kind != SQLITE:
        return _upgrade_url(sqlalchemy_url(path))
    parent = os.path.dirname(os.path.abspath(path))
    paths.makedirs(parent, 0o755)  # as host-local does for its dataDir
    conn = sqlite_db.connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            revision = _check(database, _sqlite_revision(conn), _sqlite_tables(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if revision == HEAD:
            conn.execute("ROLLBACK")  # nothing written
            # Heals a database whose creator died between its COMMIT and the pragma.
            sqlite_db.enable_wal(conn)
        else:
            upgrade_sqlite_connection(conn)
    finally:
        conn.close()
    return HEAD


def current(database: str) -> str | None:
    """The revision ``database`` is at, or None if it has no schema. Never writes."""
    kind, path = locate(database)
    if kind != SQLITE:
        return _current_url(sqlalchemy_url(path))
    if not os.path.exists(path):
        raise SchemaError(f"database {path} does not exist")
    conn = sqlite_db.connect(path, readonly=True)
    try:
        return _sqlite_revision(conn)
    finally:
        conn.close()


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if not exists:
        return None
    rows = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    if len(rows) > 1:
        raise SchemaError(f"database has several alembic revisions: {', '.join(rows)}")
    return rows[0] if rows else None


def _sqlite_tables(conn: sqlite3.Connection) -> list:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != 'alembic_version'"
        )
    ]


def _check(database: str, revision: str | None, tables: list) -> str | None:
    """Refuse a database we must not migrate; return its revision otherwise."""
    if revision is None and tables:
        raise SchemaError(
            f"database {database} has tables but no schema revision:"
            " not a host-local-sqlite database",
            "tables: " + ", ".join(sorted(tables)),
        )
    if revision is not None and revision not in REVISIONS:
        raise SchemaError(
            f"database {database} is at schema revision {revision}, which this version"
            " does not know (written by a newer version?); refusing to touch it",
            "known revisions: " + ", ".join(REVISIONS),
        )
    return revision


def _upgrade_url(url: str) -> str:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        # One transaction: on engines with transactional DDL (PostgreSQL) a failed
        # migration leaves nothing behind. One migration of this process at a time,
        # taken before the transaction: it waits holding nothing of the database's.
        with _ALEMBIC, engine.begin() as connection:
            # Tables first, then the revision: each statement reads what is committed when
            # it starts (READ COMMITTED), and a racing creator commits its tables and its
            # revision at once. Read the other way round, a creator committing between
            # the two reads shows tables without a revision: "not our database".
            tables = [t for t in inspect(connection).get_table_names() if t != "alembic_version"]
            revision = MigrationContext.configure(connection).get_current_revision()
            if _check(redacted(url), revision, tables) != HEAD:
                command.upgrade(alembic_config(url, connection), "head")
    except SQLAlchemyError as e:
        raise IoFailure(f"database {redacted(url)}: {e.__class__.__name__}", str(e)) from e
    finally:
        engine.dispose()
    return HEAD


def _current_url(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as e:
        raise IoFailure(f"database {redacted(url)}: {e.__class__.__name__}", str(e)) from e
    finally:
        engine.dispose()

