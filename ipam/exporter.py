"""The compatibility mirror: host-local's directory layout, kept from the database.

Other tools read ``<dataDir>/<network>/<ip>`` (``containerID\\r\\nifname``), the
``last_reserved_ip.N`` cursors and the ``lock`` file, so we keep them byte for byte as
host-local 1.1.1 would. The database is the truth and the files are never read back,
except by an explicit ``ipamctl import``.

Crash safety: the changes are written while the command still holds the database's write
lock (so two processes cannot interleave their files), each file to a temporary name and
renamed. A marker ``<dataDir>/.host-local-sqlite-pending-<network>`` exists from before
the first file write until after COMMIT; whoever finds it next resynchronises that whole
network from the database. All access goes through a directory descriptor opened with
O_NOFOLLOW: a symlinked network directory or address file is never followed.
"""
import sys

from ipam import addr, system
from ipam.errors import IoFailure
from ipam.paths import makedirs
from ipam.system import O_CREAT, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_TRUNC, O_WRONLY

TMP_PREFIX = ".host-local-sqlite.tmp."
PENDING_PREFIX = ".host-local-sqlite-pending-"
CURSOR_PREFIX = "last_reserved_ip."
FILE_MODE = 0o600
DIR_MODE = 0o755


def _io(err, what):
    return IoFailure("mirror %s: %s" % (what, err.strerror or err))


