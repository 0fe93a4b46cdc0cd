"""What the ipamctl commands share: the context object, opening the store (a context
manager: ``with open_store(obj, ...) as store:``) and the options they parse alike."""
from __future__ import annotations

import os
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from host_local_sqlite_cli.formats import declared
from ipam import access, addr, paths
from ipam.admin import labels, network_configs
from ipam.admin import leases as admin
from ipam.errors import IoFailure
from ipam.install import plugin_dirs
from ipam.store.backend import open_store as _open_store
from ipam.store.location import POSTGRESQL, locate

if TYPE_CHECKING:
    from ipam.store.protocol import AdminStore

T = TypeVar("T")
SizedT = TypeVar("SizedT", bound=Sized)


# The variable naming the tree in which the CNI network configs, and the databases they
# name, are looked up ("/" unless set): a node's disk mounted elsewhere, and the tests,
# which must never read the host's own /etc/cni. A variable, not an option: a global
# --root would clash with install-plugin's and check-install's own --root.
ROOT_ENV = "IPAM_ROOT"


class Obj:
    """What every command gets from the global options, as ``ctx.obj``.

    ``discover``: neither --data-dir nor --database (nor their variables) named the
    database, so the CNI network configs say where the leases are
    (:mod:`ipam.admin.network_configs`, looked up under ``root``). Read-only commands that
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


def make_obj(data_dir: str, database: str | None, output: str, node: str | None,
             discover: bool = False, root: str = "/") -> Obj:
    """The context object of the global options' values (``database`` None: the default
    file inside ``data_dir``; ``discover``: neither was named, see :class:`Obj`)."""
    return Obj(data_dir=data_dir, database=database or paths.default_database(data_dir),
               output=output, node=node, discover=discover, root=root)


# The root group's options that every command and subcommand takes as well, where an
# operator types them: "ipamctl list -o json", "ipamctl db backup F --data-dir D".
GLOBAL_OPTIONS = ("data_dir", "database", "node", "output")
_GIVEN = "ipamctl.global_options"


def carry_global_options(root: click.Command, command: click.Command) -> None:
    """Give ``command`` (and, for a group, each of its subcommands) a copy of each of the
    ``root``'s :data:`GLOBAL_OPTIONS`: without an environment variable or a default, so
    one not given changes nothing. Its ``-o`` shows the formats the command declared
    (:func:`~host_local_sqlite_cli.formats.output_formats`).

    Given in several places, the later one wins, as click's own repeated option does (and
    getopt's): it is the one the operator typed last, and an alias or wrapper that puts
    ``--data-dir`` before the command stays overridable after it. Refusing a
    difference would break exactly that use."""
    names = {p.name for p in command.params}
    formats = declared(command)
    for param in root.params:
        if param.name in GLOBAL_OPTIONS and param.name not in names \
                and isinstance(param, click.Option):
            metavar = param.metavar
            if param.name == "output" and formats is not None:
                metavar = "[%s]" % "|".join(formats)  # those it prints (output_formats)
            command.params.append(click.Option(
                param.opts, type=param.type, metavar=metavar, expose_value=False,
                callback=_given_after, is_eager=True,
                help="As before the command (see ipamctl --help); the later one wins."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            carry_global_options(root, sub)


def _given_after(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after a command: the context object is rebuilt from the
    root's values and those given after it so far (:func:`make_obj`), for this
    command and the subcommands under it. A --data-dir or --database given here names
    the database: the network configs are no longer asked."""
    if value is None or param.name is None:
        return
    given = ctx.meta.setdefault(_GIVEN, {})
    given[param.name] = value
    root = ctx.find_root()
    values: dict[str, Any] = {name: root.params.get(name) for name in GLOBAL_OPTIONS}
    values.update(given)
    before = root.obj
    discover = bool(getattr(before, "discover", False)) and not (
        {"data_dir", "database"} & set(given))
    ctx.obj = make_obj(**values, discover=discover,
                       root=getattr(before, "root", "/"))


def open_store(obj: Obj, readonly: bool, every_node: bool = False,
               queue: bool | None = None) -> AdminStore:
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
          queue: bool | None = None) -> AdminStore:
    scope = obj.node if every_node else True
    if readonly:
        kind, path = locate(database)
        if kind != POSTGRESQL and not os.path.lexists(path) and access.denied(path) is None:
            raise IoFailure("database %s does not exist; %s"
                            % (path, obj.found().where()))
    return _open_store(database, readonly=readonly, node=obj.node, data_dir=data_dir,
                       scope=scope, queue=queue)


def read_all(obj: Obj, read: Callable[[AdminStore], T]) -> list[tuple[str | None, T]]:
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


def read_network(obj: Obj, network: str | None,
                 read: Callable[[AdminStore], SizedT]) -> list[tuple[str | None, SizedT]]:
    """:func:`read_all` for a read-only command that may name a ``network``: when every
    database read found nothing, and none knows the network, a warning on stderr says so
    (:func:`ipam.admin.leases.unknown_network`: a typo lists nothing, which would read as "no
    leases")."""
    found = read_all(obj, lambda store: (read(store), admin.unknown_network(store, network)))
    unknown = [why for _, (_, why) in found]
    if not any(len(got) for _, (got, _) in found) and unknown and all(unknown):
        click.echo("warning: %s" % unknown[0] if len(unknown) == 1 else
                   "warning: %s (and in the %d other databases found)"
                   % (unknown[0], len(unknown) - 1), err=True)
    return [(database, got) for database, (got, _) in found]


def columns(obj: Obj, names: list[str]) -> list[str]:
    """A table's columns, with DATABASE last when the configs chose the databases."""
    return names + ["database"] if obj.discover else names


def parse_ip(ctx: Any, param: Any, value: str | None) -> Any:
    if value is None:
        return None
    ip = addr.parse_ip(value)
    if ip is None:
        if "/" in value and addr.parse_cidr(value) is not None:
            # release: each address must be leased, or nothing is released; a subnet
            # has no such check, and /8 typed for /24 would release a pool.
            raise click.BadParameter(
                "%r is a subnet: give addresses (list them with 'ipamctl list --ip %s')"
                % (value, value))
        raise click.BadParameter("%r is not an IP address" % value)
    return ip


def parse_address(ctx: Any, param: Any, value: str | None) -> Any:
    """``--ip``: an address, or a subnet (``10.1.0.0/16``, host bits ignored) that keeps
    every address in it."""
    if value is None or "/" not in value:
        return parse_ip(ctx, param, value)
    cidr = addr.parse_cidr(value)
    if cidr is None or cidr[2]:
        raise click.BadParameter("%r is not an IP address or a subnet (CIDR)" % value)
    return addr.network_of(cidr[0], cidr[1])


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
    mark; the library reads the mark (:mod:`ipam.admin.selection`)."""
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
    click.option("--ip", "ip", metavar="IP|CIDR", callback=parse_address,
                 help="Only this address, or the addresses in this subnet (10.1.0.0/16)."),
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
