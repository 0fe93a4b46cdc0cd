"""``ipamctl db``: create, upgrade and inspect the schema (alembic, loaded lazily)."""
from __future__ import annotations

import click

from cli.common import Obj, table_or_json
from cli.main import emit


@click.group()
def db() -> None:
    """Create, upgrade and inspect the database schema.

    \b
    Example:
        ipamctl db current
    """


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Create the database or bring its schema up to date; print the revision.

    Refuses a database written by a newer version of host-local-sqlite.

    \b
    Example:
        ipamctl --database /var/lib/cni/networks/.host-local-sqlite.db db upgrade
    """
    table_or_json(obj)
    from ipam import migrate

    revision = migrate.upgrade(obj.database)
    emit(obj, {"database": obj.database, "revision": revision}, revision)


@db.command("current")
@click.pass_obj
def db_current(obj: Obj) -> None:
    """Print the database's schema revision (read-only).

    \b
    Example:
        ipamctl -o json db current
    """
    table_or_json(obj)
    from ipam import migrate

    revision = migrate.current(obj.database)
    if revision is None:
        raise click.ClickException(
            f"database {obj.database} has no schema; run: ipamctl db upgrade"
        )
    emit(obj, {"database": obj.database, "revision": revision}, revision)


