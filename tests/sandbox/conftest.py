"""Fixtures for the sandbox fidelity tests (real HTTP, official Google client).

* ``google_sandbox_server`` (session): one Google sandbox on uvicorn in a thread on a
  free loopback port. Its ASGI app is wrapped by :class:`Recorder`, which keeps
  every request the sandbox receives and every response it sends.
* ``google`` (function): resets the sandbox state, yields a
  :class:`GoogleSandbox` helper, and afterwards checks every recorded exchange
  against the discovery documents shipped in the installed
  google-api-python-client (:class:`~crmflow.sandbox.specs.conformance.ConformanceChecker`).
  Any violation fails the test; exchanges left over when the session ends are
  checked too, so no traffic escapes the check.
* ``webhook`` (function): a local HTTP receiver for push notifications.

Tests assert outcomes (traffic, bodies, statuses), never wall-clock times;
waiting for asynchronous deliveries polls with a generous deadline.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import uvicorn
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.discovery_cache import get_static_doc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmflow.sandbox.serve import SandboxServer, listening_socket
from crmflow.sandbox.specs.conformance import ConformanceChecker, Exchange
from crmflow.sandbox.specs.discovery import DiscoveryDocument
from crmflow.sandbox.state import SandboxConfig, SandboxState

CALENDAR = "https://www.googleapis.com/auth/calendar"
CALENDAR_READONLY = "https://www.googleapis.com/auth/calendar.readonly"
GMAIL_FULL = "https://mail.google.com/"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_METADATA = "https://www.googleapis.com/auth/gmail.metadata"
ALL_SCOPES = [CALENDAR, GMAIL_FULL, "openid", "email", "profile"]

#: how long to wait for asynchronous outcomes (push deliveries), in seconds
WAIT_S = 10.0


def http_client(**kwargs: Any) -> httpx.Client:
    """An httpx client with TCP_NODELAY: httpx writes headers and body in separate
    segments, which otherwise costs a delayed-ACK pause (~40 ms) per request."""
    transport = httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    return httpx.Client(transport=transport, timeout=30, **kwargs)


def sandbox_test_config() -> SandboxConfig:
    """Sandbox switches for tests: plain-HTTP webhooks, fast push retries."""
    return SandboxConfig(
        allow_http_webhooks=True, push_retry_base_s=0.01, push_timeout_s=5.0
    )


class Recorder:
    """ASGI wrapper recording every exchange (request and response, bodies included)."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            ex = Exchange(
                method=scope["method"],
                path=(scope.get("raw_path") or scope["path"].encode()).decode(
                    "latin-1"
                ),
                query=scope.get("query_string", b"").decode("latin-1"),
                request_headers={
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in scope["headers"]
                },
                request_body=b"",
            )
            body = bytearray()
            response = bytearray()

            async def receive_wrapper() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    body.extend(message.get("body", b""))
                return message

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    ex.status = int(message["status"])
                    ex.response_headers = {
                        k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in message.get("headers", [])
                    }
                elif message["type"] == "http.response.body":
                    response.extend(message.get("body", b""))
                    if not message.get("more_body", False):
                        ex.request_body = bytes(body)
                        ex.response_body = bytes(response)
                        with self._lock:
                            self.exchanges.append(ex)
                await send(message)

            await app(scope, receive_wrapper, send_wrapper)

        return recorded

    def take(self) -> list[Exchange]:
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken


@pytest.fixture(scope="session")
def installed_discovery() -> dict[str, DiscoveryDocument]:
    """The discovery documents of the installed google-api-python-client."""
    docs = {}
    for name, version in (("calendar", "v3"), ("gmail", "v1"), ("oauth2", "v2")):
        text = get_static_doc(name, version)
        assert text is not None, (
            f"{name} {version} missing from google-api-python-client"
        )
        docs[name] = DiscoveryDocument.from_text(text)
    return docs


@dataclass
class SandboxHandle:
    state: SandboxState
    server: SandboxServer
    recorder: Recorder
    checker: ConformanceChecker


def _violations(handle: SandboxHandle) -> list[str]:
    problems: list[str] = []
    for ex in handle.recorder.take():
        problems += handle.checker.check(ex)
    return problems


@pytest.fixture(scope="session")
def google_sandbox_server(
    installed_discovery: dict[str, DiscoveryDocument],
) -> Iterator[SandboxHandle]:
    """One sandbox server for the session, recording all traffic."""
    state = SandboxState(seed=20261030, config=sandbox_test_config())
    recorder = Recorder()
    server = SandboxServer(state, app_wrapper=recorder.wrap).start()
    handle = SandboxHandle(
        state, server, recorder, ConformanceChecker(installed_discovery)
    )
    yield handle
    server.stop()
    leftover = _violations(handle)
    if leftover:
        pytest.fail("discovery conformance violations:\n" + "\n".join(leftover))


