"""``ipamctl export`` and ``ipamctl check``: the host-local file mirror and its health."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.output import emit, failed, progress, table_or_json
from ipam import admin
from ipam.reconcile import FIXABLE


@click.command("export")
@click.option("--network", metavar="N", help="Only this network.")
@click.option("--to", "to", metavar="DIR", type=click.Path(file_okay=False),
              help="Write the layout under DIR instead of the network's dataDir.")
@click.pass_obj
def export_cmd(obj: Obj, network: str | None, to: str | None) -> None:
    """Rewrite the host-local file layout from the database.

    Missing files are added, our files in another spelling rewritten, our leftovers
    removed. Files that name other owners (foreign, conflict), name no one
    (unreadable) or are no regular file (blocked) are someone else's: each network is
    first reconciled as the plugin would (foreign leases recorded), and what is left is
    reported, never changed. A --network the database does not know is an error.

    JSON: {network: [[kind, file]...]} with kind missing, wrong, stale, temporary,
    foreign, conflict, unreadable or blocked.

    \b
    Example:
        ipamctl export --network cbr0
        ipamctl export --to /tmp/mirror-copy
    """
    table_or_json(obj)
    with open_store(obj, readonly=False) as store, progress("exporting", obj.output) as bar:
        result = admin.export(store, obj.data_dir, network, to, progress=bar)
    emit(obj.output, {k: [list(d) for d in v] for k, v in result.items()},
         lambda: _export_text(result))


def _export_text(result: dict[str, list[tuple[str, str]]]) -> str:
    lines = []
    for name, diffs in sorted(result.items()):
        fixed = [(kind, f) for kind, f in diffs if kind in FIXABLE]
        left = [(kind, f) for kind, f in diffs if kind not in FIXABLE]
        lines.append("%s: %s" % (name, "%d file(s) fixed" % len(fixed) if fixed else
                                 "up to date" if not left else "nothing to fix"))
        lines += ["    %-9s %s" % (kind, f) for kind, f in fixed]
        # someone else's: reported, never touched
        lines += ["    left      %s: %s" % (f, kind) for kind, f in left]
    return "\n".join(lines) or "(no networks)"


@click.command("check")
@click.option("--repair", is_flag=True,
              help="Fix the mirror from the database (never the other way round).")
@click.pass_obj
def check_cmd(obj: Obj, repair: bool) -> None:
    """Check the database's integrity, its schema revision and the mirror.

    Lists every difference; exits 1 when anything is wrong (after --repair: when
    anything could not be repaired).

    JSON: {"ok": bool, "problems": [text...]}.

    \b
    Example:
        ipamctl check
        ipamctl check --repair
    """
    table_or_json(obj)
    with open_store(obj, readonly=not repair, queue=True) as store:
        problems = admin.check(store, obj.data_dir, repair)
    unrepaired = [p for p in problems if not p.endswith("(repaired)")]
    emit(obj.output, {"ok": not unrepaired, "problems": problems}, "\n".join(problems + [
        "ok" if not problems else "%d problem(s)%s" % (
            len(problems), ", repaired" if repair and not unrepaired else "")]))
    if unrepaired:
        failed()
