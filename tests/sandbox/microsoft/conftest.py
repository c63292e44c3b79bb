"""Fixtures for the Microsoft sandbox fidelity tests.

* ``ms_server`` (session): the Microsoft sandbox on a free loopback port,
  served by uvicorn **with TLS** in a background thread. TLS because msal
  only accepts ``https`` authorities; the certificate is a self-signed one
  made here (IP SAN 127.0.0.1), trusted through ``ms.ssl`` / ``ms.cafile``.
* ``receiver`` (session): a plain-HTTP webhook receiver (validation handshake
  and notifications) whose behaviour each test can set.
* ``ms`` (function): a clean sandbox for one test — state reset, short
  timeouts (validation 2 s, acknowledgement 0.5 s, fast retries), HTTP
  webhooks allowed.
* ``graph_oracle`` (autouse): every Graph response the sandbox sent during
  the test — and every notification the receiver got — is checked against
  the msgraph-sdk oracle (``data/graph_oracle.json``, made by
  ``scripts/extract_graph_oracle.py``): the route must be a v1.0 URL template
  with that method, and every JSON key must be a field of the SDK model the
  route returns (recursively). A violation fails the test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from crmflow.sandbox.microsoft import (
    GraphSettings,
    MicrosoftStore,
    create_microsoft_app,
)
from crmflow.sandbox.microsoft.app import MicrosoftApp
from crmflow.sandbox.requestlog import RequestLogMiddleware
from crmflow.sandbox.state import SandboxState
from tests.sandbox.microsoft.oracle import Oracle

PREFIX = "/microsoft"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crmflow sandbox test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _ServerThread:
    """uvicorn in a daemon thread; stopped by flag, waited for by join."""

    def __init__(self, app: Any, port: int, **ssl_args: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
            **ssl_args,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Captured:
    """One Graph response seen by the oracle recorder."""

    method: str
    path: str
    status: int
    content_type: str
    body: bytes


class Recorder:
    """ASGI wrapper recording every response of the sandbox (for the oracle)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.captured: list[Captured] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers.update(
                    {
                        k.decode().lower(): v.decode()
                        for k, v in message.get("headers", [])
                    }
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            with self.lock:
                self.captured.append(
                    Captured(
                        scope["method"],
                        scope["path"],
                        status,
                        headers.get("content-type", ""),
                        b"".join(chunks),
                    )
                )


@dataclass
class MsServer:
    """The running sandbox (session-wide)."""

    base: str
    state: SandboxState
    app: MicrosoftApp
    recorder: Recorder
    ssl: ssl.SSLContext
    cafile: str


@pytest.fixture(scope="session")
def ms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MsServer]:
    directory = tmp_path_factory.mktemp("ms-tls")
    cert, key = _make_cert(directory)
    port = _free_port()
    base = f"https://127.0.0.1:{port}{PREFIX}"
    state = SandboxState(seed=7)
    asgi = create_microsoft_app(state, base_url=base)
    assert isinstance(asgi, RequestLogMiddleware)
    app = asgi.app  # the MicrosoftApp inside the request log
    assert isinstance(app, MicrosoftApp)
    recorder = Recorder(asgi)
    server = _ServerThread(recorder, port, ssl_certfile=str(cert), ssl_keyfile=str(key))
    server.start()
    context = ssl.create_default_context(cafile=str(cert))
    yield MsServer(base, state, app, recorder, context, str(cert))
    server.stop()


# -- webhook receiver ------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook endpoint whose answers the test controls."""

    url: str
    #: validation: "echo" | "encoded" | "status500" | "slow" | "html"
    validation_mode: str = "echo"
    #: notifications: number of leading POSTs answered 500
    fail_first: int = 0
    #: notifications: seconds to sleep before answering
    delay_s: float = 0.0
    validations: list[str] = field(default_factory=list)
    #: every notification POST body (parsed)
    posts: list[dict[str, Any]] = field(default_factory=list)
    #: all POSTs including failed ones
    attempts: int = 0
    #: bumped by reset(); a request that began before is not recorded
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.validation_mode = "echo"
            self.fail_first = 0
            self.delay_s = 0.0
            self.validations.clear()
            self.posts.clear()
            self.attempts = 0

    def items(self, key: str = "changeType") -> list[dict[str, Any]]:
        """Every delivered item that has ``key``."""
        with self.lock:
            return [i for p in self.posts for i in p.get("value", []) if key in i]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Poll until ``predicate()`` holds (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.02)


