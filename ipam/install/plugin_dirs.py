"""Which file each container runtime would run for a CNI plugin name, and whose file it is.

A runtime runs the first regular file of the plugin's name in its own ordered list of
directories (libcni's ``invoke.FindInPath``), and the lists differ: podman 4 searches
/usr/lib/cni, where Debian's containernetworking-plugins puts Go's host-local, before
/opt/cni/bin, so a launcher written as /opt/cni/bin/host-local is never run by it, and
nothing says so. ``ipamctl install-plugin`` uses this module to say so, and to refuse,
or with ``--force`` set aside, a file it would replace: a package's file through a dpkg
diversion, so that the package's upgrades land beside the launcher, not over it.

The same files name each runtime's network config directories (``Runtime.conf_dirs``),
which :mod:`ipam.admin.network_configs` reads to find the networks, and the leases, that are
ours. Paths are as the runtimes see them, looked up under ``root`` ("/", or a tree a test
or an image build prepared). Off the plugin's hot path.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import subprocess
import tomllib
from collections.abc import Mapping
from typing import Any

from ipam.install import containerd_config, frozen, native
from ipam.paths import IN_PROCESS_SUFFIX

# The launcher's second line (ipam.install.launcher's template; a test keeps the two in step).
MARKER = b'# host-local-sqlite launcher, written by "ipamctl install-plugin"'
PODMAN_DIRS = ["/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni",
               "/usr/lib/cni", "/opt/cni/bin"]  # containers/common, podman 4.x
_SYSTEM_BIN = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
_CNI_PATH = re.compile(r'^\s*"?cni_path"?\s*[=:]\s*"([^"]*)"')  # HCL or JSON
_CNI_CONFIG_DIR = re.compile(r'^\s*"?cni_config_dir"?\s*[=:]\s*"([^"]*)"')
# Where the runtimes read their network configs by default (libcni's CNI_CONF_DIR; Nomad's
# own); :mod:`ipam.admin.network_configs` reads them to find the networks whose IPAM is ours.
DEFAULT_CONF_DIR = "/etc/cni/net.d"
NOMAD_CONF_DIR = "/opt/cni/config"
ROOTLESS_CONF_DIR = ".config/cni/net.d"  # under $HOME: podman run by a user


def at(root: str, path: str) -> str:
    """``path`` (absolute, as the runtimes see it) in the tree at ``root``."""
    return path if root == "/" else os.path.join(root, path.lstrip("/"))


@dataclasses.dataclass
class Runtime:
    """One runtime's plugin search order, from its config files or its defaults."""

    name: str
    dirs: list[str]
    root: str = "/"
    conf_dirs: list[str] = dataclasses.field(default_factory=list)  # its network configs
    configs: list[str] = dataclasses.field(default_factory=list)  # the files read
    errors: list[str] = dataclasses.field(default_factory=list)   # the files not understood
    present: bool = False  # a config file or the program exists
    note: str | None = None  # set when configured to run no CNI plugin at all
    pid: int | None = None  # the running process whose config this is (containerd)

    @property
    def title(self) -> str:
        """Its name, with its process and config file when one of several may run."""
        if self.pid is None:
            return self.name
        return "%s (pid %d, %s)" % (self.name, self.pid, self.configs[0] if self.configs
                                    else "no config file")

    def runs(self, plugin: str) -> str | None:
        """The file it would run for ``plugin``: the first regular file of that name
        (followed through symlinks, as libcni does; it does not check the mode)."""
        for d in self.dirs:
            if os.path.isfile(at(self.root, os.path.join(d, plugin))):
                return os.path.join(d, plugin)
        return None

    def report(self, plugin: str) -> dict[str, Any]:
        return {"name": self.name, "dirs": self.dirs, "configs": self.configs,
                "errors": self.errors, "note": self.note, "runs": self.runs(plugin),
                "pid": self.pid}


def runtimes(root: str = "/", env: Mapping[str, str] | None = None,
             containerd: str | None = None) -> list[Runtime]:
    """podman, containerd, crio and nomad, present or not, each with its search order;
    containerd once per config file it runs with (:func:`containerd_config.sources`;
    ``containerd`` names the file)."""
    env = os.environ if env is None else env
    # As root, as install-plugin runs: a rootless podman's own config is not read.
    found = configured(root, env, containerd, rootless=False)
    search = [d for d in env.get("PATH", "").split(":") if d.startswith("/")] + _SYSTEM_BIN
    for r in found:
        r.dirs = [os.path.normpath(d) for d in r.dirs]
        program = next((at(root, os.path.join(d, r.name)) for d in search
                        if os.access(at(root, os.path.join(d, r.name)), os.X_OK)), None)
        r.present = bool(r.configs or r.errors or program or r.pid is not None)
        if r.name == "podman" and program and r.note is None:
            r.note = _podman_5(program)
    return found


