"""ipamctl's lease commands (list, release, gc, stats, history, export, check) against
databases written by the plugin: in process through click's CliRunner, and at the end as
the installed console script against a database written by the installed plugin."""
import json
import os
import re
import sqlite3
import time
from datetime import datetime

import pytest
from helpers import (
    NO_ROOT,
    checked,
    events,
    held,
    ipamctl,
    iso_z,
    lease_rows,
    owners,
    run_plugin,
    sql,
)
from prometheus_client.parser import text_string_to_metric_families

from host_local_sqlite_cli.main import cli
from ipam import paths
from ipam.errors import IoFailure

SUBNET = {"subnet": "10.1.2.0/24"}
POD_KEYS = {"pod_namespace", "pod_name", "pod_uid"}
LEASE_KEYS = {"network", "ip", "container_id", "ifname", "range_set", "allocated_at", "node",
              *POD_KEYS, "kind", "note"}
EVENT_KEYS = {"time", "event", "reason", "network", "ip", "container_id", "ifname", "node",
              *POD_KEYS}
STATS_KEYS = {"network", "range_set", "range", "size", "used", "reserved", "free"}
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


# -- global options -------------------------------------------------------------------
def test_data_dir_option_and_environment(runner, add, data_dir):
    add("a")
    for args, env in (([f"--data-dir={data_dir}"], {}),
                      ([], {"IPAM_DATA_DIR": str(data_dir)})):
        result = checked(runner.invoke(cli, [*args, "-o", "json", "list"], env=env))
        assert result.exit_code == 0, result.output
        assert owners(json.loads(result.stdout)) == [("mynet", "10.1.2.2", "a", "eth0")]


def test_database_option_and_environment(runner, add, data_dir, tmp_path):
    db = tmp_path / "elsewhere" / "pool.db"
    add("a", ipam=dict(SUBNET, database=str(db)))
    assert not os.path.exists(paths.default_database(str(data_dir)))
    # Without --database: DATA_DIR/.host-local-sqlite.db, which does not exist.
    result = checked(runner.invoke(cli, ["--data-dir", str(data_dir), "list"]))
    assert result.exit_code == 1
    assert paths.default_database(str(data_dir)) in result.stderr
    for args, env in ((["--database", str(db)], {}),
                      ([], {"IPAM_DATABASE": str(db)}),
                      (["--database", str(db)], {"IPAM_DATABASE": str(tmp_path / "no.db")})):
        result = checked(runner.invoke(cli, ["--data-dir", str(data_dir), *args, "-o", "json",
                                             "list"], env=env))
        assert result.exit_code == 0, result.output
        assert owners(json.loads(result.stdout)) == [("mynet", "10.1.2.2", "a", "eth0")]


def test_database_given_as_a_url(runner, add, data_dir):
    add("a")
    url = "sqlite:///" + paths.default_database(str(data_dir))
    result = checked(runner.invoke(cli, ["--database", url, "-o", "json", "list"]))
    assert result.exit_code == 0, result.output
    assert owners(json.loads(result.stdout)) == [("mynet", "10.1.2.2", "a", "eth0")]


def test_defaults(runner, monkeypatch):
    opened = []

    def fake_open_store(database, readonly=False, **kw):
        opened.append((database, readonly))
        raise IoFailure("stop here")

    monkeypatch.setattr("host_local_sqlite_cli.common._open_store", fake_open_store)
    # No CNI config under IPAM_ROOT (the runner's: an empty tree) names a database, so a
    # command that changes things takes the default dataDir's, under that root...
    result = checked(runner.invoke(cli, ["release", "10.1.2.2", "--yes"]))
    assert result.exit_code == 1
    assert result.stderr == "Error: stop here\n"
    default = NO_ROOT + "/var/lib/cni/networks/.host-local-sqlite.db"
    assert opened == [(default, False)]
    # ...and one that reads says where it looked, opening nothing.
    result = checked(runner.invoke(cli, ["list"]))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no database found: no network config in /etc/cni/net.d, /opt/cni/config "
        "has an IPAM of type host-local-sqlite or host-local, and %s does not exist\n"
        % default)
    assert opened == [(default, False)]
    text = checked(runner.invoke(cli, ["--help"])).stdout
    for fragment in ("--data-dir PATH", "IPAM_DATA_DIR", "default: /var/lib/cni/networks",
                     "--database PATH_OR_URL", "IPAM_DATABASE", "-o, --output",
                     "default: table"):
        assert fragment in text, fragment


def test_default_output_is_a_table(ctl, add):
    add("a")
    lines = ctl("list").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "IP", "CONTAINER_ID", "IFNAME", "RANGE_SET",
                                "ALLOCATED_AT", "NODE", "POD"]
    assert lines[1].split()[:5] == ["mynet", "10.1.2.2", "a", "eth0", "0"]


@pytest.mark.parametrize("args", [
    ["list"], ["release", "10.1.2.2"], ["release", "--dry-run", "10.1.2.2"],
    ["gc", "--network", "mynet", "--valid", "a"], ["history"], ["export"], ["check"],
    ["check", "--repair"], ["db", "current"], ["db", "upgrade"],
])
def test_prometheus_output_is_only_for_stats(ctl, add, data_dir, args):
    add("a")
    before = (lease_rows(data_dir), events(data_dir))
    result = ctl("-o", "prometheus", *args, expect=2)
    assert "Usage:" in result.stderr
    assert "-o prometheus is only for 'ipamctl stats'" in result.stderr
    assert (lease_rows(data_dir), events(data_dir)) == before


def test_unknown_output_format_is_a_usage_error(ctl):
    result = ctl("-o", "yaml", "list", expect=2)
    assert "Usage:" in result.stderr


