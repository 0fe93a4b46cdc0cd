"""``ipamctl gc``: offline garbage collection for runtimes that never send CNI GC."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.output import (
    LEASE_COLUMNS,
    emit,
    failed,
    id_forms,
    is_terminal,
    lease_row,
    no_trunc_option,
    note,
    parse_duration,
    rows_table,
)
from ipam.admin import gc
from ipam.cri.defaults import DEFAULT_ENDPOINT


def parse_share(ctx: Any, param: Any, value: str) -> float:
    text = value.strip().rstrip("%")
    try:
        share = float(text) / 100
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise click.BadParameter("%r is not a percentage from 0 to 100 (like 50%%)" % value)
    return share


@click.command("gc")
@output_formats("table", "json")
@click.option("--network", "networks", multiple=True, metavar="N",
              help="A network to collect (repeatable).  [default: every network of this "
              "node]")
@click.option("--cri", "cri", is_flag=False, flag_value=DEFAULT_ENDPOINT, default=None,
              metavar="[ENDPOINT]",
              help="Ask the CRI runtime at ENDPOINT for the live pod sandboxes (no crictl), "
              "and judge only the CNI networks it loaded, unless --network names others. "
              "[ENDPOINT default: %s]" % DEFAULT_ENDPOINT)
@click.option("--valid", "valid", multiple=True, metavar="ID[/IFNAME]",
              help="A live attachment (repeatable); an ID alone covers every ifname. An "
              "ID is taken whole; 'START...' stands for the one container of the whole "
              "database whose ID starts so (several: an error, nothing released).")
@click.option("--valid-file", type=click.File("r"), metavar="PATH|-",
              help="Live attachments, one ID[/IFNAME] per line ('-': stdin).")
@click.option("--grace", default="10m", show_default=True, metavar="DURATION",
              help="Never release a lease younger than this (an ADD may be in flight).")
@click.option("--previous-boots", is_flag=True,
              help="Leases made before the current boot are candidates too; alone (no "
              "list), only they are.")
@click.option("--max-share", default="50%", show_default=True, metavar="PERCENT",
              callback=parse_share,
              help="Refuse when more than this share of a network's leases would go "
              "because they are not listed (only when more than 3 would go; leases of "
              "earlier boots do not count).")
@click.option("--force", is_flag=True,
              help="Release even when a guard refuses (empty list, no lease listed, "
              "--max-share).")
@click.option("--ignore-netns", is_flag=True,
              help="Release even an address that a network namespace of this host holds.")
@click.option("--apply", "apply_", is_flag=True, help="Release the candidates (default: dry run).")
@no_trunc_option
@click.pass_obj
def gc_cmd(obj: Obj, networks: tuple[str, ...], cri: str | None, valid: tuple[str, ...],
           valid_file: Any, grace: str, previous_boots: bool, max_share: float, force: bool,
           ignore_netns: bool, apply_: bool, no_trunc: bool) -> None:
    """Release the leases of containers that no longer exist.

    Every lease whose attachment is not listed as valid, and (with --previous-boots)
    every lease made before this boot, is a candidate, unless it is younger than
    --grace or a network namespace of this host still holds its address. Without
    --apply nothing changes: the dry run shows the candidates, the leases kept and why,
    and the guards' verdicts. With --apply, a refusing guard releases nothing in any
    network (exit 1); on a terminal gc asks instead, unless --force. Each candidate is
    checked again inside the releasing transaction. While two hosts use the node's
    name (see 'ipamctl node list'), nothing is released, --force or not.

    The list must hold the IDs the runtime gives CNI as CNI_CONTAINERID, in full: for
    Kubernetes/CRI the pod sandboxes ('crictl pods -q'; 'crictl ps -q' lists
    containers, and would release every pod), for podman 'podman ps -a -q --no-trunc'.
    An ID is never read as the start of another: a truncated one lists nothing (a
    list of 12-character IDs that names nothing gets a note on stderr). To
    list a container by the start of its ID, mark it: '3f2a9c01b2c4...' (as tables
    print IDs) stands for the one container of the whole database whose ID starts so.
    docs/gc.md ("Cleaning up after runtimes") has the recipe of each runtime.

    A --network the database does not know is an error, dry run or not.

    With --cri, gc asks the CRI runtime itself (containerd, CRI-O: gRPC, as kubelet
    does) for every pod sandbox, ready or not, and judges only the networks it
    loaded (containerd's: the first max_conf_num conflists of its conf dir), so the
    leases of podman's networks on the same node are left alone; --network names
    the networks instead.

    JSON: {"candidates": [lease + "reason"], "released": [lease], "kept": [lease +
    "reason"], "refused": [{"network", "guard", "message"}], "forced", "networks",
    "conflicts": [{"node", "message", "boots": [boot id...]}]}.

    \b
    Example:
        ipamctl gc --cri                     # containerd's socket; dry run
        ipamctl gc --cri unix:///var/run/crio/crio.sock --apply
        crictl pods -q | ipamctl gc --valid-file -
        crictl pods -q | ipamctl gc --valid-file - --apply
        ipamctl gc --network cbr0 --valid 3f2a9c01b2c4... --valid 77be01a4c2f9.../eth1
        ipamctl gc --previous-boots --grace 0 --apply   # at boot, before the runtime
    """
    if cri is not None and (valid or valid_file is not None):
        raise click.UsageError("--cri asks the runtime for the live sandboxes; not with "
                               "--valid or --valid-file")
    if not valid and valid_file is None and not previous_boots and cri is None:
        raise click.UsageError("give the live attachments with --cri, --valid or "
                               "--valid-file (or --previous-boots alone)")
    entries = list(valid) + (valid_file.read().splitlines() if valid_file is not None else [])
    live = gc.Valid(entries) if (valid or valid_file is not None) else None
    judged: list[str] | None = list(networks) or None
    if cri is not None:
        from ipam.cri.live import live as ask_runtime

        runtime = ask_runtime(cri, networks)
        live, judged = gc.Valid(runtime.sandboxes), runtime.networks
    ask = apply_ and not force and obj.output == "table" and is_terminal()
    asked = False

    def ask_once(report: gc.Report) -> bool:
        nonlocal asked
        asked = True
        return _ask(report)

    with open_store(obj, readonly=not apply_) as store:
        report = gc.gc(store, judged, live, parse_duration(grace), previous_boots,
                       apply_, obj.data_dir, force=force, max_share=max_share,
                       netns=not ignore_netns, confirm=ask_once if ask else None,
                       named=networks)
    for p in report.problems:  # released all the same; the file is someone else's to remove
        click.echo("warning: %s" % p, err=True)
    emit(obj.output, _json(report), lambda: _table(report, id_forms(report.shown, no_trunc)))
    dry_run = _dry_run_note(report)
    if dry_run and obj.output == "table":
        click.echo(dry_run, err=True)
    if not asked:
        note(report.hint)
    if apply_ and report.refused:
        failed("gc refused, nothing released in any network:\n" + "\n".join(
            [c.refusal() for c in report.conflicts] + [m for _, _, m in report.refusals]))


def _with_reason(lease: Any, reason: str) -> dict[str, Any]:
    return dict(lease_row(lease), reason=reason)


def _json(report: gc.Report) -> dict[str, Any]:
    """The JSON contract of ``ipamctl -o json gc`` (documented in docs/ipamctl.md)."""
    return {"candidates": [_with_reason(x, why) for x, why in report.candidates()],
            "released": [lease_row(x) for x in report.released],
            "kept": [_with_reason(x, why) for x, why in report.kept()],
            "refused": [{"network": n, "guard": g, "message": m}
                        for n, g, m in report.refusals],
            "forced": report.forced,
            "networks": [p.network for p in report.plans],
            "conflicts": [{"node": c.node, "message": c.refusal(),
                           "boots": [b.boot_id for b in c.boots]} for c in report.conflicts]}


def _table(report: gc.Report, ids: Mapping[str, str]) -> str:
    lines = ["candidates:", rows_table([_with_reason(x, why) for x, why in report.candidates()],
                                       LEASE_COLUMNS + ["reason"], ids=ids)]
    kept = report.kept()
    if kept:
        lines += ["kept:", rows_table([_with_reason(x, why) for x, why in kept],
                                      ["network", "ip", "container_id", "ifname", "reason"],
                                      ids=ids)]
    lines.append("guards:")
    for plan in report.plans:
        prefix = "network %s: " % plan.network
        verdict = "; ".join(m[len(prefix):] if m.startswith(prefix) else m
                            for _, m in plan.refusals) or "ok"
        if plan.refusals:
            verdict = ("overridden: " if report.forced else "refused: ") + verdict
        lines.append("  %s (leases %d, candidates %d, kept %d): %s" % (
            plan.network, plan.total, len(plan.candidates), len(plan.kept), verdict))
    if not report.plans:
        lines.append("  (no network)")
    for conflict in report.conflicts:
        lines.append("  node name %s: refused: %s" % (conflict.node, conflict.refusal()))
    if report.applied and not report.refused:
        lines.append("released: %d" % len(report.released))
    return "\n".join(lines)


def _dry_run_note(report: gc.Report) -> str | None:
    """What a dry run did not do, for stderr under the table (an --apply a guard refused
    says so in its error instead: it was no dry run)."""
    if report.applied:
        return None
    if report.refused and not report.applied:
        return "dry run: --apply would refuse (see guards); nothing released"
    if report.candidates():
        return "dry run: nothing released; add --apply to release them"
    return None


def _ask(report: gc.Report) -> bool:
    note(report.hint)  # before the question it explains
    for _, _, message in report.refusals:
        click.echo("refused: %s" % message, err=True)
    return click.confirm("Release %d lease(s) anyway?" % len(report.candidates()),
                         default=False, err=True)
