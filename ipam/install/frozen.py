"""Installing the self-contained build (``make dist``) into a CNI bin directory.

The build is one directory (``host-local-sqlite.d``: both executables, ``lib/``,
``BUILD-INFO``). Its executables find ``lib/`` through ``/proc/self/exe``, so a runtime
may run them through a symlink, and ``ipamctl install-plugin``, run from a build, installs
that build, not a launcher::

    DIR/host-local-sqlite.d/<version>-<digest>/   a copy of the build
    DIR/host-local-sqlite.d/current -> <version>-<digest>   the copy installed last
    DIR/NAME -> host-local-sqlite.d/<version>-<digest>/client

which is also what the build's tarball unpacks into DIR (``tools/build_dist.py``), so
an unpacked tarball and an installed build are one thing to install over. ``client`` is
the native thin client (native/client.c, :mod:`ipam.install.native`), in a build compiled where
``make dist`` had a C compiler: it offers the call to the node daemon and, when none takes
it, execs ``client.in-process`` beside it, a link to the build's plugin
(``host_local_sqlite``), which then runs the call in process only (the program name's
suffix tells it so: ``tools/frozen/plugin.py``). A build without one, or
``install-plugin --client python``, links NAME to the plugin itself, whose Python client
offers the call.

The copy is made under a temporary name and renamed into place, and ``NAME`` is a new
symlink renamed over the old one: a runtime starting the plugin meanwhile runs the old
build or the new, never half of one. The link is relative, so it is right on the node
when the installer (a DaemonSet's container) sees the directory at another path. An
identical build already there is reused.

After switching, a copy is removed only when nothing may still use it: no link in DIR
points to it, NAME did not point to it just before (a plugin started a moment ago may
still be loading), and no process runs from it. A process running from a copy, a
plugin call waiting for a network's lock or the node daemon, imports modules from it
for as long as it runs; removing its copy under it would fail the call. How we know:

- every process started from a build holds a shared ``flock`` on the copy's
  :data:`IN_USE` file from its start until it exits (the build's init script,
  ``tools/frozen/cx_init.py``: one open and one flock, never a failure). The
  installer takes an exclusive, non-blocking flock on that file and holds it while it
  renames the copy away and removes it; if it cannot, the copy is in use and stays
  (``in_use`` in the report). An flock belongs to the file, not to a process id or a
  path: it works across PID and mount namespaces, which a ``/proc`` scan does not (the
  installer runs in a DaemonSet's container, which sees neither the runtime's plugin
  processes nor their pids), and it goes with the process, however it ends (kill -9
  too): no stale marker to clean. A copy that a process holds only through an open
  file description it inherited (fork without exec) counts: that child runs from the
  copy too. The descriptor is close-on-exec, so a program the process starts does not
  keep the copy alive.
- ``/proc/*/exe`` as well: a copy is in use if a process this installer can see
  executes one of its executables (compared by device and inode, which hold across
  mount namespaces). This covers what no lock can: a copy installed by a version
  before the lock file (kept only while such a process is visible, else removed as
  before), a filesystem without flock, and the instant between a process's exec and
  its init script's flock. It sees only the installer's PID namespace, and only the
  processes it may inspect (root: all of them): from a DaemonSet's container without
  ``hostPID``, none of the runtime's, so there the lock alone decides.

A Python launcher installed over NAME leaves the copies behind: :func:`remove_unused`
removes those nothing uses any more, on the same terms.

A call whose copy vanishes all the same (removed by hand, or by an older installer)
answers code 5, install it again, never a traceback or 999 (:func:`ipam.cni.main`).

Off the plugin's hot path.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any

from ipam.paths import IN_PROCESS_SUFFIX

BUILDS = "host-local-sqlite.d"  # in DIR: the installed copies (as the tarball unpacks)
PLUGIN = "host_local_sqlite"    # the plugin's executable in a build (tools/build_dist.py)
IPAMCTL = "ipamctl"             # the other one
CLIENT = "client"               # the native thin client, where the build has one
# Beside CLIENT: a link to PLUGIN, the in-process plugin the client execs (ipam.paths).
CLIENT_IN_PROCESS = CLIENT + IN_PROCESS_SUFFIX
INFO = "BUILD-INFO"
# In a copy: what every process running from it holds a shared flock on (the build's
# init script, tools/frozen/cx_init.py, names it too); written by make dist.
IN_USE = "IN-USE.lock"
# In BUILDS: a symlink to the copy installed last, so that DIR/BUILDS/current/ipamctl is
# a path that stays (systemd's units, an operator's /usr/local/bin/ipamctl link to it).
CURRENT = "current"
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
    if len(parts) == 3 and parts[0] == BUILDS and parts[2] in (PLUGIN, IPAMCTL, CLIENT) \
            and _COPY.fullmatch(parts[1]):
        return parts[1]
    return None


def is_ours(link_target: str) -> bool:
    """Whether a symlink's target is the plugin, or the native client, of one of the
    copies installed here."""
    return copy_of(link_target) is not None and \
        os.path.basename(link_target) in (PLUGIN, CLIENT)


def install(directory: str, name: str, build: str, proc: str = "/proc",
            client: bool = False) -> dict[str, Any]:
    """Install ``build`` into ``directory`` (a real path) as ``name``, a link to its
    native client if ``client``, else to its plugin; returns where the copy is, where it
    came from, the link, whether the copy was reused, the copies removed and those kept
    because a process runs from them (``proc``: where to see processes)."""
    builds = os.path.join(directory, BUILDS)
    os.makedirs(builds, mode=0o755, exist_ok=True)
    os.chmod(builds, 0o755)
    copy = os.path.join(builds, tag(build))
    reused = os.path.isfile(os.path.join(copy, INFO))
    if not reused:
        _copy(build, copy)
    path = os.path.join(directory, name)
    previous = _target(path)
    link = os.path.join(BUILDS, os.path.basename(copy), CLIENT if client else PLUGIN)
    _switch(path, link)
    current = os.path.join(builds, CURRENT)
    if _target(current) != os.path.basename(copy):  # a second run changes nothing there
        _switch(current, os.path.basename(copy))
    keep = {os.path.basename(copy), previous and copy_of(previous)}
    removed, in_use = _prune(directory, builds, keep, proc)
    return {"build": copy, "source": build, "link": link, "reused": reused,
            "removed": removed, "in_use": in_use}


def _switch(path: str, target: str) -> None:
    """Make ``path`` a symlink to ``target`` in one rename: whoever opens it meanwhile
    finds the old link or the new one, never none."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, ".%s.tmp-%d" % (name, os.getpid()))
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(directory)


