"""``ipamctl history``: who held which address, and when."""
from __future__ import annotations

import click

from cli.common import Obj, open_store, parse_ip, table_or_json
from cli.output import EVENT_COLUMNS, emit_rows, event_row, parse_time
from ipam import admin


@click.command("history")
@click.option("--network", metavar="N", help="Only this network.")
@click.option("--ip", callback=parse_ip, metavar="IP", help="Only this address.")
@click.option("--container", "container_id", metavar="ID", help="Only this container.")
@click.option("--at", metavar="TIME",
              help="Show the allocations in force at TIME (who held --ip then).")
@click.option("--since", metavar="TIME", help="Only events at or after TIME.")
@click.pass_obj
def history_cmd(obj: Obj, network: str | None, ip: object, container_id: str | None,
                at: str | None, since: str | None) -> None:
    """Show lease events: allocations and releases, with the reason (add, del, gc,
    admin, import). TIME is ISO 8601 (local time without a zone), 'now', or a duration
    ago such as 90m.

    JSON: a list of {time, event, reason, network, ip, container_id, ifname}.

    \b
    Example:
        ipamctl history --ip 10.22.0.17 --at 2026-11-28T14:05:00Z
        ipamctl history --container 3f2a9c --since 2h
    """
    table_or_json(obj)
    store = open_store(obj, readonly=True, every_node=True)
    try:
        events = admin.history(store, network, ip, container_id,
                               parse_time(since) if since else None,
                               parse_time(at) if at else None)
    finally:
        store.close()
    emit_rows(obj.output, [event_row(e) for e in events], EVENT_COLUMNS, "(no events)")
