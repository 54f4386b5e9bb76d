"""The server thread: a free port, a URL that answers, a clean stop, and a port in use refused in one line."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from personamine.errors import PersonamineError
from personamine.serve.server import is_loopback, start


def app():
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])


def test_start_answers_and_stop_ends_the_thread():
    closed = []
    server = start(app(), "127.0.0.1", 0, closers=[lambda: closed.append(True)])
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.read() == b"ok"
    server.stop()
    assert closed == [True] and not server._thread.is_alive()  # other tests' servers may still run


def test_a_port_in_use_is_refused_in_one_line():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(PersonamineError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*--port 0") as info:
            start(app(), "127.0.0.1", taken.getsockname()[1])
        assert "\n" not in str(info.value)
    finally:
        taken.close()


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.org"))
