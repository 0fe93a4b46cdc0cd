"""ipamctl for big pools and long histories: list --sort/--no-headers, address filters
that take a subnet, history --limit/--reverse, and history --follow as a real process
that an operator stops with Ctrl-C (SIGINT) or by closing the pipe (SIGPIPE)."""
import json
import os
import queue
import select
import signal
import subprocess
import threading

import pytest
from helpers import IPAMCTL, events, held, run_inprocess, sql

SUBNET = {"subnet": "10.1.2.0/24"}
V6 = {"subnet": "fd00:1::/64"}


@pytest.fixture
def leases(add, data_dir):
    """Four leases in two networks, made in this order: c (alpha), a (beta), b (alpha),
    d (beta, eth1); their ages set so that c is the oldest."""
    add("c", network="alpha", ip="10.1.2.30")
    add("a", network="beta", ip="10.1.2.5")
    add("b", network="alpha", ip="10.1.2.4", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=z")
    add("d", network="beta", ifname="eth1", ip="10.1.3.7", ipam={"subnet": "10.1.3.0/24"})
    for age, cid in enumerate(("d", "b", "a", "c")):
        sql(data_dir, "UPDATE leases SET allocated_at = 1000000 - %d WHERE container_id = '%s'"
            % (age * 60, cid))


def test_list_sort(ctl_json, leases):
    def order(*args):
        return [r["container_id"] for r in ctl_json("list", *args)]

    assert order() == order("--sort", "network") == ["b", "c", "a", "d"]
    assert order("--sort", "ip") == ["b", "a", "c", "d"]  # numerically, whatever network
    assert order("--sort", "container") == ["a", "b", "c", "d"]
    assert order("--sort", "ifname") == ["b", "c", "a", "d"]
    assert order("--sort", "created") == ["c", "a", "b", "d"]  # the oldest first
    assert order("--sort", "age") == ["d", "b", "a", "c"]  # the youngest first
    assert order("--sort", "pod") == ["c", "a", "d", "b"]
    assert order("--sort", "node") == ["b", "c", "a", "d"]


def test_list_sort_refuses_an_unknown_field(ctl, leases):
    result = ctl("list", "--sort", "mac", expect=2)
    assert "'mac' is not one of" in result.stderr


def test_list_no_headers(ctl, leases):
    with_headers = ctl("list", "--sort", "ip").stdout.splitlines()
    without = ctl("list", "--sort", "ip", "--no-headers").stdout.splitlines()
    assert with_headers[0].split()[:3] == ["NETWORK", "IP", "CONTAINER_ID"]
    assert [line.split()[1] for line in without] == [
        "10.1.2.4", "10.1.2.5", "10.1.2.30", "10.1.3.7"]
    assert with_headers[1:] == without


def test_an_address_filter_takes_a_subnet(ctl, ctl_json, leases, add, delete, data_dir):
    add("v6", network="six", ipam=V6)
    delete("a", network="beta", ipam={"subnet": "10.1.2.0/24"})

    def ips(*args):
        return [r["ip"] for r in ctl_json(*args)]

    assert ips("list", "--ip", "10.1.2.0/24") == ["10.1.2.4", "10.1.2.30"]
    assert ips("list", "--ip", "10.1.2.0/30") == []
    assert ips("list", "--ip", "10.1.2.4/30", "--sort", "ip") == ["10.1.2.4"]  # host bits
    assert ips("list", "--ip", "10.0.0.0/8", "--sort", "ip") == [
        "10.1.2.4", "10.1.2.30", "10.1.3.7"]
    assert ips("list", "--ip", "fd00:1::/64") == ["fd00:1::2"]
    assert ips("list", "--ip", "0.0.0.0/0", "--network", "beta") == ["10.1.3.7"]
    assert ips("list", "--ip", "10.1.2.4") == ["10.1.2.4"]  # an address, as before
    # history: every event of the subnet's addresses, released ones too.
    assert ips("history", "--ip", "10.1.2.0/24") == [
        "10.1.2.30", "10.1.2.5", "10.1.2.4", "10.1.2.5"]
    assert ips("history", "--ip", "fd00:1::/48") == ["fd00:1::2"]
    assert ips("history", "--ip", "10.1.2.0/24", "--at", "now") == ["10.1.2.4", "10.1.2.30"]
    for bad in ("10.1.2.0/33", "10.1.2.0/", "nonsense/8", "::ffff:10.1.2.0/120"):
        result = ctl("list", "--ip", bad, expect=2)
        assert "is not an IP address or a subnet" in result.stderr, bad


def test_release_refuses_a_subnet(ctl, leases, data_dir):
    before = (held(data_dir), events(data_dir))
    for args in (["10.1.2.0/24"], ["10.1.2.4", "10.1.2.0/24", "--yes"]):
        result = ctl("release", *args, expect=2)
        assert "'10.1.2.0/24' is a subnet: give addresses (list them with 'ipamctl list " \
               "--ip 10.1.2.0/24')" in result.stderr
    assert (held(data_dir), events(data_dir)) == before


def test_history_limit_and_reverse(ctl, ctl_json, leases, delete):
    delete("c", network="alpha")

    def seen(*args):
        return [(e["event"][0], e["container_id"]) for e in ctl_json("history", *args)]

    everything = [("a", "c"), ("a", "a"), ("a", "b"), ("a", "d"), ("r", "c")]
    assert seen() == everything
    assert seen("--limit", "2") == everything[-2:]  # the newest, as tail -n
    assert seen("--reverse") == everything[::-1]
    assert seen("--reverse", "--limit", "2") == [("r", "c"), ("a", "d")]
    assert seen("--limit", "0") == []
    assert seen("--limit", "9") == everything
    assert seen("--network", "alpha", "--limit", "1") == [("r", "c")]
    assert "x>=0" in ctl("history", "--limit", "-1", expect=2).stderr
    for args in (["--follow", "--at", "now"], ["--follow", "--reverse"]):
        assert "--follow prints events as they come" in ctl("history", *args,
                                                            expect=2).stderr


class Follower:
    """``ipamctl history --follow`` as an operator runs it in a terminal or a pipe."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([IPAMCTL, "history", "--follow", *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buffer = b""

    def line(self, timeout=30.0):
        """The next line it prints: waits for it, at most ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, "no line from history --follow within %gs" % timeout
            chunk = os.read(fd, 65536)
            assert chunk, "history --follow ended: %r" % self.proc.stderr.read()
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def event(self):
        e = json.loads(self.line())
        return e["event"], e["container_id"], e["network"]

    def end(self, timeout=30.0):
        """Its exit status and stderr, once it has ended (at most ``timeout`` seconds)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, err.decode()


def _follow_and_interrupt(env, conf, other):
    """An operator's follow: the last event first, then those that land, filtered."""
    assert run_inprocess("ADD", conf, container_id="first").status == 0
    f = Follower(env, "-o", "json", "--limit", "1", "--network", "mynet")
    try:
        assert f.event() == ("allocate", "first", "mynet")
        assert run_inprocess("ADD", other, container_id="elsewhere").status == 0
        assert run_inprocess("ADD", conf, container_id="second").status == 0
        assert f.event() == ("allocate", "second", "mynet")  # not the other network's
        assert run_inprocess("DEL", conf, container_id="first").status == 0
        assert f.event() == ("release", "first", "mynet")
        f.proc.send_signal(signal.SIGINT)
        status, err = f.end()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()
    assert (status, err) == (0, "")


def test_history_follow_prints_events_as_they_land_until_sigint(netconf, data_dir):
    env = {"PATH": os.environ["PATH"], "IPAM_DATA_DIR": str(data_dir)}
    _follow_and_interrupt(env, netconf(SUBNET), netconf(SUBNET, name="other"))


def test_history_follow_on_postgresql(pg_url, tmp_path):
    def conf(name):
        return {"cniVersion": "1.0.0", "name": name, "type": "bridge",
                "ipam": {"type": "host-local-sqlite", "subnet": "10.1.2.0/24",
                         "database": pg_url, "dataDir": str(tmp_path / "d"), "node": "n1"}}

    env = {"PATH": os.environ["PATH"], "IPAM_DATABASE": pg_url,
           "IPAM_DATA_DIR": str(tmp_path / "d")}
    _follow_and_interrupt(env, conf("mynet"), conf("other"))


def test_history_follow_ends_quietly_when_the_pipe_closes(netconf, data_dir):
    conf = netconf(SUBNET)
    assert run_inprocess("ADD", conf, container_id="a").status == 0
    env = {"PATH": os.environ["PATH"], "IPAM_DATA_DIR": str(data_dir)}
    f = Follower(env, "--limit", "1")
    try:
        header = f.line()
        assert header.split()[:2] == ["TIME", "EVENT"]
        assert f.line().split()[1:3] == ["allocate", "add"]
        f.proc.stdout.close()  # as 'head -2' exits
        assert run_inprocess("ADD", conf, container_id="b").status == 0
        _, err = f.proc.communicate(timeout=30)
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()
    assert (f.proc.returncode, err.decode()) == (0, "")


def _next_within(iterator, timeout=30.0):
    """``next(iterator)``, waited for at most ``timeout`` seconds (in a daemon thread: a
    follow that never yields must fail the test, not hang it)."""
    answer = queue.Queue()
    threading.Thread(target=lambda: answer.put(next(iterator)), daemon=True).start()
    try:
        return answer.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("follow gave nothing within %gs" % timeout) from None


def test_follow_on_postgresql_gives_an_event_committed_after_a_later_id(pg_url, tmp_path):
    """A sequence hands ids out at INSERT: a's transaction takes the smaller id and
    commits after b's. The follower has given b's event meanwhile, and still gives a's."""
    from ipam import addr
    from ipam.admin import leases as admin
    from ipam.lease import Lease
    from ipam.store.postgres import PostgresStore

    a = PostgresStore(pg_url, node="a", lock_path=str(tmp_path / "a.lock"))
    b = PostgresStore(pg_url, node="b", lock_path=str(tmp_path / "b.lock"))
    reader = PostgresStore(pg_url, scope=None, readonly=True)
    with a.transaction():
        after = a.last_event_id()
    follower = admin.follow(reader, poll=0.01, after=after)
    try:
        with a.transaction():
            a.reserve(Lease("net-a", addr.parse_ip("10.1.2.2"), 0, "early", "eth0"), "add")
            with b.transaction():
                b.reserve(Lease("net-b", addr.parse_ip("10.1.2.2"), 0, "late", "eth0"), "add")
            assert [e.container_id for e in _next_within(follower)] == ["late"]
        assert [e.container_id for e in _next_within(follower)] == ["early"]
    finally:
        for store in (a, b, reader):
            store.close()
