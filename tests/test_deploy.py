"""The node daemon's systemd units (deploy/systemd/host-local-sqlite.{socket,service}):
systemd accepts them, they name the socket and modes the plugin looks for, and the
daemon works with a socket as systemd's PID 1 passes it.

The socket unit's path and modes are the product's (:mod:`ipam.paths`); a unit file
cannot import them, so a test ties the two. Socket activation through
``systemd-socket-activate`` is tested with the daemon; that tool passes a blocking
socket and execs the daemon in its own place, while PID 1 passes a non-blocking one
(``SOCK_NONBLOCK``, systemd's src/core/socket.c) and keeps it across the daemon's
restarts: the last test gives the daemon such a socket."""
import configparser
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from docs_pages import PAGES, every_page, read
from helpers import IPAMCTL, PLUGIN, cni_env

from ipam import paths
from ipam.daemon import server as daemon

SYSTEMD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy",
                       "systemd")
SOCKET_UNIT = "host-local-sqlite.socket"
SERVICE_UNIT = "host-local-sqlite.service"
SUBNET = {"subnet": "10.1.2.0/24"}


def unit_text(name):
    """The unit, with ipamctl where this venv has it (systemd-analyze checks the path)."""
    with open(os.path.join(SYSTEMD, name)) as f:
        return f.read().replace("/usr/local/bin/ipamctl", IPAMCTL)


def unit(name):
    """The unit's settings, section by section (a setting given twice: the last)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(unit_text(name))
    return parser


def verify(directory, *names):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian: systemd)")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                           *[str(directory / n) for n in names]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "host-local-sqlite" not in proc.stderr, proc.stderr  # not one warning about ours


def test_daemon_units_verify(tmp_path):
    for name in (SOCKET_UNIT, SERVICE_UNIT):
        (tmp_path / name).write_text(unit_text(name))
    verify(tmp_path, SOCKET_UNIT, SERVICE_UNIT)


def test_the_service_unit_verifies_without_the_socket_unit(tmp_path):
    """Enabled alone, the service binds the socket itself."""
    (tmp_path / SERVICE_UNIT).write_text(unit_text(SERVICE_UNIT))
    verify(tmp_path, SERVICE_UNIT)


def test_the_socket_unit_is_the_plugins_socket():
    listen = unit(SOCKET_UNIT)["Socket"]
    assert listen["ListenStream"] == paths.DAEMON_SOCKET
    assert int(listen["SocketMode"], 8) == paths.DAEMON_SOCKET_MODE
    assert int(listen["DirectoryMode"], 8) == paths.DAEMON_DIR_MODE
    assert listen["Accept"] == "no"  # one daemon for every call, not one process per call
    assert unit(SOCKET_UNIT)["Install"]["WantedBy"] == "sockets.target"


def test_the_service_unit_runs_the_daemon_and_outlasts_its_drain():
    service = unit(SERVICE_UNIT)["Service"]
    assert service["ExecStart"].split() == [IPAMCTL, "serve"]
    assert service["Type"] == "notify"  # the daemon sends READY=1 and STOPPING=1
    assert service["KillSignal"] == "SIGTERM"  # what drains it
    stop = service["TimeoutStopSec"]
    assert stop.endswith("s") and float(stop[:-1]) > daemon.DEFAULT_DRAIN_TIMEOUT
    assert "PrivateTmp" not in service and "ReadWritePaths" not in service  # any dataDir


# -- the socket as PID 1 passes it ------------------------------------------------------
def _start(listener, log):
    """``ipamctl serve`` given ``listener`` as systemd gives it: fd 3, LISTEN_FDS=1,
    LISTEN_PID its own pid (a small exec wrapper, which keeps its pid)."""
    fd = listener.fileno()
    wrapper = ("import os, sys; os.dup2(%d, 3); os.close(%d); "
               "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
               "os.execv(sys.argv[1], sys.argv[1:])" % (fd, fd))
    return subprocess.Popen([sys.executable, "-c", wrapper, IPAMCTL, "serve"],
                            env={"PATH": os.environ.get("PATH", "")}, pass_fds=(fd,),
                            stdout=subprocess.DEVNULL, stderr=log)


def _wait_serving(log_path, count):
    """Until the log says ``count`` daemons served (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log_path.read_text().count("socket from systemd") >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the daemon did not say it serves within 10 s: %s"
                         % log_path.read_text())


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=daemon.DEFAULT_DRAIN_TIMEOUT + 10) == 0


