"""A faster executable for a CNI bin directory than pip's console script.

A runtime starts the plugin once per container, so interpreter start-up is most of its
cost. pip's console script runs ``python`` plainly, and the ``site`` module then spends
about 3.5 ms on every start: it scans site-packages, runs the ``.pth`` files, and imports
a distutils shim. The launcher runs ``python -I -S`` instead and puts on ``sys.path``
only the directories this installation needs, recorded when it is written. That is
what ``ipamctl install-plugin`` writes, together with the hot path's byte-code in one
file (:mod:`ipam.install.bundle`), which the launcher loads without importlib's search.

The recorded paths pin one installation. After rebuilding the virtualenv or upgrading
Python, write the launcher again. Until then it answers with a CNI error object naming
that fix, never with a traceback; so it does when the interpreter itself is gone (the
virtualenv removed or moved), which is why /bin/sh starts it (see ``_TEMPLATE``).
"""
import ast
import json
import os
import shlex
import subprocess
import sys

from ipam.paths import PLUGIN_NAME, temp_affixes
from ipam.process import SIGNALS

# The launcher is a shell script and a Python script at once. The kernel runs it with
# /bin/sh, which execs the interpreter only once it has seen it there: with a
# "#!<python>" line, a removed or moved virtualenv makes execve fail with ENOENT, which
# a runtime reports as the plugin itself missing ("fork/exec .../host-local-sqlite: no
# such file or directory"). Here the runtime gets a CNI error object saying what to do.
# The line ''':' is, for sh, the no-op command ":" and, for Python, the start of a
# string that holds the shell's lines (sh never reads past them). The extra exec of
# /bin/sh (dash on Debian) costs each call about 0.65 ms (docs/performance.md): the
# price of an answer the runtime can show.
# The shell's first real command ignores the signals that end a call
# (ipam.process.SIGNALS), and the interpreter it execs keeps them ignored (and sets no
# KeyboardInterrupt handler) until the plugin sets its own (ipam.process.Guard): a signal
# during the start-up changes nothing, where it would kill the shell, or stop the
# interpreter with a traceback.
_TEMPLATE = '''#!/bin/sh
# host-local-sqlite launcher, written by "ipamctl install-plugin". -I -S: no site
# processing on each start; the installation's own paths are listed below instead.
''' + "'''" + ''':'
trap '' {signals}
[ -x {python} ] && exec {python} -I -S "$0" "$@"
printf %s {missing}
exit 1
''' + "'''" + '''
import sys
sys.path += {paths!r}
try:
    from ipam.client import run
except ImportError as e:
    msg = ("host-local-sqlite launcher: cannot import the plugin (%s); "
           "run 'ipamctl install-plugin' again" % e)
    sys.stdout.write('{{"code": 5, "msg": "%s"}}' % msg.replace("\\\\", "/").replace('"', "'"))
    sys.exit(1)
{run}
'''
# The error object when the interpreter is missing: code 5 (an I/O failure), as for a
# launcher whose paths are stale; no "cniVersion", as no error of the plugin has one
# (Go's skel prints none, and libcni reads the object without it).
MISSING = ("host-local-sqlite: the Python interpreter %s that this launcher was written "
           "for is missing (the virtualenv was removed or moved) or not executable by this "
           "user: reinstall it, then run 'ipamctl install-plugin' again")


def install_paths(python=None):
    """The ``sys.path`` entries this installation adds beyond an isolated interpreter's:
    site-packages and whatever its ``.pth`` files add, and, first, the directory that
    holds the ``ipam`` package if none of those does (found there, ``ipam`` costs no
    listing of a large site-packages: 0.2 ms of each call).

    An editable install (setuptools' default mode) adds no path for ``ipam``: a ``.pth``
    file installs an import finder, which ``-S`` skips. The hot path imports only
    ``ipam`` (the first ADD's migrations find their directory without an import: see
    :func:`ipam.store.migrate.script_location`)."""
    python = python or sys.executable
    probe = ("import sys, importlib.util; spec = importlib.util.find_spec('ipam'); "
             "print(repr((sys.path, spec.submodule_search_locations[0] if spec else None)))")
    (base, _), (full, package) = (ast.literal_eval(subprocess.run(
        [python, *flags, "-c", probe], capture_output=True, text=True, check=True).stdout)
        for flags in (["-I", "-S"], ["-I"]))
    paths = [p for p in full if p and p not in base]
    holder = package and os.path.dirname(os.path.abspath(package))
    if holder and holder not in paths and holder not in base:
        paths.insert(0, holder)
    return paths


def render(python=None, paths=None, forwarding=True):
    """The launcher's text for ``python`` (default: this interpreter); ``forwarding``
    False: one that runs the call in process only, the native thin client's fallback
    (native/client.c execs it after offering the call to the daemon itself)."""
    python = python or sys.executable
    if paths is None:
        paths = install_paths(python)
    # Only a path that sh takes as one word unquoted (shlex's safe characters: no
    # blanks, quotes, "$" or backslashes) is written in the shell's lines, which
    # Python also reads as the text of a string.
    if not python.startswith("/") or shlex.quote(python) != python:
        raise ValueError("interpreter path %r cannot go in the launcher (not absolute, "
                         "or has blanks, quotes or other characters the shell would "
                         "read): use the console script instead" % python)
    missing = json.dumps({"code": 5, "msg": MISSING % python})
    return _TEMPLATE.format(python=python, paths=list(paths), missing=shlex.quote(missing),
                            signals=" ".join(name[3:] for name in SIGNALS.values()),
                            run="run(bundled=True)" if forwarding
                            else "run(bundled=True, forwarding=False)")


def install(directory, name=PLUGIN_NAME, python=None, paths=None, forwarding=True):
    """Write the launcher as ``directory/name`` (0755), atomically; returns its path."""
    path = os.path.join(directory, name)
    replace_file(path, render(python, paths, forwarding).encode(), 0o755)
    return path


def replace_file(path, data, mode):
    """Put ``data`` at ``path`` with ``mode`` (whatever the umask) in one rename, so a
    runtime starting the plugin meanwhile finds the old file or the new, never half."""
    directory, name = os.path.split(path)
    prefix, suffix = temp_affixes(name)
    tmp = os.path.join(directory, "%s%d%s" % (prefix, os.getpid(), suffix))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
