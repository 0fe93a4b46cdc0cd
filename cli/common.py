"""What every ipamctl command shares: the context object and opening the store."""
from __future__ import annotations

import dataclasses
from typing import Any

import click

from ipam import addr
from ipam.backend import open_store as _open_store


@dataclasses.dataclass(frozen=True)
class Obj:
    """What every command gets from the global options, as ``ctx.obj``."""

    data_dir: str
    database: str
    output: str
    node: str | None = None


def open_store(obj: Obj, readonly: bool, every_node: bool = False,
               queue: bool | None = None) -> Any:
    """Read-only commands never create a database or a directory.

    On a shared database, ``every_node`` commands (list, stats, history) see every
    node's leases unless ``--node`` names one; the others act on one node's leases,
    ``--node`` or this host's, since its mirror and its boots are that node's.
    ``queue``: read in the writers' queue (check, import's dry run read the mirror
    beside the database, and must not see a writer half-way).
    """
    scope = obj.node if every_node else True
    return _open_store(obj.database, readonly=readonly, node=obj.node,
                       data_dir=obj.data_dir, scope=scope, queue=queue)


def parse_ip(ctx: Any, param: Any, value: str | None) -> Any:
    if value is None:
        return None
    ip = addr.parse_ip(value)
    if ip is None:
        raise click.BadParameter("%r is not an IP address" % value)
    return ip
