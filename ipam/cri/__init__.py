"""The node's CRI runtime, asked over CRI itself (gRPC, ``runtime.v1``), as kubelet asks
it: which pod sandboxes live and which CNI networks it loaded, for ``ipamctl gc --cri``
(no crictl). :mod:`ipam.cri.live` asks the whole question; :mod:`ipam.cri.client` makes
the calls (over the stubs ``make cri-proto`` generates from ``api.proto``);
:mod:`ipam.cri.defaults` holds what a caller may name without importing gRPC.

Never imported by a plugin call (tests/test_launcher.py): gRPC is an optional extra
(``host-local-sqlite[cri]``), and its import alone costs more than a whole ADD.
"""
