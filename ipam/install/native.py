"""The native thin client (native/client.c) in a CNI bin directory: where this installation
finds one, how install-plugin knows its own, and the pair it writes.

A call that the node daemon answers costs the launcher an interpreter's start (about 6
ms of CPU) only to hand the call over; the native client is a small static program that
does the same, rule for rule (tools/bench_thin_client.py measures the two). When no daemon
takes the call it execs the in-process plugin: the file beside its own executable, as
``/proc/self/exe`` names it, with :data:`ipam.paths.IN_PROCESS_SUFFIX`. So install-plugin
writes a pair::

    DIR/NAME              the native client: a copy, not a link (/proc/self/exe names
                          the file a link leads to, whose neighbour would be looked for)
    DIR/NAME.in-process   the launcher, rendered to run the call in process only

and, from the self-contained build, NAME a link to the client in the build's copy,
beside which ``client.in-process`` links to the build's plugin (:mod:`ipam.install.frozen`).

Where the client comes from (:func:`find`):

- the self-contained build: its own copy's (``make dist`` compiles it statically,
  against musl where musl-gcc exists, so that the build's glibc floor stays);
- an editable install of a checkout: ``build/native/host-local-sqlite``, which ``make
  install`` builds where a C compiler exists;
- a wheel ships none: a wheel is one pure-Python file for every machine
  (``py3-none-any``), and its install-plugin writes the Python client, the launcher.

Off the plugin's hot path.
"""
from __future__ import annotations

import os

from ipam.install import frozen, launcher
from ipam.paths import IN_PROCESS_SUFFIX, PLUGIN_NAME

# native/client.h's INSTALL_MARKER, kept in the program's bytes (a test keeps the two in
# step): a file at the plugin's name that holds it is one that install-plugin wrote.
MARKER = b'host-local-sqlite native thin client, installed by "ipamctl install-plugin"'
# In a checkout: the client's source, and where `make native` (and `make install`) put it.
SOURCE = os.path.join("native", "client.c")
CHECKOUT_BUILD = os.path.join("build", "native", PLUGIN_NAME)
# More than the client ever is (86 KB against musl, 0.8 MB against glibc): a bigger file at
# its place is not read whole to be told apart.
MAX_SIZE = 8 << 20
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ipam/


def find(build: str | None = None, package_dir: str = PACKAGE_DIR) -> str | None:
    """The native client this installation can install, or None: the self-contained
    build's (``build``: its directory) or, from a checkout, what ``make native`` built."""
    if build is not None:
        path = os.path.join(build, frozen.CLIENT)
    else:
        checkout = os.path.dirname(package_dir)
        if not os.path.isfile(os.path.join(checkout, SOURCE)):
            return None  # a wheel's installation: site-packages holds no checkout
        path = os.path.join(checkout, CHECKOUT_BUILD)
    return path if is_native(path) else None


def why_none(build: str | None = None, package_dir: str = PACKAGE_DIR) -> str:
    """Why :func:`find` found none, and what would give one."""
    if build is not None:
        return "this build was made without a C compiler; a build made with one has it"
    checkout = os.path.dirname(package_dir)
    if not os.path.isfile(os.path.join(checkout, SOURCE)):
        return "an installation from a wheel has none; the self-contained build has one"
    return "%s is not built: 'make native' in %s builds it (a C compiler)" % (
        CHECKOUT_BUILD, checkout)


def is_native(path: str) -> bool:
    """Whether ``path`` (symlinks followed) is the native client, by its marker."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError:
        return False
    return is_native_bytes(data)


def is_native_bytes(data: bytes) -> bool:
    return data.startswith(b"\x7fELF") and len(data) <= MAX_SIZE and MARKER in data


def stale(program: str) -> str | None:
    """A checkout's client older than its source: what to say (``make native``)."""
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(program))),
                          SOURCE)
    try:
        if os.stat(source).st_mtime > os.stat(program).st_mtime:
            return ("%s is older than %s: 'make native' builds it anew" % (program, source))
    except OSError:
        pass
    return None


def install(directory: str, name: str, program: str, paths: list[str]) -> str:
    """Write the native client ``program`` as ``directory/name`` (a real path) and this
    installation's launcher, in process only, beside it; returns the launcher's path.
    The launcher first: a runtime starting NAME meanwhile runs the old file or the new
    client, which finds its in-process plugin there. Each is written in one rename."""
    in_process = launcher.install(directory, name + IN_PROCESS_SUFFIX, paths=paths,
                                  forwarding=False)
    with open(program, "rb") as f:
        data = f.read()
    launcher.replace_file(os.path.join(directory, name), data, 0o755)
    return in_process


def runs(path: str, proc: str = "/proc") -> bool:
    """Whether a process this one may see runs a native client that was at ``path`` (a
    real path), which may yet exec the in-process plugin beside it: once replaced, the
    kernel names its file ``<path> (deleted)`` in ``/proc/<pid>/exe``."""
    names = {path, path + " (deleted)"}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:  # no /proc mounted
        return False
    for pid in pids:
        try:
            if os.readlink(os.path.join(proc, pid, "exe")) in names:
                return True
        except OSError:  # exited, a kernel thread, or not ours to inspect
            continue
    return False
