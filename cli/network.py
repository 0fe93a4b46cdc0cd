"""``ipamctl network list`` and ``ipamctl network forget``."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, columns, located, open_store, read_all
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import (
    LEASE_COLUMNS,
    emit,
    emit_rows,
    id_forms,
    is_terminal,
    iso,
    lease_row,
    no_trunc_option,
    rows_table,
    table,
)
from ipam.admin import network_admin

COLUMNS = ["network", "leases", "size", "ranges", "export", "data_dir", "last_seen"]


@click.group("network")
def network() -> None:
    """See the networks the database knows, and forget removed ones.

    \b
    Example:
        ipamctl network list
        ipamctl network forget oldnet --release
    """


def network_row(row: dict) -> dict:
    """The JSON shape of a network (documented in docs/ipamctl.md)."""
    return dict(row, last_seen=iso(row["last_seen"]))


def _table_row(row: dict) -> dict:
    yes_no = {True: "yes", False: "no", None: None}
    return dict(network_row(row), export=yes_no[row["export"]],
                ranges=None if row["ranges"] is None else " ".join(row["ranges"]))


@network.command("list")
@output_formats("table", "json")
@click.pass_obj
def list_cmd(obj: Obj) -> None:
    """List every network the database knows: its lease count, the size and ranges of
    its range sets and its dataDir and export setting (as the plugin last saw them),
    and when it was last seen (the later of the last ADD that recorded its config and
    its newest allocation or release).

    JSON: a list of {network, data_dir, export, ranges, size, leases, last_seen}, and
    database when none is named (every database the CNI network configs name is read).

    \b
    Example:
        ipamctl network list
        ipamctl -o json network list
    """
    rows = [located(row, database) for database, found in read_all(
        obj, network_admin.networks) for row in found]
    emit_rows(obj.output, [network_row(r) for r in rows], columns(obj, COLUMNS),
              "(no networks)", shown=[_table_row(r) for r in rows])


@network.command("forget")
@output_formats("table", "json")
@click.argument("name", metavar="NETWORK")
@click.option("--release", is_flag=True,
              help="Release the network's leases first (history reason 'forget').")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@no_trunc_option
@click.pass_obj
def forget_cmd(obj: Obj, name: str, release: bool, yes: bool, no_trunc: bool) -> None:
    """Forget a network that is gone: its records (ranges, cursors, mirror stamps) are
    removed, so that it leaves 'stats', 'network list' and the Prometheus gauges. Its
    history stays. Refused while it holds leases, unless --release.

    In the network's directory, our cursor and temporary files go, then the directory
    itself if only 'lock' is left; a file naming an owner is never removed.

    On a shared database each node releases its own leases: run it with --release on
    every node that holds some; the last one removes the records.

    JSON: {network, forgotten, released: [lease...], removed: [path...], others: {node:
    the number of leases it still holds}}.

    \b
    Example:
        ipamctl network forget oldnet
        ipamctl network forget oldnet --release --yes
    """
    with open_store(obj, readonly=True) as store:  # a wrong name or path creates nothing
        row = network_admin.find(store, name)
    if not yes and is_terminal() and (release or not row["leases"]):  # else: refused
        click.echo(table([_table_row(row)], COLUMNS))
        click.confirm("Forget network %s%s?" % (
            name, " and release its %d lease(s)" % row["leases"] if release and row["leases"]
            else ""), abort=True)
    with open_store(obj, readonly=False) as store:
        released, removed, notes, others = network_admin.forget(store, name, obj.data_dir,
                                                                release)
    for note in notes:  # done all the same
        click.echo("warning: %s" % note, err=True)
    if others:
        click.echo("note: %s" % network_admin.still_held(name, others), err=True)
    leases = [lease_row(x) for x in released]
    text = (["released:", rows_table(leases, LEASE_COLUMNS,
                                     ids=id_forms(released.shown, no_trunc))]
            if leases else []) + [
        "removed %s" % path for path in removed] + [
        "forgot network %s" % name if not others else
        "released this node's leases of network %s; not forgotten yet" % name]
    emit(obj.output, {"network": name, "forgotten": not others, "released": leases,
                      "removed": removed, "others": {str(k): v for k, v in others.items()}},
         "\n".join(text))