class NetworkDir:
    """An open ``<dataDir>/<network>`` directory; every operation is relative to its fd."""

    def __init__(self, data_dir, network, create=True):
        self.path = system.join(data_dir, network)
        if create:
            try:
                makedirs(data_dir, DIR_MODE)
                system.mkdir(self.path, DIR_MODE)
            except FileExistsError:
                pass
            except OSError as e:
                raise _io(e, "cannot create %s" % self.path) from None
        try:
            self.fd = system.open(self.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        except OSError as e:
            if system.islink(self.path):
                raise IoFailure("mirror directory %s is a symbolic link; refusing to follow it"
                                % self.path) from None
            raise _io(e, "cannot open %s" % self.path) from None
        self._seq = 0

    def close(self):
        system.close(self.fd)

    def read(self, name):
        """Bytes of a regular file, or None (missing, a link, a directory)."""
        try:
            fd = system.open(name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, dir_fd=self.fd)
        except OSError:
            return None
        try:
            if not _is_regular(system.fstat(fd)):
                return None
            chunks = []
            while True:
                chunk = system.read(fd, 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            system.close(fd)

    def write(self, name, data):
        """Replace ``name`` atomically: a temporary file, then rename."""
        self._seq += 1
        tmp = "%s%s.%d.%d" % (TMP_PREFIX, name, system.getpid(), self._seq)
        try:
            fd = system.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, FILE_MODE,
                             dir_fd=self.fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[system.write(fd, view):]
            finally:
                system.close(fd)
            system.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as e:
            self._discard(tmp)
            raise _io(e, "cannot write %s/%s" % (self.path, name)) from None

    def remove(self, name):
        try:
            system.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            pass
        except OSError as e:
            raise _io(e, "cannot remove %s/%s" % (self.path, name)) from None

    def _discard(self, name):
        try:
            system.unlink(name, dir_fd=self.fd)
        except OSError:
            pass

    def ensure_lock(self):
        """host-local's empty ``lock`` file (it flocks it); created, never rewritten."""
        try:
            system.close(system.open("lock", O_RDONLY | O_CREAT | O_NOFOLLOW, FILE_MODE,
                                     dir_fd=self.fd))
        except OSError as e:
            raise _io(e, "cannot create %s/lock" % self.path) from None

    def names(self):
        return system.listdir(self.fd)

    def is_dir(self, name):
        """A real directory (not a link to one): never ours to remove."""
        try:
            st = system.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return system.file_type(st) == system.S_IFDIR


def _is_regular(st):
    return system.file_type(st) == system.S_IFREG


class Mirror:
    """Writes one command's changes into the mirror, inside the command's transaction."""

    def __init__(self, data_dir, enabled=True):
        self.data_dir = data_dir
        self.enabled = enabled

    def _marker(self, network):
        name = PENDING_PREFIX + network
        if len(name) > 255:  # NAME_MAX; network names are ASCII
            import hashlib

            name = PENDING_PREFIX + hashlib.sha256(network.encode()).hexdigest()
        return system.join(self.data_dir, name)

    def touch(self, network):
        """host-local creates the directory and ``lock`` on every DEL and CHECK too."""
        if self.enabled:
            d = NetworkDir(self.data_dir, network)
            try:
                d.ensure_lock()
            finally:
                d.close()

    def apply(self, store, changes):
        """Mirror ``changes`` and return the problems that did not stop it.

        Files an ADD needs (its addresses, its cursors) must be written, or the command
        fails and rolls back. Removing released files is best effort, as in host-local's
        DEL, and so is repairing what a crashed process left (its pending marker): those
        failures are returned, and the marker stays so that a later command retries.
        """
        if not self.enabled:
            return []
        network = changes.network
        problems = []
        d = NetworkDir(self.data_dir, network)
        try:
            marker = self._marker(network)
            stale = system.lexists(marker)
            if changes and not stale:
                try:
                    system.close(system.open(marker, O_WRONLY | O_CREAT | O_NOFOLLOW, FILE_MODE))
                except OSError as e:
                    raise _io(e, "cannot create %s" % marker) from None
            for lease in changes.released:
                try:
                    d.remove(str(lease.ip))
                except IoFailure as e:
                    problems.append(e.msg)
            for lease in changes.reserved:
                d.write(str(lease.ip), lease.mirror_content())
            for idx, ip in sorted(changes.cursors.items()):
                d.write(CURSOR_PREFIX + str(idx), str(ip).encode())
            d.ensure_lock()
            if stale:
                try:
                    sync_dir(d, store.leases(network), mirrored_cursors(store, network))
                except IoFailure as e:
                    problems.append(e.msg)
        finally:
            d.close()
        return problems

    def committed(self, network):
        """After COMMIT: the files now match the database."""
        if self.enabled:
            try:
                system.unlink(self._marker(network))
            except FileNotFoundError:
                pass
            except OSError as e:
                print("host-local-sqlite: cannot remove %s: %s" % (self._marker(network), e),
                      file=sys.stderr)

    def repair(self, store, network, progress=None):
        """Resynchronise a network from the database (after a failed COMMIT, or on demand)."""
        if not self.enabled:
            return []
        d = NetworkDir(self.data_dir, network)
        try:
            diffs = sync_dir(d, store.leases(network), mirrored_cursors(store, network),
                             progress=progress)
        finally:
            d.close()
        self.committed(network)
        return diffs


def mirrored_cursors(store, network):
    """The cursors a network's mirror must show, or None to leave its cursor files alone.

    None on a shared store: there the pool's cursor moves with every node's allocations,
    while a node's ``last_reserved_ip.N`` means what host-local's does, the last address
    this node reserved, which its own ADDs write.
    """
    return None if store.shared else store.cursors(network)


def sync_dir(d, leases, cursors, dry_run=False, progress=None):
    """Make a network directory equal the database; return the differences found.

    Address-named files without a lease and cursor files without a cursor are removed,
    wrong contents rewritten, missing files written, our leftover temporary files deleted.
    Foreign files (names that are no address of ours) are left alone, and so are the
    cursor files when ``cursors`` is None (see :func:`mirrored_cursors`).
    """
    want = {str(lease.ip): lease.mirror_content() for lease in leases}
    if cursors is not None:
        want.update({CURSOR_PREFIX + str(idx): str(ip).encode()
                     for idx, ip in cursors.items()})
    diffs = []
    for name in sorted(d.names()):
        if name in want or name == "lock":
            continue
        if cursors is None and name.startswith(CURSOR_PREFIX):
            continue
        if name.startswith(TMP_PREFIX):
            diffs.append(("temporary", name))
        elif _ours(name) and not d.is_dir(name):
            diffs.append(("stale", name))
        else:
            continue
        if not dry_run:
            d.remove(name)
    for name, data in sorted(want.items()):
        if progress is not None:
            progress(1)
        have = d.read(name)
        if have == data:
            continue
        diffs.append(("missing" if have is None else "wrong", name))
        if not dry_run:
            d.write(name, data)
    if not dry_run:
        d.ensure_lock()
    return diffs


def _ours(name):
    """A name the mirror owns: a canonical address or a cursor file."""
    if name.startswith(CURSOR_PREFIX):
        return name[len(CURSOR_PREFIX):].isdigit()
    ip = addr.parse_ip(name)
    return ip is not None and str(ip) == name
