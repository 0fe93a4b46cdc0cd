"""A signal at any moment of a plugin process (SIGINT, SIGTERM, SIGHUP: the signals that
end a call, ``ipam.process.SIGNALS``) ends in exactly one answer, never a traceback: a
result, or one CNI error object with code 11. A signal is ignored only before the plugin
sets its handler (``ipam.process.Guard``: the launcher's shell ignores them, and the
interpreter it execs inherits that) and once the answer is out; before our first
instruction (a shell's start) it may end the process with no answer at all, as it would
any program. Real processes, as a runtime starts them: the launcher as
``ipamctl install-plugin`` writes it, the console script, and the frozen build.

Two kinds of test: each window of a call hit exactly (the process signals itself at a
chosen point of its own code, found by a profile function), and a sweep of delays over a
whole call, each run checked and the database afterwards (at most one lease a container:
the runtime's retry of an interrupted ADD gets the same address)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    PLUGIN,
    REPO,
    cni_env,
    ipamctl,
    note_plugin_run,
    run_inprocess,
    starting,
)
from plugin_procs import database_problems, expected_mirror, leases, mirror

from ipam import paths, process
from ipam.install import launcher

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SUBNET = {"subnet": "10.7.0.0/24"}
NET = "signalled"
PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The launcher ``ipamctl install-plugin`` writes (with the byte-code bundle), alone:
    the native client before it is the native entry path's."""
    bin_dir = tmp_path_factory.mktemp("bin")
    out = ipamctl("-o", "json", "install-plugin", str(bin_dir), "--client", "python")
    return json.loads(out.stdout)["path"]


def _env(container, socket=None):
    env = {"PATH": os.environ.get("PATH", ""), paths.DAEMON_ENV: socket or "false"}
    env.update(cni_env("ADD", container_id=container))
    return env


