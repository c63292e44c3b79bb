"""An SMTP submission server (aiosmtpd) that delivers into the test Dovecot.

Recipe: ``real-servers.md`` §5 (delivery with ``dovecot-lda``). Two
listeners on 127.0.0.1 with the self-signed certificate of
``tests/servers/tls.py``: ``starttls_port`` (STARTTLS required, AUTH only
after it, like port 587) and ``tls_port`` (implicit TLS, like 465).

* AUTH PLAIN / LOGIN against Dovecot's accounts, those a test added included
  (:meth:`DovecotServer.passwords`); each attempt is recorded as
  ``(login, accepted)`` in :attr:`DeliveryServer.attempts` (no password);
* AUTH XOAUTH2 as Gmail's SMTP server does it: the access token is checked
  with the sandbox's Google ``tokeninfo`` endpoint (the URL Dovecot uses,
  :attr:`DovecotServer.tokeninfo_url`) and accepted only when it is live,
  names the signing-in user and carries ``https://mail.google.com/``; a
  refused token gets the base64 JSON error challenge, then ``535`` after the
  client's empty line. Attempts are recorded in
  :attr:`DeliveryServer.oauth_attempts` as ``(login, accepted)``;
* RCPT: an address that is not a Dovecot account is refused with ``550``, as
  a provider refuses an unknown mailbox of its own domain;
* ``SIZE`` (RFC 1870) is :data:`MAX_MESSAGE_BYTES`: a bigger message is
  refused with ``552``;
* DATA: the message is handed to ``dovecot-lda`` once per recipient (line
  ends converted to LF, as an MTA does) before the server answers ``250``, so
  it is in the recipients' INBOX when the client's send returns. Each accepted
  transaction (envelope and content) is recorded in
  :attr:`DeliveryServer.transactions`, the server's proof of what a client
  sent.

Start it with :func:`running_delivery_server` from a fixture; it stops the
controllers it started on exit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.dovecot import LDA, OAUTH_SCOPE, DovecotServer
from tests.servers.net import LOOPBACK
from tests.servers.require import missing_server
from tests.servers.smtp import _server_context, start_tls_pair
from tests.servers.tls import TestCert

__all__ = [
    "MAX_MESSAGE_BYTES",
    "DeliveryServer",
    "Transaction",
    "running_delivery_server",
]

#: the largest message accepted, in bytes (announced as SIZE)
MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Transaction:
    """One accepted message as the server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    #: the DATA as sent (CRLF line ends)
    content: bytes


@dataclass
class DeliveryServer:
    """Running submission servers that deliver into Dovecot."""

    host: str
    starttls_port: int
    tls_port: int
    cert: TestCert
    transactions: list[Transaction] = field(default_factory=list)
    #: (login, accepted) of every AUTH PLAIN / LOGIN attempt
    attempts: list[tuple[str, bool]] = field(default_factory=list)
    #: (login, accepted) of every AUTH XOAUTH2 attempt
    oauth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def transactions_from(self, sender: str) -> list[Transaction]:
        """The accepted transactions whose envelope sender is ``sender``."""
        with self.lock:
            return [t for t in self.transactions if t.mail_from == sender]


class _Authenticator:
    def __init__(self, server: DeliveryServer, dovecot: DovecotServer) -> None:
        self._server = server
        self._dovecot = dovecot

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
        expected = self._dovecot.passwords().get(login)
        accepted = expected is not None and expected == password
        with self._server.lock:
            self._server.attempts.append((login, accepted))
        return AuthResult(success=accepted, handled=False)


#: Gmail's answer to a refused token (sent base64-encoded as a 334 challenge)
_XOAUTH2_ERROR = json.dumps(
    {"status": "400", "schemes": "Bearer", "scope": OAUTH_SCOPE}
).encode()


def _xoauth2_fields(blob: bytes) -> tuple[str, str] | None:
    """(user, token) of an XOAUTH2 client response, or None if malformed."""
    fields = dict(
        part.split("=", 1)
        for part in blob.decode("utf-8", "replace").split("\x01")
        if "=" in part
    )
    auth = fields.get("auth", "")
    if not fields.get("user") or not auth.lower().startswith("bearer "):
        return None
    return fields["user"], auth[7:]


class _Deliverer:
    def __init__(self, server: DeliveryServer, dovecot: DovecotServer) -> None:
        self._server = server
        self._dovecot = dovecot

    async def _token_ok(self, user: str, token: str) -> bool:
        url = self._dovecot.tokeninfo_url
        if url is None:
            return False
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(url + token)
        if answer.status_code != 200:
            return False
        info = answer.json()
        return (
            str(info.get("email", "")).casefold() == user.casefold()
            and OAUTH_SCOPE in str(info.get("scope", "")).split()
        )

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                blob: bytes = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await smtp.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await smtp.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            blob = answer
        parsed = _xoauth2_fields(blob)
        accepted = parsed is not None and await self._token_ok(*parsed)
        with self._server.lock:
            self._server.oauth_attempts.append((parsed[0] if parsed else "", accepted))
        if accepted:
            return AuthResult(success=True, auth_data=parsed)
        # the error challenge; the client answers with an empty line
        await smtp.challenge_auth(_XOAUTH2_ERROR)
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted.",
        )

    async def handle_RCPT(
        self,
        smtp: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        known = {user.casefold() for user in self._dovecot.passwords()}
        if address.casefold() not in known:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, smtp: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = bytes(envelope.original_content or b"")
        sender = envelope.mail_from or ""
        for recipient in envelope.rcpt_tos:
            try:
                await asyncio.to_thread(
                    self._dovecot.deliver,
                    recipient,
                    sender,
                    content.replace(b"\r\n", b"\n"),
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                return "451 4.3.0 Local delivery failed; try again later"
        with self._server.lock:
            self._server.transactions.append(
                Transaction(sender, tuple(envelope.rcpt_tos), content)
            )
        return "250 2.0.0 Message accepted for delivery"


@contextlib.contextmanager
def running_delivery_server(dovecot: DovecotServer) -> Iterator[DeliveryServer]:
    """STARTTLS and implicit-TLS submission servers delivering into ``dovecot``."""
    if not LDA.is_file():
        missing_server(f"dovecot-lda {LDA} not found (apt install dovecot-core)")
    server = DeliveryServer(LOOPBACK, 0, 0, dovecot.cert)
    handler, auth = _Deliverer(server, dovecot), _Authenticator(server, dovecot)
    ctx = _server_context(dovecot.cert)
    common: dict[str, Any] = {
        "hostname": LOOPBACK,
        "authenticator": auth,
        "auth_required": True,
        "server_hostname": "localhost",
        "data_size_limit": MAX_MESSAGE_BYTES,
    }
    started: list[Controller] = []
    try:
        server.starttls_port, server.tls_port = start_tls_pair(
            handler, ctx, common, started
        )
        yield server
    finally:
        for controller in started:
            controller.stop()
