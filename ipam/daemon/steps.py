"""Where one forwarded call's time goes: ``ipamctl serve --trace-steps FILE``.

To cut a call's cost one must know each step's: the hand-over from the client, the
daemon's parse, the door, the locks, the transaction, the mirror's writes and syncs,
COMMIT, the answer. A :class:`Steps` goes with a call (``CallContext.steps``) when the
daemon traces, and is None otherwise: each point that marks a step tests for None
first, so a daemon that does not trace pays one comparison per point, and the plugin's
own process (which never traces) imports nothing from here.

The marks are ``time.monotonic_ns()``, CLOCK_MONOTONIC, the clock every process on the
host shares: ``tools/bench_steps.py`` sets the client's start (its spawn) and its end
(its exit) beside the daemon's marks, one timeline per call.
"""
import json
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, TextIO

# The steps a forwarded ADD or DEL marks, in order: each named for what it did since
# the mark before ("accepted" is the first, when the daemon's thread took the connection).
ORDER = ("accepted", "request", "parse", "door", "views", "taken", "config", "locks",
         "begin", "body", "apply", "commit", "after-commit", "render", "answer", "logged")
# Time spent inside "body" on the mirror (journal, the new address file, its data sync,
# its link), summed by NetworkFiles: "body" counts it too.
MIRROR = "mirror-in-body"


class Steps:
    """One call's marks, in the order the call passed them; a step that ran twice (a
    reconcile's transaction before the command's) keeps its last mark."""

    __slots__ = ("marks", "spent")

    def __init__(self) -> "None":
        self.marks: "list[tuple[str, int]]" = [("accepted", time.monotonic_ns())]
        self.spent: "dict[str, int]" = {}

    def mark(self, name: "str") -> "None":
        self.marks.append((name, time.monotonic_ns()))

    def add(self, name: "str", since: "int") -> "None":
        """Add the time from ``since`` (a ``time.monotonic_ns()``) to now to ``name``."""
        self.spent[name] = self.spent.get(name, 0) + time.monotonic_ns() - since

    def add_mirror(self, since: "int") -> "None":
        """Time spent on the mirror inside the command's body (NetworkFiles.claim)."""
        self.add(MIRROR, since)

    def record(self, **fields: "Any") -> "dict[str, Any]":
        """The call as one JSON-able record: ``fields``, each mark's time (ns) and the
        sums (ns)."""
        return dict(fields, marks=dict(self.marks), spent=self.spent)


class TraceFile:
    """The file a tracing daemon appends one JSON line per call to."""

    def __init__(self, path: "str") -> "None":
        self._file: "TextIO" = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: "dict[str, Any]") -> "None":
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> "None":
        with self._lock:
            self._file.close()


def durations(record: "dict[str, Any]") -> "dict[str, float]":
    """Milliseconds of each step of a traced call, from its marks: a step's time is from
    the mark before it to its own. ``mirror-in-body`` is split out of ``body``, whose
    figure is then the SQL (and the allocator's rules) alone."""
    marks: "dict[str, int]" = record["marks"]
    out: "dict[str, float]" = {}
    previous: "Optional[int]" = None
    for name in ORDER:
        at = marks.get(name)
        if at is None:
            continue
        if previous is not None:
            out[name] = (at - previous) / 1e6
        previous = at
    mirror = record.get("spent", {}).get(MIRROR)
    if mirror is not None and "body" in out:
        out[MIRROR] = mirror / 1e6
        out["body"] -= out[MIRROR]
    return out
