"""One unary gRPC call over HTTP/2 on a unix socket: the whole of gRPC that ``ipamctl gc
--cri`` needs, on the pure-Python ``h2`` (HTTP/2 framing, HPACK, flow control), so the
self-contained build carries no C++ library and keeps its glibc 2.17 floor.

A call is one connection (CRI runtimes listen on a local socket; a gc run makes two
calls): the request's headers and its length-prefixed message, then the response's
headers, message and trailers. It is bounded end to end by ``timeout``, which the server
is told too (``grpc-timeout``); a runtime that is down fails at once (nothing to wait
for on a unix socket that refuses). Every failure is :class:`ipam.errors.CriError`,
naming the endpoint, the method and gRPC's status name.
"""
from __future__ import annotations

import socket
import time
import urllib.parse

from ipam.errors import CriError

# gRPC's status codes (grpc/doc/statuscodes.md), by number.
STATUS = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
          "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
          "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
          "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
MAX_MESSAGE = 64 << 20  # a response larger than this is refused (gRPC's default is 4 MB)


def socket_path(endpoint: str) -> str:
    """The socket of a CRI endpoint in crictl's forms: ``unix:///path`` or ``/path``."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
    else:
        path = endpoint
    if not path.startswith("/"):
        raise CriError("CRI endpoint %r: only a unix socket is supported "
                       "(unix:///path, or an absolute path)" % endpoint)
    return path


class _Failed(Exception):
    """``args``: gRPC's status name and the details."""


def call(endpoint: str, service: str, method: str, message: bytes, timeout: float) -> bytes:
    """``service/method(message)`` at ``endpoint``: the response's message, encoded.
    ``service`` is the full name (``runtime.v1.RuntimeService``)."""
    try:
        return _call(socket_path(endpoint), service, method, message, timeout)
    except _Failed as e:
        status, details = e.args
    except socket.timeout:
        status, details = "DEADLINE_EXCEEDED", "no answer within %g s" % timeout
    except OSError as e:
        status, details = "UNAVAILABLE", "%s: %s" % (endpoint, e.strerror or e)
    raise CriError("CRI runtime %s: %s failed: %s%s" % (
        endpoint, method, status, ": %s" % details if details else "")) from None


def _call(path: str, service: str, method: str, message: bytes, timeout: float) -> bytes:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    deadline = time.monotonic() + timeout
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
            (":path", "/%s/%s" % (service, method)),
            ("content-type", "application/grpc"), ("te", "trailers"),
            ("grpc-timeout", "%dm" % max(1, int(timeout * 1000))),
            ("user-agent", "host-local-sqlite")])
        pending = b"\0" + len(message).to_bytes(4, "big") + message

        def send() -> bytes:  # what the peer's flow-control window lets go now
            nonlocal pending
            while pending:
                n = min(len(pending), conn.local_flow_control_window(stream),
                        conn.max_outbound_frame_size)
                if n <= 0:
                    break
                conn.send_data(stream, pending[:n], end_stream=n == len(pending))
                pending = pending[n:]
            return conn.data_to_send()

        sock.sendall(send())
        body = bytearray()
        headers: dict[str, str] = {}
        ended = False
        while not ended:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise _Failed("UNAVAILABLE", "the runtime closed the connection")
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                raise _Failed("INTERNAL", "HTTP/2: %s" % e) from None
            for event in events:
                if isinstance(event, (h2.events.ResponseReceived,
                                      h2.events.TrailersReceived)):
                    headers.update((str(k), str(v)) for k, v in event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    if len(body) > MAX_MESSAGE + 5:
                        raise _Failed("RESOURCE_EXHAUSTED", "a response over %d bytes"
                                      % MAX_MESSAGE)
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = ended or event.stream_id == stream
                elif isinstance(event, h2.events.StreamReset):
                    raise _Failed("UNAVAILABLE", "the runtime reset the call (HTTP/2 "
                                  "error %s)" % event.error_code)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise _Failed("UNAVAILABLE", "the runtime ended the connection "
                                  "(HTTP/2 error %s)" % event.error_code)
            out = send()
            if out:
                sock.sendall(out)
    return _message(headers, bytes(body))


def _message(headers: dict[str, str], body: bytes) -> bytes:
    """The response's one message, once its headers and trailers say it succeeded."""
    status = headers.get("grpc-status")
    if status is None:
        raise _Failed("UNKNOWN", "no grpc-status (HTTP status %s)"
                      % headers.get(":status", "none"))
    if status != "0":
        name = STATUS[int(status)] if status.isdigit() and int(status) < len(STATUS) \
            else "status %s" % status
        raise _Failed(name, urllib.parse.unquote(headers.get("grpc-message", "")))
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise _Failed("INTERNAL", "not one uncompressed message (%d bytes)" % len(body))
    return body[5:]
