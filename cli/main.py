"""``ipamctl``: the root group, its global options and the one place errors become text.

Each command stays thin (sqlite-utils' rule): open the database, make one library call,
render the result. Command groups register themselves on :data:`cli`; library errors are
turned into ``Error: ...`` on stderr with exit 1 by :class:`IpamGroup`, usage errors exit
2 (click's own), and neither shows a traceback.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

import click

from cli.common import Obj
from ipam import paths
from ipam.errors import IpamError

OUTPUT_FORMATS = ("table", "json", "prometheus")


class IpamGroup(click.Group):
    """A group whose subcommands' library errors end as ``Error: <msg>``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IpamError as e:
            raise click.ClickException(e.msg + ("\n" + e.details if e.details else "")) from e
        except sqlite3.Error as e:
            database = ctx.obj.database if isinstance(ctx.obj, Obj) else "database"
            raise click.ClickException(f"{database}: {e}") from e
        except OSError as e:
            raise click.ClickException(str(e)) from e


def emit(obj: Obj, data: Mapping[str, Any], text: str) -> None:
    """Print ``text`` for ``-o table`` or ``data`` as a JSON object for ``-o json``."""
    if obj.output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


@click.group(cls=IpamGroup)
@click.option(
    "--data-dir",
    envvar="IPAM_DATA_DIR",
    show_envvar=True,
    default=paths.DEFAULT_DATA_DIR,
    show_default=True,
    metavar="PATH",
    help="The plugin's dataDir.",
)
@click.option(
    "--database",
    envvar="IPAM_DATABASE",
    show_envvar=True,
    metavar="PATH_OR_URL",
    help=f"SQLite file or PostgreSQL URL.  [default: DATA_DIR/{paths.DB_NAME}]",
)
@click.option(
    "--node",
    envvar="IPAM_NODE",
    show_envvar=True,
    metavar="NAME",
    help="On a shared (PostgreSQL) database: the node to act on.  [default: this host; "
    "list, stats, history, network list: every node]",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.version_option(package_name="host-local-sqlite", prog_name="ipamctl")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, database: str | None, node: str | None,
        output: str) -> None:
    """Inspect and manage host-local-sqlite's IP address leases.

    \b
    Example:
        ipamctl --data-dir /var/lib/cni/networks db upgrade
    """
    ctx.obj = Obj(
        data_dir=data_dir,
        database=database or paths.default_database(data_dir),
        output=output,
        node=node,
    )


def _register() -> None:
    from cli import db, gc, history, importcmd, leases, mirror, network, plugin, stats

    for command in (leases.list_cmd, leases.release_cmd, gc.gc_cmd, stats.stats_cmd,
                    history.history_cmd, mirror.export_cmd, mirror.check_cmd,
                    importcmd.import_cmd, db.db, plugin.install_plugin_cmd,
                    network.network):
        cli.add_command(command)


_register()


def run() -> None:
    """Console-script entry point."""
    cli(prog_name="ipamctl")
