"""``ipamctl``: the root group and its global options; every command group registers here.

Each command stays thin (sqlite-utils' rule): open the database, make one library call,
render the result (:mod:`host_local_sqlite_cli.output`). The command modules never import
this one, so each imports alone; the root group's class
(:class:`~host_local_sqlite_cli.output.IpamGroup`) turns library errors into ``Error: ...``
with exit 1, while usage errors exit 2 (click's own); neither shows a traceback.
"""
from __future__ import annotations

import os

import click

from host_local_sqlite_cli import (
    db,
    gc,
    history,
    importcmd,
    leases,
    mirror,
    network,
    node,
    plugin,
    reserve,
    serve,
    stats,
)
from host_local_sqlite_cli.common import ROOT_ENV, make_obj, named_nothing
from host_local_sqlite_cli.formats import FORMATS
from host_local_sqlite_cli.output import IpamGroup
from ipam import paths


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
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format: each command's --help shows those it prints (prometheus: "
    "stats alone, which now says it as stats --prometheus).",
)
@click.version_option(package_name="host-local-sqlite", prog_name="ipamctl")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, database: str | None, node: str | None,
        output: str) -> None:
    """Inspect and manage host-local-sqlite's IP address leases.

    The options below go before the command or after it, or after a subcommand
    (ipamctl list -o json); given twice, the later one wins.

    Without --data-dir or --database, the CNI network configs say where the leases
    are: list, stats, history and network list read every database they name, other
    commands the one found, or the one holding --network.

    \b
    Example:
        ipamctl --data-dir /var/lib/cni/networks db upgrade
    """
    ctx.obj = make_obj(data_dir, database, output, node, discover=named_nothing(ctx),
                       root=os.environ.get(ROOT_ENV) or "/")


for command in (leases.list_cmd, leases.release_cmd, reserve.reserve_cmd,
                reserve.unreserve_cmd, gc.gc_cmd, stats.stats_cmd,
                history.history_cmd, mirror.export_cmd, mirror.check_cmd,
                importcmd.import_cmd, db.db, plugin.install_plugin_cmd,
                plugin.check_install_cmd, network.network, node.node, serve.serve_cmd,
                serve.health_cmd):
    cli.add_command(command)


def run() -> None:
    """Console-script entry point."""
    cli(prog_name="ipamctl")
