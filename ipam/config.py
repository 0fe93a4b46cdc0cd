"""The network config: every host-local key, validated once, in host-local's order.

Input is the JSON object from stdin, decoded with lower-cased keys (Go's encoding/json
matches struct fields case-insensitively, the last duplicate winning). Output is an
:class:`IpamConfig` whose range sets are canonical. Every problem is a
:class:`~ipam.errors.ConfigError` (code 7) with host-local's message where it has one;
CNI_ARGS problems are :class:`~ipam.errors.EnvError` (code 4).
"""
from ipam import addr, ranges
from ipam.errors import ConfigError, EnvError
from ipam.paths import DEFAULT_DATA_DIR, default_database
from ipam.waits import DEFAULT_LOCK_WAIT_LIMIT, MAX_LOCK_WAIT_LIMIT

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Any, Callable, Optional

    from ipam.addr import IP
    from ipam.lease import Pod
    from ipam.ranges import Block, RangeSet

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
ROUTE_EXTRAS = ("mtu", "advmss", "priority", "table", "scope")  # CNI 1.1 route fields

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean",
               int: "number", float: "number", type(None): "null"}


class IpamConfig:
    """Everything one invocation needs from the config, already validated; but ``pod``,
    the identity as sent, which only ADD checks (:func:`recorded_pod`)."""

    __slots__ = ("name", "cni_version", "range_sets", "routes", "data_dir", "resolv_conf",
                 "requested", "database", "export", "adopt", "busy_timeout",
                 "lock_wait_limit", "node", "ipam", "pod", "history_retention")
    if TYPE_CHECKING:  # what load() sets; the class body declares nothing at run time
        name: str
        cni_version: str
        range_sets: tuple[RangeSet, ...]
        routes: list[dict[str, Any]]
        data_dir: str
        resolv_conf: Optional[str]
        requested: list[IP]
        database: str
        export: bool
        adopt: bool
        busy_timeout: Optional[float]
        lock_wait_limit: float
        node: Optional[str]
        ipam: dict[str, Any]
        pod: Optional[Pod]
        history_retention: Optional[int]

    def __init__(self, **kw: "Any") -> "None":
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


MAX_BUSY_TIMEOUT = 2147483  # SQLite's busy timeout is an int of milliseconds
_RETENTION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _retention(value):
    """``ipam.historyRetention``: one whole number and a unit (``90d``, ``12h``, ``2w``),
    in seconds; None when absent. A string, as ``ipamctl history prune --before`` takes
    it; parsed here without ``re`` (which the hot path does not otherwise import)."""
    text = expect(value, str, "ipam.historyRetention")
    if text is None:
        return None
    number, unit = text[:-1], text[-1:]
    if not (number.isascii() and number.isdigit()) or unit not in _RETENTION_UNITS \
            or int(number) == 0:
        raise ConfigError("invalid config: ipam.historyRetention must be a positive whole "
                          "number and a unit s, m, h, d or w, like \"90d\"; not %r" % text)
    return int(number) * _RETENTION_UNITS[unit]


def _path(value: "object", path: "str") -> "Optional[str]":
    """A file system path: a string with no NUL and no lone surrogate."""
    text = expect(value, str, path)
    if text:
        try:
            ok = "\x00" not in text and text.encode("utf-8") is not None
        except UnicodeEncodeError:
            ok = False
        if not ok:
            raise ConfigError("invalid config: %s is not a valid path" % path)
    return text


def json_type(value: "object") -> "str":
    return _JSON_TYPES.get(type(value), type(value).__name__)


def expect(value: "Any", kind: "type", path: "str") -> "Any":
    """``value`` if it has JSON type ``kind`` (None passes: Go treats null as unset)."""
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    want = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(kind, str(kind))
    raise ConfigError("invalid config: %s must be %s, not %s" % (path, want, json_type(value)))


def _ip_field(obj: "dict[str, Any]", key: "str", path: "str") -> "Optional[IP]":
    """An address in a range or route field: Go's net.IP text rules ('' means unset)."""
    text = expect(obj.get(key), str, path + "." + key)
    if not text:
        return None
    ip = addr.parse_ip(text)
    if ip is None:
        raise ConfigError("invalid IP address: %s" % text)
    return ip


