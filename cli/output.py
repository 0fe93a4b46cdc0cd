"""Everything ipamctl prints: tables for people, JSON for programs (a stable contract),
library errors as ``Error: ...`` with exit 1, and the time parsing and formatting the
commands share. Each command prints its result through :func:`emit` or :func:`emit_rows`
(stats' Prometheus text aside), so that ``-o json`` means the same everywhere; which
formats a command prints, it declares (:mod:`host_local_sqlite_cli.formats`)."""
from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, NoReturn

import click

from host_local_sqlite_cli.common import carry_global_options
from ipam.admin.labels import pod_label
from ipam.errors import IpamError


class IpamGroup(click.Group):
    """A group whose subcommands' library errors end as ``Error: <msg>``, exit 1, with no
    traceback (usage errors stay click's own, exit 2), and whose commands take its global
    options after their name too (:func:`~host_local_sqlite_cli.common.carry_global_options`).
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        carry_global_options(self, cmd)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IpamError as e:
            raise click.ClickException(e.msg + ("\n" + e.details if e.details else "")) from e
        except sqlite3.Error as e:
            database = getattr(ctx.obj, "database", None) or "database"
            raise click.ClickException(f"{database}: {e}") from e
        except OSError as e:
            raise click.ClickException(str(e)) from e


def emit(output: str, data: Any, text: str | Callable[[], str]) -> None:
    """Print ``data`` as JSON for ``-o json``, else ``text`` (a function returning it, when
    only a table needs the work)."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(text if isinstance(text, str) else text())


def note(text: str | None) -> None:
    """A remark on how the input was read, on stderr (never in the output a script
    reads): ``note: ...``; nothing for None."""
    if text is not None:
        click.echo("note: %s" % text, err=True)


def warn(text: str | None) -> None:
    """Something the operator should look at, on stderr: ``warning: ...``; nothing for
    None."""
    if text is not None:
        click.echo("warning: %s" % text, err=True)


def failed(message: str | None = None) -> NoReturn:
    """Exit 1 after the output was printed: a script reads the result and the verdict.
    ``message`` goes to stderr as ``Error: ...``; None when the output said it all."""
    sys.stdout.flush()
    if message is None:
        raise click.exceptions.Exit(1)
    raise click.ClickException(message)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch -> ISO 8601 in UTC, millisecond precision."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h30m``, ``2d``, or plain seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise click.BadParameter("%r is not a duration like 90s, 10m, 1h30m or 2d" % text)
    return total


def parse_time(text: str, now: float | None = None) -> float:
    """An ISO 8601 time (without a zone: local time), ``now``, or a duration ago (``1h``)."""
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    text = text.strip()
    if text.lower() == "now":
        return now
    try:
        return now - parse_duration(text)
    except click.BadParameter:
        pass
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T") if "T" not in text else text)
    except ValueError:
        raise click.BadParameter(
            "%r is not a time: use ISO 8601 (2026-11-28T14:05:00Z), 'now' or a duration ago "
            "(1h)" % text) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time, as an operator reads the clock
    return dt.timestamp()


# Counts below this print in full: every IPv4 size (2^32 at most) stays exact.
EXACT_BELOW = 10 ** 10
# A count this close to a power of two prints as one, exactly: 2^64-2, 2^64-1000.
NEAR_POWER = 10 ** 6


def count(n: int) -> str:
    """A count as a table shows it: IPv6 sizes run to 39 digits, which made tables 150
    columns wide. In full below :data:`EXACT_BELOW`; else exact as a power of two and an
    offset (``2^64``, ``2^64-2``) when it is within :data:`NEAR_POWER` of one; else
    approximate (``~2^63.4``). JSON keeps the exact integer."""
    if -EXACT_BELOW < n < EXACT_BELOW:
        return str(n)
    if n < 0:
        return "-" + count(-n)
    k = n.bit_length()  # 2^(k-1) <= n < 2^k
    power, offset = min(((k - 1, n - 2 ** (k - 1)), (k, n - 2 ** k)), key=lambda p: abs(p[1]))
    if abs(offset) < NEAR_POWER:
        return "2^%d%s" % (power, "" if offset == 0 else "%+d" % offset)
    return "~2^%.1f" % math.log2(n)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return count(value)
    return str(value)


# A table given no short forms prints every container ID whole.
NO_SHORT_IDS: Mapping[str, str] = MappingProxyType({})


