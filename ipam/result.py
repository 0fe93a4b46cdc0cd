"""Rendering results for each cniVersion, byte for byte as host-local 1.1.1 prints them.

host-local builds a 1.0.0 result and converts it down (cni's ``convertTo02x`` and
``convertTo04x``); Go's encoder prints structs in field order with four-space
indentation, no trailing newline, and ``<``, ``>``, ``&`` escaped. This module is the only
one that knows the formats.
"""
from ipam import jsonio
from ipam.config import SUPPORTED_VERSIONS
from ipam.errors import IpamError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Optional

    from ipam.addr import IP

    # One address of a result: (address, prefix length, gateway).
    ResultIP = tuple[IP, int, Optional[IP]]

CURRENT_VERSION = "1.1.0"


def go_json(obj: "Any", indent: "int" = 4) -> "str":
    """JSON as Go's encoding/json writes it (HTML-safe escapes, UTF-8 kept as is)."""
    text = jsonio.dumps(obj, indent)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def version_output() -> "str":
    """The VERSION answer: compact JSON and a newline, as the Go library writes it."""
    return go_json({"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)},
                   indent=0) + "\n"


def error_output(err: "IpamError") -> "str":
    """The error object: host-local prints code, msg and details (when not empty) only."""
    obj: dict[str, Any] = {"code": err.code, "msg": err.msg}
    if err.details:
        obj["details"] = err.details
    return go_json(obj)


def _route(route: "dict[str, Any]", version: "str") -> "dict[str, Any]":
    out = {"dst": route["dst"]}
    if "gw" in route:
        out["gw"] = route["gw"]
    if version == "1.1.0":  # route mtu, advmss, ... arrived with CNI 1.1.0
        for key in ("mtu", "advmss", "priority", "table", "scope"):
            if key in route:
                out[key] = route[key]
    return out


def render(version: "str", ips: "list[ResultIP]", routes: "list[dict[str, Any]]",
           dns: "dict[str, Any]") -> "str":
    """The ADD result as text. ``ips`` holds ``(address, prefixlen, gateway)`` per range set.

    ``version`` is the config's cniVersion ("" means 0.1.0).
    """
    version = version or "0.1.0"
    obj: dict[str, Any]
    if version in ("0.1.0", "0.2.0"):
        obj = _render_02(version, ips, routes, dns)
    else:
        ip_objs = []
        for ip, plen, gw in ips:
            entry: dict[str, str] = {}
            if version in ("0.3.0", "0.3.1", "0.4.0"):
                entry["version"] = str(ip.version)
            entry["address"] = "%s/%d" % (ip, plen)
            if gw is not None:
                entry["gateway"] = str(gw)
            ip_objs.append(entry)
        obj = {"cniVersion": version}
        if ip_objs:
            obj["ips"] = ip_objs
        if routes:
            obj["routes"] = [_route(r, version) for r in routes]
        obj["dns"] = dns
    return go_json(obj)


def _render_02(version: "str", ips: "list[ResultIP]", routes: "list[dict[str, Any]]",
               dns: "dict[str, Any]") -> "dict[str, Any]":
    obj: dict[str, Any] = {"cniVersion": version}
    for family, key in ((4, "ip4"), (6, "ip6")):
        first = next((i for i in ips if i[0].version == family), None)
        if first is None:
            continue
        ip, plen, gw = first
        entry: dict[str, Any] = {"ip": "%s/%d" % (ip, plen)}

        if gw is not None:
            entry["gateway"] = str(gw)
        fam_routes = [_route(r, version) for r in routes if r["version"] == family]
        if fam_routes:
            entry["routes"] = fam_routes
        obj[key] = entry
    if len(obj) == 1:
        raise IpamError("cannot convert: no valid IP addresses")
    obj["dns"] = dns
    return obj
