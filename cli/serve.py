"""``ipamctl serve`` and ``ipamctl health``: the node daemon, and its health check."""
from __future__ import annotations

import click

from host_local_sqlite_cli.common import Obj
from host_local_sqlite_cli.output import emit, table_or_json
from ipam import daemon
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
def serve_cmd(socket_path: str, pool_size: int, max_calls: int, drain_timeout: float
              ) -> None:
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
    Example:
        ipamctl serve
        ipamctl serve --socket /run/ipam/daemon.sock --pool-size 8
        ipamctl serve --drain-timeout 60 2>> /var/log/host-local-sqlite.log
    """
    raise SystemExit(daemon.serve(socket_path, pool_size, drain_timeout, max_calls))


@click.command("health")
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
    table_or_json(obj)
    health = daemon.check_health(socket_path, timeout)
    emit(obj.output, health, lambda: "\n".join("%s: %s" % kv for kv in health.items()))