def _cidr_field(obj: "dict[str, Any]", key: "str", path: "str"
                ) -> "tuple[Optional[str], Optional[tuple[IP, int, bool]]]":
    """The CIDR text and what :func:`addr.parse_cidr` makes of it, or (None, None)."""
    text = expect(obj.get(key), str, path + "." + key)
    if text is None:
        return None, None
    parsed = addr.parse_cidr(text)
    if parsed is None:
        raise ConfigError("invalid CIDR address: %s" % text)
    return text, parsed


def _dotted_quad(text: "str") -> "Optional[int]":
    """``text`` as an integer if it is an IPv4 address in canonical form, else None.

    What a long exclude list is made of, checked by printing it back instead of by
    addr's character rules: 20,000 entries in 16 ms instead of 30. Anything else (and
    so every error) goes through :func:`addr.parse_ip`.
    """
    try:
        a, b, c, d = map(int, text.split("."))
    except ValueError:
        return None
    if 0 <= a <= 255 and 0 <= b <= 255 and 0 <= c <= 255 and 0 <= d <= 255 \
            and "%d.%d.%d.%d" % (a, b, c, d) == text:
        return a << 24 | b << 16 | c << 8 | d
    return None


def _exclusions(value: "object", path: "str") -> "list[tuple[int, int, int]]":
    """``exclude``: addresses or CIDRs, as (first, last, version) integer blocks."""
    blocks = []
    for i, item in enumerate(expect(value, list, path) or ()):
        if not isinstance(item, str):  # the path is formatted only for an error
            item = expect(item, str, "%s[%d]" % (path, i))
        else:
            n = _dotted_quad(item)
            if n is not None:
                blocks.append((n, n, 4))
                continue
        ip = addr.parse_ip(item)
        if ip is not None:
            n = int(ip)
            blocks.append((n, n, ip.version))
            continue
        parsed = addr.parse_cidr(item or "")
        if parsed is None:
            raise ConfigError("invalid exclude entry %r: not an IP address or CIDR" % item)
        net = addr.network_of(parsed[0], parsed[1])
        blocks.append((int(net.network_address), int(net.broadcast_address), net.version))
    return blocks


class _RawRange:
    __slots__ = ("subnet", "parsed", "start", "end", "gateway", "exclude")

    def __init__(self, obj: "object", path: "str") -> "None":
        obj = expect(obj, dict, path) or {}  # Go: null leaves the zero Range
        self.subnet, self.parsed = _cidr_field(obj, "subnet", path)
        self.start = _ip_field(obj, "rangestart", path)
        self.end = _ip_field(obj, "rangeend", path)
        self.gateway = _ip_field(obj, "gateway", path)
        self.exclude = _exclusions(obj.get("exclude"), path + ".exclude")


def _raw_sets(value: "object", path: "str") -> "list[list[_RawRange]]":
    sets = []
    for i, raw_set in enumerate(expect(value, list, path) or ()):
        sub = "%s[%d]" % (path, i)
        raw_set = expect(raw_set, list, sub)
        if raw_set is None:
            raw_set = []
        sets.append([_RawRange(r, "%s[%d]" % (sub, j)) for j, r in enumerate(raw_set)])
    return sets


def _requested_list(value: "object", path: "str") -> "list[IP]":
    """``args.cni.ips`` / ``runtimeConfig.ips``: ``ip[/prefix]`` strings, prefix ignored."""
    out = []
    for i, text in enumerate(expect(value, list, path) or ()):
        text = expect(text, str, "%s[%d]" % (path, i))
        if not text:
            raise ConfigError("cannot understand ip: IP <nil> not v4 nor v6")
        ip = parse_requested(text)
        if ip is None:
            raise ConfigError("invalid IP address %s" % text)
        out.append(ip)
    return out


