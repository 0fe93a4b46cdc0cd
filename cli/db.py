"""``ipamctl db``: create, upgrade and inspect the schema (alembic, loaded lazily); back
up and restore a SQLite database (:mod:`ipam.admin.backup`)."""
from __future__ import annotations

from typing import Any

import click

from host_local_sqlite_cli.common import Obj
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import emit, is_terminal
from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT


@click.group()
def db() -> None:
    """Create, upgrade and inspect the database schema; back up and restore.

    \b
    Example:
        ipamctl db current
    """


@db.command("upgrade")
@output_formats("table", "json")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Create the database or bring its schema up to date; print the revision.

    Refuses a database written by a newer version of host-local-sqlite.

    \b
    Example:
        ipamctl --database /var/lib/cni/networks/.host-local-sqlite.db db upgrade
    """
    from ipam.store import migrate

    revision = migrate.upgrade(obj.database)
    emit(obj.output, {"database": obj.database, "revision": revision}, revision)


@db.command("current")
@output_formats("table", "json")
@click.pass_obj
def db_current(obj: Obj) -> None:
    """Print the database's schema revision (read-only).

    \b
    Example:
        ipamctl -o json db current
    """
    from ipam.store import migrate

    revision = migrate.current(obj.database)
    if revision is None:
        raise click.ClickException(
            f"database {obj.database} has no schema; run: ipamctl db upgrade"
        )
    emit(obj.output, {"database": obj.database, "revision": revision}, revision)


def _timeout_option(waits_for: str) -> Any:
    return click.option(
        "--timeout", type=click.FloatRange(min=0), default=DEFAULT_BUSY_TIMEOUT,
        show_default=True, metavar="SECONDS", help="How long to wait for %s." % waits_for)


@db.command("backup")
@output_formats("table", "json")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_timeout_option("SQLite's locks (a backup never waits for the plugin's writers)")
@click.pass_obj
def db_backup(obj: Obj, file: str, force: bool, timeout: float) -> None:
    """Copy the SQLite database to FILE, safely beside running plugins.

    SQLite's online backup API reads the database as one commit left it, latest
    commits in the WAL included, without holding up the plugin. FILE is one
    self-contained file, mode 0600, checked, then renamed into place; an existing FILE
    is replaced only with --force. For PostgreSQL use pg_dump.

    JSON: {database, path, revision, leases, bytes}.

    \b
    Example:
        ipamctl db backup /var/backups/ipam-$(date +%F).db
    """
    from ipam.admin import backup

    info = backup.backup(obj.database, file, timeout=timeout, force=force)
    emit(obj.output, info, "%s: %d lease(s), schema revision %s"
         % (info["path"], info["leases"], info["revision"]))


@db.command("restore")
@output_formats("table", "json")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_timeout_option("the plugin's writers to finish (their queue) and SQLite's locks")
@click.pass_obj
def db_restore(obj: Obj, file: str, yes: bool, timeout: float) -> None:
    """Replace the database's contents with a backup's, safely beside running plugins.

    FILE must pass SQLite's integrity check and hold this tool's schema at a revision
    it knows, with exactly the tables, indexes, triggers and views that revision
    creates; an older one is brought up to date. The mirror files are not restored:
    the next plugin call on each network reconciles them. On a terminal it asks first,
    unless you pass --yes. For PostgreSQL use pg_restore.

    JSON: {database, source, source_revision, revision, leases, migrated}.

    \b
    Example:
        ipamctl db restore /var/backups/ipam-2026-11-28.db --yes
    """
    from ipam.admin import backup

    if not yes and is_terminal():
        plan = backup.plan_restore(obj.database, file)
        live = plan["live_leases"]
        click.confirm("Replace the database %s (%s) with %s (%d lease(s), schema revision %s)?"
                      % (plan["database"], "new" if live is None else "%d lease(s)" % live,
                         plan["path"], plan["leases"], plan["revision"]), abort=True)
    info = backup.restore(obj.database, file, timeout=timeout)
    upgraded = " (upgraded from %s)" % info["source_revision"] if info["migrated"] else ""
    emit(obj.output, info, "%s: restored from %s, %d lease(s), schema revision %s%s"
         % (info["database"], info["source"], info["leases"], info["revision"], upgraded))