def no_trunc_option(command: Any) -> Any:
    """``--no-trunc`` (docker's and podman's word for it): the command's tables print
    every container ID whole; the command gets ``no_trunc``."""
    return click.option(
        "--no-trunc", is_flag=True,
        help="Print container IDs whole in tables (JSON always has them whole).")(command)


def id_forms(shown: Mapping[str, str], no_trunc: bool) -> Mapping[str, str]:
    """The short forms a table prints (a library call's ``shown``), or none with
    ``--no-trunc``."""
    return NO_SHORT_IDS if no_trunc else shown


def _shown(row: dict[str, Any], column: str, ids: Mapping[str, str]) -> Any:
    """A table cell: the row's value, shortened or combined where a table needs it."""
    if column == "pod":
        return pod_label(row.get("pod_namespace"), row.get("pod_name"))
    value = row.get(column)
    if column == "container_id" and isinstance(value, str):
        return ids.get(value, value)
    return value


def table(rows: list[dict[str, Any]], columns: list[str], ids: Mapping[str, str] = NO_SHORT_IDS,
          headers: bool = True) -> str:
    """Aligned columns with a header (unless not ``headers``: for ``sort``, ``awk``);
    None prints as '-', big counts as :func:`count`.
    A container ID prints as ``ids`` has it (the short forms a library call returned with
    its rows: ``Found.shown``), else whole, and ``pod`` reads ``NS/NAME``, quoted where
    needed (:mod:`ipam.admin.labels`). The JSON has every field whole."""
    cells = [[_cell(_shown(r, c, ids)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
             ] if headers else []
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit_rows(output: str, rows: list[dict[str, Any]], columns: list[str],
              empty: str = "(none)", ids: Mapping[str, str] = NO_SHORT_IDS,
              headers: bool = True, shown: list[dict[str, Any]] | None = None) -> None:
    """A list of JSON objects, or their table (of ``shown``: the rows as a table shows
    them, when it differs). No rows: ``[]``, or no table at all and ``empty`` on
    stderr: a script reading the table finds no row, never a line that says so."""
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(table(rows if shown is None else shown, columns, ids, headers))
    else:
        click.echo(empty, err=True)


def rows_table(rows: list[dict[str, Any]], columns: list[str], empty: str = "(none)",
               ids: Mapping[str, str] = NO_SHORT_IDS) -> str:
    """:func:`table`, or ``empty`` when there are no rows."""
    return table(rows, columns, ids) if rows else empty


def _pod_fields(x: Any) -> dict[str, Any]:
    return {"pod_namespace": x.pod_namespace, "pod_name": x.pod_name, "pod_uid": x.pod_uid}


def lease_row(lease: Any) -> dict[str, Any]:
    """The JSON shape of a lease (documented in docs/ipamctl.md). ``kind``: "lease", or
    "reservation" (``ipamctl reserve``: owner ``ipam:reserved``, its note as the ifname,
    as in its mirror file; ``note`` has it too, null for a lease)."""
    reserved = lease.is_reservation()
    return {"network": lease.network, "ip": str(lease.ip), "container_id": lease.container_id,
            "ifname": lease.ifname, "range_set": lease.range_set,
            "allocated_at": iso(lease.allocated_at), "node": lease.node, **_pod_fields(lease),
            "kind": "reservation" if reserved else "lease",
            "note": lease.ifname if reserved else None}


LEASE_COLUMNS = ["network", "ip", "container_id", "ifname", "range_set", "allocated_at",
                 "node", "pod"]


def event_row(event: Any) -> dict[str, Any]:
    """The JSON shape of a history event (documented in docs/ipamctl.md)."""
    return {"time": iso(event.time), "event": event.event, "reason": event.reason,
            "network": event.network, "ip": event.ip, "container_id": event.container_id,
            "ifname": event.ifname, "node": event.node, **_pod_fields(event)}


EVENT_COLUMNS = ["time", "event", "reason", "network", "ip", "container_id", "ifname",
                 "node", "pod"]


def is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@contextlib.contextmanager
def progress(label: str, output: str) -> Iterator[Callable[[int], Callable[[int], None]] | None]:
    """A ``progress`` argument for the library's long operations: on a terminal with
    table output, a function that takes the total and returns the bar's step; else None.
    """
    if not (is_terminal() and output == "table"):
        yield None
        return
    with contextlib.ExitStack() as stack:
        def start(total: int) -> Callable[[int], None]:
            bar = stack.enter_context(click.progressbar(length=total, label=label,
                                                        file=sys.stderr))
            return bar.update

        yield start
