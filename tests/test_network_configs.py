"""Where the leases are: the runtimes' CNI network configs (ipam.admin.network_configs), and
ipamctl without --data-dir or --database, as an operator meets it.

Every tree here is a test's own (``root``, given to ipamctl as IPAM_ROOT): the configs
name paths as a node sees them (/etc/cni/net.d, /srv/b), the plugin is given the same
paths under ``root`` (a node's disk mounted there), so nothing reads the host's own
/etc/cni, and nothing installed on the host changes an answer.
"""
import json
import os
import types

import pytest
from helpers import ipamctl, owners, run_inprocess

from ipam import paths
from ipam.admin import network_configs
from ipam.admin.network_configs import NotChosen

PG = "postgresql://ipam:s3cret@127.0.0.1:1/ipam"  # port 1: no server answers


def write(root, path, data):
    """``data`` (JSON, or text) at ``path`` under ``root``."""
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(data if isinstance(data, str) else json.dumps(data))
    return where


def conflist(name, ipam):
    """A runtime's network: a bridge whose ipam is ``ipam``, then portmap (no ipam)."""
    return {"cniVersion": "1.0.0", "name": name,
            "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": ipam},
                        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def ours(subnet, **keys):
    return {"type": "host-local-sqlite", "subnet": subnet, **keys}


def add(root, name, ipam, container):
    """An ADD by the plugin, given the network's config with its paths under ``root``."""
    ipam = dict(ipam, dataDir=str(root / ipam.get("dataDir", "/var/lib/cni/networks")
                                  .lstrip("/")))
    out = run_inprocess("ADD", {"cniVersion": "1.0.0", "name": name, "type": "bridge",
                                "ipam": ipam}, container_id=container)
    assert out.status == 0, out.out
    return out.json["ips"][0]["address"].split("/")[0]


def db_of(root, data_dir="/var/lib/cni/networks"):
    return str(root / data_dir.lstrip("/") / paths.DB_NAME)


# -- the library --------------------------------------------------------------------------
def test_each_runtime_names_its_network_config_directories(tmp_path):
    assert network_configs.conf_dirs(str(tmp_path), {}, rootless=False) == [
        "/etc/cni/net.d", "/opt/cni/config"]  # podman, containerd, CRI-O; Nomad
    assert network_configs.conf_dirs(str(tmp_path), {"HOME": "/home/alice"},
                                     rootless=True) == [
        "/home/alice/.config/cni/net.d", "/etc/cni/net.d", "/opt/cni/config"]
    write(tmp_path, "/etc/containers/containers.conf",
          '[network]\nnetwork_config_dir = "/etc/podman/net.d"\n')
    write(tmp_path, "/etc/containerd/config.toml",
          'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
          'bin_dir = "/opt/cni/bin"\nconf_dir = "/etc/k8s/net.d"\n')
    write(tmp_path, "/etc/crio/crio.conf.d/10-net.conf",
          '[crio.network]\nnetwork_dir = "/etc/crio/net.d"\n')
    write(tmp_path, "/etc/nomad.d/client.hcl",
          'client {\n  cni_config_dir = "/etc/nomad/cni"\n}\n')
    assert network_configs.conf_dirs(str(tmp_path), {}, rootless=False) == [
        "/etc/podman/net.d", "/etc/k8s/net.d", "/etc/crio/net.d", "/etc/nomad/cni"]
    # containerd 2 (config version 3) keeps its cni table under another plugin's name.
    write(tmp_path, "/etc/containerd/config.toml",
          'version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\n'
          'conf_dir = "/etc/cd2/net.d"\n')
    assert "/etc/cd2/net.d" in network_configs.conf_dirs(str(tmp_path), {}, rootless=False)


