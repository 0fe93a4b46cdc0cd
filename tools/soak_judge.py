"""What ``make soak`` calls flat: its acceptance, over the first and the last 10% of a run.

Pure logic over the figures :mod:`soak` gathered (no processes, no files), so that the
rules are tested on their own (``tests/test_soak.py``) and the run only measures.

A figure is compared between two windows of the measured calls, the first tenth and the
last: per-call times by their medians over each window's calls, sizes and counts by
their largest sample in each window (samples are taken after every hundredth of the
calls, so each window has ten). The limits, and why each:

- **Per-call time**: wall time follows whatever else the machine runs (a trial of 2,000
  calls beside other work, load average 85 on two cores: the median through the daemon
  went from 5.8 to 12.4 ms and back, its CPU per call stayed at 2 ms). So each window's
  calls are interleaved, pair by pair, with the same pairs on a *fresh* node (its own
  daemon and dataDir, filled and settled as this one was, made anew for each window),
  and what is judged is the ratio of the two medians: the last window's within 1.5
  times the first's. A cost that grows with the calls made (a table scanned, a list
  kept) grows far past that over 500,000 calls; the machine's load cancels. The plugin
  processes' and Go's ratios are judged alike where each window has at least
  :data:`MIN_TIMED` of them; fewer (the CI run) are reported, not judged.
- **Daemon CPU per call**: the last window's within 1.5 times the first's: the work a
  call costs the daemon, which no other load inflates much.
- **Database file**: no larger in the last tenth than the largest it was before it,
  plus a little (:data:`SLACK`): it has stopped growing. SQLite reuses freed pages, so
  with the live pods constant the file grows only to hold the most it ever held, and
  history, kept by ``historyRetention`` for a time, is as long as the calls of that time:
  this machine's speed varies tenfold with its other work (a trial: 30 to 530 calls a
  second), so the file's high-water mark is set by its fastest moment, which may come
  after the first tenth. A file that grows with the calls made grows in the last tenth
  too: unpruned history adds about 340 bytes a call (a row and its four indexes;
  measured), 170 KB over the CI run's last tenth, 17 MB over the full run's.
- **Mirror bytes**: the last within 1.25 times the first plus :data:`SLACK`: a live
  pod's file, the networks' directories, nothing kept by time.
- **WAL**: the same, of the first or of the length past which a commit truncates it
  (:data:`ipam.store.sqlite_db.WAL_TRIM_BYTES`, 1 MiB), whichever is more: it grows from
  nothing to that length and starts again, so ten samples of a short window may all
  miss its longest.
- **Daemon RSS**: the last within 1.10 times the first plus 2 MiB. The interpreter's
  allocator keeps what it took at the busiest moment, so a little growth is not a
  leak; a leak of 100 bytes a call is 50 MB over the full run.
- **Open descriptors, mirror entries**: no more than in the first window. Each is
  exact: one connection, a store's files, a live pod's file.
- **Calls the daemon did not answer** (run in process instead, as the plugin would):
  at most 0.1% of the daemon's calls. A shared machine can stall a process past the
  client's one second, now and then; a daemon that stops taking calls cannot hide.
"""
import statistics

from ipam.store.sqlite_db import WAL_TRIM_BYTES

TIME_RATIO = 1.5
SIZE_RATIO = 1.25
RSS_RATIO = 1.10
RSS_SLACK = 2 << 20
SLACK = 64 << 10
MIN_TIMED = 50
FALLBACK_SHARE = 0.001
WINDOW = 0.10


def windows(samples):
    """The samples of the first and of the last tenth of the calls (by their ``slice``,
    0 to ``slices - 1``; the baseline taken before the first is slice -1)."""
    slices = max(s["slice"] for s in samples) + 1
    n = max(1, round(slices * WINDOW))
    return ([s for s in samples if 0 <= s["slice"] < n],
            [s for s in samples if s["slice"] >= slices - n])


def median_ms(times):
    return statistics.median(times) * 1000 if times else None


def _row(measure, first, last, limit, ok, unit=""):
    return {"measure": measure, "first": first, "last": last, "limit": limit, "ok": ok,
            "unit": unit}


def _timed(times, kind, slices):
    return [t for s in slices for t in times.get(kind, {}).get(s, ())]


def _time_rows(kind, times, fresh, first, last):
    """The medians of ``kind``'s calls in each window, and their ratio to the fresh
    node's beside them (judged when each window has :data:`MIN_TIMED` calls)."""
    ours = [_timed(times, kind, w) for w in (first, last)]
    theirs = [_timed(fresh, kind, w) for w in (first, last)]
    a, b = (median_ms(x) for x in ours)
    rows = [_row("per-call ms, %s (median)" % kind, a, b, "reported", None, "ms")]
    few = min(len(x) for x in ours + theirs)
    ratios = [median_ms(x) / median_ms(y) if x and y else None
              for x, y in zip(ours, theirs, strict=True)]
    measure = "per-call time, %s, ÷ a fresh node's beside it" % kind
    if few < MIN_TIMED:
        rows.append(_row(measure, *ratios, "reported (%d calls in a window)" % few, None,
                         "ratio"))
    else:
        rows.append(_row(measure, *ratios, "<= %gx" % TIME_RATIO,
                         ratios[1] <= ratios[0] * TIME_RATIO, "ratio"))
    return rows