def parse_requested(text: "str") -> "Optional[IP]":
    """plugins' ``ip.ParseIP``: an address, or an address with a prefix that is ignored."""
    if "/" in text:
        parsed = addr.parse_cidr(text)
        return None if parsed is None or parsed[2] else parsed[0]
    return addr.parse_ip(text)


def go_quote(s: "str") -> "str":
    """Go's %q for the strings in CNI_ARGS messages."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# CNI_ARGS keys that say who the attachment is, as Kubernetes' CRI runtimes send them (with
# IgnoreUnknown=1); podman sends K8S_POD_NAME=<container name>. K8S_POD_INFRA_CONTAINER_ID
# is not among them: for CRI it is the sandbox ID, which CNI_CONTAINERID already is.
POD_KEYS = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID")
# Longer than any runtime allows (Kubernetes: 63 for a namespace, 253 for a name), short
# enough that one value cannot bloat every history row.
MAX_POD_VALUE = 1024


def parse_cni_args(text: "str") -> "tuple[Optional[IP], Optional[Pod]]":
    """CNI_ARGS as cni's ``types.LoadArgs`` reads it into host-local's IPAMEnvArgs.

    Keys are case-sensitive (``IP``, ``IgnoreUnknown``); unknown keys are an error unless
    IgnoreUnknown is true. The pod identity (:data:`POD_KEYS`) is unknown to host-local,
    so it is read only where host-local ignores it. Returns ``(requested address or
    None, (namespace, name, uid) or None)``, the identity as sent (an empty value is no
    value): only ADD records it, through :func:`recorded_pod`.
    """
    if not text:
        return None, None
    requested = None
    unknown = []
    pod: dict[str, str] = {}
    ignore = False
    for pair in text.split(";"):
        kv = pair.split("=")
        if len(kv) != 2:
            raise EnvError("ARGS: invalid pair %s" % go_quote(pair))
        key, value = kv
        if key == "IP":
            if value:
                requested = parse_requested(value)
                if requested is None:
                    raise EnvError("ARGS: error parsing value of pair %s: invalid IP address %s"
                                   % (go_quote(pair), value))
            else:
                requested = None
        elif key == "IgnoreUnknown":
            low = value.lower()
            if low in ("1", "true"):
                ignore = True
            elif low in ("0", "false"):
                ignore = False
            else:
                raise EnvError("ARGS: error parsing value of pair %s: boolean unmarshal error: "
                               "invalid input %s" % (go_quote(pair), value))
        else:
            if key in POD_KEYS:
                pod[key] = value  # the last one wins, as LoadArgs sets a field each time
            unknown.append(pair)
    if unknown and not ignore:
        raise EnvError("ARGS: unknown args [%s]" % " ".join(go_quote(u) for u in unknown))
    identity = tuple(pod.get(key) or None for key in POD_KEYS)
    return requested, (identity if identity != (None, None, None) else None)


def recorded_pod(pod: "Optional[Pod]", warn: "Callable[[str], object]") -> "Optional[Pod]":
    """The identity an ADD records: ``pod`` as sent, except a value no runtime sends
    (over-long, control characters, bytes that are not UTF-8), which is left out and
    reported through ``warn``. host-local ignores these keys: a value we cannot keep must
    not fail a container's start, so it is metadata lost, never an error. Only ADD
    records; DEL, CHECK and GC never look at it."""
    if pod is None:
        return None
    kept = []
    for key, value in zip(POD_KEYS, pod, strict=True):
        why = None if value is None else _unrecordable(value)
        if why is not None:
            warn("CNI_ARGS %s not recorded: %s" % (key, why))
            value = None
        kept.append(value)
    return tuple(kept) if kept != [None, None, None] else None


def _unrecordable(value: "str") -> "Optional[str]":
    """Why a pod identity value is not stored, or None when it is fine."""
    if len(value) > MAX_POD_VALUE:
        return "%d characters long; at most %d are recorded" % (len(value), MAX_POD_VALUE)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if not value.isprintable():
        return "unprintable characters: %s" % go_quote(value)
    return None


def version_tuple(version: "str") -> "tuple[int, ...]":
    """``"0.3.1"`` -> (0, 3, 1); an empty version is 0.1.0, as in cni's version package."""
    if not version:
        return (0, 1, 0)
    parts = version.split(".")
    if len(parts) > 3:
        raise ValueError("invalid version %s: too many parts" % go_quote(version))
    nums = []
    for name, part in zip(("major", "minor", "micro"), parts, strict=False):
        if not part.isdigit():
            raise ValueError("failed to convert %s version part %s" % (name, go_quote(part)))
        nums.append(int(part))
    return tuple(nums + [0] * (3 - len(nums)))


