"""Where things live by default. Stdlib only: the plugin's hot path imports it."""
from ipam import system

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# A leading dot: network names must start with a letter or digit, so no network
# directory can ever take this name.
DB_NAME = ".host-local-sqlite.db"


def default_database(data_dir: str) -> str:
    """The SQLite file the plugin uses when the config names no ``database``."""
    return system.join(data_dir, DB_NAME)


def makedirs(path, mode=0o755):
    """``mkdir -p`` that gives every directory it creates ``mode`` (os.makedirs applies
    it to the last one only, leaving parents to the umask: 0777 under umask 000)."""
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


def node_name() -> str:
    """This node's name for the leases it takes: the kernel's host name, as ``hostname``
    prints it (``uname`` costs nothing; ``socket`` would cost an import)."""
    return system.uname().nodename
