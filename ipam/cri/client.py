"""A CRI client of the calls ``ipamctl gc --cri`` needs: Version, ListPodSandbox and a
verbose Status, each one gRPC call (:mod:`ipam.cri.grpc_call`) of a message encoded by
hand (:mod:`ipam.cri.wire`).

Every call is bounded by the client's ``timeout`` and fails fast when nothing listens on
the socket, so a gc run from a timer never hangs on a runtime that is down; a failure is
:class:`ipam.errors.CriError`, naming the endpoint and the call.
"""
from __future__ import annotations

import json
from typing import Any

from ipam.cri import grpc_call, wire
from ipam.cri.defaults import DEFAULT_ENDPOINT, TIMEOUT
from ipam.errors import CriError

SERVICE = "runtime.v1.RuntimeService"
LOOPBACK = "cni-loopback"  # the network containerd adds before the conf dir's own


class Runtime:
    """A CRI runtime at ``endpoint``: ``Runtime(endpoint).sandboxes()``."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def call(self, method: str, message: bytes, timeout: float | None = None) -> bytes:
        """``RuntimeService/method(message)``, bounded: the response, encoded."""
        return grpc_call.call(self.endpoint, SERVICE, method, message,
                              self.timeout if timeout is None else timeout)

    def version(self) -> wire.Version:
        return wire.version_response(self.call("Version", wire.version_request()))

    def sandboxes(self) -> list[wire.Sandbox]:
        """Every pod sandbox the runtime knows, ready or not (``crictl pods``)."""
        return self._decoded("ListPodSandbox", wire.list_pod_sandbox_response,
                             wire.list_pod_sandbox_request())

    def info(self) -> dict[str, Any]:
        """The runtime's verbose status (``crictl info``): each value decoded from
        JSON (a value that is not JSON kept as text)."""
        out: dict[str, Any] = {}
        raw = self._decoded("Status", wire.status_response_info, wire.status_request(True))
        for key, value in raw.items():
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        return out

    def _decoded(self, method: str, decode: Any, message: bytes) -> Any:
        answer = self.call(method, message)
        try:
            return decode(answer)
        except wire.WireError as e:
            raise CriError("CRI runtime %s: %s answered what is not its response: %s"
                           % (self.endpoint, method, e)) from None


def sandbox_ids(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> list[str]:
    """The IDs of every pod sandbox of the runtime at ``endpoint``, ready or not: the
    CNI_CONTAINERID of its CNI calls (``crictl pods -q``). A NOTREADY sandbox counts as
    live: the runtime still owes it a DEL (containerd sends one on its StopPodSandbox,
    even for a sandbox whose RunPodSandbox a restart cut off)."""
    return sorted(s.id for s in Runtime(endpoint, timeout).sandboxes())


def cni_networks(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> list[str]:
    """The CNI networks the runtime at ``endpoint`` has loaded (its verbose status'
    ``cniconfig``: containerd's, from the first ``max_conf_num`` conflists of its conf
    dir), without its own loopback: the only networks whose leases its list of
    sandboxes can judge. A runtime that does not report them (CRI-O) raises: name the
    networks instead."""
    info = Runtime(endpoint, timeout).info()
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
