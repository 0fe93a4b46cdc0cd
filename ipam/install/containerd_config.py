"""Which config file containerd reads: the one the running process was started with.

containerd takes its config from ``--config``/``-c`` and only otherwise from
/etc/containerd/config.toml; k3s, RKE2 and test harnesses start it on another file, so a
reading of the default path alone describes a containerd that is not running, and
warns about directories it never searches. This module finds each running containerd in
/proc (the executable's own ``containerd``, not its shims), its ``--config`` in either
form (``--config X``, ``--config=X``, as Go's flag package takes them, with one dash or
two), a relative path resolved against its working directory, and where to read that
file from: ``/proc/<pid>/root``, the file as that process sees it, even from a container
in the host's PID namespace (the DaemonSet). Off the plugin's hot path.
"""
from __future__ import annotations

import dataclasses
import os

DEFAULT_CONFIG = "/etc/containerd/config.toml"  # containerd's defaults.DefaultConfigPath
_FLAGS = ("-c", "--c", "-config", "--config")


@dataclasses.dataclass(frozen=True)
class Source:
    """A containerd config file: its path as containerd sees it, the tree to read it
    from, the process (None: none found running, or the file named), and how it was
    found, for messages."""

    config: str
    root: str = "/"
    pid: int | None = None
    how: str = "the default"  # "--config", "the default", "--containerd-config"


def config_flag(argv: list[str]) -> str | None:
    """The value of containerd's ``--config`` in ``argv`` (its arguments after the
    program): the last one given wins, as with Go's flag package."""
    found = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in _FLAGS:
            if eq:
                found = value
            elif i + 1 < len(argv):
                found = argv[i + 1]
                i += 1
        i += 1
    return found


def running(proc: str = "/proc") -> list[Source]:
    """Each running containerd's config file, by pid; [] when none runs (or /proc shows
    none: another PID namespace)."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        where = os.path.join(proc, entry)
        try:
            with open(os.path.join(where, "cmdline"), "rb") as f:
                argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0")]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if os.path.basename(argv[0]) != "containerd":  # not containerd-shim-runc-v2 either
            continue
        config = config_flag([a for a in argv[1:] if a]) or DEFAULT_CONFIG
        how = "the default" if config == DEFAULT_CONFIG else "--config"
        root = os.path.join(where, "root")
        try:
            os.stat(root + "/")
            if not os.path.isabs(config):
                config = os.path.join(os.readlink(os.path.join(where, "cwd")), config)
        except OSError:  # not allowed to look through it: read from our own tree
            root = "/"
        found.append(Source(os.path.normpath(config), root, int(entry), how))
    return sorted(found, key=lambda s: s.pid or 0)


def sources(root: str, named: str | None = None) -> list[Source]:
    """The config files to read: ``named`` (``--containerd-config``) alone; else, on the
    running system (``root`` "/"), those of the running containerd processes; else, and
    when none runs, the default path under ``root``."""
    if named is not None:
        return [Source(os.path.normpath(os.path.join("/" if root != "/" else os.getcwd(),
                                                     named)), root, None,
                       "--containerd-config")]
    found = running() if root == "/" else []
    return found or [Source(DEFAULT_CONFIG, root)]
