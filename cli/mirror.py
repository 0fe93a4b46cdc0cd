"""``ipamctl export`` and ``ipamctl check``: the host-local file mirror and its health."""
from __future__ import annotations

import dataclasses

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import emit, failed, is_terminal, progress
from ipam.admin import consistency
from ipam.admin import leases as admin
from ipam.mirror.reconcile import FIXABLE


@click.command("export")
@output_formats("table", "json")
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
@output_formats("table", "json")
@click.option("--network", "networks", multiple=True, metavar="N",
              help="Only this network's mirror (repeatable); the database itself is "
              "checked all the same.  [default: every network]")
@click.option("--repair", is_flag=True,
              help="Fix the mirror from the database (never the other way round).")
@click.option("--yes", "-y", is_flag=True,
              help="With --repair: do not ask first (it asks only on a terminal).")
@click.pass_obj
def check_cmd(obj: Obj, networks: tuple[str, ...], repair: bool, yes: bool) -> None:
    """Check the database's integrity, its schema revision and the mirror.

    Lists every difference; exits 1 when anything is wrong (after --repair: when
    anything could not be repaired). On a terminal, --repair shows what it found and
    asks before it writes, unless --yes; run by a script (no terminal), it repairs
    without asking, as it always has.

    JSON: {"ok": bool, "problems": [text...], "findings": [{network, ip, path, kind,
    repair, repaired, message}...]}: one object per problem; repair is what --repair
    does about it (did, when repaired is true), null when nothing.

    \b
    Example:
        ipamctl check
        ipamctl -o json check --network cbr0
        ipamctl check --repair --yes
    """
    if yes and not repair:
        raise click.UsageError("--yes goes with --repair")
    ask = repair and not yes and is_terminal()
    with open_store(obj, readonly=not repair, queue=True) as store:
        findings = consistency.check(store, obj.data_dir, repair, networks or None,
                                     confirm=_ask if ask else None)
    problems = [f.message for f in findings]
    repaired = any(f.repaired for f in findings)
    unrepaired = [p for p in findings if not p.repaired]
    emit(obj.output, {"ok": not unrepaired, "problems": problems,
                      "findings": [dataclasses.asdict(f) for f in findings]},
         "\n".join(problems + [
             "ok" if not problems else "%d problem(s)%s" % (
                 len(problems), ", repaired" if repaired and not unrepaired else "")]))
    if unrepaired:
        failed()


def _ask(findings: list[consistency.Finding]) -> bool:
    for f in findings:
        click.echo(f.message, err=True)
    return click.confirm("Repair %d of %d problem(s)?" % (
        sum(1 for f in findings if f.repair), len(findings)), abort=True, err=True)
