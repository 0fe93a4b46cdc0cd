"""``ipamctl serve --gc-interval``: the node daemon runs gc itself, so that a node needs
no systemd timer (nor crictl) to release the leases of containers that are gone.

Each run is :func:`ipam.admin.gc.gc` with ``apply`` and every guard, as ``ipamctl gc --apply``
run by hand without ``--force``: the list guards (empty list, no lease listed,
``max_share``), the on-the-wire check of the host's network namespaces, two hosts
using the node's name, ``grace``. A refusing guard releases nothing; the run says why in
the log and the next run asks again.

The live attachments come from a :class:`Source`, asked afresh at each run: one that
cannot list raises, and the run releases nothing (an empty answer is not "nothing
runs"; the empty-list guard says so). Runs take place on a thread of their own, one at
a time, ``interval`` seconds apart (the first one ``interval`` after the start): each is
a few short store transactions, so calls wait for it no longer than for another call,
and its own waits are bounded (the store's busy timeout, the source's timeout, the
namespace check's :data:`ipam.admin.netns.TIMEOUT`). A run that fails is logged and counted
(:meth:`ipam.daemon.metrics.Metrics.gc_run`), and the next goes ahead.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, ContextManager, Optional, Protocol

from ipam.admin import gc

if TYPE_CHECKING:
    from ipam.daemon.metrics import Metrics
    from ipam.store.protocol import AdminStore

# Seconds a CRI runtime has to list its pod sandboxes.
CRI_TIMEOUT = 10.0


class Source(Protocol):
    """Where a periodic run's live attachments come from."""

    def describe(self) -> str:
        """How the log names it (``file /run/live``, ``CRI unix:///...``)."""
        ...

    def live(self) -> tuple[gc.Valid, Optional[list[str]]]:
        """The live attachments now, and the networks they judge (None: every network
        of this node); raises (any exception, its message a reason) when it cannot
        list them."""
        ...


class FileSource:
    """A file of ``ID[/IFNAME]`` lines, as ``ipamctl gc --valid-file`` reads, read
    again at every run (a runtime's hook or a cron job keeps it current). A missing or
    unreadable file fails the run: it is not an empty list."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return "file %s" % self.path

    def live(self) -> tuple[gc.Valid, Optional[list[str]]]:
        with open(self.path) as f:
            return gc.Valid(f.read().splitlines()), None


class CriSource:
    """The pod sandboxes a CRI runtime (containerd, CRI-O) lists at ``endpoint``: the IDs
    CRI gives CNI as CNI_CONTAINERID, as ``crictl pods -q`` prints them; they judge
    only the networks that runtime loaded (:func:`ipam.cri.live.live`, as ``ipamctl gc
    --cri``): a node's podman containers are no pod sandboxes.

    The client is :mod:`ipam.cri` (imported at the first run, so that a daemon without
    this source never loads gRPC)."""

    def __init__(self, endpoint: str, timeout: float = CRI_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def describe(self) -> str:
        return "CRI %s" % self.endpoint

    def live(self) -> tuple[gc.Valid, Optional[list[str]]]:
        from ipam.cri.live import live

        runtime = live(self.endpoint, None, self.timeout)
        return gc.Valid(runtime.sandboxes), runtime.networks


class PeriodicGc:
    """Runs gc every ``interval`` seconds on its own thread, from :meth:`start` until
    :meth:`stop`.

    ``open_store()``: a writable store of this node, as a context manager (the one
    ``ipamctl gc`` would open with the same global options); ``data_dir``: its mirror.
    ``source``: the live attachments, or None with ``previous_boots`` alone (only
    leases of earlier boots go)."""

    def __init__(self, open_store: Callable[[], ContextManager[AdminStore]], data_dir: str,
                 interval: float, source: Optional[Source], previous_boots: bool = False,
                 grace: float = 600.0, max_share: float = 0.5) -> None:
        if source is None and not previous_boots:
            raise ValueError("a periodic gc needs a source of live attachments, or "
                             "previous_boots")
        self.open_store = open_store
        self.data_dir = data_dir
        self.interval = interval
        self.source = source
        self.previous_boots = previous_boots
        self.grace = grace
        self.max_share = max_share
        self.runs = 0
        self._log: Callable[[str], None] = lambda line: None
        self._metrics: Optional[Metrics] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def describe(self) -> str:
        what = [self.source.describe()] if self.source is not None else []
        if self.previous_boots:
            what.append("earlier boots")
        return "gc every %gs (%s; grace %gs, max share %g%%)" % (
            self.interval, " + ".join(what), self.grace, self.max_share * 100)

    def start(self, log: Callable[[str], None], metrics: Optional[Metrics] = None) -> None:
        self._log, self._metrics = log, metrics
        self._thread = threading.Thread(target=self._loop, name="gc", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop, and wait for a run in progress ``timeout`` seconds at
        most; whether it stopped (a run cut off by the process's exit rolls back)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(max(timeout, 0))
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self) -> Optional[gc.Report]:
        """One run: logged, counted; None when it failed (never raises)."""
        started = time.monotonic()
        self.runs += 1
        try:
            valid, networks = self.source.live() if self.source is not None else (None, None)
        except Exception as e:  # noqa: BLE001 - the source's failure ends this run only
            self._failed("could not list the live attachments from %s: %s"
                         % (self.source.describe() if self.source else "?", _why(e)),
                         started)
            return None
        try:
            with self.open_store() as store:
                report = gc.gc(store, networks, valid, self.grace, self.previous_boots,
                               apply=True, data_dir=self.data_dir, force=False,
                               max_share=self.max_share, netns=True)
        except Exception as e:  # noqa: BLE001 - a failed run is logged; the next one runs
            self._failed(_why(e), started)
            return None
        self._report(report, started)
        return report

    def _failed(self, why: str, started: float) -> None:
        self._log("gc run=%d result=failed ms=%.1f: %s"
                  % (self.runs, (time.monotonic() - started) * 1000, why))
        if self._metrics is not None:
            self._metrics.gc_run("failed")

    def _report(self, report: gc.Report, started: float) -> None:
        ms = (time.monotonic() - started) * 1000
        result = "refused" if report.refused else "ok"
        kept = report.kept()
        self._log("gc run=%d result=%s networks=%d released=%d kept=%d ms=%.1f" % (
            self.runs, result, len(report.plans), len(report.released), len(kept), ms))
        for lease in report.released:
            self._log("gc released network=%s ip=%s container=%s ifname=%s" % (
                lease.network, lease.ip, lease.container_id, lease.ifname or "-"))
        for conflict in report.conflicts:
            self._log("gc refused: %s" % conflict.refusal())
        for _, _, message in report.refusals:
            self._log("gc refused: %s" % message)
        for problem in report.problems:
            self._log("gc warning: %s" % problem)
        if self._metrics is not None:
            self._metrics.gc_run(result, [lease.network for lease in report.released],
                                 None if report.refused else time.time())


def _why(e: BaseException) -> str:
    text = str(e.args[0]) if len(e.args) == 1 else str(e)
    return text or type(e).__name__
