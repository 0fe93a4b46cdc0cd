"""A faster executable for a CNI bin directory than pip's console script.

A runtime starts the plugin once per container, so interpreter start-up is most of its
cost. pip's console script runs ``python`` plainly, and the ``site`` module then spends
about 3.5 ms on every start: it scans site-packages, runs the ``.pth`` files, and imports
a distutils shim. The launcher runs ``python -I -S`` instead and puts on ``sys.path``
only the directories this installation needs, recorded when it is written. That is
what ``ipamctl install-plugin`` writes, together with the hot path's byte-code in one
file (:mod:`ipam.bundle`), which the launcher loads without importlib's search.

The recorded paths pin one installation. After rebuilding the virtualenv or upgrading
Python, write the launcher again. Until then it answers with a CNI error object naming
that fix, never with a traceback.
"""
import ast
import os
import subprocess
import sys

from ipam.paths import PLUGIN_NAME, temp_affixes

MAX_SHEBANG = 255  # Linux reads at most this much of a "#!" line (BINPRM_BUF_SIZE - 1)

_TEMPLATE = '''#!{python} -IS
# host-local-sqlite launcher, written by "ipamctl install-plugin". -I -S: no site
# processing on each start; the installation's own paths are listed below instead.
import sys
sys.path += {paths!r}
try:
    from ipam.client import run
except ImportError as e:
    msg = ("host-local-sqlite launcher: cannot import the plugin (%s); "
           "run 'ipamctl install-plugin' again" % e)
    sys.stdout.write('{{"code": 5, "msg": "%s"}}' % msg.replace("\\\\", "/").replace('"', "'"))
    sys.exit(1)
run(bundled=True)
'''


def install_paths(python=None):
    """The ``sys.path`` entries this installation adds beyond an isolated interpreter's:
    site-packages and whatever its ``.pth`` files add, and, first, the directory that
    holds the ``ipam`` package if none of those does (found there, ``ipam`` costs no
    listing of a large site-packages: 0.2 ms of each call).

    An editable install (setuptools' default mode) adds no path for ``ipam``: a ``.pth``
    file installs an import finder, which ``-S`` skips. The hot path imports only
    ``ipam`` (the first ADD's migrations find their directory without an import: see
    :func:`ipam.migrate.script_location`)."""
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


def render(python=None, paths=None):
    """The launcher's text for ``python`` (default: this interpreter)."""
    python = python or sys.executable
    if paths is None:
        paths = install_paths(python)
    text = _TEMPLATE.format(python=python, paths=list(paths))
    if len(text.split("\n", 1)[0]) > MAX_SHEBANG or any(c in python for c in " \t\n"):
        raise ValueError("interpreter path %r cannot go in a #! line (too long, or has "
                         "blanks): use the console script instead" % python)
    return text


def install(directory, name=PLUGIN_NAME, python=None, paths=None):
    """Write the launcher as ``directory/name`` (0755), atomically; returns its path."""
    path = os.path.join(directory, name)
    replace_file(path, render(python, paths).encode(), 0o755)
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