def _routes(value: "object", path: "str") -> "list[dict[str, Any]]":
    routes = []
    for i, obj in enumerate(expect(value, list, path) or ()):
        sub = "%s[%d]" % (path, i)
        obj = expect(obj, dict, sub)
        if obj is None:
            continue
        dst, parsed = _cidr_field(obj, "dst", sub)
        if dst is None or parsed is None:  # the two are None together
            # host-local prints "dst": "<nil>" here; a route without a destination is a
            # config mistake, so we say so instead.
            raise ConfigError("invalid config: %s has no dst" % sub)
        ip, plen, _ = parsed
        route: dict[str, Any] = {"dst": "%s/%d" % (ip, plen), "version": ip.version}
        gw = _ip_field(obj, "gw", sub)
        if gw is not None:
            route["gw"] = str(gw)
        for key in ROUTE_EXTRAS:
            if obj.get(key) is not None:
                route[key] = expect(obj[key], int, sub + "." + key)
        routes.append(route)
    return routes


def storage(ipam: "dict[str, Any]") -> "tuple[str, str]":
    """(dataDir, database) of an ``ipam`` object (keys lower-cased): the one reading of
    where a network's leases live, for the plugin and for ``ipamctl``, which finds the
    databases in the runtimes' network configs (:mod:`ipam.admin.network_configs`)."""
    data_dir = _path(ipam.get("datadir"), "ipam.dataDir") or DEFAULT_DATA_DIR
    database = _path(ipam.get("database"), "ipam.database") or default_database(data_dir)
    return data_dir, database


