"""resolvConf parsing, as host-local does it (containernetworking/plugins,
plugins/ipam/host-local/dns.go) and its dns_test.go pins it."""
import pytest

from ipam.dns import parse_resolv_conf
from ipam.errors import IoFailure


def test_nameservers(tmp_path):
    f = tmp_path / "r"
    f.write_text("nameserver 192.0.2.0\n  nameserver 192.0.2.1  \n;nameserver 192.0.2.9\n")
    assert parse_resolv_conf(str(f)) == {"nameservers": ["192.0.2.0", "192.0.2.1"]}


def test_full(tmp_path):
    f = tmp_path / "r"
    f.write_text("# comment\nsearch example.net example.org\nnameserver 192.0.2.0\n"
                 "domain other.com\n;nameserver 9.9.9.9\nnameserver 192.0.2.2\n"
                 "domain example.com\nsearch example.gov\noptions one two\noptions three four\n"
                 "bogus\nsortlist 1.2.3.4\n")
    assert parse_resolv_conf(str(f)) == {
        "nameservers": ["192.0.2.0", "192.0.2.2"], "domain": "example.com",
        "search": ["example.net", "example.org", "example.gov"],
        "options": ["one", "two", "three", "four"]}
    assert list(parse_resolv_conf(str(f))) == ["nameservers", "domain", "search", "options"]


def test_unreadable(tmp_path):
    with pytest.raises(IoFailure) as e:
        parse_resolv_conf("/nonexistent/resolv.conf")
    assert e.value.msg == "open /nonexistent/resolv.conf: no such file or directory"
    assert e.value.code == 5
    with pytest.raises(IoFailure, match="is a directory"):
        parse_resolv_conf(str(tmp_path))


def test_binary_file_does_not_crash(tmp_path):
    f = tmp_path / "r"
    f.write_bytes(b"\xff\xfe\x00nameserver \xff\n\x00\x01")
    assert isinstance(parse_resolv_conf(str(f)), dict)
