"""``ipamctl reserve`` and ``ipamctl unreserve``."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, open_store, parse_ip
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import LEASE_COLUMNS, emit_rows, lease_row
from ipam.addr import IP
from ipam.admin import reservations


def _done(obj: Obj, lease: object, problems: list[str]) -> None:
    for p in problems:  # the files of other writers, left alone
        click.echo("warning: %s" % p, err=True)
    emit_rows(obj.output, [lease_row(lease)], LEASE_COLUMNS)


@click.command("reserve")
@output_formats("table", "json")
@click.argument("ip", metavar="IP", callback=parse_ip)
@click.option("--network", metavar="N", required=True, help="The network it is reserved in.")
@click.option("--note", metavar="TEXT",
              help="Why, for people (a VM, a router): one line, at most 200 characters.")
@click.pass_obj
def reserve_cmd(obj: Obj, ip: IP, network: str, note: str | None) -> None:
    """Keep an address out of the pool: the plugin never hands it out, nor does Go
    host-local beside it (the mirror gets a file naming the owner 'ipam:reserved', with
    the note as its second line). Refused while a lease holds the address, and for one
    that no range of the network (as the plugin last recorded it) could hand out. The
    history records reason 'reserve'. list shows it as the container 'ipam:reserved'
    with the note as its ifname; stats counts it as reserved; gc and release never free
    it: unreserve does.

    JSON: the reservation, shaped as list's rows (kind "reservation").

    \b
    Example:
        ipamctl reserve 10.22.0.250 --network cbr0 --note "router"
    """
    with open_store(obj, readonly=False) as store:
        lease, problems = reservations.reserve(store, network, ip, note, obj.data_dir)
    _done(obj, lease, problems)


@click.command("unreserve")
@output_formats("table", "json")
@click.argument("ip", metavar="IP", callback=parse_ip)
@click.option("--network", metavar="N", required=True, help="The network it is reserved in.")
@click.pass_obj
def unreserve_cmd(obj: Obj, ip: IP, network: str) -> None:
    """Free a reserved address: its mirror file goes, and the history records reason
    'unreserve'. An address that is not reserved is an error (a lease is freed by
    release).

    JSON: the reservation that went, shaped as list's rows.

    \b
    Example:
        ipamctl unreserve 10.22.0.250 --network cbr0
    """
    with open_store(obj, readonly=False) as store:
        lease, problems = reservations.unreserve(store, network, ip, obj.data_dir)
    _done(obj, lease, problems)
