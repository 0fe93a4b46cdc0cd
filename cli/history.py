"""``ipamctl history``: who held which address, and when."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import click

from host_local_sqlite_cli.common import (
    Obj,
    columns,
    lease_filters,
    located,
    open_store,
    read_network,
)
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import (
    EVENT_COLUMNS,
    NO_SHORT_IDS,
    emit,
    emit_rows,
    event_row,
    id_forms,
    iso,
    no_trunc_option,
    note,
    parse_time,
    table,
    warn,
)
from ipam.addr import IP, Net
from ipam.admin import leases as admin
from ipam.lease import Event


@click.group("history", invoke_without_command=True, subcommand_metavar="[prune ...]")
@output_formats("table", "json")
@lease_filters
@click.option("--at", metavar="TIME",
              help="Show the allocations in force at TIME (who held --ip then).")
@click.option("--since", metavar="TIME", help="Only events at or after TIME.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="Only the last N events (the newest, as tail -n does).")
@click.option("--reverse", is_flag=True, help="The newest first.")
@click.option("--follow", "-f", is_flag=True,
              help="Then keep printing new events as they are committed, as tail -f does "
                   "(a look every %gs), until interrupted (Ctrl-C) or the reader goes away."
                   % admin.FOLLOW_POLL)
@no_trunc_option
@click.pass_context
def history_cmd(ctx: click.Context, network: str | None, ip: IP | Net | None,
                container_id: str | None, pod: tuple[str | None, str] | None, name: str | None,
                at: str | None, since: str | None, limit: int | None, reverse: bool,
                follow: bool, no_trunc: bool) -> None:
    """Show lease events: allocations and releases, with the reason (add, del, gc,
    admin, import, adopt, reconcile, forget) and the pod the lease belonged to. TIME is ISO 8601
    (local time without a zone), 'now', or a duration ago such as 90m.

    JSON: a list of {time, event, reason, network, ip, container_id, ifname, node,
    pod_namespace, pod_name, pod_uid}, and database when none is named (every database
    the CNI network configs name is read, their events merged by time); with --follow,
    one such object per line (JSON Lines: a list would never end), from one database. A
    network no database read knows is warned of on stderr.

    'ipamctl history prune' deletes old events (see its --help).

    \b
    Example:
        ipamctl history --ip 10.22.0.17 --at 2026-11-28T14:05:00Z
        ipamctl history --container 3f2a9c... --since 2h
        ipamctl history --name nginx
        ipamctl history --ip 10.22.0.0/24 --limit 20 --reverse
        ipamctl history --network cbr0 --limit 10 --follow
    """
    if ctx.invoked_subcommand is not None:
        if any(v is not None for v in (network, ip, container_id, pod, name, at, since, limit)
               ) or reverse or follow or no_trunc:
            raise click.UsageError("the filters go without a subcommand: 'ipamctl history "
                                   "%s' takes its own options" % ctx.invoked_subcommand)
        return
    obj = ctx.obj
    if follow and (at or reverse):
        raise click.UsageError("--follow prints events as they come: not with --at or "
                               "--reverse")
    since_t, at_t = parse_time(since) if since else None, parse_time(at) if at else None
    if not follow:
        _history(obj, network, ip, container_id, since_t, at_t, pod, name, limit, reverse,
                 no_trunc)
        return
    # One database: the one named, found, or holding --network (several: an error).
    with open_store(obj, readonly=True, every_node=True) as store:
        with store.transaction():  # the events after those printed first
            after = store.last_event_id()
        events = admin.history(store, network, ip, container_id, since_t, at_t, pod, name,
                               limit, reverse)
        if not events:
            warn(admin.unknown_network(store, network))
        note(events.note)
        with following():
            show = _Lines(obj.output, no_trunc)
            show(events, events.shown)
            for batch in admin.follow(store, network, ip, container_id, pod, name,
                                      after=after):
                show(batch)


def _history(obj: Obj, network: str | None, ip: IP | Net | None, container_id: str | None,
             since: Any, at: Any, pod: tuple[str | None, str] | None, name: str | None,
             limit: int | None, reverse: bool, no_trunc: bool) -> None:
    """The events of every database read (:func:`read_network`), merged by time;
    --limit and --reverse apply to the merge as to one database's events."""
    found = read_network(obj, network, lambda store: admin.history(
        store, network, ip, container_id, since, at, pod, name, limit, reverse))
    timed, shown = [], {}
    for database, events in found:
        note(events.note)
        timed += [(e.time, located(event_row(e), database)) for e in events]
        shown.update(events.shown)
    if len(found) > 1:  # each database's own order is kept: the sort is stable
        timed.sort(key=lambda pair: pair[0])
        if limit is not None:
            timed = timed[-limit:] if limit else []
        if reverse:
            timed.reverse()
    emit_rows(obj.output, [row for _, row in timed], columns(obj, EVENT_COLUMNS),
              "(no events)", id_forms(shown, no_trunc))


class _Lines:
    """``--follow``'s output: a table whose header comes once (each batch aligned on
    its own), or one JSON object per line."""

    def __init__(self, output: str, no_trunc: bool) -> None:
        self.output = output
        self.no_trunc = no_trunc
        self.headers = True

    def __call__(self, events: list[Event], shown: Mapping[str, str] = NO_SHORT_IDS) -> None:
        rows = [event_row(e) for e in events]
        if self.output == "json":
            for row in rows:
                click.echo(json.dumps(row))
        elif rows:
            click.echo(table(rows, EVENT_COLUMNS, id_forms(shown, self.no_trunc),
                             self.headers))
            self.headers = False


@contextlib.contextmanager
def following() -> Iterator[None]:
    """End ``--follow`` as ``tail -f`` ends: quietly with exit 0 on Ctrl-C (SIGINT) or
    when the reader of a pipe went away (``| head``: EPIPE; later writes go nowhere, so
    the interpreter's last flush cannot fail either)."""
    try:
        yield
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@history_cmd.command("prune")
@output_formats("table", "json")
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
