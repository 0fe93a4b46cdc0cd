"""``ipamctl install-plugin``: the plugin into a CNI bin directory, as one library call.

What is written, by what this installation is and has:

- a Python installation: the launcher (:mod:`ipam.install.launcher`) with its byte-code
  bundle (:mod:`ipam.install.bundle`); where the native thin client is at hand
  (:mod:`ipam.install.native`), that client at NAME and the launcher beside it as
  ``NAME.in-process``, in process only;
- the self-contained build (:mod:`ipam.install.frozen`): a copy of the build, and NAME a
  link to its native client, or to its plugin where the build has no client.

``client``: "native", "python", or None for native where one is at hand. The directory
is the one named, or the one chosen for the runtimes here
(:mod:`ipam.install.plugin_dirs`); a file at NAME (or at ``NAME.in-process``) that no
install-plugin wrote is refused unless ``force``, which keeps it beside. Each file is
written in one rename, the in-process plugin before the client that execs it, so a
runtime starting the plugin meanwhile runs the old file or the new, never half of one.
Installing one kind over another says what it replaced and removes what the other
leaves: the build's unused copies, or a stale ``NAME.in-process`` of ours (kept while a
process still runs the native client that may exec it; the next install removes it).
Off the plugin's hot path.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, TypedDict

from ipam.install import bundle, frozen, launcher, native, plugin_dirs
from ipam.paths import IN_PROCESS_SUFFIX, PLUGIN_NAME

# pip's console script of this installation: a link to it at NAME is ours to replace.
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), PLUGIN_NAME)
CLIENTS = ("native", "python")


class StaleInProcess(TypedDict):
    """A ``NAME.in-process`` of ours that NAME no longer runs: removed, or kept while a
    process still runs the native client it served."""

    path: str
    removed: bool


@dataclasses.dataclass(frozen=True)
class Installed:
    """What :func:`install` did: install-plugin's report, its fields in the order of the
    JSON (:meth:`json`) whose keys the command's help lists. The nested dicts are the
    JSON's too, as the modules that made them return them."""

    path: str                         # DIRECTORY/NAME, as the runtimes see it
    directory: str
    why: str | None                   # why this directory, when none was named
    created: list[str]                # the directories --create-dir made
    client: str                       # "native" or "python": the one written
    native: str | None                # the native client this installation has
    in_process: str | None            # what the native client runs when no daemon takes a call
    stale_in_process: StaleInProcess | None
    python: str | None                # None from the self-contained build
    paths: list[str] | None           # the launcher's sys.path; None from the build
    bundle: str | None                # None: not written (or the build)
    build: dict[str, Any] | None      # the build's copy (frozen.install); None: a launcher
    kept: dict[str, Any] | None       # where the replaced file went (plugin_dirs.set_aside)
    kept_in_process: dict[str, Any] | None
    replaced: dict[str, Any] | None   # the other kind's installation replaced, if any
    warnings: list[str]
    runtimes: list[dict[str, Any]]    # those found here (plugin_dirs.Runtime.report)

    def json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class InstallError(Exception):
    """Why nothing was installed; ``param``: the command-line parameter at fault, if the
    fault is one (a DIRECTORY that cannot take the plugin)."""

    def __init__(self, msg: str, param: str | None = None) -> None:
        super().__init__(msg)
        self.param = param