def test_finds_our_networks_in_every_kind_of_config_file(tmp_path):
    root = tmp_path
    d = "/etc/cni/net.d"
    write(root, d + "/10-a.conflist", conflist("a", ours("10.1.0.0/24")))
    write(root, d + "/15-a2.conflist", conflist("a2", ours("10.1.1.0/24")))  # same database
    # A single plugin's config; keys in any case, as Go (and the plugin) reads them.
    write(root, d + "/20-b.conf", {"cniVersion": "0.4.0", "Name": "b", "type": "bridge",
                                   "IPAM": {"Type": "host-local-sqlite",
                                            "DataDir": "/srv/b", "subnet": "10.2.0.0/24"}})
    write(root, d + "/30-c.json", conflist("c", ours("10.3.0.0/24", database="/srv/c/pool.db")))
    write(root, d + "/40-go.conflist", conflist("go", {"type": "host-local",
                                                       "subnet": "10.4.0.0/24"}))
    # The drop-in (install-plugin --name host-local): ours where our database is.
    write(root, d + "/50-dropin.conflist", conflist("dropin", {
        "type": "host-local", "subnet": "10.5.0.0/24", "dataDir": "/srv/d"}))
    write(root, "/srv/d/.host-local-sqlite.db", "")
    write(root, d + "/60-pg.conflist", conflist("pg", ours("10.6.0.0/24", database=PG)))
    write(root, d + "/70-dhcp.conflist", conflist("dhcp", {"type": "dhcp"}))
    write(root, d + "/80-x.conf.bak", conflist("bak", ours("10.8.0.0/24")))
    write(root, d + "/README", "not a config")
    write(root, d + "/90-broken.conflist", "{not json")
    write(root, "/opt/cni/config/nomad.conflist",
          conflist("n", ours("10.9.0.0/24", dataDir="/srv/n")))

    found = network_configs.find(str(root), {}, rootless=False)
    got = {(db.label, db.exists): sorted((n.name, n.config) for n in db.networks)
           for db in found.databases}
    assert got == {
        (db_of(root), False): [("a", d + "/10-a.conflist"), ("a2", d + "/15-a2.conflist")],
        (db_of(root, "/srv/b"), False): [("b", d + "/20-b.conf")],
        (str(root / "srv/c/pool.db"), False): [("c", d + "/30-c.json")],
        (db_of(root, "/srv/d"), True): [("dropin", d + "/50-dropin.conflist")],
        ("postgresql://ipam:***@127.0.0.1:1/ipam", True): [("pg", d + "/60-pg.conflist")],
        (db_of(root, "/srv/n"), False): [("n", "/opt/cni/config/nomad.conflist")],
    }
    pg = next(db for db in found.databases if db.label.startswith("postgresql"))
    assert pg.database == PG  # opened with its password, shown without
    assert [n.data_dir for n in pg.networks] == [str(root / "var/lib/cni/networks")]
    assert len(found.errors) == 1 and found.errors[0].startswith(
        "cannot read %s/90-broken.conflist: " % d)


def test_the_default_database_counts_when_no_config_names_it(tmp_path):
    write(tmp_path, "/var/lib/cni/networks/.host-local-sqlite.db", "")
    found = network_configs.find(str(tmp_path), {}, rootless=False)
    assert [(db.database, db.default, db.networks) for db in found.databases] == [
        (db_of(tmp_path), True, [])]
    assert found.where() == ("leases were found in: %s (the default dataDir's; no config "
                             "names it)" % db_of(tmp_path))


def test_choosing_the_one_database_to_change(tmp_path):
    write(tmp_path, "/etc/cni/net.d/a.conflist", conflist("a", ours("10.1.0.0/24")))
    write(tmp_path, "/etc/cni/net.d/b.conflist",
          conflist("b", ours("10.2.0.0/24", dataDir="/srv/b")))
    found = network_configs.find(str(tmp_path), {}, rootless=False)
    # Neither exists yet: two candidates, so a network must say which.
    with pytest.raises(NotChosen, match=r"2 databases were found here: .*\(networks a\); "
                                        r".*\(networks b\); name one with --data-dir"):
        network_configs.choose(found, [])
    assert network_configs.choose(found, ["b"]).database == db_of(tmp_path, "/srv/b")
    assert network_configs.choose(found, ["b"]).data_dir == str(tmp_path / "srv/b")
    # Only one exists: that one, with no network named.
    write(tmp_path, "/srv/b/.host-local-sqlite.db", "")
    found = network_configs.find(str(tmp_path), {}, rootless=False)
    assert network_configs.choose(found, []).database == db_of(tmp_path, "/srv/b")
    # A network no config names (removed): the database that holds it, if one does.
    with pytest.raises(NotChosen, match="network gone is in no database found here"):
        network_configs.choose(found, ["gone"], lambda db, name: False)
    assert network_configs.choose(found, ["gone"], lambda db, name: True).database == \
        db_of(tmp_path, "/srv/b")
    assert network_configs.choose(
        network_configs.find(str(tmp_path / "empty"), {}, rootless=False), []) is None


