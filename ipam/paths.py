"""Where things live by default. Stdlib only: the plugin's hot path imports it."""
import os

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# A leading dot: network names must start with a letter or digit, so no network
# directory can ever take this name.
DB_NAME = ".host-local-sqlite.db"


def default_database(data_dir: str) -> str:
    """The SQLite file the plugin uses when the config names no ``database``."""
    return os.path.join(data_dir, DB_NAME)


def is_url(database: str) -> bool:
    """A SQLAlchemy URL (``postgresql+psycopg://...``) rather than a SQLite path."""
    return "://" in database


def makedirs(path, mode=0o755):
    """``mkdir -p`` that gives every directory it creates ``mode`` (os.makedirs applies
    it to the last one only, leaving parents to the umask: 0777 under umask 000)."""
    if not path or os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.normpath(path))
    if parent and parent != path:
        makedirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def node_name() -> str:
    """This node's name for the leases it takes: the kernel's host name, as ``hostname``
    prints it (``os.uname`` costs nothing; ``socket`` would cost an import)."""
    return os.uname().nodename