def install(root: str, directory: str | None, name: str, force: bool = False,
            create_dir: bool = False, containerd_config: str | None = None,
            client: str | None = None) -> Installed:
    """Install the plugin as ``directory/name``; returns what it did. ``name`` is a file
    name, never a path (refused, as ``--name``, before anything is looked at)."""
    if "/" in name or name in ("", ".", ".."):
        raise InstallError("a file name, not a path", param="--name")
    runtimes = plugin_dirs.runtimes(root, containerd=containerd_config)
    chosen = bin_directory(root, directory, name, runtimes, create_dir)
    directory, real_dir = chosen.directory, plugin_dirs.at(root, chosen.directory)
    target = os.path.join(directory, name)
    in_process = target + IN_PROCESS_SUFFIX
    build = frozen.running_build()
    program = native.find(build)
    if client == "native" and program is None:
        raise InstallError("no native thin client in this installation (%s): --client "
                           "python writes the Python client" % native.why_none(build))
    use_native = program is not None and client != "python"
    old = plugin_dirs.foreign(root, target, CONSOLE_SCRIPT)
    # The native client of a Python installation execs its neighbour: that name is taken.
    old_in_process = plugin_dirs.foreign(root, in_process) \
        if use_native and build is None else None
    for path, found in ((target, old), (in_process, old_in_process)):
        if found and not force:
            raise InstallError(
                "%s is %s, not one that install-plugin wrote: not replacing it. --force "
                "replaces it and keeps it as %s" % (path, found, "%s.distrib (a dpkg "
                "diversion)" % path if found.package else "%s.orig" % path))
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
            raise InstallError(str(e)) from None
        except OSError as e:
            warnings.append("cannot write the byte-code bundle (%s); the launcher works "
                            "without it, about 1 ms slower per call" % e)
        if use_native:
            warnings += filter(None, [native.stale(str(program))])
    try:
        created = plugin_dirs.create(root, directory) if create_dir else []
    except OSError as e:
        raise InstallError("cannot create %s: %s" % (directory, e)) from None
    stale = None
    try:
        kept = plugin_dirs.set_aside(root, target, old) if old else None
        kept_in_process = plugin_dirs.set_aside(root, in_process, old_in_process) \
            if old_in_process else None
        if build is None:
            if use_native:
                assert program is not None and paths is not None
                native.install(real_dir, name, program, paths)
            else:
                launcher.install(real_dir, name, paths=paths)
            cleared = frozen.remove_unused(real_dir)
            if replaced or cleared["removed"] or cleared["in_use"]:
                replaced = dict(replaced or {"kind": "build", "what": None}, **cleared)
        else:
            installed = frozen.install(real_dir, name, build, client=use_native)
        if not (use_native and build is None):
            stale = remove_stale_in_process(root, target)
    except ValueError as e:
        raise InstallError(str(e)) from None
    except OSError as e:
        raise InstallError("cannot install into %s: %s" % (directory, e)) from None
    warnings += plugin_dirs.warnings(root, directory, name, runtimes)
    return Installed(
        path=target, directory=directory, why=chosen.why, created=created,
        client="native" if use_native else "python", native=program,
        in_process=in_process_of(directory, target, installed, use_native),
        stale_in_process=stale, python=None if build else sys.executable, paths=paths,
        bundle=bundle_path, build=installed, kept=kept, kept_in_process=kept_in_process,
        replaced=replaced, warnings=warnings,
        runtimes=[r.report(name) for r in runtimes if r.present])


def in_process_of(directory: str, target: str, installed: dict[str, Any] | None,
                  use_native: bool) -> str | None:
    """The in-process plugin the native client execs, as the runtimes see its path."""
    if not use_native:
        return None
    if installed is None:
        return target + IN_PROCESS_SUFFIX
    return os.path.join(directory, os.path.dirname(installed["link"]),
                        frozen.CLIENT_IN_PROCESS)


def remove_stale_in_process(root: str, target: str) -> StaleInProcess | None:
    """``target`` is no longer a Python installation's native client: remove the
    in-process launcher beside it, if one of ours is there (a file of anyone else's
    stays), unless a process still runs a client that was ``target``, which may exec it
    yet (the next install removes it). Returns ``{"path", "removed"}``, or None when
    none of ours is there."""
    path = target + IN_PROCESS_SUFFIX
    found = plugin_dirs.ours(root, path)
    if found is None or found["kind"] != "launcher":
        return None
    if native.runs(plugin_dirs.at(root, target)):
        return {"path": path, "removed": False}
    os.unlink(plugin_dirs.at(root, path))
    return {"path": path, "removed": True}


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
    raise InstallError(problem, param=None if directory is None else "DIRECTORY")
