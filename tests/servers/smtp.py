"""Real SMTP submission servers (aiosmtpd) on 127.0.0.1 for the integration tests.

Recipe: ``real-servers.md`` §5. One aiosmtpd ``Controller`` per security mode,
each in its own thread of this process, for the whole session:

* ``plain_port``: no TLS; AUTH is offered in the clear (allowed by crmflow only
  because the host is loopback);
* ``starttls_port``: STARTTLS required before anything else, AUTH only after it;
* ``tls_port``: implicit TLS (SMTPS).

All share one authenticator (AUTH PLAIN and LOGIN against ``USERS``) that
records every attempt (mechanism, login, accepted) in
``SmtpServer.attempts``, the server-side proof of what a client did; passwords
are never recorded. Accepted messages are kept in ``SmtpServer.messages`` (the
email feature delivers them into Dovecot later). Teardown stops each
controller it started.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.net import LOOPBACK, free_port
from tests.servers.tls import TestCert, tls_cert

#: ``tls_cert`` is re-exported so that loading this plugin provides it
__all__ = ["AuthAttempt", "SmtpServer", "tls_cert"]

#: the accounts (login -> password)
USERS: Mapping[str, str] = {
    "alice@example.test": "alice-imap-Pw-7c1e",
    "bob@example.test": "bob-imap-Pw-52aa",
    "carol@example.test": "cärol-pässwörd-ü9",
}
#: a port picked as free can be taken before the server binds it: retry
START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One AUTH exchange as the server saw it (no password)."""

    mechanism: str
    login: str
    accepted: bool
    #: whether the connection was encrypted at the time
    tls: bool


@dataclass
class SmtpServer:
    """Running SMTP servers and what they observed."""

    host: str
    plain_port: int
    starttls_port: int
    tls_port: int
    users: Mapping[str, str]
    cert: TestCert
    attempts: list[AuthAttempt] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempts_of(self, login: str) -> list[AuthAttempt]:
        """The recorded AUTH attempts for ``login``."""
        with self.lock:
            return [a for a in self.attempts if a.login == login]


class _Authenticator:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    def __call__(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        expected = self._server.users.get(login)
        accepted = expected is not None and expected == password
        transport = smtp.transport
        tls = (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        with self._server.lock:
            self._server.attempts.append(AuthAttempt(mechanism, login, accepted, tls))
        return AuthResult(success=accepted, handled=False)


class _Sink:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(
        self, smtp: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._server.lock:
            self._server.messages.append(bytes(envelope.original_content or b""))
        return "250 Message accepted for delivery"


def _server_context(cert: TestCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


def _start(make: Any) -> tuple[Controller, int]:
    error: Exception | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        controller = make(port)
        try:
            controller.start()
        except Exception as exc:  # the port was taken meanwhile: pick another
            error = exc
            continue
        return controller, port
    raise RuntimeError(f"aiosmtpd did not start: {error!r}")


def start_tls_pair(
    handler: Any,
    ctx: ssl.SSLContext,
    common: Mapping[str, Any],
    started: list[Controller],
) -> tuple[int, int]:
    """Start a STARTTLS and an implicit-TLS submission server on ``handler``;
    appends them to ``started`` (the caller stops them); their ports."""
    starttls, starttls_port = _start(
        lambda port: Controller(
            handler,
            port=port,
            tls_context=ctx,
            require_starttls=True,
            auth_require_tls=True,
            **common,
        )
    )
    started.append(starttls)
    implicit, tls_port = _start(
        # aiosmtpd only knows STARTTLS as "TLS": under implicit TLS its
        # auth_require_tls would hide AUTH, so it is off (the connection is
        # encrypted from the first byte anyway)
        lambda port: Controller(
            handler, port=port, ssl_context=ctx, auth_require_tls=False, **common
        )
    )
    started.append(implicit)
    return starttls_port, tls_port


@pytest.fixture(scope="session")
def smtp_server(tls_cert: TestCert) -> Iterator[SmtpServer]:
    """Plain, STARTTLS and implicit-TLS submission servers with ``USERS``."""
    server = SmtpServer(LOOPBACK, 0, 0, 0, USERS, tls_cert)
    handler, auth = _Sink(server), _Authenticator(server)
    ctx = _server_context(tls_cert)
    common: dict[str, Any] = {
        "hostname": LOOPBACK,
        "authenticator": auth,
        "auth_required": True,
        "server_hostname": "localhost",
    }
    started: list[Controller] = []
    try:
        plain, server.plain_port = _start(
            lambda port: Controller(
                handler, port=port, auth_require_tls=False, **common
            )
        )
        started.append(plain)
        server.starttls_port, server.tls_port = start_tls_pair(
            handler, ctx, common, started
        )
        yield server
    finally:
        for controller in started:
            controller.stop()