# -- list -----------------------------------------------------------------------------
def test_list_sorted_by_network_then_address_numerically(ctl, ctl_json, add):
    add("b10", network="beta", ip="10.1.2.10")
    add("b9", network="beta", ip="10.1.2.9")
    add("g10", network="gamma", ipam={"subnet": "2001:db8::/64"}, ip="2001:db8::10")
    add("g9", network="gamma", ipam={"subnet": "2001:db8::/64"}, ip="2001:db8::9")
    add("a100", network="alpha", ip="10.1.2.100")
    add("a10", network="alpha", ip="10.1.2.10")
    add("a9", network="alpha", ip="10.1.2.9")
    expected = [("alpha", "10.1.2.9"), ("alpha", "10.1.2.10"), ("alpha", "10.1.2.100"),
                ("beta", "10.1.2.9"), ("beta", "10.1.2.10"),
                ("gamma", "2001:db8::9"), ("gamma", "2001:db8::10")]
    assert [(r["network"], r["ip"]) for r in ctl_json("list")] == expected
    lines = ctl("list").stdout.splitlines()
    assert [tuple(line.split()[:2]) for line in lines[1:]] == expected


def test_list_json_shape(ctl_json, add):
    before = time.time()
    add("a")
    after = time.time()
    [row] = ctl_json("list")
    assert set(row) == LEASE_KEYS
    assert row == dict(row, network="mynet", ip="10.1.2.2", container_id="a", ifname="eth0",
                       range_set=0)
    assert ISO_Z.fullmatch(row["allocated_at"]), row["allocated_at"]
    ts = datetime.fromisoformat(row["allocated_at"].replace("Z", "+00:00")).timestamp()
    assert before - 0.001 <= ts <= after + 0.001


def test_list_filters(ctl, ctl_json, add):
    add("a1", network="alpha", ip="10.1.2.10")
    add("a2", network="alpha", ip="10.1.2.9")
    add("b1", network="beta", ip="10.1.2.9")
    add("b1", network="beta", ifname="eth1", ip="10.1.2.20")

    def pairs(*args):
        return [(r["network"], r["ip"]) for r in ctl_json("list", *args)]

    assert pairs("--network", "alpha") == [("alpha", "10.1.2.9"), ("alpha", "10.1.2.10")]
    assert pairs("--container", "b1") == [("beta", "10.1.2.9"), ("beta", "10.1.2.20")]
    assert pairs("--ip", "10.1.2.9") == [("alpha", "10.1.2.9"), ("beta", "10.1.2.9")]
    assert pairs("--network", "beta", "--ip", "10.1.2.9") == [("beta", "10.1.2.9")]
    assert pairs("--container", "a1", "--network", "beta") == []
    assert pairs("--network", "nosuch") == []
    result = ctl("list", "--network", "nosuch")  # nothing to parse; stderr says why
    assert (result.stdout, result.stderr) == ("", "warning: no network nosuch in the database "
                                                  "(known: alpha, beta)\n(no leases)\n")
    result = ctl("list", "--ip", "10.1.2", expect=2)
    assert "not an IP address" in result.stderr


# -- release --------------------------------------------------------------------------
def test_release_an_address_as_del_would(ctl_json, add, data_dir):
    add("a")
    add("b")
    mirror = data_dir / "mynet"
    assert (mirror / "10.1.2.2").exists()
    released = ctl_json("release", "10.1.2.2")
    assert owners(released) == [("mynet", "10.1.2.2", "a", "eth0")]
    assert all(set(r) == LEASE_KEYS for r in released)
    assert held(data_dir) == [("mynet", "10.1.2.3", "b", "eth0")]
    assert not (mirror / "10.1.2.2").exists()
    assert (mirror / "10.1.2.3").read_bytes() == b"b\r\neth0"
    assert events(data_dir)[-1] == ("release", "admin", "mynet", "10.1.2.2", "a", "eth0")


def test_release_several_addresses_and_table_output(ctl, add, data_dir):
    add("a")
    add("b")
    add("c")
    out = ctl("release", "10.1.2.2", "10.1.2.4").stdout
    assert out.splitlines()[0].split()[:2] == ["NETWORK", "IP"]
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["10.1.2.2", "10.1.2.4"]
    assert held(data_dir) == [("mynet", "10.1.2.3", "b", "eth0")]


def test_release_by_container_and_ifname(ctl_json, add, data_dir):
    add("a", ifname="eth0")
    add("a", ifname="eth1")
    add("a", network="other")
    add("b")
    assert owners(ctl_json("release", "--container", "a", "--ifname", "eth1")) == [
        ("mynet", "10.1.2.3", "a", "eth1")]
    assert owners(ctl_json("release", "--container", "a", "--network", "other")) == [
        ("other", "10.1.2.2", "a", "eth0")]
    add("a", network="other")
    assert owners(ctl_json("release", "--container", "a")) == [
        ("mynet", "10.1.2.2", "a", "eth0"), ("other", "10.1.2.3", "a", "eth0")]
    assert held(data_dir) == [("mynet", "10.1.2.4", "b", "eth0")]
    assert [e[1] for e in events(data_dir) if e[0] == "release"] == ["admin"] * 4
    assert not (data_dir / "mynet" / "10.1.2.3").exists()
    assert not (data_dir / "other" / "10.1.2.2").exists()


def test_release_of_an_address_not_leased_is_an_error(ctl, add, data_dir):
    add("a")
    before = (lease_rows(data_dir), events(data_dir))
    result = ctl("release", "10.1.2.2", "10.1.2.99", expect=1)
    assert result.stderr.startswith("Error: ")
    assert "10.1.2.99 is not leased" in result.stderr
    assert (lease_rows(data_dir), events(data_dir)) == before
    assert (data_dir / "mynet" / "10.1.2.2").exists()
    result = ctl("release", "10.1.2.2", "--network", "other", expect=1)
    # A network the database does not know: refused as such, before anything else.
    assert result.stderr == "Error: no network other in the database (known: mynet)\n"
    result = ctl("release", "--container", "a", "--network", "other", expect=1)
    assert result.stderr == "Error: no network other in the database (known: mynet)\n"
    assert (lease_rows(data_dir), events(data_dir)) == before
    add("b", network="other", ip="10.1.2.3")
    before = (lease_rows(data_dir), events(data_dir))
    result = ctl("release", "10.1.2.2", "--network", "other", expect=1)
    assert result.stderr.startswith("Error: 10.1.2.2 is not leased in network other")
    result = ctl("release", "--container", "nobody", expect=1)
    assert result.stderr.startswith("Error: no lease held by container nobody")
    assert (lease_rows(data_dir), events(data_dir)) == before


