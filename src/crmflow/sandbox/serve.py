"""Running the sandbox: standalone (``crmflow sandbox serve``) or in a thread.

* :func:`run` — blocking; prints the base URLs, serves until interrupted.
* :class:`SandboxServer` — uvicorn on a background thread with a free (or
  given) loopback port; used by tests, the benchmark and anything else that
  needs real HTTP in-process.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from crmflow.sandbox.app import GOOGLE_PREFIX
from crmflow.sandbox.state import SandboxConfig, SandboxState
from crmflow.sandbox.vendors import MICROSOFT_PREFIX, base_urls, create_vendor_app

__all__ = ["SandboxServer", "base_urls", "listening_socket", "run"]

#: how long start() waits for uvicorn to bind, in seconds
STARTUP_TIMEOUT_S = 10.0


class _DroppedConnectionFilter(logging.Filter):
    """Hide uvicorn's error line for connections dropped on purpose (drop_connection fault)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedConnectionFilter) for f in logger.filters):
        logger.addFilter(_DroppedConnectionFilter())


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket with TCP_NODELAY, which accepted connections inherit.

    uvicorn's h11 protocol writes a response's head and body separately; with
    Nagle's algorithm on, the body then waits for the client's delayed ACK
    (~40 ms per keep-alive request on Linux). The sandbox must never be what
    limits a sync benchmark, so Nagle is switched off.
    """
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def run(
    host: str = "127.0.0.1",
    port: int = 8765,
    state_path: Path | None = None,
    *,
    allow_http_webhooks: bool = True,
) -> None:
    """Serve the sandbox until interrupted (``crmflow sandbox serve``).

    Args:
        host, port: where to listen.
        state_path: SQLite file to persist state in; None keeps it in memory.
        allow_http_webhooks: accept ``http://`` watch addresses (local crmflow
            receives webhooks over plain HTTP).
    """
    state = SandboxState(
        persist_path=state_path,
        config=SandboxConfig(allow_http_webhooks=allow_http_webhooks),
    )
    root = f"http://{host}:{port}/"
    for name, url in base_urls(root).items():
        sys.stdout.write(f"{name:32} {url}\n")
    sys.stdout.flush()
    _install_log_filter()
    sock = listening_socket(host, port)
    config = uvicorn.Config(
        create_vendor_app(state, root).app, log_level="info", http="h11", ws="none"
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        state.close()


class SandboxServer:
    """The sandbox on a uvicorn thread. Use as a context manager or start()/stop().

    Example::

        with SandboxServer(SandboxState()) as server:
            httpx.get(server.google_url + "_sandbox/users")
    """

    def __init__(
        self,
        state: SandboxState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app_wrapper: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        """
        Args:
            state: the state to serve.
            host, port: where to listen; port 0 picks a free port.
            app_wrapper: wraps the ASGI app, e.g. with a recording middleware
                (the test suite's discovery conformance check).
        """
        self.state = state
        self.host = host
        self._sock = listening_socket(host, port)
        self.port: int = self._sock.getsockname()[1]
        app = create_vendor_app(state, self.root_url).app
        if app_wrapper is not None:
            app = app_wrapper(app)
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            http="h11",
            ws="none",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def root_url(self) -> str:
        """``http://host:port/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def microsoft_url(self) -> str:
        """The Microsoft base URL, ``http://host:port/microsoft/``."""
        return self.root_url.rstrip("/") + MICROSOFT_PREFIX + "/"

    @property
    def google_url(self) -> str:
        """The Google base URL, ``http://host:port/google/``."""
        return self.root_url.rstrip("/") + GOOGLE_PREFIX + "/"

    def start(self) -> SandboxServer:
        """Start serving; returns once the server accepts connections.

        Raises:
            RuntimeError: uvicorn did not start within STARTUP_TIMEOUT_S.
        """
        _install_log_filter()
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sandbox server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (lifespan shutdown runs)."""
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
