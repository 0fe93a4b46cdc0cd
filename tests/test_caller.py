"""What the node daemon knows of a caller before it takes a call (ipam.daemon.caller): the powers
the kernel shows for the peer of a real connection (a child process with its
capabilities dropped, one in another user namespace), the paths a call may touch, and
views compared. Through the daemon and the real plugin: tests/test_daemon_process.py."""
import json
import socket
import subprocess
import sys

import pytest

from ipam import client, paths
from ipam.cni import decode_config
from ipam.daemon import caller

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
sys.stdin.read()  # until the test closes it
"""


def _peer(tmp_path, *prefix):
    """A connection from a child run under ``prefix`` (setpriv, unshare): (conn, pid, child)."""
    path = str(tmp_path / "peer.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    child = subprocess.Popen([*prefix, sys.executable, "-I", "-c", CONNECT, path],
                             stdin=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
    finally:
        listener.close()
    pid, _ = client.peer_cred(conn)
    return conn, pid, child


def _end(conn, child):
    conn.close()
    child.stdin.close()
    child.wait(30)


@pytest.mark.root
def test_a_peer_with_this_processs_powers_passes(tmp_path):
    conn, pid, child = _peer(tmp_path)
    try:
        caller.check_peer(conn, pid, caller.Powers())
    finally:
        _end(conn, child)


@pytest.mark.root
def test_a_root_peer_without_capabilities_is_declined(tmp_path):
    """root with an empty bounding set (setpriv --bounding-set=-all): uid 0, and none of
    the capabilities that let root write anywhere."""
    conn, pid, child = _peer(tmp_path, "setpriv", "--bounding-set=-all")
    try:
        with pytest.raises(caller.Declined) as e:
            caller.check_peer(conn, pid, caller.Powers())
    finally:
        _end(conn, child)
    why = e.value.args[0]
    assert why.startswith("the calling process %d lacks capabilities the node daemon has "
                          "(cap_chown, cap_dac_override, " % pid), why
    assert why.endswith("): through the daemon it could do what it cannot do itself")


@pytest.mark.root
def test_a_peer_in_another_user_namespace_is_declined(tmp_path):
    """Mapped to root, with every capability, but of a user namespace of its own (as
    rootless runtimes run their plugins)."""
    conn, pid, child = _peer(tmp_path, "unshare", "--user", "--map-root-user")
    try:
        assert client.peer_cred(conn)[1] == 0  # root, as the daemon sees it
        with pytest.raises(caller.Declined) as e:
            caller.check_peer(conn, pid, caller.Powers())
    finally:
        _end(conn, child)
    assert e.value.args == ("the calling process %d runs in another user namespace than "
                            "the node daemon" % pid,)


def test_a_peer_the_daemon_cannot_see_is_declined():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(caller.Declined, match="cannot see the calling process .* hostPID"):
            caller.check_peer(a, 0, caller.Powers())


def test_a_peer_that_cannot_be_read_is_declined():
    gone = subprocess.Popen(["true"])
    gone.wait(30)  # reaped: /proc has no such pid any more
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(caller.Declined,
                           match="cannot read the calling process %d" % gone.pid):
            caller.check_peer(a, gone.pid, caller.Powers())


def _decoded(conf):
    """The config as the plugin decodes it (keys lower-cased), as plan() takes it."""
    return decode_config(json.dumps(conf).encode())


def test_the_paths_a_call_may_touch(tmp_path):
    data = str(tmp_path / "data")
    conf = {"name": "n", "ipam": {"type": "host-local-sqlite", "subnet": "10.0.0.0/24",
                                  "dataDir": data, "resolvConf": "/etc/resolv.conf"}}
    found, bound = caller.plan({}, _decoded(conf))
    assert found == [data, paths.default_database(data), "/etc/resolv.conf"]
    assert bound == 63.0
    conf["ipam"].update(database=str(tmp_path / "db" / "leases.db"), lockWaitLimit=2)
    found, bound = caller.plan({}, _decoded(conf))
    assert found == [data, str(tmp_path / "db"), str(tmp_path / "db" / "leases.db"),
                     "/etc/resolv.conf"]
    assert bound == 5.0


def test_a_shared_pools_paths_are_its_data_dir_and_its_bound_allows_for_retries():
    conf = {"name": "n", "ipam": {"type": "host-local-sqlite", "subnet": "10.0.0.0/24",
                                  "dataDir": "/data", "database": "postgresql://h/db"}}
    found, bound = caller.plan({}, _decoded(conf))
    assert found == ["/data"] and 63 + 5 < bound < 63 + 8


def test_a_config_that_does_not_load_touches_nothing():
    assert caller.plan({}, {"name": "n", "ipam": {"subnet": "not a subnet"}}) == ([], 63.0)


def test_views_are_compared_path_by_path(tmp_path):
    here = str(tmp_path)
    caller.check_views([here], [client.view(here)])
    with pytest.raises(caller.Declined) as e:
        caller.check_views([here], [b"1:2:"])
    assert e.value.args[0].startswith(
        "the caller sees other files than the node daemon at %s (1:2: against %s)"
        % (here, client.view(here).decode()))
    with pytest.raises(caller.Declined, match="the caller sent 0 views for 1 paths"):
        caller.check_views([here], [])


def test_a_path_created_since_the_caller_looked_is_still_alike(tmp_path):
    """In a burst on a new dataDir, a caller's view names its nearest existing ancestor;
    another call creates the directory before the daemon looks: the same files."""
    data = tmp_path / "data" / "net"
    before = client.view(str(data))
    data.mkdir(parents=True)
    assert client.view(str(data)) != before
    caller.check_views([str(data)], [before])


def test_an_ancestor_that_is_another_object_is_not_alike(tmp_path):
    """The caller's nearest ancestor of a path not created yet is not the object at that
    path here: another file system mounted there, or another directory renamed over it."""
    (tmp_path / "a").mkdir()
    view = client.view(str(tmp_path / "a" / "data"))
    (tmp_path / "a").rename(tmp_path / "old")
    (tmp_path / "a").mkdir()
    assert not caller.seen_alike(str(tmp_path / "a" / "data"), view)
    assert not caller.seen_alike(str(tmp_path / "b" / "data"), view)  # rest elsewhere
    assert not caller.seen_alike(str(tmp_path / "a"), b"!13")
