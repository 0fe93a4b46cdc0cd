"""For mypy only: every store keeps the :class:`~ipam.store.Store` contract.

Nothing here runs. The module is never imported, and all of it sits under
``TYPE_CHECKING``, which mypy takes as true: :func:`_kept` returns each store class as a
``Store``, so a store that lacks a method of the contract, or takes other arguments, fails
``make typecheck`` here (its unannotated parameters are ``Any``: arity and names are
checked, their types once the stores are annotated).

:class:`OpenStore` is what holders of a store use beyond the contract, which does not
declare it yet: ``node`` (the mirror's adopted leases name it) and ``close()``.
Each store has them.

Temporary home: when ``ipam/store/`` lands, OpenStore's members belong in ``Store``
itself (then ``OpenStore`` -> ``Store`` wherever it is named) and :func:`_kept` at the
bottom of the package, still under ``TYPE_CHECKING``.
"""
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Protocol

    from ipam.memory_store import MemoryStore
    from ipam.sql_store import SqlStore
    from ipam.sqlite_store import SqliteStore
    from ipam.store import Store

    class OpenStore(Store, Protocol):
        # This node's name (None: a memory store made without one).
        node: Optional[str]

        def close(self) -> None: ...

    def _kept(sqlite: SqliteStore, shared: SqlStore, fake: MemoryStore) -> list[OpenStore]:
        return [sqlite, shared, fake]