def remove_unused(directory: str, proc: str = "/proc") -> dict[str, Any]:
    """What an installed build leaves in ``directory`` (a real path) once a Python
    launcher took its name: the copies no plugin link (another NAME) uses any more,
    the links that pointed into them (the tarball's ``ipamctl``, :data:`CURRENT`), and
    ``BUILDS`` itself when nothing is left in it. A copy a process runs from stays, as
    :func:`install` keeps it (its links too); the next install removes it. The copy
    the name used just before is not kept, as :func:`install` keeps it, for a plugin
    started through the old link a moment ago: its lock, or its entry in ``/proc``,
    keeps it here. Returns the copies removed (with their sizes, in bytes), those in
    use, the links removed, and whether ``BUILDS`` went."""
    builds = os.path.join(directory, BUILDS)
    if not os.path.isdir(builds):
        return {"removed": [], "bytes": 0, "in_use": [], "links": [], "directory": False}
    sizes = {entry: _size(os.path.join(builds, entry)) for entry in os.listdir(builds)
             if _COPY.fullmatch(entry)}
    removed, in_use = _prune(directory, builds, set(), proc, links=_plugin_copy)
    links = []
    for path in [os.path.join(directory, entry) for entry in os.listdir(directory)]:
        copy = copy_of(_target(path) or "")
        if copy and not os.path.exists(os.path.join(builds, copy)):
            os.unlink(path)
            links.append(path)
    current = os.path.join(builds, CURRENT)
    target = _target(current)
    if target is not None and not os.path.exists(os.path.join(builds, target)):
        os.unlink(current)
        links.append(current)
    try:
        os.rmdir(builds)  # only when empty: an operator's file there stays, and BUILDS
        gone = True
    except OSError:
        gone = False
    _fsync_dir(directory)
    return {"removed": removed, "bytes": sum(sizes.get(os.path.basename(p), 0)
                                             for p in removed),
            "in_use": in_use, "links": links, "directory": gone}


