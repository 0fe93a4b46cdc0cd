"""``ipamctl import``: adopt host-local's file backend into the database."""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import emit, progress
from ipam.admin import leases as admin
from ipam.store.location import SQLITE, locate

if TYPE_CHECKING:
    from ipam.store.protocol import AdminStore


def _dry_run_store(obj: Obj) -> AbstractContextManager[AdminStore]:
    """A dry run changes nothing: the database read-only, or, where there is none yet,
    an empty throwaway one (a dry run never creates the database)."""
    kind, path = locate(obj.database)
    if kind == SQLITE and not os.path.exists(path):
        return admin.empty_store(obj.node)
    return open_store(obj, readonly=True, queue=True)


@click.command("import")
@output_formats("table", "json")
@click.option("--network", "networks", multiple=True, metavar="N",
              help="Import only this network (repeatable). Default: every directory.")
@click.option("--from", "source", metavar="DIR", type=click.Path(file_okay=False),
              help="Where host-local's directories are.  [default: the data dir]")
@click.option("--dry-run", is_flag=True, help="Report what would be imported; change nothing.")
@click.pass_obj
def import_cmd(obj: Obj, networks: tuple[str, ...], source: str | None, dry_run: bool) -> None:
    """Import leases and cursors from host-local's files.

    Reads <DIR>/<network>/ as every host-local version wrote it (ID\\r\\nifname, ID\\nifname
    or a bare ID; last_reserved_ip.N), under host-local's lock. Empty files, unreadable
    files and names that are not addresses are reported and skipped; an address already
    leased to someone else is a conflict, and the database wins. Each network is one
    transaction; running it again imports nothing. The source files are never changed.

    JSON: a list of per-network summaries {network, source, dry_run, counts, imported:
    [{ip, container_id, ifname}], unchanged, cursors: {range set index: address}, skipped:
    [{file, reason}], conflicts: [{ip, container_id, ifname, held_by}]}; counts has the
    number of each.

    \b
    Example:
        ipamctl import --dry-run
        ipamctl import --network cbr0 --from /var/lib/cni/networks
    """
    source = source or obj.data_dir
    opened = _dry_run_store(obj) if dry_run else open_store(obj, readonly=False)
    with opened as store, progress("importing", obj.output) as bar:
        result = admin.import_networks(store, source, networks, dry_run, progress=bar)
    emit(obj.output, result, lambda: _text(result, source, dry_run))


def _text(result: list[dict[str, Any]], source: str, dry_run: bool) -> str:
    lines = []
    for s in result:
        lines.append("%s: %s %d, unchanged %d, skipped %d, conflicts %d%s" % (
            s["network"], "would import" if dry_run else "imported", len(s["imported"]),
            s["unchanged"], len(s["skipped"]), len(s["conflicts"]),
            "" if not s["cursors"] else ", cursors " + " ".join(
                "%s=%s" % kv for kv in s["cursors"].items())))
        lines += ["    skipped   %-40s %s" % (item["file"], item["reason"])
                  for item in s["skipped"]]
        lines += ["    conflict  %s: file says %s/%s, database has %s/%s" % (
            c["ip"], c["container_id"], c["ifname"], c["held_by"]["container_id"],
            c["held_by"]["ifname"]) for c in s["conflicts"]]
    return "\n".join(lines) or "(no host-local directories under %s)" % source
