"""The database against the files others write: reconcile a network after a foreign change.

Loaded only when :meth:`ipam.mirror.files.NetworkFiles.changed` says someone else touched a
network's directory (Go host-local, an operator, a database restored to an older state,
a command of ours that died): the common call never imports it. Everything here runs
inside the caller's transaction, under host-local's ``lock``.

The rules, each the one that can never put two containers on one address:

- a file naming an owner the database does not know is a foreign lease: recorded
  (history reason ``adopt``), so that its address is never handed out;
- a file naming another owner than our lease of that address means our lease was
  released outside and the address handed out again (host-local creates a file only
  where none exists): our lease is released (reason ``reconcile``) and the file's owner
  adopted;
- a lease whose file someone removed is kept, and its file written back (created, so
  never over another's): a missing file alone does not prove the container is gone (an
  operator's ``rm``, a dataDir restored from a copy), and without its file Go
  host-local beside us would hand the address out again. If Go's DEL removed it, the
  address stays held until a DEL of ours, ``ipamctl release`` or ``ipamctl gc``: a
  leak, never a duplicate;
- the cursor files show the database's cursors (a network we never served takes the
  files'): round robin goes on where the database says, and Go beside us goes on from
  there too;
- files a command of ours journaled (see :mod:`ipam.mirror.files`) are undone or redone from
  the database: they were ours.
"""

from ipam import addr
from ipam.lease import Lease
from ipam.mirror.contents import is_address_name, mirrored_cursors, owner_of, same_owner
from ipam.paths import TMP_PREFIX, cursor_index, cursor_name, is_cursor_name
from ipam.system import S_IFREG

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Callable, Iterable, Literal, Optional, Union

    from ipam.addr import IP
    from ipam.mirror.files import JournalEntry, NetworkDir, NetworkFiles
    from ipam.ranges import RangeSet

    Owner = tuple[str, Optional[str]]  # (container ID, ifname or None: legacy)
    Found = tuple[str, str]  # (kind, file name)

ADOPT = "adopt"
RECONCILE = "reconcile"


def _foreign(files: "NetworkFiles", ip: "IP", range_set: "int", owner: "Owner",
             mtime: "float") -> "Lease":
    """A lease for a file someone else wrote, dated by the file as ``import`` dates one
    (of no known boot: a file's mtime proves none)."""
    return Lease(files.network, ip, range_set, owner[0], owner[1], mtime or 0.0, None,
                 files.store.node if files.store.shared else None)


def found_lease(files: "NetworkFiles", ip: "IP", range_set: "int", owner: "Owner"
                ) -> "Union[Lease, Literal[False]]":
    """A file met while claiming ``ip`` names ``owner``: record it, so that the allocator
    moves on. Returns the recorded lease, or False if the address is held in the database
    after all (another node of a shared pool)."""
    _, mtime = files.d.read_stat(str(ip))
    lease = _foreign(files, ip, range_set, owner, mtime)
    if not files.store.reserve(lease, ADOPT):
        return False
    files.warn("%s/%s names %s: recorded it (another writer's lease) and skipped the "
               "address" % (files.d.path, ip, _owner_text(owner)))
    return lease


def _owner_text(owner: "Owner") -> "str":
    return owner[0] if owner[1] is None else "%s/%s" % owner


def redo_journal(files: "NetworkFiles") -> "list[Found]":
    """Finish or undo exactly the file changes an unfinished command of ours journaled.

    Each entry is a file's content before and after the change (None: absent). If the
    database's lease of that address shows the "after", the command committed and its
    change is made where the file still shows "before"; otherwise the command rolled
    back (its lease, or a lease it adopted, went with it) and the "before" is put back
    where the file shows "after". A file that shows neither changed since: someone
    else's, left alone. The cursor files, which an unfinished ADD may have moved, are
    put back too. Returns ``[(kind, name)]``: ``restored`` (written again), ``stale``
    (removed), ``wrong`` (a cursor put back)."""
    store, d = files.store, files.d
    done = []
    for name, before, after in files.pending or ():
        ip = addr.parse_ip(name)
        if ip is None or not is_address_name(name) or d.is_dir(name):
            continue
        lease = store.lease_at(files.network, ip)
        want = lease.mirror_content() if lease is not None else None
        target, other = (after, before) if want == after else (before, after)
        have = d.read(name)
        if have == target or not (_shows(have, other) or _shows(have, target)):
            continue  # done already, or someone else's since
        if target is None:
            d.remove(name)
            done.append(("stale", name))
        elif have is None:
            d.create(name, target)
            done.append(("restored", name))
        else:
            d.write(name, target)
            done.append(("restored", name))
    if files.pending is not None:
        for idx, ip in sorted((mirrored_cursors(store, files.network) or {}).items()):
            name, data = cursor_name(idx), str(ip).encode()
            if d.read(name) != data:
                d.write(name, data)
                done.append(("wrong", name))
    files.redone = True
    return sorted(set(done))


