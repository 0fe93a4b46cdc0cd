"""How ipamctl prints who holds a lease (ipam/labels.py): each printed form parses back
to what it shows. The commands that use it: tests/test_cli.py ("who holds a lease")."""
import pytest

from ipam.labels import BadLabel, container_ref, short_ids


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