def configured(root: str, env: Mapping[str, str], containerd: str | None = None,
               rootless: bool | None = None) -> list[Runtime]:
    """What each runtime's config files say, without looking for its program (which
    :func:`runtimes` does, running ``podman --version``): enough for the directories.
    ``rootless``: podman run by a user, whose configs are in its home (default: unless
    this process is root)."""
    rootless = os.geteuid() != 0 if rootless is None else rootless
    return [_podman(root, env, rootless),
            *(_containerd(s) for s in containerd_config.sources(root, containerd)),
            _crio(root), _nomad(root)]


def _podman_5(program: str) -> str | None:
    """Podman 5 dropped CNI for netavark: whatever its config says, no CNI plugin runs."""
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+)\.", out)
    return ("%s is podman %s: no CNI plugin runs (netavark only)" % (program, m.group(1))
            if m and int(m.group(1)) >= 5 else None)


def _toml(r: Runtime, path: str) -> dict[str, Any]:
    """The file's tables; {} when it is absent or not understood (noted in r.errors:
    a report must survive a broken config, which the runtime itself may refuse)."""
    try:
        with open(at(r.root, path), "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # TOMLDecodeError and UnicodeDecodeError too
        r.errors.append("cannot read %s (%s): its settings are ignored here" % (path, e))
        return {}
    r.configs.append(path)
    return data


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _strings(value: Any) -> list[str] | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value if ok else None


def _dropins(root: str, directory: str, *suffixes: str) -> list[str]:
    """A drop-in directory's files, in the alphanumeric order runtimes read them."""
    try:
        names = sorted(os.listdir(at(root, directory)))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.endswith(suffixes)]


def _podman(root: str, env: Mapping[str, str], rootless: bool = False) -> Runtime:
    """containers.conf(5) as podman 4.3 reads it: CONTAINERS_CONF alone if set, else the
    vendor file, the admin file and its drop-ins; a later ``cni_plugin_dirs`` (and
    ``network_config_dir``) wins. A rootless podman's network configs default to
    ``~/.config/cni/net.d``, and its user's ``~/.config/containers/containers.conf``
    comes last."""
    home = env.get("HOME", "")
    rootless_conf = os.path.join(home, ROOTLESS_CONF_DIR) if rootless and home else None
    r = Runtime("podman", list(PODMAN_DIRS), root,
                conf_dirs=[rootless_conf or DEFAULT_CONF_DIR])
    files = [env["CONTAINERS_CONF"]] if env.get("CONTAINERS_CONF") else [
        "/usr/share/containers/containers.conf", "/etc/containers/containers.conf",
        *_dropins(root, "/etc/containers/containers.conf.d", ".conf"),
        *([os.path.join(home, ".config/containers/containers.conf")] if rootless_conf
          else [])]
    for path in files:
        network = _get(_toml(r, path), "network")
        r.dirs = _strings(_get(network, "cni_plugin_dirs")) or r.dirs
        r.conf_dirs = _strings([_get(network, "network_config_dir")]) or r.conf_dirs
        if _get(network, "network_backend") == "netavark":
            r.note = '%s sets network_backend = "netavark": no CNI plugin runs' % path
        elif _get(network, "network_backend") is not None:
            r.note = None
    return r


