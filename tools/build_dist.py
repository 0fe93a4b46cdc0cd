"""``make dist``: the self-contained build, a tarball that runs on a node with no Python.

Run by the interpreter of a build venv holding a regular (non-editable) install of this
package and cx_Freeze (the Makefile makes it). cx_Freeze freezes both executables,
``host-local-sqlite`` and ``ipamctl``, into one directory that they share: the
interpreter's library, the standard library and the dependencies as byte-code files
under ``lib/``, and every shared library they need but glibc's.

Why cx_Freeze: it starts fastest. Measured here side by side in one run (median per
call of ADD, then DEL, on a SQLite pool; docs/performance.md), the ``-I -S`` launcher
took 14.2 / 13.9 ms; cx_Freeze with the init script below 13.4 / 12.3 ms; Nuitka
(standalone, the hot path compiled) 24.2 / 22.7 ms: its runtime imports ``inspect`` (and
with it ``ast``, ``dis``, ``re``, ``enum``) on every start; PyInstaller (onedir) 113 /
110 ms: its bootloader re-executes itself and reads its archive's index. cx_Freeze's
stock init script imports ``typing``: ``tools/frozen/cx_init.py`` replaces it. Its
modules are plain ``.pyc`` files, not its zip, found by the interpreter's own path
finder without ``zipimport``. Those two were worth 12 ms a call.

The tarball, like the containernetworking-plugins release, unpacks into a CNI bin
directory, and what it unpacks is what ``ipamctl install-plugin`` run from the build
installs there (:mod:`ipam.install.frozen`)::

    host-local-sqlite -> host-local-sqlite.d/<version>-<digest>/client
    ipamctl           -> host-local-sqlite.d/<version>-<digest>/ipamctl
    host-local-sqlite.d/<version>-<digest>/   the executables, lib/, IN-USE.lock,
                                              BUILD-INFO
    host-local-sqlite.d/current -> <version>-<digest>   (a stable path to ipamctl)

``client`` is the native thin client (native/client.c), which ``make dist`` compiles
first (``make native``) and hands over with ``--client``: linked statically, against musl
where musl-gcc exists, so it needs no library of the node's and leaves the build's glibc
floor where the frozen interpreter puts it (Debian 12's gcc, dynamically, would ask for
glibc 2.34). Beside it, ``client.in-process`` links to the plugin it execs when no node
daemon takes a call (:mod:`ipam.install.native`). Without a C compiler the build has neither, and
``host-local-sqlite`` links to ``host_local_sqlite``, whose Python client offers the call.

``IN-USE.lock``: every process running from the copy holds a shared flock on it, so
that install-plugin removes no copy in use (:mod:`ipam.install.frozen`); like every file but
BUILD-INFO, it counts in the digest. ``BUILD-INFO`` (JSON) records the version, the
Python, the freezer, the oldest glibc the build runs on (the newest ``GLIBC_x.y``
symbol version any of its ELF files requires) and how the client was built.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from importlib import metadata

from ipam.install import frozen  # the installed copy's layout, which the tarball's is
from ipam.paths import PLUGIN_NAME

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The executables (their main scripts in tools/frozen/), and the symlinks to them the
# tarball carries. Their names are identifiers (frozen.PLUGIN): cx_Freeze's start-up
# imports ``string`` (and with it ``re``: 4 ms a call) to mangle any other name into the
# name of its init module.
EXECUTABLES = {frozen.PLUGIN: "plugin.py", frozen.IPAMCTL: "ipamctl.py"}
LINKS = {PLUGIN_NAME: frozen.PLUGIN, frozen.IPAMCTL: frozen.IPAMCTL}
# Imported lazily, by name, or by alembic from files: cx_Freeze's import graph
# cannot see them.
PACKAGES = ["ipam", "host_local_sqlite_cli", "alembic", "mako", "sqlalchemy", "click",
            "prometheus_client", "psycopg", "psycopg_binary", "logging.config",
            "h2", "hpack", "hyperframe"]
EXCLUDES = ["tkinter", "unittest", "pydoc_data", "test", "lib2to3", "ensurepip", "idlelib"]
# glibc's own libraries (package libc6): the node provides them, in the version
# BUILD-INFO names.
GLIBC_SONAMES = ("libc.so", "libm.so", "libmvec.so", "libpthread.so", "libdl.so", "librt.so",
                 "libutil.so", "libresolv.so", "libanl.so", "libnsl.so", "libnss_",
                 "libBrokenLocale.so", "libthread_db.so", "ld-linux")
# The copy's lock file (ipam.install.frozen.IN_USE): what it says to whoever opens it.
IN_USE_TEXT = ("Each process running from this copy of host-local-sqlite holds a shared "
               "flock on this file until it exits.\nipamctl install-plugin removes the "
               "copy only when it can lock the file exclusively.\n")
_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00")


def freeze(out: str) -> None:
    """cx_Freeze both executables into ``out`` (a fresh directory)."""
    from cx_Freeze import Executable, setup

    init = os.path.join(HERE, "frozen", "cx_init.py")
    migrations = os.path.join(os.path.dirname(metadata.distribution(
        "host-local-sqlite").locate_file("host_local_sqlite_migrations/env.py")))
    setup(name="host-local-sqlite", version=metadata.version("host-local-sqlite"),
          executables=[Executable(os.path.join(HERE, "frozen", script), target_name=name,
                                  init_script=init)
                       for name, script in EXECUTABLES.items()],
          options={"build_exe": {
              "build_exe": out, "packages": PACKAGES, "excludes": EXCLUDES,
              # alembic reads the migrations from their directory, as source files.
              "include_files": [(migrations, "lib/host_local_sqlite_migrations")],
              # Plain files, no zip: the interpreter's own path finder, no zipimport.
              "zip_include_packages": [], "zip_exclude_packages": ["*"],
              "no_compress": True, "include_msvcr": False,
              # Its report of modules that optional imports name but nothing installs
              # (twisted for prometheus_client, ...) is left out; other warnings stay.
              "silent_level": 2}},
          script_args=["build_exe"])


def vendor_system_libraries(root: str) -> list[str]:
    """Copy in the shared libraries that cx_Freeze leaves to the node.

    cx_Freeze takes no library from /lib or /usr/lib, expecting the node to have
    them; of those, only glibc's are on every node (a distroless or scratch image has
    nothing else). Each other library an ELF file of the build needs (libz here) is
    copied beside that file, which its ``$ORIGIN`` run path searches; a second copy in
    the tree is a hard link. Returns the libraries copied in."""
    copied: dict[str, str] = {}
    for path in list(_elf_files(root)):  # listed first: the copies are ELF files too
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for soname, found in re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M):
            if soname.startswith(GLIBC_SONAMES) or found.startswith(root + os.sep):
                continue
            target = os.path.join(os.path.dirname(path), soname)
            if os.path.exists(target):
                continue
            if found in copied:
                os.link(copied[found], target)
            else:
                shutil.copy2(found, target)
                copied[found] = target
    return sorted(copied)


def _elf_files(root: str) -> Iterator[str]:
    """The ELF files under ``root`` (executables, shared libraries), not symlinks."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        yield path