def _receiver_app(rx: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            with rx.lock:
                rx.validations.append(token)
                mode = rx.validation_mode
            if mode == "slow":
                await asyncio.sleep(3.0)
            if mode == "status500":
                return PlainTextResponse("nope", status_code=500)
            if mode == "encoded":
                from urllib.parse import quote

                return PlainTextResponse(quote(token, safe=""))
            if mode == "html":
                return Response(token, media_type="text/html")
            return PlainTextResponse(token)
        body = json.loads(await request.body())
        with rx.lock:
            generation = rx.generation
            rx.attempts += 1
            fail = rx.fail_first > 0
            if fail:
                rx.fail_first -= 1
            delay = rx.delay_s
        if delay:
            await asyncio.sleep(delay)
        if fail:
            return PlainTextResponse("down", status_code=500)
        with rx.lock:
            if generation == rx.generation:
                rx.posts.append(body)
        return Response(status_code=202)

    return Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/lifecycle", hook, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    port = _free_port()
    rx = Receiver(url=f"http://127.0.0.1:{port}/hook")
    server = _ServerThread(_receiver_app(rx), port)
    server.start()
    yield rx
    server.stop()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.reset()
    return receiver_server


# -- per-test sandbox ------------------------------------------------------------------------


def short_settings() -> GraphSettings:
    """Short timeouts so handshake and retry behaviour is testable without waiting."""
    return GraphSettings(
        validation_timeout_s=1.0,
        notification_timeout_s=0.5,
        notification_retry_base_s=0.05,
        notification_max_attempts=3,
        dispatch_interval_s=0.02,
    )


@dataclass
class Ms:
    """One test's view of the sandbox."""

    server: MsServer

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def graph(self) -> str:
        return f"{self.server.base}/v1.0"

    @property
    def state(self) -> SandboxState:
        return self.server.state

    @property
    def store(self) -> MicrosoftStore:
        return self.server.app.store

    def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        with httpx.Client(verify=self.server.ssl) as client:
            return client.request(method, f"{self.base}/_sandbox{path}", json=body)

    def add_user(self, email: str, name: str | None = None) -> dict[str, Any]:
        response = self.control(
            "POST", "/users", {"email": email, **({"name": name} if name else {})}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def token(self, email: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"email": email}
        if scopes is not None:
            body["scopes"] = scopes
        response = self.control("POST", "/tokens", body)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        all_headers = dict(headers)
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            base_url=self.graph, verify=self.server.ssl, headers=all_headers, timeout=10
        )

    def user_client(
        self, email: str, scopes: list[str] | None = None
    ) -> httpx.AsyncClient:
        self.add_user(email)
        return self.client(self.token(email, scopes))


@pytest.fixture
def ms(ms_server: MsServer) -> Ms:
    state = ms_server.state
    state.reset()
    app = ms_server.app
    with state.lock:
        app.store.settings = short_settings()
        app.dispatcher.queue.clear()
        state.config.allow_http_webhooks = True
    return Ms(ms_server)


# -- oracle ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    return Oracle.load(Path(__file__).parent / "data" / "graph_oracle.json")


@pytest.fixture(autouse=True)
def graph_oracle(request: pytest.FixtureRequest, oracle: Oracle) -> Iterator[None]:
    """Check every Graph response (and notification) of the test against msgraph-sdk."""
    server: MsServer | None = None
    rx: Receiver | None = None
    if "ms" in request.fixturenames or "ms_server" in request.fixturenames:
        server = request.getfixturevalue("ms_server")
        with server.recorder.lock:
            server.recorder.captured.clear()
    if "receiver" in request.fixturenames:
        rx = request.getfixturevalue("receiver_server")
    yield
    problems: list[str] = []
    if server is not None:
        with server.recorder.lock:
            captured = list(server.recorder.captured)
        for item in captured:
            if not item.path.startswith(f"{PREFIX}/v1.0"):
                continue
            problems.extend(
                oracle.check_response(
                    item.method,
                    item.path[len(PREFIX) + len("/v1.0") :],
                    item.status,
                    item.content_type,
                    item.body,
                )
            )
    if rx is not None:
        with rx.lock:
            posts = list(rx.posts)
        for post in posts:
            problems.extend(
                oracle.check_model(post, "ChangeNotificationCollection", "notification")
            )
    if problems:
        pytest.fail(
            "Graph oracle violations:\n" + "\n".join(sorted(set(problems))[:40])
        )