def _containerd(source: containerd_config.Source) -> Runtime:
    """The CRI plugin's ``cni`` table: config version 3 (containerd 2), 2, or 1; 1.x's
    ``bin_dir``, 2.x's ``bin_dirs`` (a list, first)."""
    r = Runtime("containerd", ["/opt/cni/bin"], source.root, pid=source.pid,
                conf_dirs=[DEFAULT_CONF_DIR])
    path = source.config
    data = _toml(r, path)
    if source.how != "the default" and not r.configs and not r.errors:
        r.errors.append("%s (%s) does not exist: containerd runs on its defaults"
                        % (path, source.how))
    for key in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"):
        cni = _get(data, "plugins", key, "cni")
        dirs = _strings(_get(cni, "bin_dirs")) or _strings([_get(cni, "bin_dir")])
        if dirs:
            r.dirs = dirs
            break
    for key in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"):
        conf_dir = _strings([_get(data, "plugins", key, "cni", "conf_dir")])
        if conf_dir:
            r.conf_dirs = conf_dir
            break
    disabled = _strings(_get(data, "disabled_plugins")) or []
    if {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"} & set(disabled):
        r.note = "%s disables the CRI plugin (as Docker's does): no CNI plugin runs" % path
    return r


def _crio(root: str) -> Runtime:
    r = Runtime("crio", ["/opt/cni/bin/"], root, conf_dirs=[DEFAULT_CONF_DIR])
    for path in ["/etc/crio/crio.conf", *_dropins(root, "/etc/crio/crio.conf.d", ".conf")]:
        network = _get(_toml(r, path), "crio", "network")
        r.dirs = _strings(_get(network, "plugin_dirs")) or r.dirs
        r.conf_dirs = _strings([_get(network, "network_dir")]) or r.conf_dirs
    return r


def _nomad(root: str) -> Runtime:
    """The client's ``cni_path`` (colon-separated) and ``cni_config_dir`` in
    /etc/nomad.d; HCL is read with regular expressions, enough for two string settings."""
    r = Runtime("nomad", ["/opt/cni/bin"], root, conf_dirs=[NOMAD_CONF_DIR])
    for path in _dropins(root, "/etc/nomad.d", ".hcl", ".json"):
        try:
            with open(at(root, path), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, ValueError) as e:
            r.errors.append("cannot read %s (%s): its settings are ignored here" % (path, e))
            continue
        r.configs.append(path)
        for line in lines:
            m = _CNI_PATH.match(line)
            r.dirs = [d for d in m.group(1).split(":") if d] if m else r.dirs
            m = _CNI_CONFIG_DIR.match(line)
            r.conf_dirs = [m.group(1)] if m and m.group(1) else r.conf_dirs
    return r


def search_orders(found: list[Runtime]) -> str:
    """``podman: /a, /b; crio: /c`` for the runtimes present, for messages."""
    return "; ".join("%s: %s" % (r.title, ", ".join(r.dirs)) for r in found if r.present)


def warnings(root: str, directory: str, plugin: str, found: list[Runtime]) -> list[str]:
    """Why a runtime here would not run ``directory/plugin``, one sentence each."""
    present = [r for r in found if r.present and r.note is None]
    if not any(r.present for r in found):
        return ["found no container runtime (podman, containerd, crio or nomad: neither "
                "its config files nor its program), so nothing checked which %s one "
                "would run" % plugin]
    out = [r.title + ": " + e for r in found if r.present for e in r.errors]
    several = [r for r in found if r.name == "containerd" and r.pid is not None]
    if len(several) > 1:
        out.append("%d containerd processes run, each checked here: %s" % (
            len(several), "; ".join(r.title for r in several)))
    for r in present:
        runs = r.runs(plugin)
        if runs is not None and _same(r.root, runs, root, os.path.join(directory, plugin)):
            continue
        if any(_same(r.root, d, root, directory) for d in r.dirs) and runs is not None:
            where = "searches %s before %s" % (os.path.dirname(runs), directory)
        else:
            where = "does not search %s (it searches %s)" % (directory, ", ".join(r.dirs))
        out.append("%s %s: it would run %s" % (
            r.title, where, "%s, not this launcher" % runs if runs else "no %s at all" % plugin))
    return out


def _same(root_a: str, a: str, root_b: str, b: str) -> bool:
    """The same file or directory, whatever the spelling (/lib is /usr/lib when merged)
    or the tree each is seen in (a runtime's /proc/<pid>/root, ours)."""
    try:
        return os.path.samefile(at(root_a, a), at(root_b, b))
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)


# -- where to write, when no directory is named -----------------------------------------
# The directories tried first, in this order: the CNI default, which containerd, CRI-O
# and Nomad search (alone, by default) and podman last; then Debian's, where its
# containernetworking-plugins puts Go's plugins and which podman 4 searches earlier.
COMMON_DIRS = {"/opt/cni/bin": "the CNI default",
               "/usr/lib/cni": "Debian's (containernetworking-plugins)"}


@dataclasses.dataclass(frozen=True)
class Target:
    """The CNI bin directory to write the plugin into, and why that one (None: named)."""

    directory: str
    why: str | None = None


