"""The compatibility mirror: host-local's directory layout, a two-way contract.

Other tools read ``<dataDir>/<network>/<ip>`` (``containerID\\r\\nifname``), the
``last_reserved_ip.N`` cursors and the ``lock`` file, so we keep them byte for byte as
host-local 1.1.1 would. Go host-local (before a swap, after a rollback), a restored
backup and operators write the same layout, and host-local treats an existing address
file as taken. So the mirror is not only output: it is read back when a new address
file meets an existing one (:meth:`NetworkFiles.claim`), by :mod:`ipam.mirror.reconcile` when a
network is first served (adoption) or someone else changed its directory, by
``ipamctl check`` and ``export``, and by :mod:`ipam.mirror.importer` for ``ipamctl import``.
Hence:

- every change of a network's files happens under host-local's own ``<network>/lock``
  flock (bounded by the busy timeout), so Go and we never interleave;
- a new address file is created without replacing anything (``link()`` of a written
  temporary file): an existing file naming another owner is a foreign lease, and the
  allocator records it and moves on, as Go's ``O_EXCL`` does;
- a file is removed only when it names the owner whose lease we release;
- a foreign change is noticed by one ``fstat`` of the directory against the stamp we
  recorded after our own last change (:mod:`ipam.mirror.reconcile` then re-scans).

Crash safety: a journal ``<dataDir>/.host-local-sqlite-pending-<network>`` lists every
address file this command creates or removes, before it does so, and goes after COMMIT.
Whoever finds it next undoes or redoes exactly those files from the database; every other
file is judged as anyone else's would be. All access goes through a directory descriptor
opened with O_NOFOLLOW: a symlinked network directory or address file is never followed.
"""

from time import monotonic_ns

from ipam import system
from ipam.errors import IoFailure
from ipam.mirror.contents import owner_of, same_owner
from ipam.paths import (
    MIRROR_LOCK,
    PENDING_PREFIX,
    TMP_PREFIX,
    cursor_name,
    makedirs,
)
from ipam.store import writer_lock
from ipam.store.sqlite_db import DEFAULT_BUSY_TIMEOUT
from ipam.system import (
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_RDONLY,
    O_TRUNC,
    O_WRONLY,
)
from ipam.waits import Patience

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from os import stat_result
    from typing import Callable, Literal, Optional, Union

    from ipam.daemon.steps import Steps
    from ipam.lease import Changes, Lease
    from ipam.ranges import RangeSet
    from ipam.store.protocol import Store

    # A journal entry: (file name, its content before, after; None: absent).
    JournalEntry = tuple[str, Optional[bytes], Optional[bytes]]

FILE_MODE = 0o600
DIR_MODE = 0o755


def _io(err: "OSError", what: "str") -> "IoFailure":
    return IoFailure("mirror %s: %s" % (what, err.strerror or err))


def _denied(err: "OSError", path: "str", write: "bool") -> "Optional[IoFailure]":
    """A permission error on the mirror, naming the path that stops this user."""
    from ipam import access  # only after a failure

    return access.is_denied(err) and access.denied(path, write, access.DATA_DIR) or None


