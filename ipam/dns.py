"""resolv.conf to the result's ``dns`` object, as host-local's dns.go parses it."""
from ipam.errors import IoFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any


def go_os_error(verb: "str", path: "str", err: "OSError") -> "str":
    """Go's *PathError text (``open /x: no such file or directory``), which host-local prints."""
    reason = err.strerror or str(err)
    return "%s %s: %s" % (verb, path, reason[:1].lower() + reason[1:])


def parse_resolv_conf(path: "str") -> "dict[str, Any]":
    """Return ``{"nameservers", "domain", "search", "options"}`` with the keys that are set.

    Lines are trimmed; empty lines and ``#``/``;`` comments are skipped; ``domain`` keeps
    the last value; ``nameserver``, ``search`` and ``options`` accumulate. A file that
    cannot be read is an I/O failure (code 5) with Go's wording.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError as e:
        raise IoFailure(go_os_error("read", path, e)) from None
    except OSError as e:
        raise IoFailure(go_os_error("open", path, e)) from None
    dns: dict[str, Any] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key in ("search", "options"):
            dns.setdefault(key, []).extend(values)
    # Go's DNS struct order, whatever order the file used.
    return {k: dns[k] for k in ("nameservers", "domain", "search", "options") if k in dns}