# -- ipamctl, installed, as an operator runs it --------------------------------------------
@pytest.fixture
def two(tmp_path):
    """A node whose configs put network a in the default dataDir and b in /srv/b, each
    with one lease; ``two.b_ip``."""
    root = tmp_path / "node"
    a, b = ours("10.1.2.0/24"), ours("10.9.0.0/24", dataDir="/srv/b")
    write(root, "/etc/cni/net.d/10-a.conflist", conflist("a", a))
    write(root, "/opt/cni/config/b.conflist", conflist("b", b))  # Nomad's
    add(root, "a", a, "ca")
    return types.SimpleNamespace(root=root, b_ip=add(root, "b", b, "cb"))


def test_read_only_commands_read_every_database_found(two):
    root = two.root
    rows = json.loads(ipamctl("-o", "json", "list", root=root).stdout)
    assert [(r["network"], r["container_id"], r["database"]) for r in rows] == [
        ("a", "ca", db_of(root)), ("b", "cb", db_of(root, "/srv/b"))]
    table = ipamctl("list", root=root).stdout.splitlines()
    assert table[0].split()[-1] == "DATABASE"
    assert [line.split()[-1] for line in table[1:]] == [db_of(root), db_of(root, "/srv/b")]
    stats = json.loads(ipamctl("-o", "json", "stats", root=root).stdout)
    assert [(r["network"], r["used"], r["database"]) for r in stats] == [
        ("a", 1, db_of(root)), ("b", 1, db_of(root, "/srv/b"))]
    history = json.loads(ipamctl("-o", "json", "history", root=root).stdout)
    assert [(r["network"], r["event"], r["database"]) for r in history] == [
        ("a", "allocate", db_of(root)), ("b", "allocate", db_of(root, "/srv/b"))]
    nets = json.loads(ipamctl("-o", "json", "network", "list", root=root).stdout)
    assert [(r["network"], r["data_dir"], r["database"]) for r in nets] == [
        ("a", str(root / "var/lib/cni/networks"), db_of(root)),
        ("b", str(root / "srv/b"), db_of(root, "/srv/b"))]
    # Named, the database is the one read, and the output is as it always was.
    rows = json.loads(ipamctl("-o", "json", "list", data_dir=root / "srv/b", root=root).stdout)
    assert owners(rows) == [("b", two.b_ip, "cb", "eth0")] and "database" not in rows[0]


def test_a_database_named_after_the_command_is_the_one_read(two):
    """--data-dir (or --database) after the command names the database as before it:
    the configs are not read, and the output has no DATABASE column."""
    root = two.root
    rows = json.loads(ipamctl("list", "-o", "json", "--data-dir", str(root / "srv/b"),
                              root=root).stdout)
    assert owners(rows) == [("b", two.b_ip, "cb", "eth0")] and "database" not in rows[0]
    table = ipamctl("stats", "--database", db_of(root), root=root).stdout.splitlines()
    assert "DATABASE" not in table[0] and [line.split()[0] for line in table[1:]] == ["a"]


