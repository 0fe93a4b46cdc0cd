"""``ipamctl serve --metrics HOST:PORT``: ``/metrics`` over HTTP, on a thread of its own.

The standard library's ``http.server`` (threads per scrape, daemon threads), so that a
slow scraper never holds the daemon's calls, and no new dependency. Only GET of
``/metrics`` (and ``/``, which Prometheus' own exporters redirect) is answered.
"""
from __future__ import annotations

import http.server
import socket
import threading
from typing import Any, Callable

from ipam.errors import IoFailure

# Seconds a scraper has to send its request: one that trickles holds one thread this long.
REQUEST_TIMEOUT = 10.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every address) -> (host, port); port 0:
    one the kernel chooses. ValueError if it is none of these."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("%r is not HOST:PORT (like 127.0.0.1:9731 or :9731)" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    text: Callable[[], str]

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # "::" takes IPv4 too
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is here")
            return
        try:
            body = self.server.text().encode()
        except Exception as e:  # noqa: BLE001 - a scrape fails, the daemon goes on
            self.send_error(500, "metrics failed: %s" % e)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is no news for the daemon's log


class MetricsServer:
    """Serves ``text()`` at ``address`` from :meth:`start` until :meth:`close`."""

    def __init__(self, address: str, text: Callable[[], str]) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.text = text
        self._server: _Server | None = None

    def start(self) -> None:
        """Bind and serve on a thread; IoFailure saying why if the address is taken."""
        host = self.host or "::"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            server = server_class((host, self.port), _Handler)
        except OSError as e:
            if not self.host and e.errno in (97, 99):  # no IPv6 on this host
                server_class = type("Server", (_Server,), {"address_family": socket.AF_INET})
                server = server_class(("0.0.0.0", self.port), _Handler)
            else:
                raise IoFailure("cannot serve metrics on %s: %s"
                                % (self.address, e.strerror or e)) from None
        server.text = self.text
        self.port = server.server_address[1]  # port 0: the one the kernel chose
        self._server = server
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True,
                         kwargs={"poll_interval": 0.5}).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
