"""``ipamctl serve`` and ``ipamctl health``: the node daemon, and its health check."""
from __future__ import annotations

from typing import Any

import click

from host_local_sqlite_cli.common import Obj, open_store
from host_local_sqlite_cli.formats import output_formats
from host_local_sqlite_cli.gc import parse_share
from host_local_sqlite_cli.output import emit, parse_duration
from ipam.admin import leases as admin
from ipam.cri.defaults import DEFAULT_ENDPOINT
from ipam.daemon import gc_periodic
from ipam.daemon import server as daemon
from ipam.daemon.metrics_http import parse_address
from ipam.paths import DAEMON_SOCKET

_SOCKET_HELP = "The daemon's unix socket."


@click.command("serve")
@click.option("--socket", "socket_path", default=DAEMON_SOCKET, show_default=True,
              metavar="PATH", help=_SOCKET_HELP + " Created 0600, in a directory created "
              "0700 if missing; under systemd socket activation, the socket unit's is used.")
@click.option("--pool-size", default=daemon.DEFAULT_POOL_SIZE, show_default=True,
              type=click.IntRange(1, 64),
              help="Threads kept waiting for calls; also the most stores kept open for "
                   "each database (PostgreSQL connections, SQLite connections) and each "
                   "dataDir, node and busyTimeout the configs give it.")
@click.option("--max-calls", default=daemon.DEFAULT_MAX_CALLS, show_default=True,
              type=click.IntRange(1, 4096),
              help="Calls served at once, at most: a thread each, started as calls come, "
                   "so that a call never waits behind calls waiting for another "
                   "network's lock. Past it, a call is not taken, and its plugin runs it "
                   "in process within a second.")
@click.option("--drain-timeout", default=daemon.DEFAULT_DRAIN_TIMEOUT, show_default=True,
              type=click.FloatRange(0), metavar="SECONDS",
              help="On SIGTERM, SIGINT or SIGHUP: how long to go on answering the calls "
                   "already taken. A call still running then (or at a second signal) is "
                   "cut off; its client runs it in process.")