def _cpu_per_call(samples, window):
    """The daemon's CPU milliseconds per call it answered over ``window`` (from the
    sample before it to its last)."""
    before = max((s for s in samples if s["slice"] < window[0]["slice"]),
                 key=lambda s: s["slice"])
    end = window[-1]
    return 1000 * (end["cpu_s"] - before["cpu_s"]) / max(
        end["daemon_calls"] - before["daemon_calls"], 1)


def _peak(window, key):
    return max(s[key] for s in window)


def judge(samples, times, fresh, totals):
    """The verdict rows: ``samples`` as :mod:`soak` takes them (dicts with ``slice`` and
    each measure, the baseline's slice -1), ``times`` and ``fresh`` this node's and the
    fresh nodes' call times ``{kind: {slice: [seconds, ...]}}``, ``totals`` the run's
    counts and end checks. Each row's ``ok`` is True, False, or None (reported only)."""
    first, last = windows(samples)
    slices = [[s["slice"] for s in w] for w in (first, last)]
    rows = []
    for kind in ("daemon", "process", "go"):
        rows += _time_rows(kind, times, fresh, *slices)
    a, b = _cpu_per_call(samples, first), _cpu_per_call(samples, last)
    rows.append(_row("daemon CPU ms per call", a, b, "<= %gx" % TIME_RATIO,
                     b <= a * TIME_RATIO, "ms"))
    a, b = _peak(first, "db_bytes"), _peak(last, "db_bytes")
    before = max(s["db_bytes"] for s in samples if s["slice"] < last[0]["slice"])
    rows.append(_row("database file", a, b, "<= its largest before (%.0f KiB) + %d KiB"
                     % (before / 1024, SLACK >> 10), b <= before + SLACK, "bytes"))
    for key, measure, ratio, slack, least in (
            ("wal_bytes", "database WAL", SIZE_RATIO, SLACK, WAL_TRIM_BYTES),
            ("rss_bytes", "daemon RSS", RSS_RATIO, RSS_SLACK, 0),
            ("mirror_bytes", "mirror bytes", SIZE_RATIO, SLACK, 0)):
        a, b = _peak(first, key), _peak(last, key)
        limit = "<= %gx%s + %d KiB" % (ratio, " (at least %d KiB)" % (least >> 10)
                                       if least else "", slack >> 10)
        rows.append(_row(measure, a, b, limit, b <= max(a, least) * ratio + slack,
                         "bytes"))
    for key, measure in (("fds", "daemon open descriptors"),
                         ("mirror_entries", "mirror entries")):
        a, b = _peak(first, key), _peak(last, key)
        rows.append(_row(measure, a, b, "<= first", b <= a))
    rows.append(_row("daemon threads", _peak(first, "threads"), _peak(last, "threads"),
                     "reported", None))
    rows.append(_row("history rows", _peak(first, "history"), _peak(last, "history"),
                     "reported", None))
    daemon_calls = totals["daemon_calls"]
    fell = totals["fell_back"]
    rows.append(_row("daemon calls run in process instead", None, fell,
                     "<= %g%% of %d" % (FALLBACK_SHARE * 100, daemon_calls),
                     fell <= daemon_calls * FALLBACK_SHARE))
    rows.append(_row("lease audits (none lost, held twice, held after DEL; files alike)",
                     None, totals["audits"], "every one clean (else the run stops)", True))
    rows.append(_row("ipamctl check problems", None, len(totals["check"]), "0",
                     not totals["check"]))
    rows.append(_row("daemon internal errors logged", None, totals["internal_errors"], "0",
                     totals["internal_errors"] == 0))
    rows.append(_row("daemon exit status on SIGTERM", None, totals["daemon_exit"], "0",
                     totals["daemon_exit"] == 0))
    return rows


def passed(rows):
    return all(r["ok"] is not False for r in rows)


def _fmt(value, unit):
    if value is None:
        return ""
    if unit == "bytes":
        return "%.1f KiB" % (value / 1024) if value < 1 << 20 else "%.2f MiB" % (
            value / (1 << 20))
    if unit == "ms":
        return "%.2f" % value
    if unit == "ratio":
        return "%.2f" % value
    return str(value)


def table(rows):
    """The verdict as a Markdown table."""
    lines = ["| measure | first 10% | last 10% | limit | verdict |",
             "|---|---:|---:|---|---|"]
    for r in rows:
        verdict = {True: "ok", False: "**FAILED**", None: ""}[r["ok"]]
        lines.append("| %s | %s | %s | %s | %s |" % (
            r["measure"], _fmt(r["first"], r["unit"]), _fmt(r["last"], r["unit"]),
            r["limit"], verdict))
    return "\n".join(lines)
