"""``ipamctl history``: who held which address, and when."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, lease_filters, open_store
from host_local_sqlite_cli.output import (
    EVENT_COLUMNS,
    emit,
    emit_rows,
    event_row,
    id_forms,
    iso,
    no_trunc_option,
    note,
    parse_time,
    table_or_json,
)
from ipam import admin
from ipam.addr import IP


@click.group("history", invoke_without_command=True, subcommand_metavar="[prune ...]")
@lease_filters
@click.option("--at", metavar="TIME",
              help="Show the allocations in force at TIME (who held --ip then).")
@click.option("--since", metavar="TIME", help="Only events at or after TIME.")
@no_trunc_option
@click.pass_context
def history_cmd(ctx: click.Context, network: str | None, ip: IP | None, container_id: str | None,
                pod: tuple[str | None, str] | None, name: str | None, at: str | None,
                since: str | None, no_trunc: bool) -> None:
    """Show lease events: allocations and releases, with the reason (add, del, gc,
    admin, import, adopt, reconcile, forget) and the pod the lease belonged to. TIME is ISO 8601
    (local time without a zone), 'now', or a duration ago such as 90m.

    JSON: a list of {time, event, reason, network, ip, container_id, ifname, node,
    pod_namespace, pod_name, pod_uid}.

    'ipamctl history prune' deletes old events (see its --help).

    \b
    Example:
        ipamctl history --ip 10.22.0.17 --at 2026-11-28T14:05:00Z
        ipamctl history --container 3f2a9c... --since 2h
        ipamctl history --name nginx
    """
    if ctx.invoked_subcommand is not None:
        if any(v is not None for v in (network, ip, container_id, pod, name, at, since)) \
                or no_trunc:
            raise click.UsageError("the filters go without a subcommand: 'ipamctl history "
                                   "%s' takes its own options" % ctx.invoked_subcommand)
        return
    obj = ctx.obj
    table_or_json(obj)
    with open_store(obj, readonly=True, every_node=True) as store:
        events = admin.history(store, network, ip, container_id,
                               parse_time(since) if since else None,
                               parse_time(at) if at else None, pod, name)
    note(events.note)
    emit_rows(obj.output, [event_row(e) for e in events], EVENT_COLUMNS, "(no events)",
              id_forms(events.shown, no_trunc))


@history_cmd.command("prune")
@click.option("--before", metavar="TIME", required=True,
              help="Delete the events stamped before TIME (same forms as --since).")
@click.option("--dry-run", is_flag=True, help="Only count them.")
@click.pass_obj
def prune_cmd(obj: Obj, before: str, dry_run: bool) -> None:
    """Delete old lease events: every node's on a shared database, whose history is the
    pool's one log. TIME as for --since: ISO 8601, 'now', or a duration ago (90d).
    Deletes in batches of 2,500, each its own transaction, so plugins keep allocating
    while a large prune runs. Leases are never touched.

    JSON: {"before", "deleted", "dry_run"}.

    \b
    Example:
        ipamctl history prune --before 90d --dry-run
        ipamctl history prune --before 2026-01-01T00:00:00Z
    """
    table_or_json(obj)
    cutoff = parse_time(before)
    # Never create a SQLite file to prune nothing in it: a mistyped --data-dir in the
    # timer must fail, not make an empty database and report success. A read-only open
    # raises for a missing file (and opens a server URL without connecting).
    open_store(obj, readonly=True, every_node=True).close()
    with open_store(obj, readonly=dry_run, every_node=True) as store:
        n = admin.prune_history(store, cutoff, dry_run=dry_run)
    emit(obj.output, {"before": iso(cutoff), "deleted": n, "dry_run": dry_run},
         "%s %d event(s) stamped before %s"
         % ("would delete" if dry_run else "deleted", n, iso(cutoff)))
