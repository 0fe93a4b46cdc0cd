"""``ipamctl install-plugin``: put a fast launcher of the plugin into a CNI bin directory
(named, or chosen for the runtimes here: :func:`bin_directory`), and say whether the
runtimes here would run it."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from host_local_sqlite_cli.common import Obj
from host_local_sqlite_cli.output import emit, table_or_json
from ipam import bundle, frozen, install_check, launcher, plugin_dirs
from ipam.paths import PLUGIN_NAME

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), PLUGIN_NAME)


@click.command("install-plugin")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
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
@click.option("--create-dir", is_flag=True,
              help="Create the directory, and its missing parents (0755), if it does not "
                   "exist.")
@click.option("--containerd-config", metavar="PATH",
              help="containerd's config file, read instead of those the running "
                   "containerd processes were started with (--config, else "
                   "/etc/containerd/config.toml).")
@click.pass_obj
def install_plugin_cmd(obj: Obj, directory: str | None, name: str, force: bool, root: str,
                       create_dir: bool, containerd_config: str | None) -> None:
    """Write the plugin into DIRECTORY as a launcher that starts about 5 ms faster
    than the console script: it skips Python's site processing on each start, and
    loads the plugin's byte-code from one file (the bundle, written beside the
    package's own byte-code).

    Without DIRECTORY it picks the CNI bin directory, and says which and why: of
    /opt/cni/bin, /usr/lib/cni (Debian's) and the directories the runtimes found here
    search, one that exists and that most of them would run NAME from, the first on
    a tie (so with no runtime found: /opt/cni/bin, else /usr/lib/cni). containerd's
    directories come from the config file each running containerd process was
    started with (its --config, else /etc/containerd/config.toml; several processes:
    each), or from --containerd-config; under --root, from that root's default. If none
    exists, it stops, listing the runtimes' directories; --create-dir creates it
    (as it creates a DIRECTORY that does not exist).

    It records this installation's interpreter and paths: run it again after
    rebuilding the virtualenv, upgrading Python or upgrading this package.

    Run from the self-contained build (make dist), it installs that build instead:
    a copy in DIRECTORY/host-local-sqlite.d/<version>-<digest>/ and NAME a relative
    symlink to its plugin, switched in one rename; copies no link uses any more are
    removed, but for the one NAME used just before and those a process still runs
    from (a call, the node daemon). DIRECTORY/host-local-sqlite.d/current links to the
    copy installed last: current/ipamctl is a path to ipamctl that stays.

    It refuses to replace a file that is not one of its launchers (Go's host-local,
    a script...), naming it and its Debian package; --force replaces it and keeps it
    beside. Then it warns about each runtime found here (podman, containerd, crio,
    nomad) that would run another file of that name, found first in its own plugin
    directories, or that does not search DIRECTORY at all.

    Installing one kind over the other (this Python installation's launcher over a
    build, or the reverse) says what it replaced; the launcher also removes the
    build's copies that no other NAME links to and no process runs from, their links
    (the tarball's ipamctl, host-local-sqlite.d/current) and the emptied
    host-local-sqlite.d/.

    JSON: {"path", "directory", "why", "created", "python", "paths", "bundle",
    "build", "kept", "replaced", "warnings", "runtimes"} (why: null when DIRECTORY
    was given; created: the directories --create-dir made; bundle: null if it could not be
    written, the launcher then imports the usual way; python, paths and bundle are
    null from the self-contained build, and build null from a Python installation,
    else {"build", "link", "reused", "removed", "in_use"}; in_use: the copies kept
    because a process runs from them; kept: null, or where and how the replaced
    file was kept; replaced: null, or {"kind", "what"} of the other kind's
    installation replaced, with, from a launcher, {"removed", "bytes", "in_use",
    "links", "directory"} of the build's copies; runtimes: those found, with their
    search order, the file each would run and, for a running containerd, its pid).

    \b
    Example:
        ipamctl install-plugin
        ipamctl install-plugin /opt/cni/bin --create-dir
        ipamctl install-plugin /usr/lib/cni --name host-local --force
        ipamctl install-plugin --containerd-config /etc/k3s-containerd.toml
    """
    table_or_json(obj)
    if "/" in name or name in ("", ".", ".."):
        raise click.BadParameter("a file name, not a path", param_hint="--name")
    runtimes = plugin_dirs.runtimes(root, containerd=containerd_config)
    chosen = bin_directory(root, directory, name, runtimes, create_dir)
    directory, real_dir = chosen.directory, plugin_dirs.at(root, chosen.directory)
    target = os.path.join(directory, name)
    old = plugin_dirs.foreign(root, target, CONSOLE_SCRIPT)
    if old and not force:
        raise click.ClickException(
            "%s is %s, not one that install-plugin wrote: not replacing it. --force "
            "replaces it and keeps it as %s" % (target, old, "%s.distrib (a dpkg "
            "diversion)" % target if old.package else "%s.orig" % target))
    build = frozen.running_build()
    before = plugin_dirs.ours(root, target, CONSOLE_SCRIPT)
    # The other kind of installation (the build over a launcher, or the reverse) is
    # said, and what it leaves behind removed.
    other_kind = before and (before["kind"] == "build") != (build is not None)
    replaced: dict[str, Any] | None = before if other_kind else None
    paths: list[str] | None = None
    bundle_path = installed = None
    warnings = []
    if build is None:
        paths = launcher.install_paths()
        try:
            launcher.render(paths=paths)  # fails before anything moves, if it is to fail
            bundle_path = bundle.build()
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            warnings.append("cannot write the byte-code bundle (%s); the launcher works "
                            "without it, about 1 ms slower per call" % e)
    try:
        created = plugin_dirs.create(root, directory) if create_dir else []
    except OSError as e:
        raise click.ClickException("cannot create %s: %s" % (directory, e)) from None
    try:
        kept = plugin_dirs.set_aside(root, target, old) if old else None
        if build is None:
            launcher.install(real_dir, name, paths=paths)
            cleared = frozen.remove_unused(real_dir)
            if replaced or cleared["removed"] or cleared["in_use"]:
                replaced = dict(replaced or {"kind": "build", "what": None}, **cleared)
        else:
            installed = frozen.install(real_dir, name, build)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException("cannot install into %s: %s" % (directory, e)) from None
    warnings += plugin_dirs.warnings(root, directory, name, runtimes)
    for warning in warnings:
        click.echo("warning: " + warning, err=True)
    text = "".join("created %s\n" % d for d in created) + "wrote %s" % target
    if installed:
        text += " -> %s (%s)" % (installed["link"], "already there" if installed["reused"]
                                 else "copied from %s" % build)
        text += "".join("\nkept %s: a process runs from it" % copy
                        for copy in installed["in_use"])
    if replaced:
        text += "\n" + replaced_text(replaced)
    if chosen.why:
        text = "chose %s: %s\n%s" % (directory, chosen.why, text)
    if kept and kept["package"]:
        text += ("\nkept the %s file (%s) as %s: a local dpkg diversion, so upgrades of %s "
                 "install it there, not over the launcher (undo: rm %s; dpkg-divert "
                 "--rename --remove %s)" % (name, old, kept["path"], kept["package"],
                                            target, target))
    elif kept:
        text += "\nkept the file it replaced (%s) as %s" % (old, kept["path"])
    emit(obj.output, {"path": target, "directory": directory, "why": chosen.why,
                      "created": created, "python": None if build else sys.executable,
                      "paths": paths, "bundle": bundle_path, "build": installed,
                      "kept": kept, "replaced": replaced, "warnings": warnings,
                      "runtimes": [r.report(name) for r in runtimes if r.present]}, text)


def replaced_text(replaced: dict[str, Any]) -> str:
    """The lines saying which installation of the other kind NAME was, and, for a build
    a launcher replaced, what of it was removed and what stays in use."""
    lines = ["replaced %s" % replaced["what"]] if replaced["what"] else []
    if replaced.get("removed"):
        lines.append("removed its copies no link uses any more: %s (%.0f MB)" % (
            ", ".join(replaced["removed"]), replaced["bytes"] / 1e6))
    lines += ["removed the link %s" % link for link in replaced.get("links", [])]
    if replaced.get("directory"):
        lines.append("removed the emptied %s/" % frozen.BUILDS)
    lines += ["kept %s: a process runs from it (the next install-plugin removes it)" % copy
              for copy in replaced.get("in_use", [])]
    return "\n".join(lines)


def bin_directory(root: str, directory: str | None, name: str,
                  runtimes: list[plugin_dirs.Runtime], create: bool) -> plugin_dirs.Target:
    """The directory to write into: DIRECTORY, else the one chosen for the runtimes
    here; it exists, or ``create`` is set and it will be created."""
    if directory is None:
        chosen = plugin_dirs.choose(root, name, runtimes)
    else:  # as the runtimes see it: inside ROOT, absolute
        chosen = plugin_dirs.Target(os.path.normpath(os.path.join(
            "/" if root != "/" else os.getcwd(), directory)))
    problem = plugin_dirs.problem(root, chosen.directory, create)
    if problem is None:
        return chosen
    problem += "%s. The plugin directories of the runtimes found here, in their search " \
        "order: %s" % (" (chosen: %s)" % chosen.why if chosen.why else "",
                       plugin_dirs.search_orders(runtimes) or "none (no runtime found)")
    if problem.startswith(chosen.directory + " does not exist"):
        problem += ". --create-dir creates it"
    if directory is None:
        raise click.ClickException(problem)
    raise click.BadParameter(problem, param_hint="DIRECTORY")


@click.command("check-install")
@click.option("--name", default=PLUGIN_NAME, show_default=True,
              help="The plugin's file name: the network config's ipam type.")
@click.option("--root", default="/", show_default=True, metavar="PATH",
              type=click.Path(file_okay=False, exists=True),
              help="The system's root, as for install-plugin (an image being built).")
@click.option("--containerd-config", metavar="PATH",
              help="containerd's config file, as for install-plugin.")
@click.pass_obj
def check_install_cmd(obj: Obj, name: str, root: str, containerd_config: str | None) -> None:
    """Check the installation end to end: for each container runtime found here (as
    install-plugin finds them: podman, each running containerd, crio, nomad), the file
    it would run for NAME, whose it is, and a real ADD and DEL through that file, as
    the runtime would run it, on a throwaway network (192.0.2.0/29) in a temporary
    dataDir: nothing of yours is touched. Exits 1 unless every runtime found runs this
    plugin and both calls succeed (or when no runtime is found).

    JSON: [{"runtime", "runs", "what", "add", "ms", "problem"}] (what: null when the
    file is ours, else what it is; add: the address ADD returned; problem: null when
    all is well).

    \b
    Example:
        ipamctl check-install
        ipamctl check-install --name host-local
    """
    table_or_json(obj)
    runtimes = plugin_dirs.runtimes(root, containerd=containerd_config)
    reports = install_check.check(root, name, runtimes, CONSOLE_SCRIPT)
    emit(obj.output, reports, lambda: "\n".join(
        "%s: %s" % (r["runtime"], "ok: %s, ADD %s and DEL in %s ms" % (
            r["runs"], r["add"], r["ms"]) if r["problem"] is None else r["problem"])
        for r in reports) or "no container runtime found here")
    if not reports or any(r["problem"] for r in reports):
        raise SystemExit(1)
