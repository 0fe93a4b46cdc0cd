"""What the ipamctl commands share: the context object, opening the store (a context
manager: ``with open_store(obj, ...) as store:``) and the options they parse alike."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ipam import access, addr, labels, network_configs, paths, plugin_dirs
from ipam.backend import POSTGRESQL, locate
from ipam.backend import open_store as _open_store
from ipam.errors import IoFailure

T = TypeVar("T")


# The variable naming the tree in which the CNI network configs, and the databases they
# name, are looked up ("/" unless set): a node's disk mounted elsewhere, and the tests,
# which must never read the host's own /etc/cni. A variable, not an option: a global
# --root would clash with install-plugin's and check-install's own --root.
ROOT_ENV = "IPAM_ROOT"


class Obj:
    """What every command gets from the global options, as ``ctx.obj``.

    ``discover``: neither --data-dir nor --database (nor their variables) named the
    database, so the CNI network configs say where the leases are
    (:mod:`ipam.network_configs`, looked up under ``root``). Read-only commands that
    list leases read every database found (:func:`read_all`); any other command's
    ``data_dir`` and ``database`` are those of the one database it acts on, chosen at
    their first use from the networks the command names (:func:`named_networks`), so
    that a command which never opens a database (serve without metrics) never fails on
    several.
    """

    def __init__(self, data_dir: str, database: str, output: str, node: str | None = None,
                 discover: bool = False, root: str = "/") -> None:
        self._data_dir, self._database = data_dir, database
        self.output, self.node = output, node
        self.discover, self.root = discover, root
        self._found: network_configs.Found | None = None
        self._chosen = not discover

    @property
    def data_dir(self) -> str:
        self._choose()
        return self._data_dir

    @property
    def database(self) -> str:
        self._choose()
        return self._database

    def found(self) -> network_configs.Found:
        """The databases the network configs name (read once)."""
        if self._found is None:
            self._found = network_configs.find(self.root)
        return self._found

    def _choose(self) -> None:
        if self._chosen:
            return
        names = named_networks()
        chosen = network_configs.choose(self.found(), names or [], self._knows,
                                        by_network=names is not None)
        if chosen is None:  # nothing found: the default, as before (db upgrade creates it)
            self._data_dir = plugin_dirs.at(self.root, paths.DEFAULT_DATA_DIR)
            self._database = paths.default_database(self._data_dir)
        else:
            self._data_dir, self._database = chosen.data_dir, chosen.database
        self._chosen = True

    def _knows(self, database: network_configs.Database, network: str) -> bool:
        """Whether ``database`` holds ``network`` (its config may be gone)."""
        with _open_store(database.database, readonly=True, node=self.node,
                         data_dir=database.data_dir, scope=None) as store:
            with store.transaction():
                return network in store.networks()


def named_networks() -> list[str] | None:
    """The networks the running command names: its ``--network`` (one, or repeated), or
    the argument it shows as NETWORK (``network forget``); None when it takes none."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    names: list[str] | None = None
    for param in ctx.command.params:
        if param.name in ("network", "networks") or param.metavar == "NETWORK":
            value = ctx.params.get(param.name or "")
            names = (names or []) + ([value] if isinstance(value, str) else list(value or ()))
    return names