def test_release_of_an_address_leased_in_two_networks_needs_network(ctl, ctl_json, add,
                                                                     data_dir):
    add("a", network="one")
    add("b", network="two")
    before = lease_rows(data_dir)
    result = ctl("release", "10.1.2.2", expect=1)
    assert result.stderr.startswith("Error: 10.1.2.2 is leased in several networks (one, two)")
    assert "--network" in result.stderr
    assert lease_rows(data_dir) == before
    assert owners(ctl_json("release", "10.1.2.2", "--network", "two")) == [
        ("two", "10.1.2.2", "b", "eth0")]
    assert held(data_dir) == [("one", "10.1.2.2", "a", "eth0")]


def test_release_dry_run_changes_nothing(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    before = (lease_rows(data_dir), events(data_dir), sorted(os.listdir(data_dir / "mynet")))
    assert owners(ctl_json("release", "--dry-run", "10.1.2.3")) == [
        ("mynet", "10.1.2.3", "b", "eth0")]
    assert owners(ctl_json("release", "--dry-run", "--container", "a")) == [
        ("mynet", "10.1.2.2", "a", "eth0")]
    ctl("release", "--dry-run", "10.1.2.99", expect=1)
    assert (lease_rows(data_dir), events(data_dir),
            sorted(os.listdir(data_dir / "mynet"))) == before


def test_release_does_not_prompt_without_a_terminal(ctl, add, data_dir):
    add("a")
    result = ctl("release", "10.1.2.2", input="")
    assert "?" not in result.output
    assert held(data_dir) == []


def test_release_asks_on_a_terminal_unless_yes(ctl, add, data_dir, monkeypatch):
    monkeypatch.setattr("host_local_sqlite_cli.leases.is_terminal", lambda: True)
    add("a")
    add("b")
    result = ctl("release", "10.1.2.2", input="n\n", expect=1)
    assert "Release 1 lease(s)?" in result.output
    assert len(held(data_dir)) == 2
    result = ctl("release", "10.1.2.2", input="y\n")
    assert "Release 1 lease(s)?" in result.output
    assert held(data_dir) == [("mynet", "10.1.2.3", "b", "eth0")]
    result = ctl("release", "--yes", "10.1.2.3", input="")
    assert "?" not in result.output
    assert held(data_dir) == []


@pytest.mark.parametrize("args", [
    [], ["10.1.2.2", "--container", "a"], ["10.1.2.2", "--ifname", "eth0"], ["nonsense"],
])
def test_release_usage_errors(ctl, add, data_dir, args):
    add("a")
    result = ctl("release", *args, expect=2)
    assert "Usage:" in result.stderr
    assert len(held(data_dir)) == 1


# -- who holds a lease: whole IDs, marked starts, pod labels ---------------------------
# Runtime-sized IDs (64 hex characters): the first two share their first 12.
LONG_A = "3f2a9c01b2c4" + "0" * 52
LONG_B = "3f2a9c01b2c4" + "1" * 52


def column(out, name):
    """The cells of one column of a table ipamctl printed."""
    lines = out.splitlines()
    at = lines[0].index(name)
    return [line[at:].split("  ")[0].strip() for line in lines[1:]]


def test_a_whole_id_selects_only_itself_in_every_command(ctl, ctl_json, add, delete,
                                                          data_dir):
    """web is gone, web-2 lives: no command takes 'web' for web-2, and a destructive one
    takes 'web...' only where one container of the whole database starts so."""
    for cid in ("web", "web-2"):
        for ifname in ("eth0", "eth1"):
            add(cid, ifname=ifname)
    delete("web", ifname="eth0")
    delete("web", ifname="eth1")
    before = (held(data_dir), events(data_dir))
    live = [("mynet", "10.1.2.4", "web-2", "eth0"), ("mynet", "10.1.2.5", "web-2", "eth1")]
    assert held(data_dir) == live

    result = ctl("release", "--container", "web", "--yes", expect=1)
    assert result.stderr == "Error: no lease held by container web\n"
    result = ctl("release", "--container", "web", "--dry-run", expect=1)
    assert result.stderr == "Error: no lease held by container web\n"
    result = ctl("release", "--container", "web...", "--yes", expect=1)  # web and web-2
    assert result.stderr.splitlines() == [
        "Error: container ID prefix web... is ambiguous: 2 containers in the database "
        "match; give more characters", "  web", "  web-2"]
    result = ctl("gc", "--valid", "web...", "--grace", "0", "--apply", "--force", expect=1)
    assert result.stderr.startswith("Error: container ID prefix web... is ambiguous")
    assert (held(data_dir), events(data_dir)) == before

    # Reading: the whole ID 'web' is known (its history), so it is web alone.
    assert ctl_json("list", "--container", "web") == []
    result = ctl("list", "--container", "web")
    assert (result.stdout, result.stderr) == ("", "(no leases)\n")
    assert {r["container_id"] for r in ctl_json("history", "--container", "web")} == {"web"}
    assert owners(ctl_json("list", "--container", "web-2")) == live

    # gc: an ID lists only itself; a marked start the one container it fits.
    dry = ctl_json("gc", "--valid", "web", "--grace", "0")
    assert sorted(r["container_id"] for r in dry["candidates"]) == ["web-2", "web-2"]
    assert ctl_json("gc", "--valid", "web-...", "--grace", "0")["candidates"] == []
    assert ctl_json("gc", "--valid-file", "-", "--grace", "0",
                    input="web-.../eth0\nweb-.../eth1\n")["candidates"] == []

    assert owners(ctl_json("release", "--container", "web-...", "--yes")) == live
    assert held(data_dir) == []


def test_release_by_container_and_ifname_never_takes_another_container(ctl, ctl_json, add,
                                                                       data_dir):
    add("db")
    add("db-replica")
    add("db-replica", ifname="eth1")
    before = held(data_dir)
    result = ctl("release", "--container", "db", "--ifname", "eth1", "--yes", expect=1)
    assert result.stderr == "Error: no lease held by container db interface eth1\n"
    result = ctl("release", "--container", "db...", "--ifname", "eth1", "--yes", expect=1)
    assert "2 containers in the database match" in result.stderr
    # A start must fit one container in the whole database, not among what --ifname keeps.
    result = ctl("release", "--container", "db-r", "--ifname", "eth1", "--yes", expect=1)
    assert result.stderr.splitlines() == [
        "Error: no lease held by container db-r interface eth1",
        "  an ID is taken whole; to name the one container whose ID starts with db-r, "
        "write db-r... (IDs that start with it: db-replica)"]
    assert held(data_dir) == before
    assert owners(ctl_json("release", "--container", "db-r...", "--ifname", "eth1",
                           "--yes")) == [("mynet", "10.1.2.4", "db-replica", "eth1")]
    assert owners(ctl_json("release", "--container", "db", "--yes")) == [
        ("mynet", "10.1.2.2", "db", "eth0")]
    assert held(data_dir) == [("mynet", "10.1.2.3", "db-replica", "eth0")]


def test_a_table_shows_each_id_as_a_start_that_every_command_takes(ctl, ctl_json, add, delete,
                                                                   data_dir):
    """Copy an ID from any table: list and history find it, release and gc take it (the
    start is unique in the whole database, the history included)."""
    add(LONG_A)
    delete(LONG_A)  # known to the history only
    add(LONG_B)
    add("c")
    short_b, short_a = LONG_B[:13] + "...", LONG_A[:13] + "..."
    assert column(ctl("list").stdout, "CONTAINER_ID") == [short_b, "c"]
    assert column(ctl("history").stdout, "CONTAINER_ID") == [short_a, short_a, short_b, "c"]
    dry = ctl("gc", "--valid", "c", "--grace", "0").stdout
    assert column(dry.split("kept:")[0].split("guards:")[0].split("candidates:")[1].strip(),
                  "CONTAINER_ID") == [short_b]

    result = ctl("list", "--container", short_b)
    assert result.stderr == ("note: --container %s chose container %s: the start of its ID\n"
                             % (short_b, LONG_B))
    assert owners(ctl_json("list", "--container", short_b)) == [
        ("mynet", "10.1.2.3", LONG_B, "eth0")]
    assert [r["event"] for r in ctl_json("history", "--container", short_a)] == [
        "allocate", "release"]
    assert ctl_json("gc", "--valid", short_b, "--valid", "c", "--grace", "0")[
        "candidates"] == []
    # A's start names A, which holds nothing: B is never taken for it.
    result = ctl("release", "--container", short_a, "--yes", expect=1)
    assert result.stderr == "Error: no lease held by container %s\n" % LONG_A
    # 12 characters start both: a table never shows them, and release refuses them.
    result = ctl("release", "--container", LONG_B[:12] + "...", "--yes", expect=1)
    assert "2 containers in the database match" in result.stderr
    # An unmarked start is no ID to gc either: B is not listed.
    assert [r["container_id"] for r in ctl_json("gc", "--valid", LONG_B[:13], "--valid", "c",
                                                "--grace", "0")["candidates"]] == [LONG_B]

    released = ctl("release", "--container", short_b, "--yes").stdout
    assert column(released, "CONTAINER_ID") == [short_b]
    assert held(data_dir) == [("mynet", "10.1.2.4", "c", "eth0")]


def test_a_short_id_is_never_longer_than_the_whole(ctl, add):
    add("a" * 16)  # 12 characters and '...' are shorter
    add("b" * 15)  # printed whole
    add("c" * 15 + "1x")  # these two differ only in their last character: whole
    add("c" * 15 + "2x")
    assert column(ctl("list").stdout, "CONTAINER_ID") == [
        "a" * 12 + "...", "b" * 15, "c" * 15 + "1x", "c" * 15 + "2x"]


FORGED = "K8S_POD_NAME=kube-system/coredns"
REAL = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns"


def test_a_pod_name_holding_a_slash_never_reads_as_a_namespace(ctl, ctl_json, add):
    add("forged", args=FORGED)
    add("real", args=REAL)
    add("spaced", args='K8S_POD_NAMESPACE=my ns;K8S_POD_NAME="quoted"')
    add("dash", args="K8S_POD_NAME=-")
    add("none")
    pods = ['"kube-system/coredns"', "kube-system/coredns", '"my ns"/"\\"quoted\\""', '"-"',
            "-"]
    assert column(ctl("list").stdout, "POD") == pods
    assert column(ctl("history").stdout, "POD") == pods

    def ids(command, *args):
        return sorted({r["container_id"] for r in ctl_json(command, *args)})

    for command in ("list", "history"):
        # Each label as the column shows it selects that pod alone.
        assert ids(command, "--pod", "kube-system/coredns") == ["real"]
        assert ids(command, "--pod", '"kube-system/coredns"') == ["forged"]
        assert ids(command, "--pod", '"kube-system"/"coredns"') == ["real"]
        assert ids(command, "--pod", '"my ns"/"\\"quoted\\""') == ["spaced"]
        assert ids(command, "--pod", '"-"') == ["dash"]
        assert ids(command, "--name", "coredns") == ["real"]
        assert ids(command, "--name", '"kube-system/coredns"') == ["forged"]
    result = ctl("list", "--name", "kube-system/coredns", expect=2)
    assert "is not a NAME" in result.stderr
    # The pods an ambiguity error names are quoted alike.
    add("ab1", args=FORGED)
    add("ab2", args=REAL)
    result = ctl("list", "--container", "ab", expect=1)
    assert result.stderr.splitlines()[1:] == ['  ab1  ("kube-system/coredns")',
                                              "  ab2  (kube-system/coredns)"]


# gc: tests/test_gc.py


# -- stats ----------------------------------------------------------------------------
SMALL = {"subnet": "10.1.2.0/29", "exclude": ["10.1.2.3"]}  # .2 .4 .5 .6: size 4
DUAL = {"ranges": [[{"subnet": "10.3.0.0/24"}], [{"subnet": "2001:db8::/120"}]]}


@pytest.fixture
def pools(add):
    add("a", network="small", ipam=SMALL)
    add("b", network="small", ipam=SMALL)
    add("c", network="dual", ipam=DUAL)


def test_stats_json(ctl_json, pools):
    rows = ctl_json("stats")
    assert all(set(r) == STATS_KEYS for r in rows)
    assert rows == [
        {"network": "dual", "range_set": 0, "range": "10.3.0.1-10.3.0.254", "size": 253,
         "used": 1, "reserved": 0, "free": 252},
        {"network": "dual", "range_set": 1, "range": "2001:db8::1-2001:db8::ff", "size": 254,
         "used": 1, "reserved": 0, "free": 253},
        {"network": "small", "range_set": 0, "range": "10.1.2.1-10.1.2.6", "size": 4,
         "used": 2, "reserved": 0, "free": 2},
    ]
    assert ctl_json("stats", "--network", "small") == rows[2:]
    assert ctl_json("stats", "--network", "nosuch") == []


def test_stats_table_has_a_utilization_bar(ctl, pools):
    lines = ctl("stats", "--network", "small").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "RANGE_SET", "RANGE", "SIZE", "USED", "RESERVED",
                                "FREE", "UTILIZATION"]
    assert lines[1].split()[:7] == ["small", "0", "10.1.2.1-10.1.2.6", "4", "2", "0", "2"]
    assert lines[1].endswith("[##########..........]  50.0%")
    result = ctl("stats", "--network", "nosuch")
    assert (result.stdout, result.stderr) == ("", "warning: no network nosuch in the database "
                                                  "(known: dual, small)\n(no networks)\n")