def _plugin_copy(link_target: str) -> str | None:
    return copy_of(link_target) if is_ours(link_target) else None


def _size(path: str) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


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


def _prune(directory: str, builds: str, keep: set[str | None], proc: str = "/proc",
           links: Callable[[str], str | None] = copy_of) -> tuple[list[str], list[str]]:
    """Remove the copies in ``builds`` that neither ``keep`` names, nor a symlink in
    ``directory`` points to (another NAME, the drop-in's, or the tarball's ``ipamctl``,
    may use one; ``links`` says which copy a link's target keeps), nor a process runs
    from; and leftovers of an interrupted copy or removal, on the same terms; nothing
    else that is there. Returns the copies removed and those kept because a process
    runs from them."""
    for entry in os.listdir(directory):
        target = _target(os.path.join(directory, entry))
        keep.add(target and links(target))
    removed: list[str] = []
    in_use: list[str] = []
    running: set[tuple[int, int]] | None = None

    def executed() -> set[tuple[int, int]]:  # read once, if a copy is to go at all
        nonlocal running
        if running is None:
            running = executables(proc)
        return running

    for entry in sorted(os.listdir(builds)):
        if entry not in keep and _COPY.fullmatch(entry):
            path = os.path.join(builds, entry)
            (removed if _remove_unless_running(path, executed) else in_use).append(path)
    return removed, in_use


def _remove_unless_running(path: str, executed: Callable[[], set[tuple[int, int]]]
                           ) -> bool:
    """Remove the copy at ``path`` unless a process runs from it (its :data:`IN_USE`
    locked, or one of its executables running); returns whether it was removed. The
    exclusive lock is held while the copy is renamed away and removed, so that no
    process takes a shared lock on it meanwhile; renamed first, so that nothing finds
    half a build at its name, and what an interruption leaves has a leftover's name,
    removed next time."""
    try:
        fd: int | None = os.open(os.path.join(path, IN_USE),
                                 os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # a copy of an older version: /proc alone says
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a process holds its shared lock
            except OSError:  # no flock on this filesystem: nor did the processes get one
                pass
        if _executes_from(path, executed()):
            return False
        gone = "%s.tmp-%d" % (path.split(".tmp-")[0], os.getpid())
        if gone != path:
            try:
                os.rename(path, gone)
            except OSError:  # our pid's leftover is in the way: remove in place
                gone = path
        shutil.rmtree(gone, ignore_errors=True)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def executables(proc: str = "/proc") -> set[tuple[int, int]]:
    """(device, inode) of what each process this one may inspect executes."""
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:  # no /proc mounted
        return found
    for pid in pids:
        try:
            st = os.stat(os.path.join(proc, pid, "exe"))
        except OSError:  # exited, a kernel thread, or not ours to inspect
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _executes_from(path: str, executables: set[tuple[int, int]]) -> bool:
    """Whether a process runs one of the copy's executables."""
    for name in (PLUGIN, IPAMCTL, CLIENT):
        try:
            st = os.lstat(os.path.join(path, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in executables:
            return True
    return False


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
