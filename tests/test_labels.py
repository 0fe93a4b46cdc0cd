"""How ipamctl prints who holds a lease (ipam/admin/labels.py): no two identities print alike,
and each printed form parses back to what it shows. The commands that use it:
tests/test_cli.py ("who holds a lease")."""
import itertools
import json

import pytest

from ipam.admin.labels import BadLabel, container_ref, parse_name, parse_pod, pod_label, short_ids

TRICKY = ["web-0", "kube-system", "kube-system/coredns", "a/b/c", "-", "--", '"quoted"',
          'a"b', "back\\slash", "two words", " lead", "tab\there", "new\nline", "bell\x07",
          "del\x7f", "rtl\u202eevil", "zero\u200bwidth", "nbsp\u00a0", "tag\U000e0001",
          "snow\u2603man", "emoji\U0001f600", "\u00e9t\u00e9", "{}", "NS/", "/"]


def test_no_two_identities_print_alike_and_each_parses_back():
    seen = {}
    for ns, name in itertools.product([None, *TRICKY], TRICKY):
        label = pod_label(ns, name)
        assert label not in seen, (label, (ns, name), seen.get(label))
        seen[label] = (ns, name)
        assert parse_pod(label) == (ns, name), label
        if ns is None:
            assert parse_name(label) == name
    assert pod_label(None, None) is None


@pytest.mark.parametrize("ns,name,label", [
    ("kube-system", "coredns", "kube-system/coredns"),
    (None, "kube-system/coredns", '"kube-system/coredns"'),
    (None, "nginx", "nginx"),
    ("default", None, "default/"),
    (None, "-", '"-"'),                      # a table's "none" is '-'
    (None, "rtl\u202eevil", '"rtl\\u202eevil"'),   # never printed raw, even quoted
    (None, "bell\x07", '"bell\\u0007"'),
    (None, "new\nline", '"new\\nline"'),
    (None, "tag\U000e0001", '"tag\\udb40\\udc01"'),
    (None, "two words", '"two words"'),
    (None, 'a"b', '"a\\"b"'),
    (None, "\u00e9t\u00e9", "\u00e9t\u00e9"),     # printable: as it is
])
def test_labels(ns, name, label):
    assert pod_label(ns, name) == label
    if label.startswith('"'):
        assert json.loads(label.split("/")[0] if ns else label) == (ns or name)


@pytest.mark.parametrize("text", ["", "/web", "default/", '"web', 'default/"web"x', '""',
                                  '"a"/""', "a/b/c"])
def test_malformed_pods_are_refused(text):
    with pytest.raises(BadLabel):
        parse_pod(text)


def test_container_ref():
    assert container_ref("3f2a") == ("3f2a", False)
    assert container_ref("3f2a...") == ("3f2a", True)
    assert container_ref("a.b") == ("a.b", False)
    with pytest.raises(BadLabel, match="names no container"):
        container_ref("...")


def test_short_ids_are_unique_starts_never_longer_than_the_whole():
    a, b = "3f2a9c01b2c4" + "0" * 52, "3f2a9c01b2c4" + "1" * 52
    c = "77d1e5" + "2" * 58
    assert short_ids([a, c, "web"], [a, b, c]) == {a: a[:13] + "...", c: c[:12] + "..."}
    assert short_ids([a], [a]) == {a: a[:12] + "..."}
    # Two IDs that differ in their last characters: a start would not be shorter.
    x, y = "c" * 15 + "1x", "c" * 15 + "2x"
    assert short_ids([x, y], [x, y]) == {}
    # An ID that starts another is shown whole (a whole ID selects only itself).
    assert short_ids([a[:20]], [a[:20], a]) == {}


def test_short_ids_count_twelve_of_a_runtime_id_after_its_prefix():
    """nerdctl's '<namespace>-<64 hex>': 12 characters of the runtime's ID, as 'nerdctl
    ps' prints them, never 'default-3f2a...' (4 of them)."""
    a, b = "3f2a9c01b2c4" + "0" * 52, "3f2a9c01b2c4" + "1" * 52
    na, nb = "default-" + a, "default-" + b
    assert short_ids([na], [na]) == {na: "default-3f2a9c01b2c4..."}
    assert short_ids([na, nb], [na, nb]) == {na: na[:21] + "...", nb: nb[:21] + "..."}
    # Not a runtime's ID: 12 characters, however it ends.
    other = "default-" + "x" * 64
    assert short_ids([other], [other]) == {other: "default-xxxx..."}
    assert short_ids([a], [a]) == {a: a[:12] + "..."}