def test_stats_prometheus(ctl, pools):
    text = ctl("-o", "prometheus", "stats").stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {"host_local_sqlite_range_size", "host_local_sqlite_range_used",
                             "host_local_sqlite_range_reserved",
                             "host_local_sqlite_range_free"}
    values = {}
    for family in families.values():
        assert family.type == "gauge"
        assert family.documentation
        for s in family.samples:
            assert {"network", "range_set"} <= set(s.labels)
            values[(s.name.rsplit("_", 1)[1], s.labels["network"], s.labels["range_set"])] = \
                s.value
    assert values == {
        ("size", "small", "0"): 4, ("used", "small", "0"): 2, ("free", "small", "0"): 2,
        ("size", "dual", "0"): 253, ("used", "dual", "0"): 1, ("free", "dual", "0"): 252,
        ("size", "dual", "1"): 254, ("used", "dual", "1"): 1, ("free", "dual", "1"): 253,
        ("reserved", "small", "0"): 0, ("reserved", "dual", "0"): 0,
        ("reserved", "dual", "1"): 0,
    }


def test_stats_prometheus_is_stats_own_option(ctl, pools):
    """--prometheus says it where only stats can use it; -o prometheus, the older
    spelling, prints the very same bytes, with nothing on stderr (a scraping script's
    timer would mail or log a note at every run: the deprecation is in the help)."""
    text = ctl("-o", "prometheus", "stats")
    for args in (["stats", "--prometheus"], ["stats", "--prometheus", "-o", "table"],
                 ["stats", "-o", "prometheus"], ["-o", "prometheus", "stats",
                                                 "--prometheus"]):
        result = ctl(*args)
        assert (result.stdout, result.stderr) == (text.stdout, ""), args
    assert "host_local_sqlite_range_used" in text.stdout
    result = ctl("stats", "--prometheus", "-o", "json", expect=2)
    assert "--prometheus is an output format: not with -o json" in result.stderr
    assert result.stdout == ""
    help_text = " ".join(ctl("stats", "--help").stdout.split())  # as wrapped
    assert "--prometheus" in help_text and "deprecated, use --prometheus" in help_text
    assert "-o, --output [table|json|prometheus]" in help_text