@dataclass
class GoogleSandbox:
    """Test-side helper for one test's use of the sandbox."""

    state: SandboxState
    base: str
    http: httpx.Client
    _clients: list[Any] = field(default_factory=list)

    @property
    def calendar_base(self) -> str:
        return self.base + "calendar/v3/"

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(
            method, self.base + "_sandbox/" + path.lstrip("/"), **kwargs
        )

    def token(
        self, email: str, scopes: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        response = self.control(
            "POST",
            "tokens",
            json={"email": email, "scopes": scopes or ALL_SCOPES, **extra},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def access(self, email: str, scopes: list[str] | None = None) -> str:
        return str(self.token(email, scopes)["access_token"])

    def calendar_client(self, access_token: str) -> Any:
        service = build(
            "calendar",
            "v3",
            credentials=Credentials(access_token),
            static_discovery=True,
            client_options={"api_endpoint": self.calendar_base},
        )
        self._clients.append(service)
        return service

    def gmail_client(self, access_token: str) -> Any:
        service = build(
            "gmail",
            "v1",
            credentials=Credentials(access_token),
            static_discovery=True,
            client_options={"api_endpoint": self.base},
        )
        self._clients.append(service)
        return service

    def api(self, access_token: str) -> httpx.Client:
        """A plain HTTP client for the Google base with a bearer token."""
        client = http_client(
            base_url=self.base, headers={"Authorization": f"Bearer {access_token}"}
        )
        self._clients.append(client)
        return client

    def logged(self, *, since: int = 0) -> list[dict[str, Any]]:
        response = self.control("GET", "requests", params={"since": since})
        return list(response.json()["requests"])

    def add_fault(self, **fault: Any) -> dict[str, Any]:
        response = self.control("POST", "faults", json=fault)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def insert_event(
        self, email: str, body: dict[str, Any], calendar_id: str | None = None
    ) -> dict[str, Any]:
        response = self.control(
            "POST", f"calendars/{calendar_id or email}/events", json=body
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def deliver_mail(self, email: str, **fields: Any) -> dict[str, Any]:
        response = self.control("POST", f"mailboxes/{email}/messages", json=fields)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def close(self) -> None:
        for client in self._clients:
            if isinstance(client, httpx.Client):
                client.close()
            else:
                client.close()
        self.http.close()


@pytest.fixture
def google(google_sandbox_server: SandboxHandle) -> Iterator[GoogleSandbox]:
    """A clean Google sandbox; afterwards every exchange must conform to discovery."""
    state = google_sandbox_server.state
    state.reset()
    state.config = sandbox_test_config()
    google_sandbox_server.recorder.take()
    helper = GoogleSandbox(
        state=state, base=google_sandbox_server.server.google_url, http=http_client()
    )
    try:
        yield helper
    finally:
        helper.close()
        state.faults.clear()
    problems = _violations(google_sandbox_server)
    if problems:
        pytest.fail("discovery conformance violations:\n" + "\n".join(problems))


def raw_email(**headers_and_body: str) -> str:
    """Base64url RFC 2822 text for messages.send: keys are headers, ``body`` the text."""
    msg = EmailMessage()
    body = headers_and_body.pop("body", "")
    for name, value in headers_and_body.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return base64.urlsafe_b64encode(msg.as_bytes()).decode()


# -- a local webhook receiver -------------------------------------------------------


@dataclass
class ReceivedNotification:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """Records POSTs; answers with queued statuses (then 200)."""

    def __init__(self) -> None:
        self.received: list[ReceivedNotification] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", lifespan="off", http="h11", ws="none"
            )
        )
        self._sock = listening_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(
                ReceivedNotification(
                    {k.lower(): v for k, v in request.headers.items()}, body
                )
            )
            status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self._server.started:
            assert time.monotonic() < deadline, "webhook receiver did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=WAIT_S)
        self._sock.close()

    def wait_for(self, count: int) -> list[ReceivedNotification]:
        """Wait until ``count`` notifications arrived; return them."""
        return wait_until(
            lambda: list(self.received) if len(self.received) >= count else None
        )


def wait_until(probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll ``probe`` until it returns something truthy (asynchronous outcomes only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for an asynchronous outcome")
        time.sleep(0.01)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()
