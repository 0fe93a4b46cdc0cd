"""cx_Freeze's init script for both executables of the frozen build (``make dist``).

cx_Freeze runs an init script before the main script. Its stock one (``console``)
imports ``typing`` and ``importlib.util`` first: a large part of the 12 ms a call
between cx_Freeze's defaults and the ``-I -S`` launcher (docs/performance.md). This
one imports nothing beyond what the interpreter has loaded already (but ``fcntl``,
below), loads the main script's byte-code from ``lib/`` and runs it as ``__main__``.
cx_Freeze imports it as ``__init__<name>`` and calls :func:`run` with the main module's
name.

Each process holds a shared flock on its copy's ``IN-USE.lock`` until it exits:
``ipamctl install-plugin`` removes a copy only once it can lock that file exclusively
(:mod:`ipam.install.frozen`), so a call that waits on a network's lock, or the node daemon,
keeps its modules. It costs 0.13 ms (median of 200 starts: loading ``fcntl``, which an
in-process ADD or DEL loads anyway, 0.12 ms; the open and the flock 0.01 ms), lost in a
start's noise (500 VERSION calls of each build, interleaved: medians 9.86 ms before, 9.77
after), and never fails a call: a copy without the file, or a filesystem without flock,
runs all the same.

A plugin that cannot load its own modules (a damaged or partial copy of the build)
answers the runtime with a CNI error object, as the launcher does, never a traceback;
``ipamctl`` then prints one ``Error:`` line naming the copy (a traceback would show the
paths of the machine that built it) and exits 1.

The plugin first ignores the signals that end a call, as the launcher's shell does,
until :func:`ipam.client.run` sets its handler: a signal while it loads its modules
changes nothing, where SIGINT would stop it with a traceback and SIGTERM or SIGHUP kill
it. Earlier still (the interpreter's and cx_Freeze's own start-up) nothing of ours runs.
"""
import sys

sys.frozen = True  # what frozen-aware code checks: ipamctl install-plugin copies the build

PLUGIN_MAIN = "__main__host_local_sqlite"  # the executable host_local_sqlite's
# ipam.process.SIGNALS (SIGINT, SIGTERM, SIGHUP), before the plugin's modules are loaded;
# tests/test_signals.py checks that they are the same.
SIGNALS = (2, 15, 1)
IN_USE = "IN-USE.lock"  # ipam.install.frozen.IN_USE, in the copy beside the executables


def hold_copy():
    """A shared flock on the copy's IN_USE, held by the descriptor until the process
    exits (close-on-exec: a program started from here does not inherit it)."""
    import posix

    try:
        import fcntl

        fd = posix.open(sys.executable.rpartition("/")[0] + "/" + IN_USE,
                        posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except (ImportError, OSError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # being removed (its installer's exclusive lock), or no flock here
        posix.close(fd)


def run(name):
    if name == PLUGIN_MAIN:
        import _signal  # the C module, loaded already: signal.py would import enum

        while True:
            try:
                for signum in SIGNALS:
                    _signal.signal(signum, _signal.SIG_IGN)
                break
            except KeyboardInterrupt:  # a SIGINT just before: ignored, as it is from now
                pass
    hold_copy()
    from _frozen_importlib_external import SourcelessFileLoader

    import __main__

    for entry in sys.path:
        path = entry + "/" + name + ".pyc"
        try:
            code = SourcelessFileLoader(name, path).get_code(name)
        except OSError:
            continue
        break
    else:
        raise SystemExit("frozen build: main script %s not found in %s" % (name, sys.path))
    __main__.__file__ = path
    try:
        exec(code, __main__.__dict__)
    except ImportError as e:
        if name != PLUGIN_MAIN:  # ipamctl: an error line, as click's, not a traceback
            sys.stderr.write("Error: ipamctl cannot load its modules (%s): the build at %s "
                             "is damaged or incomplete; unpack it again\n" % (e, sys.path[0]))
            sys.stderr.flush()
            raise SystemExit(1) from None
        msg = ("host-local-sqlite: cannot load the plugin's modules (%s): the build at %s "
               "is damaged or incomplete; unpack it again" % (e, sys.path[0]))
        sys.stdout.write('{"code": 5, "msg": "%s"}' % msg.replace("\\", "/").replace('"', "'"))
        sys.stdout.flush()
        raise SystemExit(1) from None