def test_a_database_that_cannot_be_read_is_left_out_with_a_warning(two):
    root = two.root
    b = db_of(root, "/srv/b")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(b + suffix):
            os.unlink(b + suffix)
    with open(b, "wb") as f:
        f.write(b"not a database" * 100)
    write(root, "/etc/cni/net.d/20-pg.conflist", conflist("pg", ours("10.6.0.0/24",
                                                                     database=PG)))
    proc = ipamctl("-o", "json", "list", root=root)
    assert [(r["network"], r["database"]) for r in json.loads(proc.stdout)] == [
        ("a", db_of(root))]
    pg, sqlite = proc.stderr.splitlines()  # in the order of the configs
    assert pg.startswith("warning: cannot read postgresql://ipam:***@127.0.0.1:1/ipam: ")
    assert sqlite.startswith("warning: ") and b in sqlite
    assert pg.endswith("; left out") and sqlite.endswith("; left out")
    assert "s3cret" not in proc.stderr
    # None readable: an error naming each.
    os.unlink(db_of(root))
    os.unlink(root / "etc/cni/net.d/10-a.conflist")
    proc = ipamctl("list", root=root, expect=1)
    assert proc.stderr.startswith("Error: ") and b in proc.stderr and "***" in proc.stderr


def test_a_change_needs_one_database_or_a_network_that_names_one(two):
    root = two.root
    proc = ipamctl("release", two.b_ip, "--yes", root=root, expect=1)
    assert proc.stderr == (
        "Error: 2 databases were found here: %s (networks a); %s (networks b); name one "
        "with --data-dir or --database, or a network with --network\n"
        % (db_of(root), db_of(root, "/srv/b")))
    # A command that takes no --network is told only of the options that name one.
    proc = ipamctl("db", "upgrade", root=root, expect=1)
    assert proc.stderr.startswith("Error: 2 databases were found here: ")
    assert proc.stderr.endswith("; name one with --data-dir or --database\n")
    # check takes --network: the network names the database checked.
    assert json.loads(ipamctl("-o", "json", "check", "--network", "b", root=root).stdout
                      )["ok"] is True
    mirror = root / "srv/b/b" / two.b_ip
    assert mirror.exists()
    released = json.loads(ipamctl("-o", "json", "release", two.b_ip, "--network", "b",
                                  "--yes", root=root).stdout)
    assert owners(released) == [("b", two.b_ip, "cb", "eth0")]
    assert not mirror.exists()  # in b's own dataDir
    # A network whose config is gone is found in the database that holds it (here the
    # default dataDir's, which is read whether a config names it or not).
    os.unlink(root / "etc/cni/net.d/10-a.conflist")
    forgot = json.loads(ipamctl("-o", "json", "network", "forget", "a", "--release", "--yes",
                                root=root).stdout)
    assert forgot["forgotten"] is True and owners(forgot["released"]) == [
        ("a", "10.1.2.2", "ca", "eth0")]
    assert json.loads(ipamctl("-o", "json", "network", "list",
                              data_dir=root / "var/lib/cni/networks").stdout) == []
    proc = ipamctl("release", "10.1.2.2", "--network", "nowhere", root=root, expect=1)
    assert proc.stderr.startswith("Error: network nowhere is in no database found here")


def test_a_missing_database_says_where_the_leases_are(two, tmp_path):
    root = two.root
    missing = tmp_path / "typo"
    proc = ipamctl("list", data_dir=missing, root=root, expect=1)
    assert proc.stderr == (
        "Error: database %s/.host-local-sqlite.db does not exist; leases were found in: "
        "%s (networks a); %s (networks b)\n" % (missing, db_of(root), db_of(root, "/srv/b")))
    assert not missing.exists()


def test_the_first_hour_one_network_elsewhere_needs_no_option(tmp_path):
    """The operator's first commands on a node whose only network keeps its leases out of
    the default dataDir: nothing to name, reading or changing."""
    root = tmp_path / "node"
    ipam = ours("10.7.0.0/24", dataDir="/srv/ipam")
    write(root, "/etc/cni/net.d/10-pods.conflist", conflist("pods", ipam))
    ip = add(root, "pods", ipam, "c1")
    assert owners(json.loads(ipamctl("-o", "json", "list", root=root).stdout)) == [
        ("pods", ip, "c1", "eth0")]
    assert json.loads(ipamctl("-o", "json", "db", "current", root=root).stdout)[
        "database"] == db_of(root, "/srv/ipam")
    ipamctl("release", ip, "--yes", root=root)
    assert json.loads(ipamctl("-o", "json", "list", root=root).stdout) == []
    assert not (root / "srv/ipam/pods" / ip).exists()
