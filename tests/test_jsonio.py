"""The hot path's JSON equals the json package's, byte for byte."""
import json
import random

import pytest

from ipam import jsonio


def _random_value(rnd, depth=0):
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rnd.randrange(-10**12, 10**12)
    if kind == 1:
        return "".join(rnd.choice('ab"\\/\n\t\x01é€<>&\u2028😀 ') for _ in range(rnd.randrange(8)))
    if kind == 2:
        return rnd.choice([True, False, None])
    if kind == 3:
        return rnd.random() * 10 ** rnd.randrange(-5, 5)
    if kind in (4, 5):
        return rnd.choice(["10.1.2.2/24", "", "eth0"])
    if kind in (6, 7):
        return {"k%d" % i + rnd.choice(["", "é"]): _random_value(rnd, depth + 1)
                for i in range(rnd.randrange(4))}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]


def test_dumps_matches_json_dumps():
    rnd = random.Random(3)
    for _ in range(3000):
        value = _random_value(rnd)
        assert jsonio.dumps(value) == json.dumps(value, indent=4, ensure_ascii=False)
        assert jsonio.dumps(value, indent=0) == json.dumps(value, separators=(",", ":"),
                                                          ensure_ascii=False)


def test_loads_matches_json_loads():
    rnd = random.Random(4)
    for _ in range(3000):
        value = _random_value(rnd)
        text = json.dumps(value, indent=rnd.choice([None, 2]))
        assert jsonio.loads("  \n" + text + "\r\n ") == json.loads(text)


def lower(pairs):
    return {k.lower(): v for k, v in pairs}


@pytest.mark.parametrize("text", ["", "nope", "{", '{"a": 1} x', "[1,]", '{"a" 1}', "NaN",
                                  '"\x01"', "[Infinity]", "01", '{"a": 1}}', "\x00"])
def test_loads_rejects_what_json_rejects(text):
    with pytest.raises(ValueError):
        jsonio.loads(text, lower)
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=jsonio._no_constants)


def test_pairs_hook_and_deep_nesting():
    assert jsonio.loads('{"A": {"B": 1, "b": 2}}', lower) == {"a": {"b": 2}}
    with pytest.raises(RecursionError):
        jsonio.loads("[" * 100000 + "]" * 100000)
