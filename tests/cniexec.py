"""Run a CNI plugin binary the way a runtime does, and look at what it left on disk.

A plain helper module (no pytest fixtures), shared by the reference and bridge tests.
Both the Go ``host-local`` and ours get exactly the same inputs through :func:`run`; each
should be given its own ``dataDir``.

``HLS_PLUGIN=/usr/lib/cni/host-local`` points :data:`OURS` at another binary, e.g. the Go
reference itself, to check that the differential suite agrees with Go when run against Go.
"""
from __future__ import annotations

import json as _json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

try:  # tests/ may or may not become a package
    from .helpers import Outcome, note_plugin_run, plugin_program
except ImportError:
    from helpers import Outcome, note_plugin_run, plugin_program

GO_HOST_LOCAL = "/usr/lib/cni/host-local"
GO_BRIDGE = "/usr/lib/cni/bridge"
# Tests run under .venv/bin/python, so the console script sits beside the interpreter;
# :func:`run` runs it as the test's entry path does (the build's program, under conftest's
# ``through``).
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "host-local-sqlite")
OURS = os.environ.get("HLS_PLUGIN") or CONSOLE_SCRIPT

# The environment variables of the CNI protocol; never inherited from the caller.
CNI_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

Config = Mapping[str, Any] | str | bytes


def run(
    binary: str,
    command: str | None,
    config: Config,
    container_id: str | None = "dummy",
    ifname: str | None = "eth0",
    netns: str | None = "/some/where",
    args: str | None = None,
    path: str | None = "/usr/lib/cni",
    extra_env: Mapping[str, str | None] | None = None,
    timeout: float = 60.0,
) -> Outcome:
    """Invoke ``binary`` once with ``config`` on stdin.

    A ``None`` argument leaves that CNI_* variable unset (``args=None``: no CNI_ARGS);
    an empty string sets it to "". ``extra_env`` is applied last; a ``None`` value in it
    removes the variable.
    """
    if isinstance(config, (str, bytes)):
        stdin = config.encode() if isinstance(config, str) else config
    else:
        stdin = _json.dumps(config).encode()
    env = {k: v for k, v in os.environ.items() if k not in CNI_ENV}
    values = (command, container_id, netns, ifname, args, path)
    for name, value in zip(CNI_ENV, values, strict=True):
        if value is not None:
            env[name] = value
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    if binary == CONSOLE_SCRIPT:
        binary = plugin_program()
    proc = subprocess.run(
        [binary], input=stdin, capture_output=True, env=env, timeout=timeout, check=False
    )
    if binary != GO_HOST_LOCAL and command is not None:  # ours, or a plugin delegating to it
        note_plugin_run(env, command, proc.stderr)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, lenient=True)


Snapshot = dict[str, tuple[bytes | None, int]]


def snapshot(directory: str | os.PathLike[str]) -> Snapshot:
    """Every entry under ``directory``: relative path -> (content, permission bits).

    Regular files map to their bytes, directories to ``None``; symlinks are recorded by
    their target text. A missing ``directory`` gives an empty dict.
    """
    out: Snapshot = {}
    top = os.fspath(directory)
    if not os.path.isdir(top):
        return out
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, top)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (os.readlink(full).encode(), stat.S_IMODE(st.st_mode))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (None, stat.S_IMODE(st.st_mode))
            else:
                with open(full, "rb") as f:
                    out[rel] = (f.read(), stat.S_IMODE(st.st_mode))
    return out


def snapshot_networks(data_dir: str | os.PathLike[str]) -> Snapshot:
    """:func:`snapshot` of every network directory in ``data_dir``, paths prefixed by the
    network name. Top-level files (our ``.host-local-sqlite.db``, ``-wal``, ``-shm``) are
    left out: only the host-local layout is comparable."""
    out: Snapshot = {}
    top = os.fspath(data_dir)
    if not os.path.isdir(top):
        return out
    for name in sorted(os.listdir(top)):
        full = os.path.join(top, name)
        if os.path.isdir(full) and not os.path.islink(full):
            out[name] = (None, stat.S_IMODE(os.lstat(full).st_mode))
            for rel, entry in snapshot(full).items():
                out[os.path.join(name, rel)] = entry
    return out


def contents(snap: Snapshot) -> dict[str, bytes | None]:
    """A snapshot without the modes: what the differential tests compare."""
    return {path: content for path, (content, _mode) in snap.items()}
