"""``ipamctl stats``: how full each range is, for people and for Prometheus."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, columns, located, read_all
from host_local_sqlite_cli.output import emit, rows_table
from ipam import admin, metrics

COLUMNS = ["network", "range_set", "range", "size", "used", "free"]
BAR = 20


def _bar(row: dict) -> str:
    if not row["size"]:
        return ""
    filled = round(BAR * row["used"] / row["size"])
    percent = 100.0 * row["used"] / row["size"]
    return "[%s%s] %5.1f%%" % ("#" * filled, "." * (BAR - filled), percent)


@click.command("stats")
@click.option("--network", metavar="N", help="Only this network.")
@click.pass_obj
def stats_cmd(obj: Obj, network: str | None) -> None:
    """Show size, used and free addresses per network and range set.

    The ranges are those the plugin last saw in the network's config (recorded on
    ADD); a network it never served shows only its lease count. -o prometheus prints
    gauges for node_exporter's textfile collector.

    JSON: a list of {network, range_set, range, size, used, free}, and database when
    none is named (every database the CNI network configs name is read).

    \b
    Example:
        ipamctl stats
        ipamctl -o prometheus stats > /var/lib/node_exporter/ipam.prom
    """
    rows = [located(row, database) for database, found in read_all(
        obj, lambda store: admin.stats(store, network)) for row in found]
    if obj.output == "prometheus":
        click.echo(metrics.render_ranges(rows), nl=False)
        return
    emit(obj.output, rows, lambda: rows_table(
        [dict(r, utilization=_bar(r)) for r in rows],
        columns(obj, COLUMNS + ["utilization"]), "(no networks)"))
