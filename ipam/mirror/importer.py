"""Reading host-local's file backend into the database.

Every host-local version's layout is understood: address files named by Go's address
text (Windows writes ``_`` for ``:``), holding ``ID\\r\\nifname`` (v0.8.0 and later),
``ID\\nifname`` (a short-lived master), or the bare ``ID`` (before v0.8.0: a legacy lease
without ifname); ``last_reserved_ip.N`` cursors and the older ``last_reserved_ip``. The
source files are only read, under host-local's own ``lock`` (flock) when it exists, so a
Go plugin still running cannot change them half-way.
"""
import os
import re

from ipam import addr
from ipam.lease import RESERVED_ID, Lease, note_problem
from ipam.paths import LEGACY_CURSOR, MIRROR_LOCK, cursor_index, is_cursor_name

_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")
MAX_CONTENT = 4096  # bytes read from a reservation file: an ID, CR LF and an ifname

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Callable, Optional, Sequence

    from ipam.addr import IP
    from ipam.ranges import RangeSet
    from ipam.store.protocol import Store

    Owner = tuple[str, Optional[str]]  # (container ID, ifname or None: legacy)


class Scan:
    """What a network directory holds: reservations, cursors, and what was skipped."""

    __slots__ = ("network", "entries", "cursors", "skipped", "names")

    def __init__(self, network: "str") -> "None":
        self.network = network
        # (ip, container_id, ifname or None, mtime)
        self.entries: list[tuple[IP, str, Optional[str], float]] = []
        self.names: dict[IP, str] = {}  # ip -> the file name its entry came from
        self.cursors: dict[int, IP] = {}  # range set index -> ip
        self.skipped: list[tuple[str, str]] = []  # (file name, reason)

    def __bool__(self) -> "bool":
        return bool(self.entries or self.cursors)


def has_host_local_files(path: "str") -> "bool":
    """Cheap test for adoption: does the directory hold any reservation or cursor?"""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(_cursor(n) is not None or _address(n) is not None for n in names)


def _cursor(name):
    """The range set a cursor file is for (the legacy one: the first), or None."""
    if name == LEGACY_CURSOR:
        return 0
    return cursor_index(name) if is_cursor_name(name) else None


def _address(name: "str") -> "Optional[IP]":
    ip = addr.parse_ip(name.replace("_", ":") if "_" in name else name)
    return ip


def parse_content(data: "bytes") -> "tuple[Optional[Owner], Optional[str]]":
    """File bytes -> (container_id, ifname or None), or a reason to skip the file. A
    reservation's file (:data:`~ipam.lease.RESERVED_ID`) gives its note as the ifname
    (None when it has none, or one no reservation could have)."""
    if not data:
        return None, "empty file (host-local died between creating and writing it)"
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "content is not text"
    ifname: Optional[str]
    for sep in ("\r\n", "\n"):
        if sep in text:
            cid, ifname = text.split(sep, 1)
            cid, ifname = cid.strip(), ifname.strip()
            break
    else:
        cid, ifname = text, None
    if cid == RESERVED_ID:  # ipamctl reserve's file: the second line is its note
        return (cid, ifname if ifname and note_problem(ifname) is None else None), None
    if not _ID.match(cid):
        return None, "content is not a container ID"
    if ifname is not None and (not ifname or len(ifname) > 15 or "\n" in ifname):
        return None, "content has an invalid interface name"
    return (cid, ifname), None


