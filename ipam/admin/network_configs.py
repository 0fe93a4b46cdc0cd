"""Where this host's leases are: the CNI network configs whose IPAM is ours, and the
databases they name.

Without ``--data-dir`` or ``--database``, ``ipamctl`` used to look at the default dataDir
alone and say that the database does not exist, when the plugin's networks had put it
elsewhere. The configs say where: each runtime reads its network configs from its own
directories (:attr:`ipam.install.plugin_dirs.Runtime.conf_dirs`, from the same config files as
its plugin directories), libcni's way (``.conf``, ``.conflist`` and ``.json`` files); a
plugin whose ``ipam.type`` is ours names its dataDir and database as the plugin reads
them (:func:`ipam.config.storage`). The drop-in's type, ``host-local``, is also Go's: such
a network counts when its database exists (only our plugin creates one), or its config
names a ``database`` (a key only we read).

Paths are as the runtimes see them, looked up under ``root`` (as :mod:`ipam.install.plugin_dirs`
does); each database is given as a path or URL to open from here, so the ``root`` is in
it. Off the plugin's hot path.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from ipam import cni, config, paths
from ipam.errors import IpamError
from ipam.install import plugin_dirs
from ipam.store.location import POSTGRESQL, locate

CONF_EXTENSIONS = (".conf", ".conflist", ".json")  # libcni's ConfFiles
DROP_IN_TYPE = "host-local"  # ``ipamctl install-plugin --name host-local``
TYPES = (paths.PLUGIN_NAME, DROP_IN_TYPE)
T = TypeVar("T")


class NotChosen(IpamError):
    """No one database to change: none, or several, fit what the command names."""


@dataclasses.dataclass(frozen=True)
class Network:
    """A network config whose IPAM is ours: its name, its file (as the runtimes see it)
    and where its leases live (to open from here)."""

    name: str
    config: str
    data_dir: str
    database: str


@dataclasses.dataclass
class Database:
    """A database the configs name (or the default one, which exists): what to open,
    how to show it (a URL without its password) and the networks that use it."""

    database: str
    label: str
    exists: bool
    networks: list[Network] = dataclasses.field(default_factory=list)
    default: bool = False  # the default dataDir's, which no config names

    @property
    def data_dir(self) -> str:
        """The dataDir of its first network (the default one when none names it)."""
        return self.networks[0].data_dir if self.networks else os.path.dirname(self.database)

    def describe(self) -> str:
        """``LABEL (networks a, b)``, for messages."""
        names = sorted({n.name for n in self.networks})
        return "%s (%s)" % (self.label, "networks " + ", ".join(names) if names else
                            "the default dataDir's; no config names it")


@dataclasses.dataclass
class Found:
    """What the configs under ``root`` name: the databases, the directories read and the
    files that could not be read (each a sentence, for warnings)."""

    databases: list[Database]
    conf_dirs: list[str]
    errors: list[str]
    default: str  # the default database, to open from here

    def existing(self) -> list[Database]:
        return [d for d in self.databases if d.exists]

    def where(self) -> str:
        """Where leases are, for messages: each database that exists, else where the
        configs would put them, else what was searched."""
        existing = self.existing()
        if existing:
            return "leases were found in: " + "; ".join(d.describe() for d in existing)
        if self.databases:
            return "no database exists yet; the network configs name: " + "; ".join(
                d.describe() for d in self.databases)
        return "no network config in %s has an IPAM of type %s, and %s does not exist" % (
            ", ".join(self.conf_dirs), " or ".join(TYPES), self.default)


def conf_dirs(root: str = "/", env: Mapping[str, str] | None = None,
              containerd: str | None = None, rootless: bool | None = None) -> list[str]:
    """Every runtime's network config directories, each once, in the runtimes' order."""
    env = os.environ if env is None else env
    found = plugin_dirs.configured(root, env, containerd, rootless)
    return list(dict.fromkeys(os.path.normpath(d) for r in found for d in r.conf_dirs))


def find(root: str = "/", env: Mapping[str, str] | None = None,
         containerd: str | None = None, rootless: bool | None = None) -> Found:
    """The databases of the networks configured under ``root``, with the default
    database when it exists and no config names it (leases an earlier config made)."""
    dirs = conf_dirs(root, env, containerd, rootless)
    errors: list[str] = []
    by_key: dict[str, Database] = {}
    for directory in dirs:
        for path in _conf_files(root, directory):
            try:
                networks = _networks(root, path)
            except (OSError, ValueError, IpamError) as e:
                errors.append("cannot read %s: %s" % (path, getattr(e, "msg", None) or e))
                continue
            for net in networks:
                kind, where = locate(net.database)
                key = where if kind == POSTGRESQL else os.path.realpath(where)
                if key not in by_key:
                    by_key[key] = Database(net.database, label(net.database),
                                           kind == POSTGRESQL or os.path.exists(where))
                by_key[key].networks.append(net)
    default = plugin_dirs.at(root, paths.default_database(paths.DEFAULT_DATA_DIR))
    if os.path.realpath(default) not in by_key and os.path.exists(default):
        by_key[os.path.realpath(default)] = Database(default, default, True, default=True)
    return Found(list(by_key.values()), dirs, errors, default)


def label(database: str) -> str:
    """A database as tables and messages show it: a path, or a URL without its
    password (the config may hold one; a table is read over shoulders)."""
    if locate(database)[0] == POSTGRESQL:
        from ipam.store.location import redacted

        return redacted(database)
    return database


def _conf_files(root: str, directory: str) -> list[str]:
    """libcni's ``ConfFiles``: the directory's config files, in name order."""
    try:
        names = sorted(os.listdir(plugin_dirs.at(root, directory)))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.endswith(CONF_EXTENSIONS)
            and os.path.isfile(plugin_dirs.at(root, os.path.join(directory, n)))]


def _networks(root: str, path: str) -> list[Network]:
    """The plugins in one file (a conflist's ``plugins``, or a single plugin's config)
    whose IPAM is ours, read as the plugin reads its config (keys without case)."""
    with open(plugin_dirs.at(root, path), "rb") as f:
        conf = cni.decode_config(f.read(1 << 20))
    plugins = conf.get("plugins") if "plugins" in conf else [conf]
    if not isinstance(plugins, list):
        raise ValueError("plugins is not a list")
    found = []
    for plugin in plugins:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict) or ipam.get("type") not in TYPES:
            continue
        data_dir, database = config.storage(ipam)
        kind, where = locate(database)
        if kind != POSTGRESQL:  # a file, as the runtime's plugin sees it
            database = plugin_dirs.at(root, where)
        net = Network(conf["name"], path, plugin_dirs.at(root, data_dir), database)
        if ipam["type"] == DROP_IN_TYPE and "database" not in ipam \
                and not os.path.exists(database):
            continue  # Go's host-local, as far as anything here shows
        found.append(net)
    return found


def choose(found: Found, networks: Sequence[str],
           knows: Callable[[Database, str], bool] | None = None,
           by_network: bool = True) -> Database | None:
    """The one database a command that changes things acts on: the one holding every
    network in ``networks`` (by the configs, else by ``knows``: whether a database that
    exists holds that network, for one whose config is gone), else the one database
    found (None: none at all, use the default). Anything else is :class:`NotChosen`,
    naming the databases (and ``by_network``: saying a network would choose)."""
    if networks:
        fits = [d for d in found.databases if all(
            any(n.name == name for n in d.networks) for name in networks)]
        if not fits and knows is not None:
            fits = [d for d in found.existing() if all(knows(d, name) for name in networks)]
        if len(fits) == 1:
            return fits[0]
        what = "network %s" % ", ".join(networks)
        if not fits:
            raise NotChosen("%s is in no database found here (%s); name its database with "
                            "--data-dir or --database" % (what, found.where()))
        raise NotChosen("%s is in %d databases: %s; name one with --data-dir or "
                        "--database" % (what, len(fits), "; ".join(d.describe() for d in fits)))
    candidates = found.existing() or found.databases
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    raise NotChosen("%d databases were found here: %s; name one with --data-dir or "
                    "--database%s" % (len(candidates), "; ".join(d.describe() for d in candidates),
                                      ", or a network with --network" if by_network else ""))


def read_each(databases: Sequence[Database], read: Callable[[Database], T]
              ) -> tuple[list[tuple[Database, T]], list[str]]:
    """``read`` from each database: the results, and a sentence for each database that
    could not be read (left out: one broken or unreachable database must not hide the
    others' leases). None read at all, of some, is an error naming them all."""
    results, problems = [], []
    for database in databases:
        try:
            results.append((database, read(database)))
        except (IpamError, sqlite3.Error, OSError) as e:
            text = getattr(e, "msg", None) or str(e)
            problems.append("cannot read %s: %s" % (database.label, text)
                            if database.label not in text else text)
    if problems and not results:
        raise IpamError("; ".join(problems))
    return results, problems