def _disposition(pid, signum):
    """What process ``pid`` does about ``signum`` now ("ignored", "caught", "default"),
    and which executable it runs (None once it has exited)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None, None
    bit = 1 << (signum - 1)
    if int(status["SigIgn"], 16) & bit:
        return "ignored", exe
    if int(status["SigCgt"], 16) & bit:
        return "caught", exe
    return "default", exe


def _python_before_run(err):
    """Whether stderr is Python's own report of a SIGINT before ``ipam.client.run``
    began, naming no function of the plugin's package, only module bodies (the
    imports): a KeyboardInterrupt traceback, or one Python prints and goes on after (in
    ``site``, a ``.pth`` line that failed; in importlib, an "Exception ignored in" a
    module lock's callback), or the interpreter's own fatal error while it initialises
    (seen: the signal while ``io`` is imported for ``sys.stdin``, "Fatal Python error:
    init_sys_streams")."""
    text = err.decode(errors="replace")
    last = text.rstrip().rsplit("\n", 1)[-1]
    if not (last.startswith("KeyboardInterrupt") or "Error processing line" in text
            or text.startswith("Fatal Python error: init_")):
        return False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('File "') and "/ipam/" in line and not line.endswith(
                ", in <module>"):
            return False
    return True


def verdict(entry, signum, before, rc, out, err):
    """How a signalled run ended, if that is allowed (else AssertionError): "result",
    "interrupted" (one code-11 object), "killed before our code" (no output at all, the
    signal at its default action when sent, and for the launcher still in its shell:
    the launcher's shell ignores the signals from its first command, so once the
    interpreter runs a kill means a window left open; the native client's first
    instructions block them), or, for the console script and
    the frozen build, "Python's traceback before run()": a SIGINT while the interpreter
    starts (``site`` and the script's imports, or cx_Freeze's start-up) gets Python's
    own handler, before any code of ours can run; stdout then holds nothing, or the
    call's result if the start-up went on."""
    what = (entry, signal.Signals(signum).name, before, rc, out, err.decode()[-3000:])
    if entry in ("script", "frozen") and signum == signal.SIGINT and _python_before_run(err):
        assert rc in (0, 1, -signum), what
        assert not out or rc == 0 and json.loads(out)["ips"], what
        return "Python's traceback before run()"
    if rc == 0:
        assert b"Traceback" not in err, what
        answer = json.loads(out)  # exactly one JSON value, nothing after it
        assert answer["ips"][0]["address"].startswith("10.7.0."), what
        return "result"
    if rc == 1 and out:
        assert b"Traceback" not in err, what
        answer = json.loads(out)
        assert answer["code"] == 11, what
        assert answer["msg"].startswith("interrupted by %s" % signal.Signals(signum).name), what
        return "interrupted"
    if rc == -signum and not out and not err:
        state, exe = before
        assert state == "default", what
        assert entry != "launcher" or exe != PYTHON, what
        return "killed before our code"
    raise AssertionError(what)


# -- each window, hit exactly -----------------------------------------------------------
# The process sends itself the signal on reaching a point of its own code, the profile
# function's event (call, return, or c_call: a C function called from that file); the
# signal's handler runs at once after (at the interpreter's next check).
_PROBE = '''
import posix, sys
def _probe(frame, event, arg):
    if event == {event!r} and frame.f_code.co_filename.endswith({file!r}) and (
            (arg.__name__ if event == "c_call" else frame.f_code.co_name) == {name!r}):
        sys.setprofile(None)
        posix.kill(posix.getpid(), {signum})
sys.setprofile(_probe)
'''
POINTS = {
    # point: (file, event, function, the answer), in the order a call meets them.
    "the launcher's interpreter, before run()": ("ipam/client.py", "call", "run", "result"),
    "run(), before forward()": ("ipam/client.py", "call", "forward", "interrupted"),
    "after forward(), before cni.main's handlers": (
        "ipam/cni.py", "call", "in_process", "interrupted"),
    "cni.main, at the call": ("ipam/cni.py", "call", "dispatch", "interrupted"),
    "cni.main, writing the answer": ("ipam/cni.py", "c_call", "write", "result"),
    "cni.main returned: the answer is out": ("ipam/cni.py", "return", "main", "result"),
    "the process's exit": ("ipam/client.py", "c_call", "_exit", "result"),
}
DAEMON_POINTS = {
    "run(), before forward()": ("ipam/client.py", "call", "forward", "interrupted"),
    "waiting for the daemon": ("ipam/client.py", "call", "receive", "interrupted"),
    "writing the daemon's answer": ("ipam/client.py", "c_call", "write", "result"),
    "the process's exit": ("ipam/client.py", "c_call", "_exit", "result"),
}


def _probe_argv(tmp_path, entry, point, signum):
    file, event, name, _ = point
    probe = _PROBE.format(event=event, file=file, name=name, signum=int(signum))
    if entry == "script":  # what the console script runs, with the probe first
        return [sys.executable, "-c", probe + "from ipam.__main__ import run\nrun()\n"]
    path = tmp_path / ("probe-%d" % signum)
    path.write_text(launcher.render().replace("\nrun(bundled=True)\n",
                                              "\n" + probe + "run(bundled=True)\n"))
    path.chmod(0o755)
    return [str(path)]


def _each_window(tmp_path, netconf, data_dir, entry, point, net, socket=None):
    """Each signal at ``point`` of a call (ADD) of ``entry`` on network ``net``: the
    answer the point expects, and the runtime's retry of each gets its address."""
    conf = json.dumps(netconf(SUBNET, name=net)).encode()
    containers = []
    for signum in SIGNALS:
        container = "%s-%d" % (entry, signum)
        containers.append(container)
        env = _env(container, socket)
        argv = _probe_argv(tmp_path, entry, point, signum)
        proc = subprocess.run([starting(argv[0]), *argv[1:]], input=conf, env=env,
                              capture_output=True, timeout=60)
        got = verdict(entry, signum, (None, None), proc.returncode, proc.stdout, proc.stderr)
        assert got == point[3], (entry, point, signal.Signals(signum).name, got, proc)
        retry = run_inprocess("ADD", netconf(SUBNET, name=net), container_id=container)
        assert retry.status == 0, retry
        if got == "result":  # a whole call: through the daemon, when one is named
            note_plugin_run(env, "ADD", proc.stderr)
            assert retry.json["ips"] == json.loads(proc.stdout)["ips"]
    # One address a container (the retry got the interrupted call's, if it committed),
    # and the mirror says the same.
    held = leases(data_dir, net)
    assert sorted(held) == sorted(containers), held
    assert mirror(data_dir, net) == expected_mirror(held)
    assert database_problems(data_dir, net) == []


# The windows of a call each path's plugin process goes through: (entry, points). In
# process, the launcher's and the console script's (which has no window before run() to
# test: its interpreter has Python's own handlers there; the sweeps below cover what
# happens); through the daemon, the client's.
WINDOWS = {"in-process": [("launcher", POINTS), ("script", {
               name: point for name, point in POINTS.items() if point[2] != "run"})],
           "daemon": [("launcher", DAEMON_POINTS)]}


@pytest.mark.not_through("daemon-stopped-and-killed", why=(
    "each window is hit exactly, where the chaos hits at random: the sweeps below run "
    "through it"))
@pytest.mark.not_through("build", why=(
    "the probe is Python source run before the plugin's, which the build's frozen "
    "start cannot take: the sweeps below run the build"))
@pytest.mark.not_through("native", why=(
    "the probe is Python source, and the native client is C: its windows are hit in "
    "test_native_client.py (a signal before the call starts, while the daemon runs it), "
    "and the sweeps below run it"))
def test_each_window_of_a_call(tmp_path, netconf, data_dir, through):
    """Each window on its own network (``w<n>``), in the order a call meets them."""
    n = 0
    for entry, points in WINDOWS[through.name]:
        for point in points.values():
            n += 1
            _each_window(tmp_path, netconf, data_dir, entry, point, "w%d" % n,
                         socket=through.socket)


# -- a sweep of delays over whole calls -------------------------------------------------
RUNS = 60  # per signal: delays stepping from 0 to past a whole call
AT_ONCE = 3  # runs at a time, for the test's own time (a call's windows stretch under load)
ROUNDS = 4  # at most, each over twice the last one's span: 242 leases fit SUBNET's 253


def _signalled_run(argv, signum, conf, env, delay):
    """One call sent ``signum`` ``delay`` seconds after it started: (what the process
    did about the signal just before, exit status, stdout, stderr)."""
    proc = subprocess.Popen([starting(argv[0]), *argv[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(conf)
        proc.stdin.close()
    except BrokenPipeError:  # ended by the signal before it read its config
        pass
    time.sleep(delay)
    before = _disposition(proc.pid, signum)
    proc.send_signal(signum)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return before, proc.wait(60), out, err


def _sweep(argv, entry, signum, netconf, data_dir, socket=None):
    """RUNS calls (ADD, each its own container), each sent ``signum`` after a delay
    stepping from 0 to 1.5 times an unsignalled call's own duration (measured first,
    so that the sweep spans whole calls however loaded the machine is), AT_ONCE at a
    time; checks each run's end, then the runtime's retry of each and the database.
    Runs at once start slower than the one measured, and a loaded machine slows them
    unevenly: a round that no signal interrupted (each came before the plugin's handler
    or after its answer) is followed by one over twice the span, up to ROUNDS rounds,
    every run of each checked alike. Returns how the runs ended, by kind."""
    from concurrent.futures import ThreadPoolExecutor

    conf = json.dumps(netconf(SUBNET, name=NET)).encode()
    assert run_inprocess("ADD", netconf(SUBNET, name=NET), container_id="first").status == 0
    started = time.monotonic()  # a call as each run makes it: the database exists
    env = _env("warm", socket)
    warm = subprocess.run(argv, input=conf, env=env, capture_output=True, timeout=60)
    span = (time.monotonic() - started) * 1.5
    assert warm.returncode == 0, warm
    note_plugin_run(env, "ADD", warm.stderr)
    containers = []
    seen = {}
    for sweep in range(ROUNDS):
        if "interrupted" in seen:
            break
        names = ["c%d-%d-%d" % (signum, sweep, i) for i in range(RUNS)]
        containers += names
        with ThreadPoolExecutor(AT_ONCE) as pool:
            runs = list(pool.map(lambda i, names=names, span=span: _signalled_run(
                argv, signum, conf, _env(names[i], socket), span * i / RUNS),
                range(RUNS)))
        span *= 2
        for container, (before, rc, out, err) in zip(names, runs, strict=True):
            got = verdict(entry, signum, before, rc, out, err)
            seen[got] = seen.get(got, 0) + 1
            # The runtime's retry: the same address if the call had committed it.
            retry = run_inprocess("ADD", netconf(SUBNET, name=NET), container_id=container)
            assert retry.status == 0, retry
            if rc == 0:  # a whole call: through the daemon, when one is named
                note_plugin_run(_env(container, socket), "ADD", err)
                assert retry.json["ips"] == json.loads(out)["ips"], (container, out, retry)
    held = leases(data_dir, NET)  # one address a container, one container an address
    assert sorted(held) == sorted(containers + ["first", "warm"]), held
    assert mirror(data_dir, NET) == expected_mirror(held)
    assert database_problems(data_dir, NET) == []
    return seen


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_any_moment(installed, netconf, data_dir, signum, through):
    """The console script's paths (in process, through the daemon, stopped and killed
    under it) are swept as the launcher runs them, which a venv install puts in the
    runtime's bin directory; the build's is its own program, whose init script
    (tools/frozen/cx_init.py) ignores the signals first thing, as the launcher's shell
    does; the native client's blocks them first thing, and catches them."""
    if through.plugin == PLUGIN:
        argv, entry = [installed], "launcher"
    else:
        argv, entry = [through.plugin], "frozen" if through.name == "build" else "native"
    seen = _sweep(argv, entry, signum, netconf, data_dir, socket=through.socket)
    assert "interrupted" in seen, seen


@pytest.mark.in_process_only(why=(
    "the console script's own start (Python's, before run()); its calls go through each "
    "entry path as the launcher's do, swept by test_a_signal_at_any_moment"))
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_at_any_moment_of_the_console_script(netconf, data_dir, signum):
    seen = _sweep([PLUGIN], "script", signum, netconf, data_dir)
    assert "interrupted" in seen, seen


# -- the steps before the plugin's handler ----------------------------------------------
@pytest.mark.no_entry_path(why="reads the launcher's text")
def test_the_launchers_first_command_ignores_the_signals():
    shell = launcher.render().split("\n''':'\n", 1)[1]
    assert shell.startswith("trap '' INT TERM HUP\n"), shell
    assert {getattr(signal, "SIG" + n) for n in shell.split("\n")[0].split()[2:]} == set(
        process.SIGNALS)


@pytest.mark.no_entry_path(why="runs the build's init script alone, in this Python")
def test_the_frozen_builds_init_script_ignores_them_for_the_plugin_only(tmp_path):
    """cx_init.py run as cx_Freeze runs it, with main scripts that report what they find:
    the plugin's finds the signals of ipam.process.SIGNALS ignored, ipamctl's finds
    Python's own handlers (Ctrl-C stops an admin command)."""
    import py_compile

    report = ("import _signal\nprint(sorted(n for n in range(1, 32) if n not in (9, 19) "
              "and _signal.getsignal(n) == _signal.SIG_IGN))\n")
    for name in ("__main__host_local_sqlite", "__main__ipamctl"):
        (tmp_path / (name + ".py")).write_text(report)
        py_compile.compile(str(tmp_path / (name + ".py")), str(tmp_path / (name + ".pyc")),
                           doraise=True)
    ignored = {}
    for name in ("host_local_sqlite", "ipamctl"):
        code = ("import sys; sys.path.insert(0, %r)\n"
                "import importlib.util as u\n"
                "spec = u.spec_from_file_location('__init__%s', %r)\n"
                "init = u.module_from_spec(spec)\n"
                "spec.loader.exec_module(init)\n"
                "init.run('__main__%s')\n"
                % (str(tmp_path), name, os.path.join(REPO, "tools", "frozen", "cx_init.py"),
                   name))
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out
        ignored[name] = set(json.loads(out.stdout))
    assert ignored["host_local_sqlite"] - ignored["ipamctl"] == set(process.SIGNALS), ignored


class _Stopped(Exception):
    pass


@pytest.mark.no_entry_path(why="the guard alone, in this process: no plugin call")
def test_a_signal_python_drops_in_a_callback_is_held_not_a_traceback(capsys):
    """A signal handled inside a weakref callback raises where Python can only print
    "Exception ignored" and a traceback (seen in CI: the import lock's and
    WeakValueDictionary's callbacks). The guard says one line instead, and stays armed: the
    next signal of the stretch still ends it."""
    import _signal
    import weakref

    class Thing:
        pass

    with pytest.raises(_Stopped):
        with process.armed(_Stopped):
            thing = Thing()
            ref = weakref.ref(thing, lambda _: _signal.raise_signal(signal.SIGTERM))
            del thing  # the callback runs here, and the handler inside it
            assert ref() is None
            err = capsys.readouterr().err
            assert "Traceback" not in err and "SIGTERM came inside a callback" in err, err
            _signal.raise_signal(signal.SIGTERM)
    assert sys.unraisablehook is sys.__unraisablehook__ or \
        not isinstance(getattr(sys.unraisablehook, "__self__", None), process.Guard)