def test_the_daemon_on_pid1s_socket_serves_and_leaves_it_listening(tmp_path, netconf):
    """systemd's socket is non-blocking, and stays systemd's: the daemon serves calls on
    it without a busy loop, and after its SIGTERM drain the socket still queues calls,
    which the next daemon (systemctl restart, or the next activation) answers."""
    where = tmp_path / "run"
    where.mkdir(mode=paths.DAEMON_DIR_MODE)
    path = str(where / "daemon.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    listener.bind(path)
    os.chmod(path, paths.DAEMON_SOCKET_MODE)
    listener.listen(64)
    log_path = tmp_path / "daemon.log"
    conf = netconf(SUBNET)
    env = {"PATH": os.environ.get("PATH", ""), paths.DAEMON_ENV: path}

    def plugin(container_id):
        return subprocess.Popen([PLUGIN], env=dict(env, **cni_env("ADD", container_id)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    stdin = json.dumps(conf).encode()
    with open(log_path, "w") as log:
        first = _start(listener, log)
        try:
            _wait_serving(log_path, 1)
            out, err = plugin("a").communicate(stdin, timeout=60)
            assert b"running the call in process" not in err, err
            assert json.loads(out)["ips"][0]["address"] == "10.1.2.2/24"
            time.sleep(1)  # idle workers: each blocks, none spins
        finally:
            _stop(first)
        text = log_path.read_text()
        assert "accept failed" not in text, text
        assert "ADD network=mynet container=a" in text, text

        waiting = plugin("b")  # no daemon: the call waits in systemd's queue
        waiting.stdin.write(stdin)
        waiting.stdin.close()
        readable, _, _ = select.select([listener], [], [], 10)  # its connection, queued
        assert readable and waiting.poll() is None, waiting.stderr.read()
        second = _start(listener, log)
        try:
            _wait_serving(log_path, 2)
            assert waiting.wait(timeout=60) == 0
            err = waiting.stderr.read()
            assert b"running the call in process" not in err, err
            assert json.loads(waiting.stdout.read())["ips"][0]["address"] == "10.1.2.3/24"
        finally:
            _stop(second)
            waiting.stdout.close()
            waiting.stderr.close()
    listener.close()
    text = log_path.read_text()
    assert "ADD network=mynet container=b" in text, text
    assert "accept failed" not in text, text


def test_the_docs_copy_each_unit_before_they_say_systemctl_edit():
    """`systemctl edit` changes an installed unit: wherever the README or a page of docs/
    has one edited, its section has already copied the units into /etc/systemd/system/;
    and what the units run, /usr/local/bin/ipamctl, is a link the documents make for
    both kinds of installation."""
    docs = every_page()
    sections = [s for page in PAGES for s in read(page).split("\n## ") if "systemctl edit" in s]
    assert len(sections) >= 3
    for section in sections:
        title = section.split("\n")[0]
        section = " ".join(section.split())  # a code span may wrap
        first_edit = section.index("systemctl edit")
        copy = section.find("cp deploy/systemd/")
        assert 0 <= copy < first_edit, "%s: systemctl edit before copying the units" % title
        assert "/etc/systemd/system/" in section[copy:first_edit], title
    for unit in os.listdir(SYSTEMD):
        with open(os.path.join(SYSTEMD, unit)) as f:
            settings = "".join(line for line in f if not line.startswith("#"))
        runs = set(re.findall(r"/[\w./-]*/ipamctl\b", settings))
        assert runs <= {"/usr/local/bin/ipamctl"}, (unit, runs)
    assert "ln -s /opt/host-local-sqlite/bin/ipamctl /usr/local/bin/ipamctl" in docs
    assert "host-local-sqlite.d/current/ipamctl /usr/local/bin/ipamctl" in " ".join(
        docs.split())
