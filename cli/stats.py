"""``ipamctl stats``: how full each range is, for people and for Prometheus."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, columns, located, read_network
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import emit_rows
from ipam.admin import leases as admin
from ipam.daemon import metrics

COLUMNS = ["network", "range_set", "range", "size", "used", "reserved", "free"]
BAR = 20


def _bar(row: dict) -> str:
    if not row["size"]:
        return ""
    taken = row["used"] + row["reserved"]  # what the pool can no longer hand out
    filled = round(BAR * taken / row["size"])
    percent = 100.0 * taken / row["size"]
    return "[%s%s] %5.1f%%" % ("#" * filled, "." * (BAR - filled), percent)


@click.command("stats")
@output_formats("table", "json", "prometheus")
@click.option("--network", metavar="N", help="Only this network.")
@click.option("--prometheus", is_flag=True,
              help="Print gauges for node_exporter's textfile collector (the Prometheus "
                   "text format) instead of the table.")
@click.pass_obj
def stats_cmd(obj: Obj, network: str | None, prometheus: bool) -> None:
    """Show size, used, reserved and free addresses per network and range set
    (reserved: by ipamctl reserve; the bar shows used and reserved together).

    The ranges are those the plugin last saw in the network's config (recorded on
    ADD); a network it never served shows only its lease count. --prometheus prints
    gauges for node_exporter's textfile collector. A --network the database does not
    know is warned of on stderr.

    -o prometheus, the older spelling, still prints them: deprecated, use --prometheus
    (said here, not on stderr, where it would reach cron's mail or the journal at
    every run of a script that scrapes).

    JSON: a list of {network, range_set, range, size, used, reserved, free}, and database
    when none is named (every database the CNI network configs name is read).

    \b
    Example:
        ipamctl stats
        ipamctl stats --prometheus > /var/lib/node_exporter/ipam.prom
    """
    if prometheus and obj.output == "json":
        raise click.UsageError("--prometheus is an output format: not with -o json")
    rows = [located(row, database) for database, got in read_network(
        obj, network, lambda store: admin.stats(store, network)) for row in got]
    if prometheus or obj.output == "prometheus":
        click.echo(metrics.render_ranges(rows), nl=False)
        return
    emit_rows(obj.output, rows, columns(obj, COLUMNS + ["utilization"]), "(no networks)",
              shown=[dict(r, utilization=_bar(r)) for r in rows])
