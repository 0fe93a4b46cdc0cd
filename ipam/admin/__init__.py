"""What ``ipamctl`` does, as library calls that take an open store and return data: the
leases (:mod:`ipam.admin.leases`), ``check``, gc and its on-the-wire check, networks,
nodes, reservations, backup and restore, and where the leases are when ipamctl is not
told. ``cli/`` is the thin click layer over them. Off the plugin's hot path.

This file stays empty of imports.
"""
