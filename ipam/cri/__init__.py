"""The node's CRI runtime, asked over CRI itself (gRPC, ``runtime.v1``), as kubelet asks
it: which pod sandboxes live and which CNI networks it loaded, for ``ipamctl gc --cri``
(no crictl). :mod:`ipam.cri.live` asks the whole question; :mod:`ipam.cri.client` makes
the calls, each one :mod:`ipam.cri.grpc_call` (gRPC's unary call over the pure-Python
``h2``) of a message :mod:`ipam.cri.wire` encodes by hand; :mod:`ipam.cri.defaults` holds
what a caller may name without importing h2.

Never imported by a plugin call (tests/test_launcher.py): h2 is an optional extra
(``host-local-sqlite[cri]``), and part of the self-contained build.
"""
