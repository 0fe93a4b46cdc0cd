"""Installing the self-contained build (``make dist``) into a CNI bin directory.

The build is one directory (``host-local-sqlite.d``: both executables, ``lib/``,
``BUILD-INFO``). Its executables find ``lib/`` through ``/proc/self/exe``, so a runtime
may run them through a symlink, and ``ipamctl install-plugin``, run from a build, installs
that build, not a launcher::

    DIR/host-local-sqlite.d/<version>-<digest>/   a copy of the build
    DIR/NAME -> host-local-sqlite.d/<version>-<digest>/host_local_sqlite

which is also what the build's tarball unpacks into DIR (``tools/build_dist.py``), so
an unpacked tarball and an installed build are one thing to install over.

The copy is made under a temporary name and renamed into place, and ``NAME`` is a new
symlink renamed over the old one: a runtime starting the plugin meanwhile runs the old
build or the new, never half of one. The link is relative, so it is right on the node
when the installer (a DaemonSet's container) sees the directory at another path. An
identical build already there is reused. After switching, the copies that no link in
DIR points to are removed, except the one NAME pointed to just before, which a plugin
started a moment ago may still be loading.

Off the plugin's hot path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import Any

BUILDS = "host-local-sqlite.d"  # in DIR: the installed copies (as the tarball unpacks)
PLUGIN = "host_local_sqlite"    # the plugin's executable in a build (tools/build_dist.py)
IPAMCTL = "ipamctl"             # the other one
INFO = "BUILD-INFO"
# A copy's name (tag()), or one being copied: the only entries of BUILDS ever removed.
_COPY = re.compile(r"[0-9A-Za-z.+!_-]+-[0-9a-f]{12}(\.tmp-\d+)?")


def running_build() -> str | None:
    """The build directory this process runs from, if it is a frozen build."""
    if not getattr(sys, "frozen", False):
        return None
    return os.path.dirname(os.path.realpath(sys.executable))


def info(build: str) -> dict[str, Any]:
    with open(os.path.join(build, INFO)) as f:
        data: dict[str, Any] = json.load(f)
    return data


def tag(build: str) -> str:
    """The installed copy's name: ``<version>-<first 12 hex digits of the digest>``."""
    meta = info(build)
    return "%s-%s" % (meta["version"], meta["digest"][:12])


def copy_of(link_target: str) -> str | None:
    """The copy a symlink's target is an executable of (``BUILDS/<copy>/<executable>``,
    as install-plugin and the tarball make them), or None."""
    parts = os.path.normpath(link_target).split(os.sep)
    if len(parts) == 3 and parts[0] == BUILDS and parts[2] in (PLUGIN, IPAMCTL) \
            and _COPY.fullmatch(parts[1]):
        return parts[1]
    return None


def is_ours(link_target: str) -> bool:
    """Whether a symlink's target is the plugin of one of the copies installed here."""
    return copy_of(link_target) is not None and link_target.endswith(PLUGIN)


def install(directory: str, name: str, build: str) -> dict[str, Any]:
    """Install ``build`` into ``directory`` (a real path) as ``name``; returns where the
    copy is, the link, whether the copy was reused, and the copies removed."""
    builds = os.path.join(directory, BUILDS)
    os.makedirs(builds, mode=0o755, exist_ok=True)
    os.chmod(builds, 0o755)
    copy = os.path.join(builds, tag(build))
    reused = os.path.isfile(os.path.join(copy, INFO))
    if not reused:
        _copy(build, copy)
    path = os.path.join(directory, name)
    previous = _target(path)
    link = os.path.join(BUILDS, os.path.basename(copy), PLUGIN)
    tmp = os.path.join(directory, ".%s.tmp-%d" % (name, os.getpid()))
    os.symlink(link, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(directory)
    keep = {os.path.basename(copy), previous and copy_of(previous)}
    return {"build": copy, "link": link, "reused": reused,
            "removed": _prune(directory, builds, keep)}


def _copy(build: str, copy: str) -> None:
    """Copy the build to ``copy`` under a temporary name, flush it, rename it in."""
    tmp = "%s.tmp-%d" % (copy, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(build, tmp, symlinks=True)
        for folder, _, files in os.walk(tmp):
            for f in files:
                p = os.path.join(folder, f)
                if not os.path.islink(p):
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        try:
            os.rename(tmp, copy)
        except OSError:
            if not os.path.isfile(os.path.join(copy, INFO)):
                raise
            shutil.rmtree(tmp)  # another installer put the same build there first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(os.path.dirname(copy))


def _target(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _prune(directory: str, builds: str, keep: set[str | None]) -> list[str]:
    """Remove the copies in ``builds`` that neither ``keep`` names nor a symlink in
    ``directory`` points to (another NAME, the drop-in's, or the tarball's ``ipamctl``,
    may use one), and leftovers of an interrupted copy; nothing else that is there."""
    for entry in os.listdir(directory):
        target = _target(os.path.join(directory, entry))
        keep.add(target and copy_of(target))
    removed = []
    for entry in sorted(os.listdir(builds)):
        if entry not in keep and _COPY.fullmatch(entry):
            shutil.rmtree(os.path.join(builds, entry), ignore_errors=True)
            removed.append(os.path.join(builds, entry))
    return removed


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