def load(conf: "dict[str, Any]", env_args: "str" = "") -> "IpamConfig":
    """Validate ``conf`` (the whole plugin config) in host-local's LoadIPAMConfig order."""
    ipam = conf.get("ipam")
    if ipam is None:
        raise ConfigError("IPAM config missing 'ipam' key")
    ipam = expect(ipam, dict, "ipam")
    version = expect(conf.get("cniversion"), str, "cniVersion") or ""

    # Decoding, as Go's json.Unmarshal would fail first on syntax.
    legacy = _RawRange(ipam, "ipam")
    routes = _routes(ipam.get("routes"), "ipam.routes")
    raw_sets = _raw_sets(ipam.get("ranges"), "ipam.ranges")
    args = expect(conf.get("args"), dict, "args") or {}
    cni_args = expect(args.get("cni"), dict, "args.cni") or {}
    arg_ips = _requested_list(cni_args.get("ips"), "args.cni.ips")
    runtime = expect(conf.get("runtimeconfig"), dict, "runtimeConfig") or {}
    runtime_ips = _requested_list(runtime.get("ips"), "runtimeConfig.ips")
    runtime_sets = _raw_sets(runtime.get("ipranges"), "runtimeConfig.ipRanges")
    # ipam.exclude (decoded with the legacy range, in the same order) is for every range.
    global_exclude, legacy.exclude = legacy.exclude, []
    data_dir, database = storage(ipam)
    resolv_conf = _path(ipam.get("resolvconf"), "ipam.resolvConf") or None
    export = expect(ipam.get("export"), bool, "ipam.export")
    adopt = expect(ipam.get("adopt"), bool, "ipam.adopt")
    node = expect(ipam.get("node"), str, "ipam.node")
    if node is not None and (not node.strip() or not node.isprintable()):
        raise ConfigError("invalid config: ipam.node must be a non-empty printable name")
    busy = ipam.get("busytimeout")
    if busy is not None and (isinstance(busy, bool) or not isinstance(busy, (int, float))
                             or not 0 <= busy <= MAX_BUSY_TIMEOUT):
        raise ConfigError("invalid config: ipam.busyTimeout must be a number of seconds "
                          "from 0 to %d" % MAX_BUSY_TIMEOUT)
    limit = ipam.get("lockwaitlimit")
    if limit is None:
        limit = DEFAULT_LOCK_WAIT_LIMIT
    elif isinstance(limit, bool) or not isinstance(limit, (int, float)) \
            or not 0 <= limit <= MAX_LOCK_WAIT_LIMIT:
        raise ConfigError("invalid config: ipam.lockWaitLimit must be a number of seconds "
                          "from 0 to %d (all of a call's lock waits together: kubelet gives "
                          "a pod's sandbox 2 minutes)" % MAX_LOCK_WAIT_LIMIT)
    retention = _retention(ipam.get("historyretention"))
    daemon = ipam.get("daemon")  # the client acted on it already (ipam.client); checked here
    if daemon is not None and not (daemon is False or daemon is True
                                   or isinstance(daemon, str) and daemon):
        raise ConfigError("invalid config: ipam.daemon must be the node daemon's socket path, "
                          "true (the default socket) or false (never)")

    # Requested addresses: CNI_ARGS IP=, then args.cni.ips, then runtimeConfig.ips.
    env_ip, pod = parse_cni_args(env_args)
    requested = []
    for ip in ([env_ip] if env_ip is not None else []) + arg_ips + runtime_ips:
        if ip not in requested:
            requested.append(ip)

    # Range sets: runtime ipRanges, then the legacy single range, then ranges.
    if legacy.subnet is not None:
        raw_sets.insert(0, [legacy])
    raw_sets[0:0] = runtime_sets
    if not raw_sets:
        raise ConfigError("no IP ranges specified")
    # Merged once; each range takes its part by bisection (ranges.canonicalize).
    shared = {v: ranges.merge([(a, b) for a, b, f in global_exclude if f == v]) for v in (4, 6)}
    range_sets = []
    for i, raw_set in enumerate(raw_sets):
        try:
            range_sets.append(_canonical_set(raw_set, shared))
        except ConfigError as e:
            raise ConfigError("invalid range set %d: %s" % (i, e.msg)) from None

    versions = [rs.version for rs in range_sets]
    if versions.count(4) > 1 or versions.count(6) > 1:
        try:
            old = version_tuple(version) < (0, 3, 0)
        except ValueError:
            old = True
        if old:
            raise ConfigError("CNI version %s does not support more than 1 address per family"
                              % version)
    if len(range_sets) > 1:  # host-local's pairwise loops, as one sort and a sweep
        pair = ranges.first_overlap(ranges.spans(range_sets))
        if pair is not None:
            raise ConfigError("range set %d overlaps with %d" % pair)

    return IpamConfig(
        name=conf.get("name"), cni_version=version, range_sets=tuple(range_sets),
        routes=routes, data_dir=data_dir, resolv_conf=resolv_conf, requested=requested,
        database=database, export=True if export is None else export,
        adopt=True if adopt is None else adopt,
        busy_timeout=busy, lock_wait_limit=float(limit), node=node, ipam=ipam, pod=pod,
        history_retention=retention,
    )


def _canonical_set(raw_set: "list[_RawRange]", shared: "dict[int, list[Block]]"
                   ) -> "RangeSet":
    if not raw_set:
        raise ConfigError("empty range set")
    canon: list[ranges.Range] = []
    for raw in raw_set:
        if raw.subnet is None or raw.parsed is None:  # the two are None together
            raise ConfigError("IP <nil> not v4 nor v6")
        family = raw.parsed[0].version
        blocks = [(a, b) for a, b, v in raw.exclude if v == family]
        r = ranges.canonicalize(raw.subnet, raw.start, raw.end, raw.gateway, blocks,
                                shared[family], raw.parsed)
        if canon and r.version != canon[0].version:
            raise ConfigError("mixed address families")
        canon.append(r)
    return ranges.make_set(canon)