def scan(path: "str", network: "str", step: "Optional[Callable[[int], object]]" = None,
         timeout: "Optional[float]" = None, locked: "bool" = False) -> "Scan":
    """Read ``path`` (a host-local network directory) under its lock; changes nothing.

    The lock (host-local's ``lock``, when it exists) is waited for ``timeout`` seconds at
    most (the busy timeout by default), unless the caller holds it (``locked``).
    ``step(1)`` is called per directory entry, for a progress bar."""
    from ipam.store import writer_lock
    from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT
    from ipam.waits import Patience

    result = Scan(network)
    lock_fd = None
    try:
        if not locked:
            lock_fd = os.open(os.path.join(path, MIRROR_LOCK),
                              os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        pass  # no lock file (old versions, or ours with export off): read anyway
    try:
        if lock_fd is not None:
            writer_lock.poll(lock_fd, Patience.each(
                DEFAULT_BUSY_TIMEOUT if timeout is None else timeout),
                "%s (host-local's lock)" % os.path.join(path, MIRROR_LOCK))
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            _scan_entry(path, entry, result)
            if step is not None:
                step(1)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # closing releases the flock
    return result


def _scan_entry(path: "str", entry: "os.DirEntry[str]", result: "Scan") -> "None":
    name = entry.name
    if name == MIRROR_LOCK:
        return
    try:
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            result.skipped.append((name, "not a regular file"))
            return
        data, mtime = _read_head(os.path.join(path, name))
    except OSError as e:
        result.skipped.append((name, "unreadable: %s" % (e.strerror or e)))
        return
    range_set = _cursor(name)
    if range_set is not None:
        ip = addr.parse_ip(data.decode("utf-8", "replace"))  # host-local does not trim
        if ip is None:
            result.skipped.append((name, "cursor is not an address"))
        else:
            result.cursors[range_set] = ip
        return
    ip = _address(name)
    if ip is None:
        result.skipped.append((name, "name is not an address"))
        return
    if len(data) > MAX_CONTENT:  # cut short, it could pass for another container's ID
        result.skipped.append((name, "content is too long for a reservation"))
        return
    owner, reason = parse_content(data)
    if owner is None:
        assert reason is not None  # parse_content gives an owner or a reason
        result.skipped.append((name, reason))
        return
    first = result.names.setdefault(ip, name)
    if first != name:  # e.g. "fd00::5" and Windows' "fd00__5": the first one counts
        result.skipped.append((name, "same address as %s" % first))
        return
    result.entries.append((ip, owner[0], owner[1], mtime))


def _read_head(path: "str") -> "tuple[bytes, float]":
    """The first ``MAX_CONTENT + 1`` bytes of a file and its mtime, with bare descriptor
    calls: a file object per lease costs a third of a 60,000-lease import's scan."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        mtime = os.fstat(fd).st_mtime
        chunks: list[bytes] = []
        left = MAX_CONTENT + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), mtime
    finally:
        os.close(fd)


def plan(store: "Store", found: "Scan", range_sets: "Optional[Sequence[RangeSet]]" = None
         ) -> "tuple[list[Lease], list[Lease], list[tuple[Lease, Lease]], dict[int, IP]]":
    """Compare a scan with the database: ``(new leases, unchanged, conflicts, cursors)``.

    The database wins a conflict (same address, another owner) and is not changed; a
    cursor is taken only where the database has none for that range set. New leases
    are of no known boot: a file's mtime against the boot time is no proof (the clock
    may have stepped), so ``gc --previous-boots`` never takes them on that alone.
    """
    network = found.network
    new: list[Lease] = []
    unchanged: list[Lease] = []
    conflicts: list[tuple[Lease, Lease]] = []
    leased = {lease.ip: lease for lease in store.leases(network)}  # one query, not one per file
    for ip, cid, ifname, mtime in found.entries:
        held = leased.get(ip)
        if held is not None:
            if (held.container_id, held.ifname) == (cid, ifname):
                unchanged.append(held)
            else:
                conflicts.append((Lease(network, ip, 0, cid, ifname, mtime), held))
            continue
        idx = range_set_index(ip, range_sets, found.cursors)
        new.append(Lease(network, ip, idx, cid, ifname, mtime))
    have = store.cursors(network)
    cursors = {idx: ip for idx, ip in found.cursors.items() if idx not in have}
    return new, unchanged, conflicts, cursors


def range_set_index(ip: "IP", range_sets: "Optional[Sequence[RangeSet]]",
                    cursors: "dict[int, IP]") -> "int":
    """The range set an imported address came from. Exact when the plugin has seen the
    network's config; otherwise a best guess host-local's files allow: the set whose
    cursor shares the longest prefix with the address (0 without cursors)."""
    if range_sets:
        return next((i for i, rs in enumerate(range_sets) if rs.contains(ip)), 0)
    best, best_len = 0, -1
    bits = 32 if ip.version == 4 else 128
    for idx, cur in sorted(cursors.items()):
        if cur.version != ip.version:
            continue
        common = bits - (int(ip) ^ int(cur)).bit_length()
        if common > best_len:
            best, best_len = idx, common
    return best


def apply(store: "Store", network: "str", new: "list[Lease]", cursors: "dict[int, IP]"
          ) -> "None":
    """Write a plan inside the caller's transaction (history reason ``import``)."""
    store.import_leases(network, new, "import")
    for idx, ip in sorted(cursors.items()):
        store.set_last_reserved(network, idx, ip)
