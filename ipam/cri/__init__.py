"""The node's CRI runtime, asked over CRI itself (gRPC, ``runtime.v1``), as kubelet asks
it: which pod sandboxes live (:func:`sandbox_ids`) and which CNI networks it loaded
(:func:`cni_networks`), for ``ipamctl gc --cri``, without crictl.

Never imported by a plugin call (tests/test_hot_path_imports.py): gRPC is an optional
extra (``host-local-sqlite[cri]``), and its import alone costs more than a whole ADD.
"""
from ipam.cri.client import DEFAULT_ENDPOINT, Runtime, cni_networks, sandbox_ids

__all__ = ["DEFAULT_ENDPOINT", "Runtime", "cni_networks", "sandbox_ids"]