def named_nothing(ctx: click.Context) -> bool:
    """Neither --data-dir nor --database was given, on the command line or in the
    environment: the network configs say where the leases are."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return not any(ctx.get_parameter_source(p) in given for p in ("data_dir", "database"))


def open_store(obj: Obj, readonly: bool, every_node: bool = False,
               queue: bool | None = None) -> Any:
    """Read-only commands never create a database or a directory.

    On a shared database, ``every_node`` commands (list, stats, history) see every
    node's leases unless ``--node`` names one; the others act on one node's leases,
    ``--node`` or this host's, since its mirror and its boots are that node's.
    ``queue``: read in the writers' queue (check, import's dry run read the mirror
    beside the database, and must not see a writer half-way).
    A database that does not exist is an error that says where the leases are.
    """
    return _open(obj, obj.database, obj.data_dir, readonly, every_node, queue)


def _open(obj: Obj, database: str, data_dir: str, readonly: bool, every_node: bool = False,
          queue: bool | None = None) -> Any:
    scope = obj.node if every_node else True
    if readonly:
        kind, path = locate(database)
        if kind != POSTGRESQL and not os.path.lexists(path) and access.denied(path) is None:
            raise IoFailure("database %s does not exist; %s"
                            % (path, obj.found().where()))
    return _open_store(database, readonly=readonly, node=obj.node, data_dir=data_dir,
                       scope=scope, queue=queue)


def read_all(obj: Obj, read: Callable[[Any], T]) -> list[tuple[str | None, T]]:
    """``read(store)`` on the named database, ``[(None, result)]``; with none named
    (``obj.discover``), on every database found that exists, ``[(label, result)...]``,
    a database that cannot be read left out with a warning on stderr."""
    if not obj.discover:
        with open_store(obj, readonly=True, every_node=True) as store:
            return [(None, read(store))]
    found = obj.found()
    for problem in found.errors:
        click.echo("warning: %s" % problem, err=True)
    existing = found.existing()
    if not existing:
        raise IoFailure("no database found: %s" % found.where())

    def one(database: network_configs.Database) -> T:
        with _open(obj, database.database, database.data_dir, True, every_node=True
                   ) as store:
            return read(store)

    results, problems = network_configs.read_each(existing, one)
    for problem in problems:
        click.echo("warning: %s; left out" % problem, err=True)
    return [(database.label, result) for database, result in results]


def located(row: dict[str, Any], database: str | None) -> dict[str, Any]:
    """A row of :func:`read_all`'s results with its ``database`` when several may be
    read (the label: a path, or a URL without its password)."""
    return row if database is None else dict(row, database=database)


def columns(obj: Obj, names: list[str]) -> list[str]:
    """A table's columns, with DATABASE last when the configs chose the databases."""
    return names + ["database"] if obj.discover else names


def parse_ip(ctx: Any, param: Any, value: str | None) -> Any:
    if value is None:
        return None
    ip = addr.parse_ip(value)
    if ip is None:
        raise click.BadParameter("%r is not an IP address" % value)
    return ip


def parse_pod(ctx: Any, param: Any, value: str | None) -> tuple[str | None, str] | None:
    """``--pod NS/NAME`` -> (NS, NAME); ``--pod NAME`` -> (None, NAME): a lease whose
    runtime sent a name and no namespace (podman). Either part JSON-quoted as the POD
    column quotes it (``--pod '"kube-system/coredns"'``)."""
    if value is None:
        return None
    try:
        return labels.parse_pod(value)
    except labels.BadLabel as e:
        raise click.BadParameter(e.msg) from None


def parse_name(ctx: Any, param: Any, value: str | None) -> str | None:
    """``--name NAME``, quoted as the POD column quotes it."""
    if value is None:
        return None
    try:
        return labels.parse_name(not_empty(ctx, param, value) or "")
    except labels.BadLabel as e:
        raise click.BadParameter(e.msg) from None


def parse_container(ctx: Any, param: Any, value: str | None) -> str | None:
    """``--container ID`` or ``--container START...``: refused here when empty or a bare
    mark; the library reads the mark (:mod:`ipam.selection`)."""
    if value is None:
        return None
    try:
        labels.container_ref(not_empty(ctx, param, value) or "")
    except labels.BadLabel as e:
        raise click.BadParameter(e.msg) from None
    return value


def not_empty(ctx: Any, param: Any, value: str | None) -> str | None:
    if value is not None and not value:
        raise click.BadParameter("must not be empty")
    return value


# The lease selection that list and history share (admin.list_leases, admin.history).
LEASE_FILTERS = (
    click.option("--network", metavar="N", help="Only this network."),
    click.option("--container", "container_id", metavar="ID", callback=parse_container,
                 help="Only this container: a whole ID selects itself alone, never "
                      "another that it starts. The start of an ID, marked as tables print "
                      "it ('3f2a9c01b2c4...') or not (podman's 12 characters: read as a "
                      "start when no container has that whole ID), selects the one "
                      "container among what the other options keep whose ID starts so, "
                      "and a note on stderr says which; one that fits several is an error "
                      "that lists them. (release takes only a marked start.)"),
    click.option("--ip", "ip", metavar="IP", callback=parse_ip, help="Only this address."),
    click.option("--pod", metavar="NS/NAME", callback=parse_pod,
                 help="Only this pod (NAME alone: a name sent without a namespace, as "
                      "podman sends its container's), as the POD column shows it: a part "
                      "holding '/', quotes or spaces is JSON-quoted there and here."),
    click.option("--name", metavar="NAME", callback=parse_name,
                 help="Only this pod or container name, in any namespace (quoted as in "
                      "--pod)."),
)


def lease_filters(command: Any) -> Any:
    """Decorate ``command`` with :data:`LEASE_FILTERS`, in that order in its help."""
    for option in reversed(LEASE_FILTERS):
        command = option(command)
    return command