def test_stats_of_a_network_without_recorded_ranges(ctl, ctl_json, pools, data_dir):
    sql(data_dir, "DELETE FROM networks WHERE network = 'small'")
    rows = ctl_json("stats", "--network", "small")
    assert rows == [{"network": "small", "range_set": None, "range": None, "size": None,
                     "used": 2, "reserved": 0, "free": None}]
    assert ctl("stats", "--network", "small").stdout.splitlines()[1].split() == [
        "small", "-", "-", "-", "2", "0", "-"]
    text = ctl("-o", "prometheus", "stats").stdout
    networks = {s.labels["network"] for f in text_string_to_metric_families(text)
                for s in f.samples}
    assert networks == {"dual"}


# -- history --------------------------------------------------------------------------
def test_history_json_events_and_reasons(ctl, ctl_json, add, delete, data_dir):
    before = time.time()
    for cid in ("a", "b", "c", "d"):
        add(cid)
    delete("a")
    ctl("release", "10.1.2.3")
    ctl("gc", "--network", "mynet", "--valid", "d", "--grace", "0", "--apply")
    rows = ctl_json("history")
    assert all(set(r) == EVENT_KEYS for r in rows)
    assert [(r["event"], r["reason"], r["ip"], r["container_id"]) for r in rows] == [
        ("allocate", "add", "10.1.2.2", "a"), ("allocate", "add", "10.1.2.3", "b"),
        ("allocate", "add", "10.1.2.4", "c"), ("allocate", "add", "10.1.2.5", "d"),
        ("release", "del", "10.1.2.2", "a"), ("release", "admin", "10.1.2.3", "b"),
        ("release", "gc", "10.1.2.4", "c")]
    assert {(r["network"], r["ifname"]) for r in rows} == {("mynet", "eth0")}
    times = [r["time"] for r in rows]
    assert all(ISO_Z.fullmatch(t) for t in times)
    assert times == sorted(times)
    first = datetime.fromisoformat(times[0].replace("Z", "+00:00")).timestamp()
    assert before - 0.001 <= first <= time.time()
    assert [r["ip"] for r in ctl_json("history", "--container", "b")] == ["10.1.2.3"] * 2
    assert [r["container_id"] for r in ctl_json("history", "--ip", "10.1.2.5")] == ["d"]
    assert ctl_json("history", "--network", "other") == []
    lines = ctl("history", "--container", "b").stdout.splitlines()
    assert lines[0].split() == ["TIME", "EVENT", "REASON", "NETWORK", "IP", "CONTAINER_ID",
                                "IFNAME", "NODE", "POD"]
    assert [line.split()[1:3] for line in lines[1:]] == [["allocate", "add"],
                                                        ["release", "admin"]]


