"""JSON in and out for the plugin's hot path, straight from CPython's ``_json``.

``import json`` also imports ``re`` and ``enum`` (about 4 ms of a plugin invocation that
otherwise costs 15 ms); the C scanner and string encoder underneath it need neither. The
output matches ``json.dumps(obj, indent=N, ensure_ascii=False)`` byte for byte (a test
proves it); where ``_json`` is missing (another Python implementation) the ``json``
package does the work.
"""
try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Callable, NoReturn, Optional

    PairsHook = Optional[Callable[[list[tuple[str, Any]]], Any]]


def _no_constants(name: "str") -> "NoReturn":
    # Go's decoder, like the JSON grammar, has no NaN or Infinity.
    raise ValueError("invalid JSON value %s" % name)


class _Context:
    """The attributes ``_json.make_scanner`` reads from a JSONDecoder."""

    strict = True  # raw control characters inside strings are errors, as in Go
    object_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constants)
    memo = None

    def __init__(self, object_pairs_hook: "PairsHook") -> "None":
        self.object_pairs_hook = object_pairs_hook


def loads(text: "str", object_pairs_hook: "PairsHook" = None) -> "Any":
    """Decode one JSON document; ValueError (or RecursionError) when it is not one."""
    if _json is None:
        import json

        return json.loads(text, object_pairs_hook=object_pairs_hook)
    # typeshed's stub wants a make_scanner here; any object with the attributes above
    # does (its own TODO says so: "'context' needs the attrs above (ducktype)").
    scan = _json.make_scanner(_Context(object_pairs_hook))  # type: ignore[arg-type]
    n = len(text)
    i = 0
    while i < n and text[i] in _WS:
        i += 1
    try:
        obj, end = scan(text, i)
    except StopIteration as e:
        raise ValueError("Expecting value: line 1 column %d (char %d)"
                         % (e.value + 1, e.value)) from None
    except SystemError:
        # _json raises json.decoder.JSONDecodeError for a syntax error, but only looks it
        # up in sys.modules: without it, SystemError. Broken input only: import, rescan.
        import json.decoder  # noqa: F401

        obj, end = scan(text, i)  # raises JSONDecodeError, a ValueError
    while end < n and text[end] in _WS:
        end += 1
    if end != n:
        raise ValueError("Extra data: line 1 column %d (char %d)" % (end + 1, end))
    return obj


def dumps(obj: "Any", indent: "int" = 4) -> "str":
    """``json.dumps(obj, indent=indent, ensure_ascii=False)``; ``indent=0`` is compact.

    Compact output (the ``networks`` row every call compares, which grows with the
    config: 20,000 exclusions) goes through ``_json``'s C encoder, ten times faster than
    the writer below; indented output (a result, a few lines) through the writer, as
    ``_json`` has no indenting encoder."""
    if not indent and _json is not None:
        return "".join(_json.make_encoder(None, _unserializable, _json.encode_basestring,
                                          None, ":", ",", False, False, True)(obj, 0))
    out: list[str] = []
    _write(obj, out, indent, 0)
    return "".join(out)


def _unserializable(obj: "object") -> "NoReturn":
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _string(s: "str") -> "str":
    if _json is not None:
        return _json.encode_basestring(s)
    import json

    return json.dumps(s, ensure_ascii=False)


def _write(obj: "Any", out: "list[str]", indent: "int", level: "int") -> "None":
    if isinstance(obj, str):
        out.append(_string(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(float.__repr__(obj))
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        inner, sep, colon, close = _layout(indent, level)
        out.append("{" + inner)
        first = True
        for k, v in obj.items():
            if not first:
                out.append(sep)
            first = False
            out.append(_string(k) + colon)
            _write(v, out, indent, level + 1)
        out.append(close + "}")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        inner, sep, _, close = _layout(indent, level)
        out.append("[" + inner)
        for i, v in enumerate(obj):
            if i:
                out.append(sep)
            _write(v, out, indent, level + 1)
        out.append(close + "]")
    else:
        raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _layout(indent: "int", level: "int") -> "tuple[str, str, str, str]":
    """(after the opening bracket, between items, after a key, before the closing one)"""
    if not indent:
        return "", ",", ":", ""
    pad = "\n" + " " * (indent * (level + 1))
    return pad, "," + pad, ": ", "\n" + " " * (indent * level)
