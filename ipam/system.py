"""The operating-system calls of the plugin's hot path, straight from ``posix``.

``import os`` runs ``_collections_abc``, which builds some thirty abstract base classes:
1.7 ms of a 22 ms plugin process started by the launcher (which skips ``site``, the
other importer of ``os``). The C module underneath ``os`` has every call the plugin
makes; this module adds the few ``os.path`` string helpers it needs, for POSIX paths
only. Code off the hot path (ipamctl, import, migrations) keeps using ``os``. The plugin
is POSIX-only anyway (it queues writers with ``flock``).
"""
import sys
import time
from posix import (  # noqa: F401 - re-exported for the hot path's modules
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    _exit,
    close,
    fdatasync,
    fstat,
    getpid,
    link,
    listdir,
    lstat,
    mkdir,
    open,
    read,
    rename,
    stat,
    uname,
    unlink,
    write,
)
from posix import environ as _environ

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations are strings, so this costs nothing at run time
    from typing import Optional, TextIO

_S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# For tests only: a file to read the boot id from instead of BOOT_ID_PATH, so that one
# machine can play two hosts (or one host before and after a reboot) with real plugin,
# daemon and ipamctl processes on a real database. A variable, not a parameter: it
# reaches every process a test starts; and the code that reads the kernel's file is the
# code that reads this one.
BOOT_ID_FILE_ENV = "HOST_LOCAL_SQLITE_BOOT_ID_FILE"
_BOOT_IDS: "dict" = {}


def boot_id():
    """The kernel's boot id (None where /proc does not say): a lease made in an earlier
    boot belongs to a network namespace that no longer exists, and two hosts that share
    a node name (cloned VMs share even /etc/machine-id) differ in it."""
    path = _environ.get(BOOT_ID_FILE_ENV.encode()) or BOOT_ID_PATH
    if path not in _BOOT_IDS:
        try:
            fd = open(path, O_RDONLY | O_CLOEXEC)
            try:
                _BOOT_IDS[path] = read(fd, 64).decode().strip() or None
            finally:
                close(fd)
        except (OSError, UnicodeDecodeError):
            _BOOT_IDS[path] = None
    return _BOOT_IDS[path]


def boot_clock():
    """Seconds since this boot (CLOCK_BOOTTIME): ages that no clock step can change."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def warn(text: "str", stream: "Optional[TextIO]" = None) -> "None":
    """A diagnostic line on ``stream`` (default: stderr), best effort: a runtime that
    closed its end (EPIPE) or a full disk behind stderr must never fail the call, nor
    roll it back. The node daemon gives each call its own stream (its client's)."""
    stream = sys.stderr if stream is None else stream
    try:
        stream.write("host-local-sqlite: %s\n" % text)
        stream.flush()
    except (OSError, ValueError):
        pass


def environ(raw: "Optional[dict]" = None) -> "dict":
    """The environment (or ``raw``, another process's, as bytes) as text, decoded as
    ``os.environ`` decodes it (the file system encoding, undecodable bytes as
    surrogates)."""
    enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {k.decode(enc, errors): v.decode(enc, errors)
            for k, v in (_environ if raw is None else raw).items()}


def join(base: "str", name: "str") -> "str":
    """``os.path.join`` of two POSIX paths: an absolute ``name`` replaces ``base``."""
    if name.startswith("/") or not base:
        return name
    return base + name if base.endswith("/") else base + "/" + name


def dirname(path: "str") -> "str":
    """``os.path.dirname``: everything before the last slash, trailing slashes dropped
    unless the directory is the root itself."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") or head


def file_type(st) -> "int":
    """The file type bits of a stat result (``stat.S_IFMT``), to compare with S_IF*."""
    return st.st_mode & _S_IFMT


def _mode(path, follow=True):
    try:
        return file_type(stat(path) if follow else lstat(path))
    except (OSError, ValueError):
        return None


def exists(path: "str") -> "bool":
    return _mode(path) is not None


def lexists(path: "str") -> "bool":
    """True for a dangling symbolic link too."""
    return _mode(path, follow=False) is not None


def isdir(path: "str") -> "bool":
    return _mode(path) == S_IFDIR


def islink(path: "str") -> "bool":
    return _mode(path, follow=False) == S_IFLNK
