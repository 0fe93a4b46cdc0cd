"""Config loading, as host-local's LoadIPAMConfig does it and its tests pin it
(containernetworking/plugins, plugins/ipam/host-local/backend/allocator/config.go and
config_test.go; CNI_ARGS pairs as containernetworking/cni's pkg/types/args.go parses
them; the keys are the CNI spec's, Section 1: Network configuration format)."""
import ipaddress
import json

import pytest

from ipam.cni import decode_config
from ipam.config import load, parse_cni_args, recorded_pod, version_tuple
from ipam.errors import ConfigError, EnvError

ip = ipaddress.ip_address


def conf(ipam, version="0.3.1", **top):
    c = {"cniVersion": version, "name": "mynet", "type": "ipvlan", "master": "foo0",
         "ipam": dict({"type": "host-local"}, **ipam)}
    c.update(top)
    return decode_config(json.dumps(c).encode())


def sets(cfg):
    return [[(str(r.subnet), str(r.start), str(r.end), str(r.gateway)) for r in rs]
            for rs in cfg.range_sets]


def test_old_style():
    cfg = load(conf({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9",
                     "rangeEnd": "10.1.2.20", "gateway": "10.1.2.30"}))
    assert cfg.cni_version == "0.3.1" and cfg.name == "mynet"
    assert sets(cfg) == [[("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")]]
    assert cfg.data_dir == "/var/lib/cni/networks"
    assert cfg.database == "/var/lib/cni/networks/.host-local-sqlite.db"
    assert cfg.export is True


def test_new_style():
    cfg = load(conf({"ranges": [
        [{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.20",
          "gateway": "10.1.2.30"}, {"subnet": "10.1.4.0/24"}],
        [{"subnet": "11.1.2.0/24", "rangeStart": "11.1.2.9", "rangeEnd": "11.1.2.20",
          "gateway": "11.1.2.30"}]]}))
    assert sets(cfg) == [
        [("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30"),
         ("10.1.4.0/24", "10.1.4.1", "10.1.4.254", "10.1.4.1")],
        [("11.1.2.0/24", "11.1.2.9", "11.1.2.20", "11.1.2.30")]]


def test_mixed_order_runtime_then_legacy_then_ranges():
    cfg = load(conf({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.20",
                     "gateway": "10.1.2.30",
                     "ranges": [[{"subnet": "11.1.2.0/24", "rangeStart": "11.1.2.9",
                                  "rangeEnd": "11.1.2.20", "gateway": "11.1.2.30"}]]},
                    runtimeConfig={"irrelevant": "a",
                                   "ipRanges": [[{"subnet": "12.1.3.0/24"}]]}))
    assert sets(cfg) == [[("12.1.3.0/24", "12.1.3.1", "12.1.3.254", "12.1.3.1")],
                         [("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")],
                         [("11.1.2.0/24", "11.1.2.9", "11.1.2.20", "11.1.2.30")]]


def test_legacy_fields_without_subnet_are_ignored():
    cfg = load(conf({"rangeStart": "10.9.9.9", "ranges": [[{"subnet": "10.1.2.0/24"}]]}))
    assert sets(cfg) == [[("10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1")]]


@pytest.mark.parametrize("args,expected", [
    ("IP=10.1.2.10", "10.1.2.10"), ("IP=10.1.2.11/24", "10.1.2.11"), ("IP=", None),
    ("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.2.3", "10.1.2.3"),
    ("IgnoreUnknown=True;IP=::ffff:10.1.2.9", "10.1.2.9"), ("", None)])
def test_cni_args(args, expected):
    got = parse_cni_args(args)[0]
    assert (str(got) if got else None) == expected