@pytest.fixture
def reused(add, delete, data_dir):
    """10.1.2.50 held by a from 3h ago to 2h ago, then by b from 1h ago. Returns now."""
    add("a", ip="10.1.2.50")
    delete("a")
    add("b", ip="10.1.2.50")
    assert add("c") == ["10.1.2.51"]  # another address, allocated now
    now = time.time()
    ids = [r[0] for r in sql(data_dir, "SELECT id FROM history WHERE ip = '10.1.2.50' "
                                       "ORDER BY id")]
    assert len(ids) == 3
    for row_id, ago in zip(ids, (3 * 3600, 2 * 3600, 3600), strict=True):
        sql(data_dir, "UPDATE history SET time = ? WHERE id = ?", (now - ago, row_id))
    return now


def holder(ctl_json, at, ip="10.1.2.50"):
    rows = ctl_json("history", "--ip", ip, "--at", at)
    assert all(r["event"] == "allocate" for r in rows)
    return [r["container_id"] for r in rows]


def test_history_at_answers_who_held_an_address(ctl_json, reused):
    now = reused
    assert holder(ctl_json, iso_z(now - 4 * 3600)) == []
    assert holder(ctl_json, iso_z(now - 150 * 60)) == ["a"]
    assert holder(ctl_json, iso_z(now - 90 * 60)) == []
    assert holder(ctl_json, iso_z(now - 30 * 60)) == ["b"]
    assert holder(ctl_json, "now") == ["b"]
    # Durations ago.
    assert holder(ctl_json, "4h") == []
    assert holder(ctl_json, "150m") == ["a"]
    assert holder(ctl_json, "2h30m") == ["a"]
    assert holder(ctl_json, "90m") == []
    assert holder(ctl_json, "30m") == ["b"]
    # Without --ip: every allocation in force then.
    rows = ctl_json("history", "--at", "now")
    assert [(r["ip"], r["container_id"]) for r in rows] == [("10.1.2.50", "b"),
                                                            ("10.1.2.51", "c")]