def _shows(have: "Optional[bytes]", data: "Optional[bytes]") -> "bool":
    """Does a file show ``data``, or a write of it that a power cut cut short (its first
    bytes, or none: the link persisted, the data not)?"""
    if data is None:
        return have is None
    return have is not None and data.startswith(have)


def reconcile(files: "NetworkFiles", range_sets: "Optional[tuple[RangeSet, ...]]" = None,
              adopt: "bool" = True) -> "list[Found]":
    """Bring the database and a changed network directory together (the rules above).

    ``range_sets`` (the config's, or None) assigns adopted leases their range set;
    ``adopt`` False only finishes our own journal. Returns the reconciled files as
    ``[(kind, name)]``: ``stale`` and ``restored`` (our journal, undone or redone),
    ``adopted``, ``reassigned``, ``missing`` (a lease's file or a cursor file, written
    back), ``wrong`` (a cursor file, rewritten), ``stale`` (also a cursor file the
    database has no cursor for, removed), ``blocked``, ``unreadable``, ``held
    elsewhere``, ``temporary``; the other writers' changes are summed up on stderr.
    """
    found = redo_journal(files)
    redone = list(found)
    if not adopt:
        return found
    store, d, network = files.store, files.d, files.network
    leases = {str(lease.ip): lease for lease in store.leases(network)}
    cursors = {} if store.shared else store.cursors(network)
    new = []
    file_cursors: dict[int, IP] = {}
    cursor_files = []
    for name in sorted(d.names()):
        if name.startswith(TMP_PREFIX):
            d.remove(name)  # ours, left by a process that died (we hold every lock)
            found.append(("temporary", name))
            continue
        if is_cursor_name(name):
            cursor_files.append(name)
            data = d.read(name)
            ip = addr.parse_ip(data.decode("ascii", "replace")) if data else None
            if ip is not None:
                file_cursors[cursor_index(name)] = ip
            continue
        ip = addr.parse_ip(name)
        if ip is None or not is_address_name(name):
            continue
        have, mtime = d.read_stat(name)
        lease = leases.pop(name, None)
        if have is None:  # a directory or a link: no one's lease file, never followed
            if lease is not None:
                found.append(("blocked", name))
            continue
        if lease is not None and same_owner(have, lease):
            continue
        owner = owner_of(have)
        if owner is None:
            found.append(("unreadable", name))  # it still blocks the address: claim sees it
            continue
        if lease is not None:
            store.release(lease, RECONCILE)
            found.append(("reassigned", name))
        elif store.lease_at(network, ip) is not None:
            found.append(("held elsewhere", name))  # another node's, in a shared pool
            continue
        idx = _range_set_index(ip, range_sets, lease, file_cursors or cursors)
        new.append(_foreign(files, ip, idx, owner, mtime))
        found.append(("adopted", name))
    if new:
        store.import_leases(network, new, ADOPT)
    # Another host using our node name (a conflict, reported by every call) keeps its
    # leases' files on its own host: written here, they would outlive its DELs.
    gone = [_write_back(files, leases[name]) for name in sorted(leases)
            if leases[name].boot_id not in files.strangers]
    _summarise(files.warn, d.path, found[len(redone):] + gone)
    if store.shared:
        return found + gone
    return found + gone + _cursors(files, cursors, file_cursors, cursor_files)


def _write_back(files: "NetworkFiles", lease: "Lease") -> "Found":
    """Our lease's file is gone: create it again (journaled, as every file we create),
    so that no other writer takes the address. Something appearing meanwhile under its
    name is never replaced: ``blocked``."""
    name, data = str(lease.ip), lease.mirror_content()
    files.note(name, None, data)
    return ("missing" if files.d.create(name, data) else "blocked", name)


def _cursors(files: "NetworkFiles", cursors: "dict[int, IP]",
             file_cursors: "dict[int, IP]", cursor_files: "list[str]") -> "list[Found]":
    """A network we never served takes host-local's cursors, so that round robin goes
    on from them. Otherwise the cursor files are made to show the database's cursors:
    written where they differ (``missing``, ``wrong``), removed where the database has
    none (``stale``: no one's, as ``ipamctl check --repair`` removes them)."""
    store, d, network = files.store, files.d, files.network
    if not cursors:
        for idx, ip in sorted(file_cursors.items()):
            store.set_last_reserved(network, idx, ip)
        return []
    written = []
    for name in cursor_files:
        if cursor_index(name) not in cursors and not d.is_dir(name):
            d.remove(name)
            written.append(("stale", name))
    for idx, ip in sorted(cursors.items()):
        name, data = cursor_name(idx), str(ip).encode()
        have = d.read(name)
        if have != data and not d.is_dir(name):  # a directory: never ours
            d.write(name, data)
            written.append(("missing" if have is None else "wrong", name))
    return written


def _range_set_index(ip: "IP", range_sets: "Optional[tuple[RangeSet, ...]]",
                     lease: "Optional[Lease]", cursors: "dict[int, IP]") -> "int":
    if lease is not None:
        return lease.range_set
    from ipam.mirror.importer import range_set_index

    return range_set_index(ip, range_sets, cursors)