@pytest.mark.parametrize("args,msg", [
    ("IP", 'ARGS: invalid pair "IP"'),
    ("K8S_POD_NAME=x=y", 'ARGS: invalid pair "K8S_POD_NAME=x=y"'),
    ("IP=10.1.2.3;", 'ARGS: invalid pair ""'),
    ("K8S_POD_NAME=foo", 'ARGS: unknown args ["K8S_POD_NAME=foo"]'),
    ("a=1;b=2", 'ARGS: unknown args ["a=1" "b=2"]'),
    ("ip=10.1.2.17", 'ARGS: unknown args ["ip=10.1.2.17"]'),
    ("IgnoreUnknown=yes", 'ARGS: error parsing value of pair "IgnoreUnknown=yes": boolean '
                          'unmarshal error: invalid input yes'),
    ("IP=10.1.2", 'ARGS: error parsing value of pair "IP=10.1.2": invalid IP address 10.1.2'),
])
def test_cni_args_errors(args, msg):
    with pytest.raises(EnvError) as e:
        parse_cni_args(args)
    assert e.value.msg == msg and e.value.code == 4


@pytest.mark.parametrize("args,pod", [
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
     "K8S_POD_INFRA_CONTAINER_ID=3f2a;K8S_POD_UID=6d1c-96a4", ("default", "web-0", "6d1c-96a4")),
    ("IgnoreUnknown=1;K8S_POD_NAME=nginx", (None, "nginx", None)),  # podman 4.x
    ("IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_NAME=b", (None, "b", None)),  # the last wins
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=;K8S_POD_NAME=x", (None, "x", None)),
    ("IgnoreUnknown=1;K8S_POD_NAME=;IP=10.1.2.3", None),
    ("IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=3f2a", None),
    ("IgnoreUnknown=1;k8s_pod_name=x", None),  # keys are case-sensitive
    ("IgnoreUnknown=1;K8S_POD_NAME=" + "n" * 1024, (None, "n" * 1024, None)),
    ("IgnoreUnknown=1;K8S_POD_NAME=caf\u00e9", (None, "caf\u00e9", None)),
    ("IP=10.1.2.3", None), ("", None)])
def test_cni_args_pod_identity(args, pod):
    assert parse_cni_args(args)[1] == pod
    assert load(conf({"subnet": "10.1.2.0/24"}), args).pod == pod


def test_unknown_pod_keys_without_ignore_unknown_are_host_locals_error():
    with pytest.raises(EnvError) as e:
        parse_cni_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
    assert e.value.msg == ('ARGS: unknown args ["K8S_POD_NAMESPACE=default" '
                           '"K8S_POD_NAME=web-0"]') and e.value.code == 4


@pytest.mark.parametrize("args,pod,warning", [
    ("IgnoreUnknown=1;K8S_POD_NAME=" + "n" * 1025, None,
     "CNI_ARGS K8S_POD_NAME not recorded: 1025 characters long; at most 1024 are recorded"),
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_UID=a\x01b", ("ns", None, None),
     'CNI_ARGS K8S_POD_UID not recorded: unprintable characters: "a\\x01b"'),
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=a\nb;K8S_POD_NAME=web-0", (None, "web-0", None),
     'CNI_ARGS K8S_POD_NAMESPACE not recorded: unprintable characters: "a\\nb"'),
    ("IgnoreUnknown=1;K8S_POD_NAME=\udcff", None,
     "CNI_ARGS K8S_POD_NAME not recorded: not valid UTF-8"),
])
def test_a_pod_value_no_runtime_sends_is_left_out_with_a_warning(args, pod, warning):
    """host-local ignores these keys: a value we cannot keep costs its record, never the
    container's start."""
    said = []
    assert recorded_pod(parse_cni_args(args)[1], said.append) == pod
    assert said == [warning]


def test_only_what_add_records_is_checked():
    """DEL, CHECK and GC ignore the identity, as host-local does: load keeps it as sent."""
    args = "IgnoreUnknown=1;K8S_POD_NAME=" + "n" * 2000
    assert load(conf({"subnet": "10.1.2.0/24"}), args).pod == (None, "n" * 2000, None)
    assert recorded_pod((None, "web-0", None), print) == (None, "web-0", None)
    assert recorded_pod(None, print) is None


