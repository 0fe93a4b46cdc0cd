"""The node daemon, ``ipamctl serve``: the server that runs forwarded calls on threads
of its own (:mod:`ipam.daemon.server`), its door (:mod:`ipam.daemon.caller`), the stores
it keeps open (:mod:`ipam.daemon.pool`), its step traces, metrics and periodic gc. The
plugin's side of the wire, the thin client, is :mod:`ipam.client`.

This file stays empty of imports.
"""
