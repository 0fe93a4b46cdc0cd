"""``ipamctl node list`` and ``ipamctl node claim``: the hosts behind each node name."""
from __future__ import annotations

from typing import Any

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import (
    emit,
    emit_rows,
    is_terminal,
    iso,
    rows_table,
)
from ipam import system
from ipam.admin import node_admin

COLUMNS = ["node", "boot_id", "host", "first_seen", "last_seen", "leases", "state"]


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a boot (documented in docs/ipamctl.md)."""
    return dict(row, first_seen=iso(row["first_seen"]), last_seen=iso(row["last_seen"]))


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    state = ["conflict" if row["conflict"] else "active" if row["active"] else "idle"]
    if row["this_host"]:
        state.append("this host")
    return dict(_json_row(row), state=", ".join(state))


@click.group("node")
def node() -> None:
    """See which hosts use each node name, and take a name back.

    Every plugin call records its node name with the kernel's boot id, which tells
    hosts apart where host names and /etc/machine-id do not (cloned VMs). Two hosts
    using one name at once are a conflict: ADD warns, and every GC for the name (CNI
    GC, 'ipamctl gc') is refused until it ends.

    \b
    Example:
        ipamctl node list
        ipamctl --node worker-7 node claim
    """


@node.command("list")
@output_formats("table", "json")
@click.pass_obj
def list_cmd(obj: Obj) -> None:
    """List the boots recorded under each node name (--node: one name): the host name,
    when each was first and last active, the leases made in it that remain, and its
    state: active (within the last 10 minutes), idle, or conflict (another host used
    the name at the same time, and both still count). Each conflict is explained on
    stderr too.

    JSON: a list of {node, boot_id, host, first_seen, last_seen, leases, this_host,
    active, conflict}.

    \b
    Example:
        ipamctl node list
        ipamctl -o json --node worker-7 node list
    """
    with open_store(obj, readonly=True, every_node=True) as store:
        rows, conflicts = node_admin.boots(store, obj.node, system.boot_id())
    emit_rows(obj.output, [_json_row(r) for r in rows], COLUMNS, "(no boots recorded)",
              shown=[_table_row(r) for r in rows])
    for conflict in conflicts:
        click.echo("warning: %s" % conflict.refusal(), err=True)


@node.command("claim")
@output_formats("table", "json")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def claim_cmd(obj: Obj, yes: bool) -> None:
    """Take a node name (--node, else this host's name) back for this host: the
    records of every other boot that used it are dropped, so that a conflict they were
    part of ends and GC for the name works again. Their leases stay, and from now on
    this host's GC judges them: run it only once the other hosts are gone (removed,
    reinstalled, or given another name). Refused while another boot of the name was
    active in the last 10 minutes.

    JSON: {node, boot_id, dropped: [boot...]}.

    \b
    Example:
        ipamctl --node worker-7 node claim
    """
    me = system.boot_id()
    if not yes and is_terminal():
        with open_store(obj, readonly=True) as store:
            rows, _ = node_admin.boots(store, store.node, me)
        click.echo(rows_table([_table_row(r) for r in rows], COLUMNS, "(no boots recorded)"))
        click.confirm("Drop every other boot's record and keep the name for this host?",
                      abort=True)
    with open_store(obj, readonly=False) as store:
        name, dropped = node_admin.claim(store, me, system.uname().nodename)
    text = ["dropped:", rows_table([_table_row(r) for r in dropped], COLUMNS)] if dropped \
        else ["no other boot recorded"]
    emit(obj.output, {"node": name, "boot_id": me, "dropped": [_json_row(r) for r in dropped]},
         "\n".join(text + ["node name %s is this host's (boot %s)" % (name, me)]))