def test_requested_ips_merge_in_order_and_dedupe():
    for suffix in ("", "/24"):
        cfg = load(conf({"subnet": "10.1.2.0/24"},
                        args={"cni": {"ips": ["10.1.2.11" + suffix, "11.11.11.11" + suffix,
                                              "2001:db8:1::11" + ("/64" if suffix else "")]}}),
                   "IP=10.1.2.10" + suffix)
        assert [str(i) for i in cfg.requested] == ["10.1.2.10", "10.1.2.11", "11.11.11.11",
                                                   "2001:db8:1::11"]
    cfg = load(conf({"subnet": "10.1.2.0/24"}, args={"cni": {"ips": ["10.1.2.10"]}},
                    runtimeConfig={"ips": ["192.168.0.1", "192.168.0.5/24", "2001:db8::1/64",
                                           "10.1.2.10"]}), "IP=10.1.2.10")
    assert [str(i) for i in cfg.requested] == ["10.1.2.10", "192.168.0.1", "192.168.0.5",
                                               "2001:db8::1"]


@pytest.mark.parametrize("ipam,top,msg", [
    ({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
                 [{"subnet": "10.1.4.0/24"}, {"subnet": "10.1.6.0/24"}, {"subnet": "10.1.8.0/24"},
                  {"subnet": "10.1.2.0/24"}]]}, {}, "range set 0 overlaps with 1"),
    ({"ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "10.1.2.0/24"}]]}, {},
     "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"),
    ({"ranges": [[{"subnet": "10.1.0.0/22"}, {"subnet": "2001:db8:5::/64"}]]}, {},
     "invalid range set 0: mixed address families"),
    ({"subnet": "10.1.2.0/24", "ranges": [[{"subnet": "10.1.2.0/24"}]]}, {},
     "range set 0 overlaps with 1"),
    ({"ranges": [[]]}, {}, "invalid range set 0: empty range set"),
    ({"ranges": []}, {}, "no IP ranges specified"),
    ({}, {}, "no IP ranges specified"),
    ({"ranges": [[{"rangeStart": "10.1.2.3"}]]}, {}, "invalid range set 0: IP <nil> not v4 nor v6"),
    ({"subnet": "10.1.2"}, {}, "invalid CIDR address: 10.1.2"),
    ({"subnet": "10.1.2.0/255.255.255.0"}, {}, "invalid CIDR address: 10.1.2.0/255.255.255.0"),
    ({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2"}, {}, "invalid IP address: 10.1.2"),
    ({"subnet": "10.1.2.0/24", "gateway": "fe80::1%eth0"}, {}, "invalid IP address: fe80::1%eth0"),
    ({"subnet": "10.1.2.0/24"}, {"args": {"cni": {"ips": ["bogus"]}}}, "invalid IP address bogus"),
    ({"subnet": "10.1.2.0/24"}, {"args": {"cni": {"ips": ["10.1.2.10/33"]}}},
     "invalid IP address 10.1.2.10/33"),
    ({"subnet": "10.1.2.0/24"}, {"runtimeConfig": {"ips": [""]}},
     "cannot understand ip: IP <nil> not v4 nor v6"),
    ({"subnet": "10.1.2.0/24", "routes": [{"dst": "10.0.0.0"}]}, {},
     "invalid CIDR address: 10.0.0.0"),
    ({"subnet": "10.1.2.0/24", "exclude": ["nonsense"]}, {},
     "invalid exclude entry 'nonsense': not an IP address or CIDR"),
])
def test_validation_messages(ipam, top, msg):
    with pytest.raises(ConfigError) as e:
        load(conf(ipam, **top))
    assert e.value.msg == msg and e.value.code == 7


def test_missing_ipam():
    c = decode_config(b'{"cniVersion": "0.3.1", "name": "n"}')
    with pytest.raises(ConfigError, match="IPAM config missing 'ipam' key"):
        load(c)


@pytest.mark.parametrize("version,ok", [("0.1.0", False), ("0.2.0", False), ("", False),
                                        ("0.3.0", True), ("1.1.0", True)])
def test_one_address_per_family_before_030(version, ok):
    c = conf({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]}, version)
    if ok:
        assert len(load(c).range_sets) == 2
    else:
        with pytest.raises(ConfigError) as e:
            load(c)
        assert e.value.msg == "CNI version %s does not support more than 1 address per family" \
            % version
    dual = conf({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/48"}]]},
                version)
    assert len(load(dual).range_sets) == 2


def test_keys_are_case_insensitive_and_last_duplicate_wins():
    c = decode_config(b'{"cniVersion":"0.3.1","NAME":"n","IPAM":{"SUBNET":"10.9.0.0/24",'
                      b'"Subnet":"10.1.2.0/24","DataDir":"/tmp/x"}}')
    cfg = load(c)
    assert sets(cfg)[0][0][0] == "10.1.2.0/24" and cfg.data_dir == "/tmp/x"


def test_null_and_empty_mean_unset():
    cfg = load(conf({"subnet": "10.1.2.0/24", "gateway": None, "rangeStart": "",
                     "rangeEnd": None}))
    assert sets(cfg) == [[("10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1")]]


def test_routes_keep_host_bits_and_compress_v6():
    cfg = load(conf({"subnet": "10.1.2.0/24", "routes": [
        {"dst": "10.0.0.5/8"}, {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"},
        {"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400}]}))
    assert cfg.routes == [{"dst": "10.0.0.5/8", "version": 4},
                          {"dst": "2001:db8:2::/64", "version": 6, "gw": "2001:db8:3::1"},
                          {"dst": "0.0.0.0/0", "version": 4, "gw": "10.1.2.1", "mtu": 1400}]


def test_exclusions_per_range_and_global():
    cfg = load(conf({"exclude": ["10.1.2.100/30", "2001:db8::5"], "ranges": [
        [{"subnet": "10.1.2.0/24", "exclude": ["10.1.2.7"]}], [{"subnet": "2001:db8::/64"}]]}))
    v4, v6 = cfg.range_sets[0][0], cfg.range_sets[1][0]
    assert v4.excluded(ip("10.1.2.7")) and v4.excluded(ip("10.1.2.101"))
    assert not v4.excluded(ip("10.1.2.8"))
    assert v6.excluded(ip("2001:db8::5")) and not v6.excluded(ip("2001:db8::6"))


@pytest.mark.parametrize("ipam", [
    {"subnet": 5}, {"subnet": "10.1.2.0/24", "routes": {}}, {"ranges": {"a": 1}},
    {"ranges": [{"subnet": "10.1.2.0/24"}]}, {"subnet": "10.1.2.0/24", "dataDir": ["x"]},
    {"subnet": "10.1.2.0/24", "export": "yes"}, {"subnet": "10.1.2.0/24", "busyTimeout": -1},
])
def test_wrong_types_are_config_errors(ipam):
    with pytest.raises(ConfigError):
        load(conf(ipam))


def test_version_tuple():
    assert version_tuple("") == (0, 1, 0)
    assert version_tuple("1.1") == (1, 1, 0)
    with pytest.raises(ValueError):
        version_tuple("abc")


@pytest.mark.parametrize("daemon", ["/run/other/daemon.sock", "relative.sock", True, False, None])
def test_ipam_daemon_accepts_a_path_true_false_or_nothing(daemon):
    load(conf({"subnet": "10.1.2.0/24", "daemon": daemon}))


@pytest.mark.parametrize("daemon", ["", 5, 0, [], {}, ["/run/x.sock"]])
def test_ipam_daemon_of_another_kind_is_a_config_error(daemon):
    with pytest.raises(ConfigError) as e:
        load(conf({"subnet": "10.1.2.0/24", "Daemon": daemon}))
    assert e.value.code == 7 and e.value.msg == (
        "invalid config: ipam.daemon must be the node daemon's socket path, true (the "
        "default socket) or false (never)")
