"""The node daemon's Prometheus metrics, and the range gauges ``ipamctl stats`` prints.

One concept in one place: the names and help of every metric we expose. The range
gauges (size, used, free per network and range set) are built here from
:func:`ipam.admin.leases.stats` rows, for ``ipamctl -o prometheus stats`` (node_exporter's
textfile collector) and for the daemon's ``/metrics`` alike.

The daemon's call path only calls :meth:`Metrics.call` and :meth:`Metrics.declined`:
a dict lookup and a few additions under one small lock held for microseconds (no
per-metric locks, no allocation per call once a command's series exist). Rendering
(``prometheus_client``, imported here only) happens at scrape time, on the HTTP
server's thread; the plugin never imports this module.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

PREFIX = "host_local_sqlite_"
# Seconds: a call is a transaction of a few ms, or waits for a lock up to its bound.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)
RANGE_LABELS = ["network", "range_set", "range"]
RANGE_GAUGES = (
    ("size", "Addresses the range set can hand out (gateway and exclusions not counted)"),
    ("used", "Leased addresses in the range set"),
    ("reserved", "Reserved addresses in the range set (ipamctl reserve)"),
    ("free", "Free addresses in the range set"),
)


def range_families(rows: Iterable[dict[str, Any]]) -> list[Any]:
    """``host_local_sqlite_range_{size,used,reserved,free}`` from
    :func:`ipam.admin.leases.stats` rows (a network the plugin never served, with no
    range set, has none)."""
    from prometheus_client.core import GaugeMetricFamily

    families = {key: GaugeMetricFamily(PREFIX + "range_" + key, text, labels=RANGE_LABELS)
                for key, text in RANGE_GAUGES}
    for row in rows:
        if row["range_set"] is None:
            continue
        labels = [row["network"], str(row["range_set"]), row["range"]]
        for key, family in families.items():
            family.add_metric(labels, row[key])
    return list(families.values())


def render(*collectors: Collector) -> str:
    """Prometheus' text exposition format of ``collectors``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def render_ranges(rows: list[dict[str, Any]]) -> str:
    """``ipamctl -o prometheus stats``: the range gauges alone."""
    return render(_Families(lambda: range_families(rows)))


class _Families:
    """A collector of families made at scrape time."""

    def __init__(self, make: Callable[[], list[Any]]) -> None:
        self.make = make

    def collect(self) -> Iterator[Any]:
        yield from self.make()


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bucket (+Inf)
        self.sum = 0.0