_SAY = {
    "adopted": "recorded %d lease(s) that another writer made (history reason 'adopt')",
    "reassigned": "released %d lease(s) whose address another writer handed out again "
                  "(history reason 'reconcile')",
    "missing": "%d lease(s) had no file (someone else removed it): wrote it back; the "
               "lease is kept until a DEL, 'ipamctl release' or 'ipamctl gc'",
    "unreadable": "%d address file(s) name no owner: their addresses stay unused",
    "blocked": "%d lease(s) have a directory or link in place of their file: kept, "
               "never followed (see 'ipamctl check')",
    "held elsewhere": "%d file(s) name an address another node holds in the pool",
}


def _summarise(warn: "Callable[[str], None]", path: "str", found: "list[Found]") -> "None":
    for kind, text in _SAY.items():
        names = [name for k, name in found if k == kind]
        if names:
            warn("%s: %s: %s" % (path, text % len(names), " ".join(names[:8])
                                 + (" ..." if len(names) > 8 else "")))


def differences(d: "NetworkDir", leases: "Iterable[Lease]",
                cursors: "Optional[dict[int, IP]]",
                progress: "Optional[Callable[[int], object]]" = None,
                journal: "Optional[list[JournalEntry]]" = None) -> "list[Found]":
    """How a network directory differs from the database, as ``[(kind, name)]``; read
    only. Kinds: ``missing`` (a lease without its file), ``wrong`` (same owner, other
    bytes; or a cursor file that differs), ``stale`` (a cursor file without a cursor),
    ``temporary`` (our leftover), ``foreign`` (a file naming an owner the database does
    not know), ``conflict`` (a file naming another owner than our lease),
    ``unreadable`` (a regular address file that names nobody) and ``blocked`` (a
    directory or link where our lease's file should be). Directories and links under
    other addresses' names are no one's leases: not listed. ``cursors`` None leaves cursor
    files out (a shared pool's). ``progress(1)`` is called per lease and cursor. An
    address file that ``journal`` (an unfinished command's) says was ours is ``stale``.
    """
    want = {str(lease.ip): lease for lease in leases}
    # name -> the contents our unfinished commands gave it, before or after
    ours: dict[str, set[Optional[bytes]]] = {}
    for name, before, after in journal or ():
        ours.setdefault(name, set()).update((before, after))
    diffs = []
    for name in sorted(d.names()):
        if name.startswith(TMP_PREFIX):
            diffs.append(("temporary", name))
        elif is_cursor_name(name):
            if cursors is not None and cursor_index(name) not in cursors:
                diffs.append(("stale", name))
        elif is_address_name(name) and name not in want:
            if d.file_type(name) != S_IFREG:
                continue  # a directory or a link: no one's lease, and never ours to touch
            have = d.read(name)
            diffs.append(("stale" if have in ours.get(name, ()) else "unreadable"
                          if owner_of(have) is None else "foreign", name))
    for name, lease in sorted(want.items()):
        if progress is not None:
            progress(1)
        have = d.read(name)
        if have is None:
            diffs.append(("missing" if d.file_type(name) is None else "blocked", name))
        elif have == lease.mirror_content():
            continue
        elif same_owner(have, lease):
            diffs.append(("wrong", name))
        else:
            diffs.append(("conflict" if owner_of(have) is not None else "unreadable", name))
    for idx, ip in sorted((cursors or {}).items()):
        if progress is not None:
            progress(1)
        name = cursor_name(idx)
        have = d.read(name)
        if have != str(ip).encode():
            diffs.append(("missing" if have is None else "wrong", name))
    return diffs


# What sync fixes; the other kinds name files that are someone else's: reported, kept.
FIXABLE = ("missing", "wrong", "stale", "temporary")


def sync(files: "NetworkFiles", leases: "list[Lease]", cursors: "Optional[dict[int, IP]]",
         progress: "Optional[Callable[[int], object]]" = None) -> "list[Found]":
    """Make the directory show the database wherever that harms nobody: write missing
    files (created, never replacing), rewrite our own files and cursors, remove our
    leftovers. Returns :func:`differences` as found, fixed or not."""
    d = files.d
    diffs = differences(d, leases, cursors, progress, files.pending)
    by_name = {str(lease.ip): lease for lease in leases}
    for kind, name in diffs:
        if kind not in FIXABLE:
            continue
        if kind in ("temporary", "stale"):
            d.remove(name)
        elif cursors is not None and is_cursor_name(name):  # none differ without cursors
            d.write(name, str(cursors[cursor_index(name)]).encode())
        elif kind == "missing":
            files.note(name, None, by_name[name].mirror_content())
            if not d.create(name, by_name[name].mirror_content()):
                diffs[diffs.index((kind, name))] = ("blocked", name)  # appeared meanwhile
        else:  # wrong: same owner in another spelling
            d.write(name, by_name[name].mirror_content())
    return diffs
