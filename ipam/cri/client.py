"""A CRI client of the few calls ``ipamctl gc --cri`` needs (and the tests' containerd
drives), over the generated stubs of :file:`api.proto` (``make cri-proto``).

Every call is bounded by the client's ``timeout`` and fails fast when nothing listens on
the socket (gRPC's default: no waiting for the channel to become ready), so a gc run from
a timer never hangs on a runtime that is down; a failure is
:class:`ipam.errors.CriError`, naming the endpoint and the call.
"""
from __future__ import annotations

import json
from typing import Any

import grpc

from ipam.cri import api_pb2 as api
from ipam.cri.api_pb2_grpc import RuntimeServiceStub
from ipam.cri.defaults import DEFAULT_ENDPOINT, TIMEOUT
from ipam.errors import CriError

LOOPBACK = "cni-loopback"  # the network containerd adds before the conf dir's own


def target(endpoint: str) -> str:
    """crictl's endpoint forms (``unix:///path``, or a bare absolute path) as gRPC's."""
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    return endpoint


class Runtime:
    """A connection to a CRI runtime: ``with Runtime(endpoint) as rt: rt.sandboxes()``."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target(endpoint))
        self.stub = RuntimeServiceStub(self.channel)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """``RuntimeService/method(request)``, bounded; a gRPC failure raised as
        :class:`CriError`."""
        try:
            return getattr(self.stub, method)(
                request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise CriError("CRI runtime %s: %s failed: %s%s" % (
                self.endpoint, method, getattr(code, "name", "error"),
                ": %s" % details if details else "")) from None

    def version(self) -> Any:
        return self.call("Version", api.VersionRequest(version="v1"))

    def sandboxes(self) -> list[Any]:
        """Every pod sandbox the runtime knows, ready or not (``crictl pods``)."""
        return list(self.call("ListPodSandbox", api.ListPodSandboxRequest()).items)

    def info(self) -> dict[str, Any]:
        """The runtime's verbose status (``crictl info``): each value decoded from
        JSON (a value that is not JSON kept as text)."""
        out: dict[str, Any] = {}
        for key, value in self.call("Status", api.StatusRequest(verbose=True)).info.items():
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        return out


def sandbox_ids(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> list[str]:
    """The IDs of every pod sandbox of the runtime at ``endpoint``, ready or not: the
    CNI_CONTAINERID of its CNI calls (``crictl pods -q``). A NOTREADY sandbox counts as
    live: the runtime still owes it a DEL (containerd sends one on its StopPodSandbox,
    even for a sandbox whose RunPodSandbox a restart cut off)."""
    with Runtime(endpoint, timeout) as runtime:
        return sorted(s.id for s in runtime.sandboxes())


def cni_networks(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> list[str]:
    """The CNI networks the runtime at ``endpoint`` has loaded (its verbose status'
    ``cniconfig``: containerd's, from the first ``max_conf_num`` conflists of its conf
    dir), without its own loopback: the only networks whose leases its list of
    sandboxes can judge. A runtime that does not report them (CRI-O) raises: name the
    networks instead."""
    with Runtime(endpoint, timeout) as runtime:
        info = runtime.info()
    loaded = info.get("cniconfig")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Networks"), list):
        raise CriError(
            "CRI runtime %s does not report the CNI networks it loaded (no cniconfig in "
            "its verbose status); name the networks to collect with --network" % endpoint)
    names = []
    for network in loaded["Networks"]:
        name = (network.get("Config") or {}).get("Name") if isinstance(network, dict) else None
        if isinstance(name, str) and name != LOOPBACK and name not in names:
            names.append(name)
    return names