def would_run_from(r: Runtime, root: str, directory: str, plugin: str) -> bool:
    """Whether ``r`` would run ``directory/plugin`` (under ``root``) once written: it
    searches ``directory``, and no file of that name in a directory it searches before."""
    for d in r.dirs:
        if _same(r.root, d, root, directory):
            return True
        if os.path.isfile(at(r.root, os.path.join(d, plugin))):
            return False
    return False


def choose(root: str, plugin: str, found: list[Runtime]) -> Target:
    """The directory to write ``plugin`` into when none is named: of those that exist,
    the one that most runtimes here would run it from, the first on a tie in the order
    of :data:`COMMON_DIRS`, then each runtime's search order. So with no runtime found,
    /opt/cni/bin, else /usr/lib/cni; with podman 4 on Debian, /usr/lib/cni even beside
    an /opt/cni/bin when the name is host-local (Go's is there, searched first). None
    existing, the one to create, by the same rule."""
    active = [r for r in found if r.present and r.note is None]
    candidates = list(dict.fromkeys([*COMMON_DIRS, *(d for r in active for d in r.dirs)]))
    existing = [d for d in candidates if os.path.isdir(at(root, d))]
    chosen = max(existing or candidates,
                 key=lambda d: sum(would_run_from(r, root, d, plugin) for r in active))
    runners = [r.title for r in active if would_run_from(r, root, chosen, plugin)]
    absent = [d for d in COMMON_DIRS if d not in existing and d != chosen]
    why = ["none of %s exists" % ", ".join(candidates) if not existing else
           "it exists (%s do%s not)" % (", ".join(absent), "es" * (len(absent) == 1))
           if absent else "it exists"]
    if runners:
        why.append("%s would run %s from it" % (" and ".join(runners), plugin))
    elif active:
        why.append("no runtime here would run %s from any directory that exists (see "
                   "the warnings)" % plugin)
    else:
        why.append("it is %s; no container runtime found here runs CNI plugins"
                   % COMMON_DIRS[chosen])
    return Target(chosen, "; ".join(why))


def problem(root: str, directory: str, create: bool) -> str | None:
    """Why ``directory`` cannot take the plugin, if it cannot; with ``create``, its
    absence is none (:func:`create` makes it)."""
    real = at(root, directory)
    if not os.path.lexists(real) and create:
        return None
    if not os.path.exists(real):
        return "%s does not exist" % directory
    if not os.path.isdir(real):
        return "%s is not a directory" % directory
    if not os.access(real, os.W_OK):
        return "%s is not writable" % directory
    return None


def create(root: str, directory: str) -> list[str]:
    """Create ``directory`` and its missing parents, 0755 whatever the umask (a runtime
    may run as another user); returns those created, parents first."""
    created: list[str] = []
    path = directory
    while not os.path.lexists(at(root, path)):
        created.insert(0, path)
        path = os.path.dirname(path)
    for path in created:
        os.mkdir(at(root, path), 0o755)
        os.chmod(at(root, path), 0o755)
    return created


# -- the file in the way ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Foreign:
    """A file at the launcher's path that is not one of our launchers."""

    what: str                   # "a Go executable", "a script (#!/bin/sh)", ...
    package: str | None = None  # the dpkg package that owns the path itself

    def __str__(self) -> str:
        return self.what + (", owned by Debian package " + self.package
                            if self.package else "")


def foreign(root: str, path: str, console_script: str | None = None) -> Foreign | None:
    """What is at ``path``, unless nothing or ours: a launcher (by its marker line), the
    native thin client (by its marker, :mod:`ipam.install.native`), a symlink to
    ``console_script`` (the README's other way to install) or to a copy of the
    self-contained build (:mod:`ipam.install.frozen`)."""
    real = at(root, path)
    try:
        if os.path.islink(real):
            target = os.readlink(real)
            if console_script and os.path.realpath(real) == os.path.realpath(console_script):
                return None
            if frozen.is_ours(target):  # a self-contained build that install-plugin copied
                return None
            in_root = os.path.normpath(os.path.join(os.path.dirname(path), target))
            owner = package_owner(root, in_root)
            return Foreign("a symbolic link to %s%s" % (target, " (owned by Debian "
                           "package %s)" % owner if owner else ""), package_owner(root, path))
        if os.path.isdir(real):
            return Foreign("a directory", package_owner(root, path))
        with open(real, "rb") as f:
            data = f.read(64 << 20)
    except FileNotFoundError:
        return None
    if MARKER in data[:512] or native.is_native_bytes(data):
        return None
    if data.startswith(b"\x7fELF"):
        what = "a Go executable" if b"\xff Go buildinf:" in data else "an ELF executable"
    elif data.startswith(b"#!"):
        what = "a script (%s)" % data.split(b"\n", 1)[0][:60].decode(errors="replace")
    else:
        what = "a file of %d bytes" % len(data)
    return Foreign(what, package_owner(root, path))


