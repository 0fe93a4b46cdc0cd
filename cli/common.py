"""What the ipamctl commands share: the context object, opening the store (a context
manager: ``with open_store(obj, ...) as store:``) and the options they parse alike."""
from __future__ import annotations

import dataclasses
from typing import Any

import click

from ipam import addr, labels, paths
from ipam.backend import open_store as _open_store


@dataclasses.dataclass(frozen=True)
class Obj:
    """What every command gets from the global options, as ``ctx.obj``."""

    data_dir: str
    database: str
    output: str
    node: str | None = None


def make_obj(data_dir: str, database: str | None, output: str, node: str | None) -> Obj:
    """The context object of the global options' values (``database`` None: the default
    file inside ``data_dir``)."""
    return Obj(data_dir=data_dir, database=database or paths.default_database(data_dir),
               output=output, node=node)


# The root group's options that every command and subcommand takes as well, where an
# operator types them: "ipamctl list -o json", "ipamctl db backup F --data-dir D".
GLOBAL_OPTIONS = ("data_dir", "database", "node", "output")
_GIVEN = "ipamctl.global_options"


def carry_global_options(root: click.Command, command: click.Command) -> None:
    """Give ``command`` (and, for a group, each of its subcommands) a copy of each of the
    ``root``'s :data:`GLOBAL_OPTIONS`: without an environment variable or a default, so
    one not given changes nothing.

    Given in several places, the later one wins, as click's own repeated option does (and
    getopt's): it is the one the operator typed last, and an alias or wrapper that puts
    ``--data-dir`` before the command stays overridable after it. Refusing a
    difference would break exactly that use."""
    names = {p.name for p in command.params}
    for param in root.params:
        if param.name in GLOBAL_OPTIONS and param.name not in names \
                and isinstance(param, click.Option):
            command.params.append(click.Option(
                param.opts, type=param.type, metavar=param.metavar, expose_value=False,
                callback=_given_after, is_eager=True,
                help="As before the command (see ipamctl --help); the later one wins."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            carry_global_options(root, sub)


def _given_after(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after a command: the context object is rebuilt from the
    root's values and those given after it so far (:func:`make_obj`), for this
    command and the subcommands under it."""
    if value is None or param.name is None:
        return
    given = ctx.meta.setdefault(_GIVEN, {})
    given[param.name] = value
    root = ctx.find_root()
    values: dict[str, Any] = {name: root.params.get(name) for name in GLOBAL_OPTIONS}
    values.update(given)
    ctx.obj = make_obj(**values)


def open_store(obj: Obj, readonly: bool, every_node: bool = False,
               queue: bool | None = None) -> Any:
    """Read-only commands never create a database or a directory.

    On a shared database, ``every_node`` commands (list, stats, history) see every
    node's leases unless ``--node`` names one; the others act on one node's leases,
    ``--node`` or this host's, since its mirror and its boots are that node's.
    ``queue``: read in the writers' queue (check, import's dry run read the mirror
    beside the database, and must not see a writer half-way).
    """
    scope = obj.node if every_node else True
    return _open_store(obj.database, readonly=readonly, node=obj.node,
                       data_dir=obj.data_dir, scope=scope, queue=queue)


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
