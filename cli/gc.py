"""``ipamctl gc``: offline garbage collection for runtimes that never send CNI GC."""
from __future__ import annotations

import json
import sys

import click

from cli.common import Obj, open_store, table_or_json
from cli.output import LEASE_COLUMNS, emit_rows, lease_row, parse_duration
from ipam import admin


@click.command("gc")
@click.option("--network", required=True, metavar="N", help="The network to collect.")
@click.option("--valid", "valid", multiple=True, metavar="ID[/IFNAME]",
              help="A live attachment (repeatable); an ID alone covers every ifname.")
@click.option("--valid-file", type=click.File("r"), metavar="PATH|-",
              help="Live attachments, one ID[/IFNAME] per line ('-': stdin).")
@click.option("--grace", default="10m", show_default=True, metavar="DURATION",
              help="Never release a lease younger than this (an ADD may be in flight).")
@click.option("--previous-boots", is_flag=True,
              help="Leases made before the current boot are candidates too.")
@click.option("--apply", "apply_", is_flag=True, help="Release the candidates (default: dry run).")
@click.pass_obj
def gc_cmd(obj: Obj, network: str, valid: tuple[str, ...], valid_file: object, grace: str,
           previous_boots: bool, apply_: bool) -> None:
    """Release the leases of containers that no longer exist.

    Every lease of NETWORK whose attachment is not listed as valid, and (with
    --previous-boots) every lease made before this boot, is a candidate, unless it is
    younger than --grace. Without --apply nothing changes. Each candidate is checked
    again inside the releasing transaction. Feed it the live containers, for example
    with 'crictl ps -q | ipamctl gc --network cbr0 --valid-file -'.

    JSON: {"candidates": [lease...], "released": [lease...]}.

    \b
    Example:
        ipamctl gc --network cbr0 --valid 3f2a9c --valid 77be01/eth1
        ipamctl gc --network cbr0 --valid-file live.txt --grace 30m --apply
    """
    table_or_json(obj)
    if not valid and valid_file is None:
        raise click.UsageError("give the live attachments with --valid or --valid-file")
    entries = list(valid) + (valid_file.read().splitlines() if valid_file is not None else [])
    store = open_store(obj, readonly=not apply_)
    try:
        candidates, released, problems = admin.gc(
            store, network, admin.parse_valid(entries), parse_duration(grace),
            previous_boots, apply_, obj.data_dir)
    finally:
        store.close()
    for p in problems:  # released all the same; the file is someone else's to remove
        click.echo("warning: %s" % p, err=True)
    if obj.output == "json":
        click.echo(json.dumps({"candidates": [lease_row(x) for x in candidates],
                               "released": [lease_row(x) for x in released]}, indent=2))
        return
    click.echo("candidates:")
    emit_rows("table", [lease_row(x) for x in candidates], LEASE_COLUMNS)
    if apply_:
        click.echo("released: %d" % len(released))
    elif candidates:
        click.echo("dry run: nothing released; add --apply to release them", err=True)
    sys.stdout.flush()
