"""``ipamctl list`` and ``ipamctl release``."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import (
    Obj,
    columns,
    lease_filters,
    located,
    open_store,
    parse_container,
    parse_ip,
    read_network,
)
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import (
    LEASE_COLUMNS,
    emit_rows,
    id_forms,
    is_terminal,
    lease_row,
    no_trunc_option,
    note,
)
from ipam.addr import IP, Net
from ipam.admin import leases as admin


@click.command("list")
@output_formats("table", "json")
@lease_filters
@click.option("--sort", type=click.Choice(sorted(admin.SORTS)), default="network",
              show_default=True,
              help="Order by this field, then network and address (created: the oldest "
                   "first; age: the youngest first).")
@click.option("--no-headers", is_flag=True, help="Print the table without its header line.")
@no_trunc_option
@click.pass_obj
def list_cmd(obj: Obj, network: str | None, container_id: str | None, ip: IP | Net | None,
             pod: tuple[str | None, str] | None, name: str | None, sort: str,
             no_headers: bool, no_trunc: bool) -> None:
    """List leases, sorted by network, then address (or --sort). The table shows a long container ID
    as its start and '...': 12 characters, or as many more as make it the start of no
    other ID the database knows, so it works as --container (with release too);
    --no-trunc prints it whole. The pod reads NS/NAME, a part JSON-quoted when it holds
    '/', quotes or spaces. JSON has them whole. No lease: nothing on stdout, '(no
    leases)' on stderr (JSON: []); a --network the database does not know is warned of
    there too.

    JSON: a list of {network, ip, container_id, ifname, range_set, allocated_at, node,
    pod_namespace, pod_name, pod_uid, kind, note}; kind is "lease" or "reservation"
    (ipamctl reserve: container ID 'ipam:reserved', its note as ifname and note); and
    database when none is named: then every database the CNI network configs name is
    read, one after the other.

    \b
    Example:
        ipamctl list --network cbr0
        ipamctl list --ip 10.22.0.0/16 --sort age --no-headers
        ipamctl list --pod default/web-0
        ipamctl -o json list --container 3f2a9c01b2c4...
    """
    rows, shown = [], {}
    for database, leases in read_network(obj, network, lambda store: admin.list_leases(
            store, network, container_id, ip, pod, name, sort)):
        note(leases.note)
        rows += [located(lease_row(x), database) for x in leases]
        shown.update(leases.shown)
    emit_rows(obj.output, rows, columns(obj, LEASE_COLUMNS), "(no leases)",
              id_forms(shown, no_trunc), headers=not no_headers)


@click.command("release")
@output_formats("table", "json")
@click.argument("ips", nargs=-1, metavar="[IP]...")
@click.option("--container", "container_id", metavar="ID", callback=parse_container,
              help="Release every lease of this container (instead of addresses): its "
                   "whole ID, never another that it starts; or, marked with a trailing "
                   "'...' (as tables print IDs), the start of exactly one container in the "
                   "whole database, whatever --ifname and --network select.")
@click.option("--ifname", metavar="IF", help="With --container: only this interface.")
@click.option("--network", metavar="N", help="Only in this network.")
@click.option("--dry-run", is_flag=True, help="Show what would be released; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@no_trunc_option
@click.pass_obj
def release_cmd(obj: Obj, ips: tuple[str, ...], container_id: str | None,
                ifname: str | None, network: str | None, dry_run: bool, yes: bool,
                no_trunc: bool) -> None:
    """Release leases as a DEL would: the mirror is updated and the history records
    reason 'admin'. Releasing an address that is not leased is an error, and so is a
    --container ID with no lease, or a marked start ('3f2a9c...') that fits no container
    or several (nothing is released). An ID without the mark is taken whole: 'web'
    never releases 'web-2'.

    A network the database does not know is an error. An address is one address: a
    subnet is refused (list its leases with 'ipamctl list --ip CIDR'). After the table,
    stderr says 'released N lease(s)' or, with --dry-run, 'would release N lease(s)'.

    JSON: the released (or, with --dry-run, the selected) leases.

    \b
    Example:
        ipamctl release 10.22.0.17 --network cbr0
        ipamctl release --container 3f2a9c01b2c4... --ifname eth0 --yes
    """
    if bool(ips) == bool(container_id):
        raise click.UsageError("give either addresses or --container ID")
    if ifname and not container_id:
        raise click.UsageError("--ifname goes with --container")
    addresses = [parse_ip(None, None, text) for text in ips]
    with open_store(obj, readonly=dry_run) as store:
        chosen = admin.select_release(store, addresses, container_id, ifname, network)
        if not dry_run and not yes and is_terminal():
            emit_rows("table", [lease_row(x) for x in chosen], LEASE_COLUMNS,
                      ids=id_forms(chosen.shown, no_trunc))
            click.confirm("Release %d lease(s)?" % len(chosen), abort=True)
        done, problems = (chosen, []) if dry_run else admin.release(store, chosen,
                                                                    obj.data_dir)
    for p in problems:  # released all the same; the file is someone else's to remove
        click.echo("warning: %s" % p, err=True)
    emit_rows(obj.output, [lease_row(x) for x in done], LEASE_COLUMNS, "(nothing released)",
              id_forms(chosen.shown, no_trunc))
    click.echo("%s %d lease(s)%s" % ("would release" if dry_run else "released", len(done),
                                     "; dry run: nothing changed" if dry_run else ""),
               err=True)
