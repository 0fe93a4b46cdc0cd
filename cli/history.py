"""``ipamctl history``: who held which address, and when."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, lease_filters, open_store
from host_local_sqlite_cli.output import (
    EVENT_COLUMNS,
    emit_rows,
    event_row,
    parse_time,
    table_or_json,
)
from ipam import admin


@click.command("history")
@lease_filters
@click.option("--at", metavar="TIME",
              help="Show the allocations in force at TIME (who held --ip then).")
@click.option("--since", metavar="TIME", help="Only events at or after TIME.")
@click.pass_obj
def history_cmd(obj: Obj, network: str | None, ip: object, container_id: str | None,
                pod: tuple[str | None, str] | None, name: str | None, at: str | None,
                since: str | None) -> None:
    """Show lease events: allocations and releases, with the reason (add, del, gc,
    admin, import, adopt, reconcile, forget) and the pod the lease belonged to. TIME is ISO 8601
    (local time without a zone), 'now', or a duration ago such as 90m.

    JSON: a list of {time, event, reason, network, ip, container_id, ifname, node,
    pod_namespace, pod_name, pod_uid}.

    \b
    Example:
        ipamctl history --ip 10.22.0.17 --at 2026-11-28T14:05:00Z
        ipamctl history --container 3f2a9c --since 2h
        ipamctl history --name nginx
    """
    table_or_json(obj)
    with open_store(obj, readonly=True, every_node=True) as store:
        events = admin.history(store, network, ip, container_id,
                               parse_time(since) if since else None,
                               parse_time(at) if at else None, pod, name)
    emit_rows(obj.output, [event_row(e) for e in events], EVENT_COLUMNS, "(no events)")