class NetworkDir:
    """An open ``<dataDir>/<network>`` directory; every operation is relative to its fd."""

    def __init__(self, data_dir: "str", network: "str", create: "bool" = True) -> "None":
        self.network = network
        self.path = system.join(data_dir, network)
        self.lock_fd: Optional[int] = None
        self.leftovers: list[str] = []  # our temporary files that could not be removed
        self.create_missing = create
        if create:
            try:
                makedirs(data_dir, DIR_MODE)
                system.mkdir(self.path, DIR_MODE)
            except FileExistsError:
                pass
            except OSError as e:
                raise _denied(e, self.path, True) or _io(e, "cannot create %s" % self.path) \
                    from None
        try:
            self.fd = system.open(self.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        except OSError as e:
            if system.islink(self.path):
                raise IoFailure("mirror directory %s is a symbolic link; refusing to follow it"
                                % self.path) from None
            raise _denied(e, self.path, create) or _io(e, "cannot open %s" % self.path) \
                from None
        self._seq = 0

    def close(self) -> "None":
        # Each descriptor is forgotten before it is closed: a signal's exception between
        # the two (the plugin's guard raises one) must not leave a number that a later
        # cleanup closes again, by then maybe another file's.
        lock_fd, self.lock_fd = self.lock_fd, None
        if lock_fd is not None:
            writer_lock.release(lock_fd)  # closing drops the flock
        fd, self.fd = self.fd, -1
        if fd >= 0:
            system.close(fd)

    def lock(self, patience: "Patience") -> "None":
        """Hold host-local's ``lock`` (flock, as Go's disk backend takes it for a whole
        command); a holder past what ``patience`` allows is code 11 naming the file. A reader
        (``create=False``) creates nothing: without a ``lock`` there is no one to wait for."""
        flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC
        try:  # created as ensure_lock() would, in the same open
            fd = system.open(MIRROR_LOCK, flags | (O_CREAT if self.create_missing else 0),
                             FILE_MODE, dir_fd=self.fd)
        except FileNotFoundError:
            if not self.create_missing:
                return
            raise _io(FileNotFoundError(2, "No such file or directory"),
                      "cannot open %s" % self.lock_path()) from None
        except OSError as e:
            raise _io(e, "cannot open %s" % self.lock_path()) from None
        try:
            if not _is_regular(system.fstat(fd)):  # a FIFO, a device: no one's lock
                raise IoFailure("mirror %s is not a regular file; refusing to use it"
                                % self.lock_path())
            writer_lock.poll(fd, patience, "%s (host-local's lock)" % self.lock_path(),
                             key=self.lock_path())
        except BaseException:
            system.close(fd)
            raise
        self.lock_fd = fd

    def stamp(self) -> "str":
        """What changes whenever an entry is added, removed or renamed here: inode, size,
        mtime and ctime in ns. A hint, not a proof: the kernel's clock for these is
        coarse, so two changes in one tick can leave one value on file systems whose
        directory size does not move (the create itself is the guarantee)."""
        st = system.fstat(self.fd)
        # The size too: on tmpfs and XFS it moves with every entry, whatever the clock.
        return "%d:%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self, name: "str") -> "Optional[bytes]":
        """Bytes of a regular file, or None (missing, a link, a directory)."""
        return self.read_stat(name)[0]

    def read_stat(self, name: "str") -> "tuple[Optional[bytes], float]":
        """``(bytes or None, mtime)`` of a regular file, with one open. None means there
        is none (absent, a link, a directory, a socket); a file that is there but cannot
        be read (EIO, EACCES) is an IoFailure: never taken for an absent one."""
        try:
            fd = system.open(name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return None, 0.0
        except OSError as e:
            if e.errno in _NOT_A_FILE:
                return None, 0.0
            raise _io(e, "cannot read %s/%s" % (self.path, name)) from None
        try:
            st = system.fstat(fd)
            return (_read_all(fd), st.st_mtime) if _is_regular(st) else (None, 0.0)
        except OSError as e:
            raise _io(e, "cannot read %s/%s" % (self.path, name)) from None
        finally:
            system.close(fd)

    def _temp(self, name: "str", data: "bytes", durable: "bool" = False) -> "str":
        self._seq += 1
        tmp = "%s%s.%d.%d" % (TMP_PREFIX, name, system.getpid(), self._seq)
        try:
            fd = system.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, FILE_MODE,
                             dir_fd=self.fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[system.write(fd, view):]
                if durable:
                    system.fdatasync(fd)
            finally:
                system.close(fd)
        except OSError as e:
            self._discard(tmp)
            raise _io(e, "cannot write %s/%s" % (self.path, name)) from None
        return tmp

    def write(self, name: "str", data: "bytes") -> "None":
        """Replace ``name`` atomically: a temporary file, then rename. Only for files
        that name no owner (cursors) or name the same owner."""
        tmp = self._temp(name, data)
        try:
            system.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as e:
            self._discard(tmp)
            raise _io(e, "cannot write %s/%s" % (self.path, name)) from None

    def create(self, name: "str", data: "bytes") -> "bool":
        """Create ``name`` holding ``data`` unless something is there already; True when
        created. Readers never see it half written (a written temporary file, linked),
        and neither does a power cut: its data is synced before the link (about 0.25 ms),
        since an empty file at a leased address would name no one for good."""
        tmp = self._temp(name, data, durable=True)
        try:
            system.link(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd,
                        follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise _io(e, "cannot write %s/%s" % (self.path, name)) from None
        finally:
            self._discard(tmp)

    def remove(self, name: "str") -> "None":
        try:
            system.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            pass
        except OSError as e:
            raise _io(e, "cannot remove %s/%s" % (self.path, name)) from None

    def _discard(self, name: "str") -> "None":
        try:
            system.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError:
            self.leftovers.append(name)  # a later reconcile removes it (see NetworkFiles)

    def lock_path(self) -> "str":
        return system.join(self.path, MIRROR_LOCK)

    def ensure_lock(self) -> "None":
        """host-local's empty ``lock`` file (it flocks it); created, never rewritten."""
        try:
            system.close(system.open(MIRROR_LOCK, O_RDONLY | O_CREAT | O_NOFOLLOW, FILE_MODE,
                                     dir_fd=self.fd))
        except OSError as e:
            raise _io(e, "cannot create %s" % self.lock_path()) from None

    def names(self) -> "list[str]":
        return system.listdir(self.fd)

    def file_type(self, name: "str") -> "Optional[int]":
        """The S_IF* type of ``name`` itself (a link is a link), or None if absent."""
        try:
            return system.file_type(system.stat(name, dir_fd=self.fd, follow_symlinks=False))
        except OSError:
            return None

    def is_dir(self, name: "str") -> "bool":
        """A real directory (not a link to one): never ours to remove."""
        return self.file_type(name) == system.S_IFDIR


_NOT_A_FILE = (40, 6)  # ELOOP (a link, under O_NOFOLLOW), ENXIO (a socket)


def _hex(data: "Optional[bytes]") -> "str":
    return "-" if data is None else data.hex()


def _unhex(text: "str") -> "Optional[bytes]":
    return None if text == "-" else bytes.fromhex(text)


def _read_all(fd: "int") -> "bytes":
    chunks: list[bytes] = []
    while True:
        chunk = system.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _is_regular(st: "stat_result") -> "bool":
    return system.file_type(st) == system.S_IFREG


class Mirror:
    """Where, whether and how patiently a network's files are kept."""

    def __init__(self, data_dir: "str", enabled: "bool" = True,
                 timeout: "Optional[float]" = None,
                 warn: "Callable[[str], None]" = system.warn) -> "None":
        self.data_dir = data_dir
        self.enabled = enabled
        self.timeout = DEFAULT_BUSY_TIMEOUT if timeout is None else timeout
        # Where what is said about the files goes: the call's (CallContext.warn)
        self.warn = warn

    def marker(self, network: "str") -> "str":
        name = PENDING_PREFIX + network
        if len(name) > 255:  # NAME_MAX; network names are ASCII
            import hashlib

            name = PENDING_PREFIX + hashlib.sha256(network.encode()).hexdigest()
        return system.join(self.data_dir, name)

    def open(self, store: "Store", network: "str", create: "bool" = True,
             patience: "Optional[Patience]" = None) -> "Optional[NetworkFiles]":
        """This command's hold on the network's files (host-local's lock taken), or None
        when not mirrored: :meth:`hold`, then :meth:`files`."""
        held = self.hold(network, create, patience)
        return None if held is None else self.files(store, held)

    def hold(self, network: "str", create: "bool" = True,
             patience: "Optional[Patience]" = None) -> "Optional[NetworkDir]":
        """The network's directory with host-local's lock held, or None when not
        mirrored. Taken BEFORE the store's transaction: every writer of ours takes its
        networks' locks (in name order) before the node-wide writers' queue, so a stuck
        holder of one network's lock (a stopped Go plugin, a FIFO planted there) stalls
        that network only, for ``busyTimeout`` at most. ``patience``: a plugin call's
        (:mod:`ipam.waits`), else this mirror's timeout for this wait."""
        if not self.enabled:
            return None
        d = NetworkDir(self.data_dir, network, create)
        try:
            d.lock(patience or Patience.each(self.timeout))
        except BaseException:
            d.close()
            raise
        return d

    def files(self, store: "Store", held: "NetworkDir") -> "NetworkFiles":
        """The command's hold on a network's files, for ``store``'s transaction, from its
        directory :meth:`hold` locked (and that it closes)."""
        return NetworkFiles(self, store, held)


class NetworkFiles:
    """One command's hold on one network's files: host-local's lock (taken before the
    transaction), the journal, and the stamp recorded for the next command (inside it)."""

    def __init__(self, mirror: "Mirror", store: "Store", held: "NetworkDir") -> "None":
        self.mirror = mirror
        self.store = store
        self.warn = mirror.warn
        self.d = held  # locked by Mirror.hold
        self.network = held.network
        self.problems: list[str] = []  # files that could not be changed: the journal stays
        self.notes: list[str] = []  # files left alone because they are someone else's
        self._journal: Optional[int] = None
        self.redone = False  # the pending journal was replayed (ipam.mirror.reconcile)
        # Boot ids of other hosts using this node's name at once (ipam.node_boots): their
        # leases are the shared pool's under our name, but their files are on their host.
        self.strangers: "frozenset[str]" = frozenset()
        self.closed = False
        self.steps: "Optional[Steps]" = None  # a traced call's (ipam.daemon.steps)
        try:
            self.pending = self._read_journal()
        except BaseException:
            self.d.close()
            raise

    def _close_journal(self) -> "None":
        journal, self._journal = self._journal, None  # forgotten first, as in NetworkDir.close
        if journal is not None:
            system.close(journal)

    def close(self) -> "None":
        """Release host-local's lock (idempotent)."""
        self._close_journal()
        if not self.closed:
            self.closed = True
            self.d.close()

    # -- the journal (pending marker) -------------------------------------------------
    def _read_journal(self) -> "Optional[list[JournalEntry]]":
        """The entries a command that did not finish left, or None (no marker)."""
        try:
            fd = system.open(self.mirror.marker(self.network), O_RDONLY | O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError:
            return []  # a marker we cannot read still asks for a reconcile
        try:
            data = _read_all(fd)
        finally:
            system.close(fd)
        entries: list[JournalEntry] = []
        for line in data.split(b"\n"):
            fields = line.split(b" ")
            try:
                name, before, after = (f.decode() for f in fields)
                entries.append((name, _unhex(before), _unhex(after)))
            except ValueError:
                continue  # cut short by a crash, or an older version's marker
        return entries

    def note(self, name: "str", before: "Optional[bytes]", after: "Optional[bytes]"
             ) -> "None":
        """Journal a change of an address file before it is made: its content before and
        after (None: absent). The database says, afterwards, which of the two stands."""
        if self._journal is None:
            path = self.mirror.marker(self.network)
            try:
                self._journal = system.open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW
                                            | O_CLOEXEC | (O_TRUNC if self.pending is None
                                                           else 0), FILE_MODE)
            except OSError as e:
                raise _io(e, "cannot create %s" % path) from None
        line = ("%s %s %s\n" % (name, _hex(before), _hex(after))).encode()
        try:
            system.write(self._journal, line)
        except OSError as e:
            raise _io(e, "cannot write %s" % self.mirror.marker(self.network)) from None

    def committed(self) -> "None":
        """After COMMIT, still in the writers' queue: the files match the database, so
        the journal goes (unless a file could not be removed: it stays for a later
        command), then host-local's lock, before the next writer of ours can start."""
        journaled = self._journal is not None or self.redone
        self.close()
        self._remove_journal(journaled)

    def settled(self) -> "None":
        """After a COMMIT that ended only the reconcile (:func:`ipam.commands._run`):
        the journal goes as in :meth:`committed`, but host-local's lock stays held for
        the command's own transaction, which starts a journal of its own."""
        journaled = self._journal is not None or self.redone
        self._close_journal()
        self.redone = False
        self._remove_journal(journaled)
        self.pending = self._read_journal()  # None, unless it had to stay

    def _remove_journal(self, journaled: "bool") -> "None":
        if self.problems or not journaled:
            return
        path = self.mirror.marker(self.network)
        try:
            system.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.warn("cannot remove %s: %s" % (path, e))

    def touched(self) -> "bool":
        """Did this command journal (so create or remove) any address file?"""
        return self._journal is not None

    def replay(self) -> "None":
        """After a failed command: read the journal again (its entries now included) for
        a repair in a new transaction, still under host-local's lock."""
        self._close_journal()
        self.pending = self._read_journal()
        self.problems = []

    def reconcile_if_changed(self, range_sets: "Optional[tuple[RangeSet, ...]]" = None,
                             adopt: "bool" = True, always: "bool" = False
                             ) -> "Optional[list[tuple[str, str]]]":
        """Inside the transaction, first thing: reconcile the network if someone else
        changed its files (``always``: whatever the stamp says, for an operator's
        repair). Returns what was reconciled (see :func:`ipam.mirror.reconcile.reconcile`), or
        None when nothing needed it."""
        if not always and (not self.changed() or self.new()):
            return None
        from ipam.mirror import reconcile  # lazy: only after a foreign change

        return reconcile.reconcile(self, range_sets, adopt)

    # -- what commands do -------------------------------------------------------------
    def changed(self) -> "bool":
        """Did anyone but us touch the directory (or the database go back in time) since
        our last change? One fstat and one primary-key read."""
        return self.pending is not None or \
            self.store.mirror_stamp(self.network) != self.d.stamp()

    def new(self) -> "bool":
        """A directory we never recorded that holds nothing but ``lock``: a network's
        first call, with nothing to reconcile (and nothing to import for it)."""
        return self.pending is None and self.store.mirror_stamp(self.network) is None \
            and all(name == MIRROR_LOCK for name in self.d.names())

    def claim(self, lease: "Lease") -> "Union[None, Literal[False], Lease]":
        """Create ``lease``'s file. None when it is now ours; otherwise what holds the
        address: a foreign :class:`Lease` (its file names another owner) or False
        (something that is no lease: an empty file, a directory)."""
        if self.steps is None:
            return self._claim(lease)
        since = monotonic_ns()
        try:
            return self._claim(lease)
        finally:
            self.steps.add_mirror(since)

    def _claim(self, lease: "Lease") -> "Union[None, Literal[False], Lease]":
        name, data = str(lease.ip), lease.mirror_content()
        self.note(name, None, data)
        if self.d.create(name, data):
            return None
        have = self.d.read(name)
        if same_owner(have, lease):
            return None
        owner = owner_of(have)
        if owner is None:
            self.warn("%s/%s exists and names no owner (%s): skipped the address, as "
                      "host-local does" % (self.d.path, name, _what(self.d, name, have)))
            return False
        from ipam.mirror import reconcile  # lazy: only when another writer was here

        return reconcile.found_lease(self, lease.ip, lease.range_set, owner)

    def release(self, lease: "Lease") -> "None":
        """Remove a released lease's file, only if it names that lease's owner; a file
        naming another owner stays, and is reported."""
        name, ours = str(lease.ip), lease.mirror_content()
        # Journaled before it is even read: if the read or the unlink fails, the next
        # command finishes the removal (the database no longer has the lease).
        self.note(name, ours, None)
        try:
            have = self.d.read(name)
        except IoFailure as e:
            self.problems.append(e.msg)
            return
        if have is None:
            if self.d.file_type(name) is not None:
                self.notes.append("left %s/%s: not a regular file, so not %s's lease file"
                                  % (self.d.path, name, _show(lease.mirror_content())))
            return
        if not same_owner(have, lease):
            self.notes.append("left %s/%s: it names another owner (%s), not %s"
                              % (self.d.path, name, _show(have),
                                 _show(lease.mirror_content())))
            return
        if have != ours:  # the same owner, spelled otherwise: its exact bytes too
            self.note(name, have, None)
        try:
            self.d.remove(name)
        except IoFailure as e:
            self.problems.append(e.msg)

    def rewrite(self, old: "Lease", new: "Lease") -> "None":
        """``old``'s file now says ``new`` (a legacy lease claimed by one interface);
        both contents are journaled first, so a crash in between can be undone."""
        name = str(old.ip)
        have = self.d.read(name)
        if not same_owner(have, old):
            self.notes.append("left %s/%s: it does not name %s" % (
                self.d.path, name, _show(old.mirror_content())))
            return
        self.note(name, have, new.mirror_content())
        self.d.write(name, new.mirror_content())

    def apply(self, changes: "Changes") -> "list[str]":
        """Mirror what a command changed besides the files it claimed: released files
        (best effort, as in host-local's DEL) and cursors. Returns what did not stop it:
        files that could not be removed (they keep the journal, so that a later command
        retries), then files left because they are someone else's (:attr:`notes`)."""
        self.problems += ["cannot remove %s/%s (a temporary file of ours); a later command "
                          "removes it" % (self.d.path, name) for name in self.d.leftovers]
        for lease in changes.released:
            self.release(lease)
        for old, new in changes.claimed:
            self.rewrite(old, new)
        for idx, ip in sorted(changes.cursors.items()):
            self.d.write(cursor_name(idx), str(ip).encode())
        return self.problems + self.notes

    def record(self) -> "None":
        """Last thing before COMMIT: the directory as our change left it."""
        self.store.set_mirror_stamp(self.network, self.d.stamp())


def _what(d: "NetworkDir", name: "str", data: "Optional[bytes]") -> "str":
    kind = d.file_type(name)
    if kind == system.S_IFDIR:
        return "a directory"
    if kind == system.S_IFLNK:
        return "a symbolic link"
    if data is None:
        return "not a regular file"
    return "an empty file" if not data else "not a lease file"


def _show(data: "bytes") -> "str":
    return data.decode("utf-8", "replace").replace("\r\n", "/").replace("\n", "/")