def add_client(tree: str, program: str) -> None:
    """Put the native client ``program`` into the build as :data:`frozen.CLIENT`, and
    beside it the link to the plugin it execs. Refused unless statically linked: a
    program interpreter (PT_INTERP) or a dynamic section would tie the build to the
    building machine's libc, past the glibc floor BUILD-INFO states."""
    with open(program, "rb") as f:
        data = f.read()
    dynamic = {2, 3} & set(segment_types(data))
    if dynamic:
        raise SystemExit("build_dist: %s is not linked statically (%s): the build would "
                         "need the building machine's libc" % (program, ", ".join(
                             {2: "a dynamic section", 3: "a program interpreter"}[t]
                             for t in sorted(dynamic))))
    path = os.path.join(tree, frozen.CLIENT)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o755)
    os.symlink(frozen.PLUGIN, os.path.join(tree, frozen.CLIENT_IN_PROCESS))


def segment_types(elf: bytes) -> list[int]:
    """The program header types of a 64-bit little-endian ELF file (2: PT_DYNAMIC,
    3: PT_INTERP)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise SystemExit("build_dist: the client is not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]


def glibc_needed(root: str) -> str:
    """The newest ``GLIBC_`` symbol version that an ELF file under ``root`` asks for:
    the oldest glibc the build runs on."""
    best = (0, 0, 0)
    for path in _elf_files(root):
        with open(path, "rb") as f:
            data = f.read()
        for m in _GLIBC.finditer(data):
            best = max(best, tuple(int(g or 0) for g in m.groups()))
    return ".".join(str(n) for n in (best if best[2] else best[:2]))


def digest(root: str) -> str:
    """SHA-256 over every file's path and bytes (and every symlink's target): two
    builds of one version are told apart by it (the installed copy's name), and a
    rebuild of the same sources is the same build. So a ``.pyc`` counts without its
    header's source mtime and size (bytes 8 to 16), which change with every install
    of the package into the build venv, and cx_Freeze's record of when and on which
    host it built (``lib/BUILD_CONSTANTS.pyc``) not at all."""
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):  # folders in path order
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.relpath(path, root) == os.path.join("lib", "BUILD_CONSTANTS.pyc"):
                continue
            h.update(os.path.relpath(path, root).encode() + b"\0")
            if os.path.islink(path):
                h.update(b"->" + os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    data = f.read()
                if name.endswith(".pyc") and data[4:8] == b"\0\0\0\0":  # mtime-based
                    data = data[:8] + data[16:]
                h.update(data)
    return h.hexdigest()


# The packages the freezer takes from the build venv's install, each with the directory
# of this tree it comes from (setup.cfg's package_dir). The migrations are copied from
# the tree itself (freeze's include_files), so none of theirs can be stale.
INSTALLED_PACKAGES = {"ipam": "ipam", "host_local_sqlite_cli": "cli"}


def stale_modules(root: str) -> list[str]:
    """The build's modules of this project (:data:`INSTALLED_PACKAGES`) with no source in
    this tree: left over from an earlier layout. pip builds the venv's install through
    setuptools' ``build/lib``, which keeps a module this tree has since moved or removed,
    and the freezer would ship it (the Makefile empties ``build/lib`` first; this check
    says so if anything else brings one back)."""
    lib = os.path.join(root, "lib")
    stale = []
    for package, source in INSTALLED_PACKAGES.items():
        top = os.path.join(lib, package)
        for d, _, files in os.walk(top):
            for name in files:
                if not name.endswith(".pyc"):
                    continue
                module = os.path.relpath(os.path.join(d, name[:-len(".pyc")]), top)
                if not os.path.isfile(os.path.join(ROOT, source, module + ".py")):
                    stale.append(".".join([package, *module.split(os.sep)]))
    return sorted(stale)


def size(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root)
               for f in fs if not os.path.islink(os.path.join(d, f)))


def build(out_dir: str, work: str, client: str | None = None,
          client_cc: str | None = None) -> dict:
    """Freeze into ``work`` (laid out as the tarball unpacks), with the native ``client``
    (built by ``client_cc``) if given, then write the tarball into ``out_dir``; returns
    BUILD-INFO."""
    version = metadata.version("host-local-sqlite")
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                          platform.machine())
    shutil.rmtree(work, ignore_errors=True)
    tree = os.path.join(work, frozen.BUILDS, "frozen.tmp")
    freeze(tree)
    stale = stale_modules(tree)
    if stale:
        sys.exit("make dist: the build venv's install holds modules this tree no longer"
                 " has (%s): empty build/lib and run it again" % ", ".join(stale))
    vendored = vendor_system_libraries(tree)
    if client is not None:
        add_client(tree, client)
    with open(os.path.join(tree, frozen.IN_USE), "w") as f:  # counted in the digest
        f.write(IN_USE_TEXT)
    import cx_Freeze

    info = {"name": "host-local-sqlite", "version": version,
            "python": platform.python_version(), "freezer": "cx_Freeze " + cx_Freeze.__version__,
            "platform": "linux-" + machine, "glibc": glibc_needed(tree),
            "vendored": vendored,
            # how the native client was built (null: the build has none)
            "client": None if client is None else {
                "file": frozen.CLIENT, "static": True, "cc": client_cc},
            "size_bytes": size(tree), "digest": digest(tree)}
    with open(os.path.join(tree, frozen.INFO), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    copy = os.path.join(work, frozen.BUILDS, frozen.tag(tree))
    os.rename(tree, copy)
    os.symlink(os.path.basename(copy), os.path.join(work, frozen.BUILDS, frozen.CURRENT))
    links = dict(LINKS, **({PLUGIN_NAME: frozen.CLIENT} if client is not None else {}))
    for link, name in links.items():
        os.symlink(os.path.relpath(os.path.join(copy, name), work), os.path.join(work, link))
    os.makedirs(out_dir, exist_ok=True)
    tarball = os.path.join(out_dir, "host-local-sqlite-%s-linux-%s.tgz" % (version, machine))
    with tarfile.open(tarball + ".tmp", "w:gz") as tar:
        for name in [*LINKS, frozen.BUILDS]:
            tar.add(os.path.join(work, name), arcname=name)
    os.replace(tarball + ".tmp", tarball)
    info["build"] = copy
    info["tarball"] = tarball
    info["tarball_bytes"] = os.path.getsize(tarball)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"),
                        help="where the tarball goes (default: dist/)")
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "frozen"),
                        help="the unpacked build (default: build/frozen/)")
    parser.add_argument("--client", metavar="PATH",
                        help="the native thin client, statically linked (make native)")
    parser.add_argument("--client-cc", metavar="NAME",
                        help="the compiler that built it, for BUILD-INFO")
    args = parser.parse_args()
    info = build(os.path.abspath(args.out), os.path.abspath(args.work),
                 args.client and os.path.abspath(args.client), args.client_cc)
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