@click.option("--metrics", "metrics", metavar="HOST:PORT", callback=lambda c, p, v: _address(v),
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (':PORT': on "
                   "every address): calls by command and result, their latency, errors "
                   "by CNI code, calls declined, each range's size/used/free (as "
                   "'ipamctl stats --prometheus' prints them), gc runs and releases.")
@click.option("--gc-interval", type=click.FloatRange(1), metavar="SECONDS",
              help="Run gc (--apply, every guard, no --force) this often, the first "
                   "time this long after the start; give the live attachments with "
                   "--gc-cri or --gc-valid-file, or --gc-previous-boots alone.")
@click.option("--gc-cri", is_flag=False, flag_value=DEFAULT_ENDPOINT, default=None,
              metavar="[ENDPOINT]",
              help="The live attachments are the pod sandboxes that the CRI runtime at "
                   "ENDPOINT lists, as for 'ipamctl gc --cri'.  [ENDPOINT default: %s]"
                   % DEFAULT_ENDPOINT)
@click.option("--gc-valid-file", metavar="PATH",
              help="The live attachments are this file's ID[/IFNAME] lines, read again "
                   "at each run (a missing file fails the run; it is not an empty list).")
@click.option("--gc-previous-boots", is_flag=True,
              help="Leases made before this boot go too (alone: only they do).")
@click.option("--gc-grace", default="10m", show_default=True, metavar="DURATION",
              help="Never release a lease younger than this.")
@click.option("--gc-max-share", default="50%", show_default=True, metavar="PERCENT",
              callback=parse_share,
              help="Refuse a run that would release more than this share of a network's "
                   "leases (as 'ipamctl gc --max-share').")
@click.option("--trace-steps", metavar="PATH",
              help="Append one JSON line per call to PATH: when the call passed each of "
                   "its steps (the hand-over, the door, the locks, the transaction, the "
                   "mirror, COMMIT, the answer), for tools/bench_steps.py.")
@click.pass_obj
def serve_cmd(obj: Obj, socket_path: str, pool_size: int, max_calls: int,
              drain_timeout: float, metrics: str | None, gc_interval: float | None,
              gc_cri: str | None, gc_valid_file: str | None, gc_previous_boots: bool,
              gc_grace: str, gc_max_share: float, trace_steps: str | None) -> None:
    """Run the node daemon: plugin calls are forwarded to it and served by this
    process, which has the plugin loaded and its stores open, instead of each
    loading the plugin anew (on PostgreSQL: a few kept connections instead of a new
    one per call).

    \b
    The plugin forwards a call when the config's "ipam": {"daemon": ...} or the
    environment variable HOST_LOCAL_SQLITE_DAEMON names this socket, or when the
    default socket exists. When no daemon answers, the call runs in the plugin's
    own process, exactly as without one.

    Each call runs through the plugin's own code and transaction, so plugin
    processes, ipamctl and the daemon may all run at once, and it waits as long
    as in process (busyTimeout, lockWaitLimit). The daemon takes only a call its
    plugin could have run itself: from root or its own user, in its user
    namespace, with its capabilities, seeing the same files at the paths the
    config names; any other runs in the plugin's process. One line per call is
    logged to stderr. A
    second daemon on the same socket refuses to start. SIGTERM, SIGINT or SIGHUP
    drains it (see --drain-timeout); a second signal stops it at once. Under
    systemd, the units in deploy/systemd start it on the first call (socket
    activation); 'ipamctl health' asks it how it is. Restart it after an
    upgrade: it runs the code it loaded.

    \b
    With --gc-interval it also runs gc on a thread of its own, as 'ipamctl gc
    --apply' would on the store that the global options name (--data-dir,
    --database): a run that a guard refuses releases nothing, one that fails
    (the runtime did not answer) is logged and counted, and the next goes ahead.
    Each run logs one line, and one per lease released.

    \b
    Example:
        ipamctl serve
        ipamctl serve --socket /run/ipam/daemon.sock --pool-size 8
        ipamctl serve --drain-timeout 60 2>> /var/log/host-local-sqlite.log
        ipamctl serve --metrics :9731 --gc-interval 600 --gc-cri
    """
    periodic = _periodic_gc(obj, gc_interval, gc_cri, gc_valid_file, gc_previous_boots,
                            parse_duration(gc_grace), gc_max_share)
    usage = (lambda: _usage(obj)) if metrics is not None else None
    raise SystemExit(daemon.serve(socket_path, pool_size, drain_timeout, max_calls,
                                  metrics_address=metrics, usage=usage,
                                  periodic_gc=periodic, trace_steps=trace_steps))


def _address(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_address(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def _periodic_gc(obj: Obj, interval: float | None, cri: str | None,
                 valid_file: str | None, previous_boots: bool, grace: float,
                 max_share: float) -> gc_periodic.PeriodicGc | None:
    sources = [s for s in (cri, valid_file) if s is not None]
    if interval is None:
        if sources or previous_boots:
            raise click.UsageError("--gc-cri, --gc-valid-file and --gc-previous-boots "
                                   "need --gc-interval")
        return None
    if len(sources) > 1:
        raise click.UsageError("give one of --gc-cri and --gc-valid-file")
    source: gc_periodic.Source | None = None
    if cri is not None:
        source = gc_periodic.CriSource(cri)
    elif valid_file is not None:
        source = gc_periodic.FileSource(valid_file)
    elif not previous_boots:
        raise click.UsageError("--gc-interval needs the live attachments: --gc-cri or "
                               "--gc-valid-file (or --gc-previous-boots alone)")
    return gc_periodic.PeriodicGc(lambda: open_store(obj, readonly=False), obj.data_dir,
                                  interval, source, previous_boots, grace, max_share)


def _usage(obj: Obj) -> list[dict[str, Any]]:
    """The range rows of 'ipamctl stats' (its store: every node's on a shared
    database unless --node), at each scrape."""
    with open_store(obj, readonly=True, every_node=True) as store:
        return admin.stats(store)


@click.command("health")
@output_formats("table", "json")
@click.option("--socket", "socket_path", default=DAEMON_SOCKET, show_default=True,
              metavar="PATH", help=_SOCKET_HELP)
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0),
              metavar="SECONDS", help="How long to wait for the answer.")
@click.pass_obj
def health_cmd(obj: Obj, socket_path: str, timeout: float) -> None:
    """Ask the node daemon how it is: exit 0 with its figures, or 1 saying why it
    did not answer or refused (a liveness probe: ipamctl health --timeout 2).

    JSON: {"status", "pid", "version", "socket", "uptime_s", "calls", "refused",
    "declined", "in_flight", "threads", "max_calls", "pool_size", "stores_open",
    "stores_opened"}

    \b
    Example:
        ipamctl health
        ipamctl -o json health --socket /run/ipam/daemon.sock --timeout 2
    """
    health = daemon.check_health(socket_path, timeout)
    emit(obj.output, health, lambda: "\n".join("%s: %s" % kv for kv in health.items()))
