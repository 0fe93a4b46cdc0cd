"""Getting the plugin onto a node: ``ipamctl install-plugin``
(:mod:`ipam.install.installer`), the launcher it writes and the hot path's byte-code
bundle served to it, the native thin client, the self-contained build's copies, which
directory each runtime searches, and ``ipamctl check-install``.

This file stays empty of imports: a launched call passes through it to the bundle.
"""
