"""``ipamctl install-plugin``: put a fast launcher of the plugin into a CNI bin directory."""
from __future__ import annotations

import sys

import click

from cli.common import Obj, table_or_json
from cli.main import emit
from ipam import launcher


@click.command("install-plugin")
@click.argument("directory", default="/opt/cni/bin",
                type=click.Path(file_okay=False, exists=True, writable=True))
@click.option("--name", default="host-local-sqlite", show_default=True,
              help="The file name: the network config's ipam type (\"host-local\" for a "
                   "drop-in).")
@click.pass_obj
def install_plugin_cmd(obj: Obj, directory: str, name: str) -> None:
    """Write the plugin into DIRECTORY as a launcher that starts about 3.5 ms faster
    than the console script (it skips Python's site processing on each start).

    It records this installation's interpreter and paths: run it again after
    rebuilding the virtualenv or upgrading Python.

    JSON: {"path", "python", "paths"}.

    \b
    Example:
        ipamctl install-plugin /opt/cni/bin
        ipamctl install-plugin /opt/cni/bin --name host-local
    """
    table_or_json(obj)
    if "/" in name or name in ("", ".", ".."):
        raise click.BadParameter("a file name, not a path", param_hint="--name")
    paths = launcher.install_paths()
    try:
        path = launcher.install(directory, name, paths=paths)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    emit(obj, {"path": path, "python": sys.executable, "paths": paths}, "wrote %s" % path)
