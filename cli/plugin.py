"""``ipamctl install-plugin``: put a fast launcher of the plugin into a CNI bin directory,
and say whether the runtimes here would run it."""
from __future__ import annotations

import os
import sys

import click

from host_local_sqlite_cli.common import Obj
from host_local_sqlite_cli.output import emit, table_or_json
from ipam import bundle, launcher, plugin_dirs
from ipam.paths import DEFAULT_BIN_DIR, PLUGIN_NAME

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), PLUGIN_NAME)


@click.command("install-plugin")
@click.argument("directory", default=DEFAULT_BIN_DIR, type=click.Path(file_okay=False))
@click.option("--name", default=PLUGIN_NAME, show_default=True,
              help="The file name: the network config's ipam type (\"host-local\" for a "
                   "drop-in).")
@click.option("--force", is_flag=True,
              help="Replace DIRECTORY/NAME even if it is not one of these launchers, "
                   "keeping it beside: NAME.distrib through a dpkg diversion for a "
                   "package's file, else NAME.orig.")
@click.option("--root", default="/", show_default=True, metavar="PATH",
              type=click.Path(file_okay=False, exists=True),
              help="The system's root: DIRECTORY, the runtimes' config files and dpkg's "
                   "database are looked up under it (an image being built).")
@click.pass_obj
def install_plugin_cmd(obj: Obj, directory: str, name: str, force: bool, root: str) -> None:
    """Write the plugin into DIRECTORY as a launcher that starts about 5 ms faster
    than the console script: it skips Python's site processing on each start, and
    loads the plugin's byte-code from one file (the bundle, written beside the
    package's own byte-code).

    It records this installation's interpreter and paths: run it again after
    rebuilding the virtualenv, upgrading Python or upgrading this package.

    It refuses to replace a file that is not one of its launchers (Go's host-local,
    a script...), naming it and its Debian package; --force replaces it and keeps it
    beside. Then it warns about each runtime found here (podman, containerd, crio,
    nomad) that would run another file of that name, found first in its own plugin
    directories, or that does not search DIRECTORY at all.

    JSON: {"path", "python", "paths", "bundle", "kept", "warnings", "runtimes"}
    (bundle: null if it could not be written, the launcher then imports the usual
    way; kept: null, or where and how the replaced file was kept; runtimes: those
    found, with their search order and the file each would run).

    \b
    Example:
        ipamctl install-plugin /opt/cni/bin
        ipamctl install-plugin /usr/lib/cni --name host-local --force
    """
    table_or_json(obj)
    if "/" in name or name in ("", ".", ".."):
        raise click.BadParameter("a file name, not a path", param_hint="--name")
    # DIRECTORY as the runtimes see it: inside ROOT, absolute.
    directory = os.path.normpath(os.path.join("/" if root != "/" else os.getcwd(), directory))
    runtimes = plugin_dirs.runtimes(root)
    real_dir = plugin_dirs.at(root, directory)
    problem = None
    if not os.path.exists(real_dir):
        problem = "does not exist"  # /opt/cni/bin on Debian, whose plugins are elsewhere
    elif not os.path.isdir(real_dir):
        problem = "is not a directory"
    elif not os.access(real_dir, os.W_OK):
        problem = "is not writable"
    if problem:
        raise click.BadParameter("%s %s. The plugin directories of the runtimes found here, "
                                 "in their search order: %s" % (directory, problem, plugin_dirs
                                 .search_orders(runtimes) or "none (no runtime found)"),
                                 param_hint="DIRECTORY")
    target = os.path.join(directory, name)
    old = plugin_dirs.foreign(root, target, CONSOLE_SCRIPT)
    if old and not force:
        raise click.ClickException(
            "%s is %s, not a host-local-sqlite launcher: not replacing it. --force "
            "replaces it and keeps it as %s" % (target, old, "%s.distrib (a dpkg "
            "diversion)" % target if old.package else "%s.orig" % target))
    paths = launcher.install_paths()
    warnings = []
    try:
        launcher.render(paths=paths)  # fails before anything moves, if it is to fail
        bundle_path = bundle.build()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        bundle_path = None
        warnings.append("cannot write the byte-code bundle (%s); the launcher works "
                        "without it, about 1 ms slower per call" % e)
    try:
        kept = plugin_dirs.set_aside(root, target, old) if old else None
        launcher.install(real_dir, name, paths=paths)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    warnings += plugin_dirs.warnings(root, directory, name, runtimes)
    for warning in warnings:
        click.echo("warning: " + warning, err=True)
    text = "wrote %s" % target
    if kept and kept["package"]:
        text += ("\nkept the %s file (%s) as %s: a local dpkg diversion, so upgrades of %s "
                 "install it there, not over the launcher (undo: rm %s; dpkg-divert "
                 "--rename --remove %s)" % (name, old, kept["path"], kept["package"],
                                            target, target))
    elif kept:
        text += "\nkept the file it replaced (%s) as %s" % (old, kept["path"])
    emit(obj.output, {"path": target, "python": sys.executable, "paths": paths,
                      "bundle": bundle_path, "kept": kept, "warnings": warnings,
                      "runtimes": [r.report(name) for r in runtimes if r.present]}, text)