@pytest.fixture
def local_zone():
    """A local time zone 5h30 ahead of UTC, so that reading local time as UTC is wrong."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_history_at_naive_time_is_local_time(ctl_json, reused, local_zone):
    now = reused
    local = datetime.fromtimestamp(now - 150 * 60)  # naive, this zone's wall clock
    assert local.utcoffset() is None
    assert holder(ctl_json, local.strftime("%Y-%m-%dT%H:%M:%S")) == ["a"]
    assert holder(ctl_json, local.strftime("%Y-%m-%d %H:%M:%S")) == ["a"]
    # The same wall clock read as UTC would be 5h30 later: b's time.
    assert holder(ctl_json, local.strftime("%Y-%m-%dT%H:%M:%SZ")) == ["b"]
    assert holder(ctl_json, datetime.fromtimestamp(now - 90 * 60).isoformat()) == []


def test_history_since(ctl_json, reused):
    now = reused

    def since(text):
        return [(r["event"], r["container_id"])
                for r in ctl_json("history", "--ip", "10.1.2.50", "--since", text)]

    assert since("4h") == [("allocate", "a"), ("release", "a"), ("allocate", "b")]
    assert since("150m") == [("release", "a"), ("allocate", "b")]
    assert since(iso_z(now - 90 * 60)) == [("allocate", "b")]
    assert since(datetime.fromtimestamp(now - 90 * 60).isoformat()) == [("allocate", "b")]
    assert since("now") == []
    rows = ctl_json("history", "--since", "90m")
    assert [(r["ip"], r["container_id"]) for r in rows] == [("10.1.2.50", "b"),
                                                            ("10.1.2.51", "c")]


@pytest.mark.parametrize("args", [["--at", "yesterday"], ["--since", "12 o'clock"],
                                  ["--at", "2026-13-01T00:00:00Z"], ["--ip", "10.1.2"]])
def test_history_bad_arguments_are_usage_errors(ctl, add, args):
    add("a")
    result = ctl("history", *args, expect=2)
    assert "Usage:" in result.stderr


# -- export ---------------------------------------------------------------------------
def damage(net):
    """Break a mirror holding a (10.1.2.2), b (10.1.2.3) in every way that is ours to
    mend; returns the expected diffs. (Files naming other owners are someone else's:
    see test_admin.py and test_foreign_writers.py.)"""
    (net / "10.1.2.2").unlink()
    (net / "10.1.2.3").write_bytes(b"b\neth0")  # the same owner, an older spelling
    (net / ".host-local-sqlite.tmp.10.1.2.77.1.1").write_bytes(b"gone\r\neth0")
    (net / "last_reserved_ip.5").write_bytes(b"10.1.2.9")
    (net / "notes.txt").write_text("keep me")
    (net / "10.1.2").write_text("not an address, keep me")
    (net / "keep.d").mkdir()
    return {("missing", "10.1.2.2"), ("wrong", "10.1.2.3"),
            ("temporary", ".host-local-sqlite.tmp.10.1.2.77.1.1"),
            ("stale", "last_reserved_ip.5")}


def assert_mirrored(net, with_foreign=True):
    names = {"lock", "last_reserved_ip.0", "10.1.2.2", "10.1.2.3"}
    if with_foreign:
        names |= {"notes.txt", "10.1.2", "keep.d"}
    assert set(os.listdir(net)) == names
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert (net / "10.1.2.3").read_bytes() == b"b\r\neth0"
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.2.3"
    if with_foreign:
        assert (net / "notes.txt").read_text() == "keep me"
        assert (net / "10.1.2").read_text() == "not an address, keep me"


def test_export_fixes_the_mirror(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    net = data_dir / "mynet"
    expected = damage(net)
    before = lease_rows(data_dir)
    answer = ctl_json("export")
    assert set(answer) == {"mynet"}
    assert {tuple(d) for d in answer["mynet"]} == expected
    assert_mirrored(net)
    assert lease_rows(data_dir) == before
    assert ctl("export").stdout == "mynet: up to date\n"
    (net / "10.1.2.3").unlink()
    assert ctl("export").stdout == "mynet: 1 file(s) fixed\n    missing   10.1.2.3\n"
    assert_mirrored(net)


def test_export_shows_progress_on_a_terminal(ctl, ctl_json, add, data_dir, monkeypatch):
    monkeypatch.setattr("host_local_sqlite_cli.output.is_terminal", lambda: True)
    add("a")
    add("b")
    (data_dir / "mynet" / "10.1.2.2").unlink()
    result = ctl("export")
    assert result.stdout == "mynet: 1 file(s) fixed\n    missing   10.1.2.2\n"
    assert "exporting" in result.stderr
    assert (data_dir / "mynet" / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert ctl_json("export") == {"mynet": []}


def test_export_one_network(ctl_json, add, data_dir):
    add("a", network="one")
    add("a", network="two")
    (data_dir / "one" / "10.1.2.2").unlink()
    (data_dir / "two" / "10.1.2.2").unlink()
    assert ctl_json("export", "--network", "two") == {"two": [["missing", "10.1.2.2"]]}
    assert (data_dir / "two" / "10.1.2.2").exists()
    assert not (data_dir / "one" / "10.1.2.2").exists()


def test_export_to_another_directory(ctl_json, add, data_dir, tmp_path):
    add("a")
    add("b")
    net = data_dir / "mynet"
    damage(net)
    before = {name: (net / name).read_bytes() for name in os.listdir(net)
              if (net / name).is_file()}
    copy = tmp_path / "copy"
    answer = ctl_json("export", "--to", str(copy))
    assert {tuple(d) for d in answer["mynet"]} == {
        ("missing", "10.1.2.2"), ("missing", "10.1.2.3"), ("missing", "last_reserved_ip.0")}
    assert_mirrored(copy / "mynet", with_foreign=False)
    assert {name: (net / name).read_bytes() for name in os.listdir(net)
            if (net / name).is_file()} == before


# -- check ----------------------------------------------------------------------------
def test_check_clean(ctl, ctl_json, add):
    add("a")
    add("b")
    assert ctl("check").stdout == "ok\n"
    assert ctl_json("check") == {"ok": True, "problems": [], "findings": []}


def test_check_reports_and_repairs_the_mirror(ctl, ctl_json, add, data_dir):
    add("a")
    add("b")
    net = data_dir / "mynet"
    damage(net)
    before = (lease_rows(data_dir), events(data_dir))
    result = ctl("check", expect=1)
    lines = result.stdout.splitlines()
    assert set(lines[:-1]) == {f"{net}/10.1.2.2: missing", f"{net}/10.1.2.3: wrong",
                               f"{net}/.host-local-sqlite.tmp.10.1.2.77.1.1: temporary",
                               f"{net}/last_reserved_ip.5: stale"}
    assert lines[-1] == "4 problem(s)"
    answer = ctl_json("check", expect=1)
    assert answer["ok"] is False and set(answer["problems"]) == set(lines[:-1])
    assert not (net / "10.1.2.2").exists()  # check alone changes nothing

    answer = ctl_json("check", "--repair")
    assert answer["ok"] is True
    assert set(answer["problems"]) == {p + " (repaired)" for p in lines[:-1]}
    assert_mirrored(net)
    assert (lease_rows(data_dir), events(data_dir)) == before  # never the database
    assert ctl("check").stdout == "ok\n"

    (net / "10.1.2.2").unlink()
    result = ctl("check", "--repair")
    assert result.stdout == f"{net}/10.1.2.2: missing (repaired)\n1 problem(s), repaired\n"
    assert ctl_json("check") == {"ok": True, "problems": [], "findings": []}
    assert (lease_rows(data_dir), events(data_dir)) == before


def test_check_does_not_create_a_missing_mirror_directory(ctl, add, data_dir):
    add("a")
    net = data_dir / "mynet"
    for name in os.listdir(net):
        (net / name).unlink()
    net.rmdir()
    result = ctl("check", expect=1)
    assert "mynet" in result.stdout
    assert not net.exists()
    ctl("check", "--repair")
    assert (net / "10.1.2.2").read_bytes() == b"a\r\neth0"
    assert ctl("check").stdout == "ok\n"


def test_check_reports_database_integrity(ctl, add, data_dir):
    add("a")
    add("b")
    # An index whose declared columns no longer match its entries.
    conn = sqlite3.connect(paths.default_database(str(data_dir)))
    try:
        conn.execute("PRAGMA writable_schema=ON")
        with conn:
            conn.execute("UPDATE sqlite_master SET sql = replace(sql, "
                         "'(network, container_id, ifname)', '(network, ifname, container_id)')"
                         " WHERE name = 'ix_leases_owner'")
    finally:
        conn.close()
    result = ctl("check", expect=1)
    assert "database integrity: " in result.stdout
    result = ctl("check", "--repair", expect=1)  # the database is never repaired
    assert "database integrity: " in result.stdout


@pytest.mark.parametrize("revision", ["0001", "9999"])
def test_check_reports_a_schema_revision_other_than_head(ctl, add, data_dir, revision):
    add("a")
    sql(data_dir, "UPDATE alembic_version SET version_num = ?", (revision,))
    result = ctl("check", expect=1)
    assert result.stderr.startswith("Error: ")
    assert revision in result.stderr


# -- read-only commands and errors ----------------------------------------------------
READ_ONLY = [
    ["list"], ["stats"], ["history"], ["check"], ["db", "current"],
    ["gc", "--network", "mynet", "--valid", "a"], ["release", "--dry-run", "10.1.2.2"],
    ["-o", "json", "list"], ["-o", "prometheus", "stats"],
    ["history", "--ip", "10.1.2.2", "--at", "now"],
]


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_never_create_a_database(runner, tmp_path, args):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    for options in (["--data-dir", str(empty)], ["--data-dir", str(missing)],
                    ["--data-dir", str(empty), "--database", str(missing / "sub" / "x.db")]):
        result = checked(runner.invoke(cli, [*options, *args]))
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: database "), result.stderr
        assert "does not exist" in result.stderr
        assert result.stdout == ""
        assert os.listdir(empty) == []
        assert not missing.exists()


def test_errors_are_one_line_without_traceback(ctl, tmp_path, runner):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    for args in (["list"], ["stats"], ["history"], ["check"], ["release", "10.1.2.2"],
                 ["gc", "--network", "n", "--valid", "a", "--apply"], ["export"]):
        result = checked(runner.invoke(cli, ["--database", str(garbage), *args]))
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("Error: "), (args, result.stderr)
        assert "not a SQLite database" in result.stderr, (args, result.stderr)
    assert garbage.read_bytes() == b"not a database" * 100


def test_version(runner):
    result = checked(runner.invoke(cli, ["--version"]))
    assert result.exit_code == 0
    assert re.fullmatch(r"ipamctl, version \d+\.\d+\.\d+\S*\n", result.stdout)


# -- the installed ipamctl against the installed plugin --------------------------------


def test_installed_ipamctl_on_a_plugin_database(data_dir, netconf):
    conf = netconf(SUBNET)
    for cid in ("a", "b", "c"):
        assert run_plugin("ADD", conf, container_id=cid).status == 0

    def js(*args, **kw):
        return json.loads(ipamctl("-o", "json", *args, data_dir=data_dir, **kw).stdout)

    assert owners(js("list")) == [("mynet", "10.1.2.2", "a", "eth0"),
                                  ("mynet", "10.1.2.3", "b", "eth0"),
                                  ("mynet", "10.1.2.4", "c", "eth0")]
    assert js("stats") == [{"network": "mynet", "range_set": 0,
                            "range": "10.1.2.1-10.1.2.254", "size": 253, "used": 3,
                            "reserved": 0, "free": 250}]
    text = ipamctl("-o", "prometheus", "stats", data_dir=data_dir).stdout
    used = [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "host_local_sqlite_range_used"]
    assert [(s.labels["network"], s.labels["range_set"], s.value) for s in used] == [
        ("mynet", "0", 3)]
    assert [(r["event"], r["reason"], r["container_id"]) for r in js("history")] == [
        ("allocate", "add", "a"), ("allocate", "add", "b"), ("allocate", "add", "c")]
    assert js("check") == {"ok": True, "problems": [], "findings": []}

    assert owners(js("release", "10.1.2.2")) == [("mynet", "10.1.2.2", "a", "eth0")]
    assert not (data_dir / "mynet" / "10.1.2.2").exists()
    answer = js("gc", "--network", "mynet", "--valid-file", "-", "--grace", "0", "--apply",
                input="b\n")
    assert owners(answer["released"]) == [("mynet", "10.1.2.4", "c", "eth0")]
    assert owners(js("list")) == [("mynet", "10.1.2.3", "b", "eth0")]
    assert [(r["event"], r["reason"], r["container_id"]) for r in js("history")][3:] == [
        ("release", "admin", "a"), ("release", "gc", "c")]
    assert js("check") == {"ok": True, "problems": [], "findings": []}

    # The plugin still agrees: b's lease is checked, and the next ADD takes the cursor on.
    assert run_plugin("CHECK", conf, container_id="b").status == 0
    assert run_plugin("ADD", conf, container_id="d").json["ips"][0]["address"] == "10.1.2.5/24"

    (data_dir / "mynet" / "10.1.2.3").unlink()
    answer = js("check", expect=1)
    assert answer == {"ok": False, "problems": [f"{data_dir}/mynet/10.1.2.3: missing"],
                      "findings": [{"network": "mynet", "ip": "10.1.2.3",
                                    "path": f"{data_dir}/mynet/10.1.2.3", "kind": "missing",
                                    "repair": "create", "repaired": False,
                                    "message": f"{data_dir}/mynet/10.1.2.3: missing"}]}
    assert js("check", "--repair")["ok"] is True
    assert (data_dir / "mynet" / "10.1.2.3").read_bytes() == b"b\r\neth0"


def test_installed_ipamctl_errors_and_version(tmp_path):
    missing = tmp_path / "missing"
    proc = ipamctl("list", data_dir=missing, expect=1)
    assert proc.stderr.startswith(f"Error: database {missing}/.host-local-sqlite.db ")
    assert not missing.exists()
    proc = ipamctl("-o", "prometheus", "list", data_dir=missing, expect=2)
    assert "Usage: ipamctl list" in proc.stderr
    proc = ipamctl("--version", data_dir=missing)
    assert proc.stdout.startswith("ipamctl, version ")
    proc = ipamctl("gc", "--help", data_dir=missing)
    assert "Example:" in proc.stdout
