"""The seams, as the type checker holds them: read by mypy (``make typecheck``, with
``warn_unused_ignores``), never run. Each ``type: ignore`` below marks a line that must
stay an error: were the seam to go (the plugin's Store grew an operator's query,
``open_store`` returned ``Any``), the ignore would be unused, and mypy would say so.
"""
from __future__ import annotations

from ipam.store.backend import open_store
from ipam.store.protocol import AdminStore, Store


def _a_command_cannot_ask_what_only_ipamctl_asks(store: Store) -> None:
    store.history()  # type: ignore[attr-defined]
    store.networks()  # type: ignore[attr-defined]
    store.forget_network("n")  # type: ignore[attr-defined]


def _a_plugin_store_is_no_admin_store(store: Store) -> AdminStore:
    return store  # type: ignore[return-value]


def _open_store_says_what_it_returns() -> None:
    with open_store("/nonexistent/leases.db") as store:
        store.no_such_method()  # type: ignore[attr-defined]
