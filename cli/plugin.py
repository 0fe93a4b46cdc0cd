"""``ipamctl install-plugin``: put the plugin into a CNI bin directory (the native thin
client and a fast launcher, or the launcher alone), and say what it wrote and whether the
runtimes here would run it: one library call (:func:`ipam.install.installer.install`), its
report rendered (:func:`render`); ``check-install``: call it as each runtime would."""
from __future__ import annotations

import os
from typing import Any

import click

from host_local_sqlite_cli.common import Obj
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import emit, warn
from ipam.install import frozen, install_check, installer, plugin_dirs
from ipam.paths import IN_PROCESS_SUFFIX, PLUGIN_NAME


@click.command("install-plugin")
@output_formats("table", "json")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--name", default=PLUGIN_NAME, show_default=True,
              help="The file name: the network config's ipam type (\"host-local\" for a "
                   "drop-in).")
@click.option("--client", type=click.Choice(installer.CLIENTS),
              help="The thin client that offers each call to the node daemon: native (the "
                   "C program; the default where this installation has one) or python "
                   "(the launcher's).")
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
def install_plugin_cmd(obj: Obj, directory: str | None, name: str, client: str | None,
                       force: bool, root: str, create_dir: bool,
                       containerd_config: str | None) -> None:
    """Write the plugin into DIRECTORY as a launcher that starts about 5 ms faster
    than the console script: it skips Python's site processing on each start, and
    loads the plugin's byte-code from one file (the bundle, written beside the
    package's own byte-code).

    Where this installation has the native thin client (a checkout in which 'make
    install' built it, or a self-contained build made where a C compiler was; a
    wheel has none), NAME is that client: a small static program that offers each
    call to the node daemon without an interpreter's start, and runs the launcher
    written beside it as NAME.in-process (in process only) when no daemon takes the
    call. --client python writes the launcher alone, as where there is no client,
    and removes a NAME.in-process of ours.

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
    symlink to its native client (its plugin, without one or with --client python),
    switched in one rename; copies no link uses any more are removed, but for the one
    NAME used just before and those a process still runs from (a call, the node
    daemon). DIRECTORY/host-local-sqlite.d/current links to the copy installed last:
    current/ipamctl is a path to ipamctl that stays.

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

    JSON: {"path", "directory", "why", "created", "client", "native", "in_process",
    "stale_in_process", "python", "paths", "bundle", "build", "kept",
    "kept_in_process", "replaced", "warnings", "runtimes"} (why: null when DIRECTORY
    was given; created: the directories --create-dir made; client: "native" or
    "python", the one written; native: the native client this installation has, or
    null; in_process: what the native client written runs when no daemon takes a
    call, else null; stale_in_process: null, or {"path", "removed"} of a
    NAME.in-process of ours that NAME no longer runs, kept while a process still runs
    the client it served; bundle: null if it could not be written, the launcher then
    imports the usual way; python, paths and bundle are null from the self-contained
    build, and build null from a Python installation, else {"build", "source",
    "link", "reused", "removed", "in_use"}; in_use: the copies kept because a process
    runs from them; kept (kept_in_process: of NAME.in-process): null, or where and
    how the replaced file was kept; replaced: null, or {"kind", "what"} of the other
    kind's installation replaced, with, from a launcher, {"removed", "bytes",
    "in_use", "links", "directory"} of the build's copies; runtimes: those found,
    with their search order, the file each would run and, for a running containerd,
    its pid).

    \b
    Example:
        ipamctl install-plugin
        ipamctl install-plugin /opt/cni/bin --create-dir
        ipamctl install-plugin /usr/lib/cni --name host-local --force
        ipamctl install-plugin --client python
        ipamctl install-plugin --containerd-config /etc/k3s-containerd.toml
    """
    try:
        report = installer.install(root, directory, name, force=force,
                                   create_dir=create_dir,
                                   containerd_config=containerd_config, client=client)
    except installer.InstallError as e:
        if e.param:
            raise click.BadParameter(str(e), param_hint=e.param) from None
        raise click.ClickException(str(e)) from None
    for warning in report.warnings:
        warn(warning)
    emit(obj.output, report.json(), lambda: render(report))


def render(report: installer.Installed) -> str:
    """install-plugin's report for people: where and why, what it wrote (which client),
    and what it kept, replaced and removed."""
    installed, target = report.build, report.path
    text = "".join("created %s\n" % d for d in report.created) + "wrote %s" % target
    if installed:
        text += " -> %s (%s)" % (installed["link"], "already there" if installed["reused"]
                                 else "copied from %s" % installed["source"])
        text += "".join("\nkept %s: a process runs from it" % copy
                        for copy in installed["in_use"])
    if report.client == "native":
        text += "\nthe native thin client, which runs %s when no node daemon takes a " \
            "call" % report.in_process
    else:
        text += "\nthe Python thin client (%s)" % (
            "--client python" if report.native else
            "this installation has no native thin client")
    stale = report.stale_in_process
    if stale:
        text += "\n" + ("removed %s: %s no longer runs it" % (stale["path"], target)
                        if stale["removed"] else "kept %s: a process still runs the native "
                        "client before it (the next install-plugin removes it)"
                        % stale["path"])
    if report.replaced:
        text += "\n" + replaced_text(report.replaced)
    if report.why:
        text = "chose %s: %s\n%s" % (report.directory, report.why, text)
    for kept, path in ((report.kept, target),
                       (report.kept_in_process, target + IN_PROCESS_SUFFIX)):
        if kept and kept["package"]:
            text += ("\nkept the %s file (%s) as %s: a local dpkg diversion, so upgrades "
                     "of %s install it there, not over the launcher (undo: rm %s; "
                     "dpkg-divert --rename --remove %s)" % (
                         os.path.basename(path), kept["was"], kept["path"],
                         kept["package"], path, path))
        elif kept:
            text += "\nkept the file it replaced (%s) as %s" % (kept["was"], kept["path"])
    return text


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


@click.command("check-install")
@output_formats("table", "json")
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
    runtimes = plugin_dirs.runtimes(root, containerd=containerd_config)
    reports = install_check.check(root, name, runtimes, installer.CONSOLE_SCRIPT)
    emit(obj.output, reports, lambda: "\n".join(
        "%s: %s" % (r["runtime"], "ok: %s, ADD %s and DEL in %s ms" % (
            r["runs"], r["add"], r["ms"]) if r["problem"] is None else r["problem"])
        for r in reports) or "no container runtime found here")
    if not reports or any(r["problem"] for r in reports):
        raise SystemExit(1)
