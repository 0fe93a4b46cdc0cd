"""``-o``: the output formats, and which command prints which, declared once per command
with :func:`output_formats` instead of a guard in each.

A command declares the formats it prints; its own ``-o`` shows them in its help
(:func:`~host_local_sqlite_cli.common.carry_global_options` builds it), and any other
format, given before the command or after it, is a usage error before the command does
anything: ``-o prometheus list`` would otherwise print a table a scraper cannot read.
The command prints through :func:`~host_local_sqlite_cli.output.emit` or
:func:`~host_local_sqlite_cli.output.emit_rows`, which choose the table or the JSON by
``obj.output``: one of the formats declared.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Every format the root's -o takes. prometheus: stats' alone, which says it with
# --prometheus now; -o prometheus stays for the scripts that use it (see stats' help).
FORMATS = ("table", "json", "prometheus")
# Where a command's callback keeps the formats it declared.
_DECLARED = "output_formats"


def output_formats(*formats: str) -> Callable[[F], F]:
    """Declare the ``-o`` formats the decorated command prints (put it under
    ``@click.command``): any other is refused before the command runs. On a group that
    runs without a subcommand (history), only that run is checked: a subcommand
    declares its own."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError("no such output format: %s" % ", ".join(sorted(unknown)))

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def checked(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            if ctx.invoked_subcommand is None:
                refuse_others(ctx, formats)
            return f(*args, **kwargs)

        setattr(checked, _DECLARED, formats)
        return checked  # type: ignore[return-value]

    return decorate


def declared(command: click.Command) -> tuple[str, ...] | None:
    """The formats ``command`` declared with :func:`output_formats`, or None (a group,
    serve: it prints no result)."""
    return getattr(command.callback, _DECLARED, None)


def refuse_others(ctx: click.Context, formats: tuple[str, ...]) -> None:
    """A usage error (exit 2, nothing done) unless the -o in force is one of
    ``formats``; it names the commands that print that format."""
    output = getattr(ctx.obj, "output", "table")
    if output in formats:
        return
    speakers = [" ".join(path) for path in _speakers(ctx.find_root().command, output)]
    raise click.UsageError("-o %s is only for %s" % (output, " and ".join(
        "'ipamctl %s'" % name for name in speakers)) if speakers else
        "-o %s is not one of this command's formats (%s)" % (output, ", ".join(formats)))


def _speakers(group: click.Command, output: str,
              path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The command paths under ``group`` that declared ``output``."""
    if not isinstance(group, click.Group):
        return
    for name, command in sorted(group.commands.items()):
        if output in (declared(command) or ()):
            yield path + (name,)
        yield from _speakers(command, output, path + (name,))
