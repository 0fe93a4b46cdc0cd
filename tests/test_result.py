"""Result rendering per cniVersion, byte for byte as host-local 1.1.1 prints it."""
import ipaddress
import json

import pytest

from ipam.errors import IpamError
from ipam.result import error_output, go_json, render, version_output

ip = ipaddress.ip_address
DUAL = [(ip("10.1.2.2"), 24, ip("10.1.2.1")), (ip("2001:db8:1::2"), 64, ip("2001:db8:1::1"))]
ROUTES = [{"dst": "0.0.0.0/0", "version": 4}, {"dst": "::/0", "version": 6},
          {"dst": "192.168.0.0/16", "gw": "1.1.1.1", "version": 4},
          {"dst": "2001:db8:2::/64", "gw": "2001:db8:3::1", "version": 6, "mtu": 1400}]


def test_020_layout():
    text = render("0.2.0", DUAL, ROUTES, {"nameservers": ["192.0.2.3"]})
    assert json.loads(text) == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "1.1.1.1"}]},
        "ip6": {"ip": "2001:db8:1::2/64", "gateway": "2001:db8:1::1",
                "routes": [{"dst": "::/0"}, {"dst": "2001:db8:2::/64", "gw": "2001:db8:3::1"}]},
        "dns": {"nameservers": ["192.0.2.3"]}}
    assert list(json.loads(text)) == ["cniVersion", "ip4", "ip6", "dns"]


def test_missing_version_is_010_and_keeps_first_ip_per_family():
    two_v4 = [(ip("10.1.2.2"), 24, ip("10.1.2.1")), (ip("10.1.3.2"), 24, ip("10.1.3.1"))]
    out = json.loads(render("", two_v4, [], {}))
    assert out == {"cniVersion": "0.1.0", "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1"},
                   "dns": {}}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_03x_04x_have_version_keys(version):
    text = render(version, DUAL, ROUTES[:1], {})
    assert text == (
        '{\n    "cniVersion": "%s",\n    "ips": [\n        {\n            "version": "4",\n'
        '            "address": "10.1.2.2/24",\n            "gateway": "10.1.2.1"\n        },\n'
        '        {\n            "version": "6",\n            "address": "2001:db8:1::2/64",\n'
        '            "gateway": "2001:db8:1::1"\n        }\n    ],\n    "routes": [\n'
        '        {\n            "dst": "0.0.0.0/0"\n        }\n    ],\n    "dns": {}\n}'
        % version)


def test_10x_has_no_version_and_11_keeps_route_extras():
    out10 = json.loads(render("1.0.0", DUAL, ROUTES, {}))
    assert "version" not in out10["ips"][0]
    assert list(out10) == ["cniVersion", "ips", "routes", "dns"]
    assert "mtu" not in out10["routes"][3]
    out11 = json.loads(render("1.1.0", DUAL, ROUTES, {}))
    assert out11["routes"][3] == {"dst": "2001:db8:2::/64", "gw": "2001:db8:3::1", "mtu": 1400}
    assert "routes" not in json.loads(render("1.0.0", DUAL, [], {}))


def test_020_without_ip_fails():
    with pytest.raises(IpamError, match="cannot convert: no valid IP addresses"):
        render("0.2.0", [], [], {})


def test_go_escapes_and_error_object():
    assert go_json({"a": "<nil> & é"}, indent=0) == '{"a":"\\u003cnil\\u003e \\u0026 é"}'
    assert error_output(IpamError("boom")) == '{\n    "code": 999,\n    "msg": "boom"\n}'
    e = IpamError("x", "why")
    e.code = 4
    assert json.loads(error_output(e)) == {"code": 4, "msg": "x", "details": "why"}


def test_version_output():
    assert version_output() == ('{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0",'
                                '"0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n')
