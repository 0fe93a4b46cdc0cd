"""Every name the product gives a file or directory, or finds one by, and the defaults.

One module so that the whole on-disk contract can be read at once, and a rename is one
edit: each name says who else reads it (Go host-local, SQLite, operators). Constants and
tiny functions only, stdlib only: the plugin's hot path imports it, and so does the
node daemon's thin client (:mod:`ipam.client`), for two names: the functions import
:mod:`ipam.system` themselves, so that the client does not.

Not here, on purpose: the launcher's byte-code bundle (``launcher-bundle.<tag>.marshal``,
:func:`ipam.install.bundle.path`), because the launcher reads it before it may import this
module from the bundle; the kernel's ``/proc`` files (:mod:`ipam.admin.nsfind` and
:mod:`ipam.admin.nsaddr`, through which gc finds the network namespaces, at no fixed path);
and the container runtimes' own config files, looked up by :mod:`ipam.install.plugin_dirs`.
"""
# --- dataDir: the directory host-local uses, and we share with it ---------------------
# host-local's default dataDir (plugins/ipam/host-local/backend/disk); operators' scripts
# and Go host-local read the mirror there.
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# The SQLite database, by default in dataDir. A leading dot: network names must start
# with a letter or digit, so no network directory can ever take this name. Operators
# name it to ipamctl (--database) and to their backups.
DB_NAME = ".host-local-sqlite.db"
# A shared (PostgreSQL) database's node-local writers' queue, in dataDir beside the
# mirror (:mod:`ipam.store.writer_lock`); ours alone. A leading dot, as for DB_NAME.
SHARED_QUEUE_NAME = ".host-local-sqlite-shared.lock"
# The mirror's crash journal, ``<dataDir>/<prefix><network>`` (the network's SHA-256
# when that is too long a name: :meth:`ipam.mirror.files.NetworkDir.marker`); ours alone,
# but an operator may find one left by a crash.
PENDING_PREFIX = ".host-local-sqlite-pending-"

# --- beside the SQLite database ------------------------------------------------------
# The SQLite writers' queue, ``<database>.lock`` (:mod:`ipam.store.writer_lock`): every writer
# of ours (plugin, ipamctl, backup and restore) takes it before SQLite's own lock.
WRITER_QUEUE_SUFFIX = ".lock"
# SQLite's own files beside a database (its WAL, its shared memory, its rollback journal)
# by SQLite's names; sqlite3 and backup tools look for them too.
SQLITE_WAL = "-wal"
SQLITE_SHM = "-shm"
SQLITE_SIDECARS = (SQLITE_WAL, SQLITE_SHM, "-journal")

# --- in a network's directory: host-local's layout, byte for byte --------------------
# host-local's per-network flock (backend/disk.Store's lock file); Go host-local takes it
# too, so that we and it never interleave.
MIRROR_LOCK = "lock"
# host-local's round-robin cursor per range set, ``last_reserved_ip.<N>``; Go host-local
# reads and writes it. Older versions wrote one file, without the ``.<N>``.
CURSOR_PREFIX = "last_reserved_ip."
LEGACY_CURSOR = "last_reserved_ip"
# Our temporary address files, linked into place; ours alone, left only by a crash.
TMP_PREFIX = ".host-local-sqlite.tmp."

# --- the plugin binary ---------------------------------------------------------------
# The plugin's name: the config's ``ipam.type``, which runtimes look up in their CNI bin
# directory, where ``ipamctl install-plugin`` writes the launcher by that name.
PLUGIN_NAME = "host-local-sqlite"
DEFAULT_BIN_DIR = "/opt/cni/bin"  # the CNI bin directory of most runtimes
# The native thin client (native/client.c, installed as PLUGIN_NAME) runs a call the node
# daemon does not take by exec'ing the file beside its own executable with this suffix:
# the in-process plugin, ``DIR/host-local-sqlite.in-process`` (native/client.h names it).
IN_PROCESS_SUFFIX = ".in-process"

# --- the node daemon (``ipamctl serve``, :mod:`ipam.daemon.server`) ------------------------
# Where the daemon listens and the plugin looks for it: under /run (a tmpfs, so a
# socket left by a crash goes with the boot), in a directory of its own, 0700, that
# only the daemon's user can enter. The systemd socket unit and the DaemonSet name it too.
DAEMON_SOCKET = "/run/host-local-sqlite/daemon.sock"
DAEMON_DIR_MODE = 0o700
DAEMON_SOCKET_MODE = 0o600
# The environment variable that names another socket, or turns forwarding off.
DAEMON_ENV = "HOST_LOCAL_SQLITE_DAEMON"


def daemon_lock(socket_path: "str") -> "str":
    """The flock a daemon holds while it serves ``socket_path``: a second daemon finds
    it taken and refuses to start (the file holds the first one's pid)."""
    return socket_path + ".lock"




def default_database(data_dir: "str") -> "str":
    """The SQLite file the plugin uses when the config names no ``database``."""
    from ipam import system
    return system.join(data_dir, DB_NAME)


def writer_queue(database_file: "str") -> "str":
    """The SQLite writers' queue of ``database_file``."""
    return database_file + WRITER_QUEUE_SUFFIX


def shared_queue(data_dir: "str") -> "str":
    """A shared database's writers' queue on this node."""
    from ipam import system
    return system.join(data_dir, SHARED_QUEUE_NAME)


def cursor_name(range_set: "int") -> "str":
    return CURSOR_PREFIX + str(range_set)


def is_cursor_name(name: "str") -> "bool":
    """ASCII digits only, as host-local writes them: ``str.isdigit`` alone takes "²",
    which ``int`` refuses."""
    index = name[len(CURSOR_PREFIX):]
    return name.startswith(CURSOR_PREFIX) and index.isdigit() and index.isascii()


def cursor_index(name: "str") -> "int":
    """The range set a cursor file (:func:`is_cursor_name`) is for."""
    return int(name[len(CURSOR_PREFIX):])


def temp_affixes(name: "str") -> "tuple":
    """(prefix, suffix) of a hidden temporary file beside ``name``, renamed over it once
    written (ipamctl's launcher and restore); a crash may leave one."""
    return "." + name + ".", ".tmp"


def makedirs(path, mode=0o755):
    """``mkdir -p`` that gives every directory it creates ``mode`` (os.makedirs applies
    it to the last one only, leaving parents to the umask: 0777 under umask 000)."""
    from ipam import system
    if not path or system.isdir(path):
        return
    parent = system.dirname(path.rstrip("/") or "/")
    if parent and parent != path:
        makedirs(parent, mode)
    try:
        system.mkdir(path, mode)
    except FileExistsError:
        if not system.isdir(path):
            raise


def node_name() -> "str":
    """This node's name for the leases it takes: the kernel's host name, as ``hostname``
    prints it (``uname`` costs nothing; ``socket`` would cost an import)."""
    from ipam import system
    return system.uname().nodename
