"""ipam/cri/grpc_call.py, our unary gRPC call over h2, against gRPC's own server
(grpcio, in this process, on a unix socket): the answers, gRPC's error statuses, flow
control past HTTP/2's first window, and every wait bounded."""
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from ipam.cri import grpc_call
from ipam.errors import CriError

SERVICE = "runtime.v1.RuntimeService"


@pytest.fixture
def server(tmp_path):
    """A gRPC server whose methods echo, answer large, fail, or wait for ``release``."""
    release = threading.Event()

    def echo(request, context):
        return request

    def large(request, context):
        return bytes(range(256)) * 8192  # 2 MB: many windows of 64 KB

    def fail(request, context):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "nät 100% / ready")

    def wait(request, context):
        release.wait(30)
        return b""

    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
                [("Echo", echo), ("Large", large), ("Fail", fail), ("Wait", wait)]}
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    path = tmp_path / "cri.sock"
    srv.add_insecure_port("unix://%s" % path)
    srv.start()
    try:
        yield "unix://%s" % path
    finally:
        release.set()
        srv.stop(None)


@pytest.mark.parametrize("message", [b"", b"\x0a\x02v1", bytes(100000)])
def test_the_answer_is_the_servers_message(server, message):
    assert grpc_call.call(server, SERVICE, "Echo", message, 10) == message


def test_an_answer_past_the_first_window_comes_whole(server):
    assert grpc_call.call(server, SERVICE, "Large", b"", 10) == bytes(range(256)) * 8192


def test_a_bare_path_is_an_endpoint(server):
    assert grpc_call.call(server[len("unix://"):], SERVICE, "Echo", b"x", 10) == b"x"


def test_the_servers_status_and_message_are_said(server):
    with pytest.raises(CriError) as e:
        grpc_call.call(server, SERVICE, "Fail", b"", 10)
    assert str(e.value) == ("CRI runtime %s: Fail failed: FAILED_PRECONDITION: "
                            "nät 100%% / ready" % server)


def test_a_method_it_lacks_is_unimplemented(server):
    with pytest.raises(CriError, match="Nothing failed: UNIMPLEMENTED"):
        grpc_call.call(server, SERVICE, "Nothing", b"", 10)


def test_a_slow_answer_is_a_bounded_wait(server):
    started = time.monotonic()
    with pytest.raises(CriError, match="Wait failed: DEADLINE_EXCEEDED"):
        grpc_call.call(server, SERVICE, "Wait", b"", 0.5)
    assert time.monotonic() - started < 5


def _listener(tmp_path, serve):
    path = tmp_path / "other.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen()
    done = threading.Event()

    def run():
        conn, _ = s.accept()
        with conn:
            serve(conn, done)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return "unix://%s" % path, s, done, t


def test_a_socket_that_never_speaks_is_a_bounded_wait(tmp_path):
    endpoint, s, done, t = _listener(tmp_path, lambda conn, done: done.wait(30))
    try:
        started = time.monotonic()
        with pytest.raises(CriError, match="DEADLINE_EXCEEDED: no answer within 0.5 s"):
            grpc_call.call(endpoint, SERVICE, "Echo", b"", 0.5)
        assert time.monotonic() - started < 5
    finally:
        done.set()
        t.join(30)
        s.close()


def test_a_socket_that_hangs_up_is_unavailable(tmp_path):
    """Closed with our request unread: a reset, or an end of file if it was all read."""
    endpoint, s, done, t = _listener(tmp_path, lambda conn, done: conn.recv(100))
    try:
        with pytest.raises(CriError, match="Echo failed: UNAVAILABLE: "
                                           "(the runtime closed|.*Connection reset)"):
            grpc_call.call(endpoint, SERVICE, "Echo", b"", 10)
    finally:
        t.join(30)
        s.close()


def test_a_socket_that_speaks_no_http2_is_an_error(tmp_path):
    endpoint, s, done, t = _listener(
        tmp_path, lambda conn, done: (conn.recv(100), conn.sendall(b"HTTP/1.1 400 Bad\r\n\r\n")))
    try:
        with pytest.raises(CriError, match="Echo failed: (INTERNAL|UNAVAILABLE)"):
            grpc_call.call(endpoint, SERVICE, "Echo", b"", 10)
    finally:
        t.join(30)
        s.close()


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1", "localhost:1", "relative.sock"])
def test_only_a_unix_socket_is_an_endpoint(endpoint):
    with pytest.raises(CriError, match="only a unix socket is supported"):
        grpc_call.call(endpoint, SERVICE, "Echo", b"", 1)