class Metrics:
    """The daemon's counters, updated by its threads, rendered at scrape time.

    ``usage()``: :func:`ipam.admin.leases.stats` rows for the range gauges, read at each scrape
    (None: not exported). Gc runs and releases are counted by :meth:`gc_run`."""

    def __init__(self, usage: Optional[Callable[[], list[dict[str, Any]]]] = None,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self._lock = threading.Lock()
        self.usage = usage
        self.log = log
        self._last_usage_error: Optional[str] = None
        self.calls: dict[tuple[str, str], int] = {}   # (command, result) -> count
        self.errors: dict[tuple[str, str], int] = {}  # (command, code) -> count
        self.latency: dict[str, _Histogram] = {}      # command -> histogram
        self.declined_total = 0
        self.refused_total = 0
        self.gc_runs: dict[str, int] = {}             # result -> count
        self.gc_released: dict[str, int] = {}         # network -> count
        self.gc_last_success: Optional[float] = None

    # -- updates (any thread) -----------------------------------------------------------
    def call(self, command: str, code: Optional[int], seconds: float) -> None:
        """One call answered: ``code`` None when it succeeded, else its CNI code (0: an
        answer that named none)."""
        at = 0
        while at < len(BUCKETS) and seconds > BUCKETS[at]:
            at += 1
        result = "ok" if code is None else "error"
        with self._lock:
            self.calls[command, result] = self.calls.get((command, result), 0) + 1
            if code is not None:
                key = (command, str(code))
                self.errors[key] = self.errors.get(key, 0) + 1
            hist = self.latency.get(command)
            if hist is None:
                hist = self.latency[command] = _Histogram()
            hist.counts[at] += 1
            hist.sum += seconds

    def declined(self) -> None:
        with self._lock:
            self.declined_total += 1

    def refused(self) -> None:
        with self._lock:
            self.refused_total += 1

    def gc_run(self, result: str, released: Iterable[str] = (),
               at: Optional[float] = None) -> None:
        """A periodic gc run ended: ``result`` ok, refused or failed; ``released``: the
        network of each lease it released; ``at``: when, if it succeeded."""
        with self._lock:
            self.gc_runs[result] = self.gc_runs.get(result, 0) + 1
            for network in released:
                self.gc_released[network] = self.gc_released.get(network, 0) + 1
            if at is not None:
                self.gc_last_success = at

    # -- scrape (the HTTP server's thread) -------------------------------------------
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:  # a copy, then the lock is the calls' again
            calls, errors = dict(self.calls), dict(self.errors)
            latency = {c: (list(h.counts), h.sum) for c, h in self.latency.items()}
            declined, refused = self.declined_total, self.refused_total
            gc_runs, gc_released = dict(self.gc_runs), dict(self.gc_released)
            gc_last = self.gc_last_success
        family = CounterMetricFamily(PREFIX + "calls", "Plugin calls the daemon answered",
                                     labels=["command", "result"])
        for (command, result), n in sorted(calls.items()):
            family.add_metric([command, result], n)
        yield family
        family = CounterMetricFamily(PREFIX + "call_errors",
                                     "Calls answered with a CNI error, by its code",
                                     labels=["command", "code"])
        for (command, code), n in sorted(errors.items()):
            family.add_metric([command, code], n)
        yield family
        hist = HistogramMetricFamily(PREFIX + "call_duration_seconds",
                                     "Seconds from a call's request to its answer",
                                     labels=["command"])
        for command, (counts, total) in sorted(latency.items()):
            running, buckets = 0, []
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                running += n
                buckets.append((bound, running))
            hist.add_metric([command], buckets, total)
        yield hist
        yield CounterMetricFamily(PREFIX + "calls_declined",
                                  "Calls not taken (another view of the files, other "
                                  "powers): their plugins ran them in process",
                                  value=declined)
        yield CounterMetricFamily(PREFIX + "calls_refused",
                                  "Connections refused (a uid other than root and the "
                                  "daemon's)", value=refused)
        family = CounterMetricFamily(PREFIX + "gc_runs", "Periodic gc runs, by result "
                                     "(ok, refused by a guard, failed)", labels=["result"])
        for result, n in sorted(gc_runs.items()):
            family.add_metric([result], n)
        yield family
        family = CounterMetricFamily(PREFIX + "gc_released",
                                     "Leases the periodic gc released", labels=["network"])
        for network, n in sorted(gc_released.items()):
            family.add_metric([network], n)
        yield family
        if gc_last is not None:
            yield GaugeMetricFamily(PREFIX + "gc_last_success_timestamp_seconds",
                                    "When a periodic gc run last succeeded", value=gc_last)
        if self.usage is not None:
            yield from range_families(self._usage())

    def _usage(self) -> list[dict[str, Any]]:
        """The range rows, or none (logged once per distinct error) when the store
        cannot be read: a scrape never fails for it."""
        assert self.usage is not None
        try:
            rows = self.usage()
        except Exception as e:  # noqa: BLE001 - a scrape shows what it can
            why = "%s: %s" % (type(e).__name__, e)
            if why != self._last_usage_error and self.log is not None:
                self.log("metrics: no range gauges: %s" % why)
            self._last_usage_error = why
            return []
        self._last_usage_error = None
        return rows

    def text(self) -> str:
        return render(self)
