"""uvicorn running the app on a thread of its own, on a socket bound here (so port 0 gives a free port, known before
anything is printed), until ``stop``."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from personamine.errors import PersonamineError

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]"}
_START_SECONDS = 30.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class RunningServer:
    """A server running in this process: ``url`` to open, ``stop()`` to end it, ``wait()`` to block until Ctrl-C."""

    url: str
    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread
    _closers: list

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        for close in self._closers:
            close()

    def wait(self) -> None:
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(app, host: str, port: int, closers: list | None = None) -> RunningServer:
    """Bind ``host:port`` and serve ``app`` on a daemon thread; returns once it accepts connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        hint = " (--port 0 picks a free port)" if port else ""
        raise PersonamineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="personamine-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PersonamineError(f"the server on {host}:{bound} did not start")
        time.sleep(0.02)
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    return RunningServer(f"http://{shown}:{bound}/", host, bound, server, thread, closers or [])
