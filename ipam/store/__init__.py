"""Where leases live: the Store contract and its implementations.

- :mod:`ipam.store.protocol`: the contracts, ``Store`` (a CNI command's) and
  ``AdminStore`` (ipamctl's), as ``typing.Protocol``s (imported by type checkers and
  readers, never by a plugin call).
- :mod:`ipam.store.table`: the lease-table algorithm, written once over DB-API.
- :mod:`ipam.store.sqlite` and :mod:`ipam.store.postgres`: the engines, each only its
  connection, transactions, error classification and a few spellings.
- :mod:`ipam.store.invariant`: the check of what the lease table keeps beside the
  leases, shared by both engines, the tests' fake (tests/fake_store.py) and the crash tests.

This file stays empty of imports: the plugin's hot path passes through it.
"""