def ours(root: str, path: str, console_script: str | None = None) -> dict[str, str] | None:
    """Which of our installations is at ``path``, if one is: ``{"kind", "what"}``,
    kind "build" (a link to a copy of the self-contained build), "launcher" (with the
    interpreter it runs; the native thin client with the launcher beside it too) or
    "console script" (a link to ``console_script``), so that install-plugin can say what
    it replaces when the kind changes."""
    real = at(root, path)
    target = os.readlink(real) if os.path.islink(real) else None
    if target is not None and frozen.is_ours(target):
        return {"kind": "build", "what": "the self-contained build %s" % frozen.copy_of(target)}
    if target is not None and console_script and \
            os.path.realpath(real) == os.path.realpath(console_script):
        return {"kind": "console script", "what": "a link to %s" % console_script}
    if target is None and native.is_native(real):
        beside = ours(root, path + IN_PROCESS_SUFFIX)
        what = "the native thin client" + (" and " + beside["what"]
                                           if beside and beside["kind"] == "launcher" else "")
        return {"kind": "launcher", "what": what}
    try:
        with open(real, "rb") as f:
            head = f.read(2048)
    except OSError:
        return None
    if MARKER not in head[:512]:
        return None
    python = re.search(rb"\[ -x (\S+) \] && exec", head)
    return {"kind": "launcher", "what": "the launcher of the Python installation %s" % (
        python.group(1).decode(errors="replace") if python else "(unknown)")}


def package_owner(root: str, path: str) -> str | None:
    """The dpkg package that installed ``path``, from dpkg's own file lists
    (``<root>/var/lib/dpkg/info/<package>[:<arch>].list``); None without dpkg."""
    parent = os.path.realpath(at(root, os.path.dirname(path)))
    if root != "/" and parent.startswith(os.path.realpath(root) + "/"):
        parent = parent[len(os.path.realpath(root)):]
    wanted = {os.path.normpath(path), os.path.join(parent, os.path.basename(path))}
    for listing in sorted(glob.glob(at(root, "/var/lib/dpkg/info/*.list"))):
        try:
            with open(listing, encoding="utf-8", errors="surrogateescape") as f:
                if wanted & set(f.read().splitlines()):
                    return os.path.basename(listing)[:-5].split(":")[0]
        except OSError:
            continue
    return None


def set_aside(root: str, path: str, old: Foreign) -> dict[str, Any]:
    """Keep the file at ``path`` beside it before it is replaced; returns where and how.

    A package's file gets a local dpkg diversion to ``path.distrib``, so upgrades install
    the package's new version there, not over the launcher; any other file is kept as
    ``path.orig`` (or ``.orig.1``...: an older one is never overwritten). The old file
    is hard-linked, not renamed, so that ``path`` exists until the launcher replaces it
    in one rename: a runtime starting the plugin meanwhile never finds nothing.
    """
    if old.package:
        kept = path + ".distrib"
        try:
            _link(root, path, kept)
        except FileExistsError:
            raise ValueError("%s exists already (see dpkg-divert --list): move it away "
                             "first" % kept) from None
        cmd = ["dpkg-divert", *(["--root", root] if root != "/" else []),
               "--local", "--no-rename", "--divert", kept, "--add", path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            failed = proc.returncode and (proc.stderr or proc.stdout).strip()
        except OSError as e:
            failed = str(e)
        if failed:
            os.unlink(at(root, kept))
            raise ValueError("%s: %s" % (" ".join(cmd), failed))
        return {"path": kept, "how": "dpkg-divert", "package": old.package, "was": str(old)}
    for n in range(1000):
        kept = path + ".orig" + (".%d" % n if n else "")
        try:
            _link(root, path, kept)
        except FileExistsError:
            continue
        return {"path": kept, "how": "renamed", "package": None, "was": str(old)}
    raise ValueError("%s.orig ... .orig.999 all exist: remove some" % path)


def _link(root: str, path: str, kept: str) -> None:
    """A hard link of ``path`` (itself, if a symlink) as ``kept``; FileExistsError if
    taken. Where hard links fail (a directory, some filesystems), a rename instead."""
    src, dst = at(root, path), at(root, kept)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(dst):
            raise FileExistsError(dst) from None
        os.rename(src, dst)
