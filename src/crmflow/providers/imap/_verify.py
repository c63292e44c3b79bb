"""Prove IMAP and SMTP credentials by really signing in.

* IMAP (RFC 9051 / 3501): the stdlib ``imaplib`` in a worker thread. The TCP
  connection and the TLS handshake are made here, before ``imaplib`` reads the
  greeting, so that every failure is attributed to its stage: the host cannot
  be reached, TLS failed, the peer is not an IMAP server, or the login was
  refused. Sign-in uses ``AUTHENTICATE PLAIN`` (RFC 4616, UTF-8 safe) when the
  server offers it, else ``LOGIN``; with ``oauth=True`` the secret is an OAuth
  2.0 access token sent with ``AUTHENTICATE XOAUTH2`` (``_signin.py``).
* SMTP submission (RFC 6409, AUTH RFC 4954): ``aiosmtplib``; ``AUTH XOAUTH2``
  for an access token.

Security modes (:class:`~crmflow.providers.imap.presets.Security`): ``tls``
(implicit TLS), ``starttls`` (RFC 2595 / RFC 3207 upgrade before sign-in; a
server that does not offer it is an error, never a silent fall-back to
plaintext) and ``none``, which is refused for anything but loopback hosts
(:func:`crmflow.providers._tls.require_safe_transport`).

Errors are the ``ConnectionCheckFailed`` tree of ``providers/base.py``; no
``imaplib``, ``ssl``, socket or ``aiosmtplib`` exception escapes. Messages name
the server and the server's own reply where it helps, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from crmflow.domain.secret import Secret
from crmflow.providers._tls import (
    cause,
    client_context,
    network_cause,
    require_safe_transport,
    server_text,
    tls_failure,
    unreachable,
)
from crmflow.providers.base import (
    ConnectionCheckFailed,
    NotAServer,
    TlsFailure,
    WrongCredentials,
)
from crmflow.providers.imap._signin import MechanismNotOffered, SignIn, smtp_sign_in
from crmflow.providers.imap.presets import MailServer, Security

_log = logging.getLogger(__name__)

#: connect, handshake and per-reply timeout of a check, in seconds
DEFAULT_TIMEOUT_S = 20.0

#: EHLO name; a fixed one avoids a reverse DNS lookup (``socket.getfqdn``) that
#: can take seconds, and submission servers do not check it
_EHLO_NAME = "localhost"

#: event loop turns after closing an SMTP connection (abort -> connection_lost
#: -> socket closed takes two)
_CLOSE_TURNS = 4

_IMAP_TLS_HINT = (
    "The port may not use implicit TLS: IMAP uses TLS on 993 and STARTTLS on 143."
)
_SMTP_TLS_HINT = (
    "The port may not use implicit TLS: SMTP uses TLS on 465 and STARTTLS on 587."
)


@dataclass(frozen=True, slots=True)
class ImapLogin:
    """What a successful IMAP sign-in showed."""

    #: the server's capabilities after sign-in (``IDLE``, ``CONDSTORE``, ...)
    capabilities: frozenset[str]


def check_transport(server: MailServer, protocol: str) -> None:
    """Refuse ``Security.NONE`` to a host that is not loopback, before any I/O.

    Raises:
        ValidationFailed: the password would cross the network unencrypted.
    """
    require_safe_transport(
        server.host, server.security is not Security.NONE, server.label(protocol)
    )


# ---------------------------------------------------------------------- IMAP


class _ImapOnSocket(imaplib.IMAP4):
    """``imaplib.IMAP4`` on a socket that is already connected (and wrapped)."""

    def __init__(
        self, sock: socket.socket, host: str, port: int, timeout_s: float
    ) -> None:
        self._ready_socket = sock
        super().__init__(host, port, timeout_s)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._ready_socket


def _connect(
    server: MailServer, ctx: ssl.SSLContext | None, timeout_s: float, what: str
) -> socket.socket:
    """A TCP connection, TLS-wrapped for ``Security.TLS``."""
    try:
        sock = socket.create_connection((server.host, server.port), timeout_s)
    except OSError as exc:
        raise unreachable(what, exc, timeout_s) from None
    if server.security is not Security.TLS:
        return sock
    assert ctx is not None  # noqa: S101 - built for every encrypted mode
    try:
        return ctx.wrap_socket(sock, server_hostname=server.host)
    except ssl.SSLError as exc:
        sock.close()
        raise tls_failure(what, exc, _IMAP_TLS_HINT) from None
    except OSError as exc:
        sock.close()
        raise _no_imap(what, exc, timeout_s) from None


def _no_imap(what: str, exc: BaseException, timeout_s: float) -> NotAServer:
    if isinstance(exc, TimeoutError):
        return NotAServer(
            f"{what}: the connection opened, but no IMAP greeting came within "
            f"{timeout_s:g} s. If this port uses implicit TLS (usually 993), "
            "choose the TLS security setting; otherwise check the port."
        )
    return NotAServer(
        f"{what}: the server did not answer like an IMAP server; check the host "
        "and port (IMAP uses 993 with TLS or 143 with STARTTLS)."
    )


def _refused(
    what: str, exc: imaplib.IMAP4.error, sign_in: SignIn
) -> ConnectionCheckFailed:
    reply = server_text(str(exc))
    if "[UNAVAILABLE]" in reply.upper():
        # RFC 5530: the server cannot check credentials right now
        return ConnectionCheckFailed(
            f"{what} is temporarily unable to sign you in ({reply}); try again later."
        )
    return WrongCredentials(sign_in.refused(what, reply))


def _plain_sasl(username: str, password: Secret) -> bytes:
    # RFC 4616: authzid NUL authcid NUL passwd, UTF-8
    return b"\0" + username.encode() + b"\0" + password.reveal().encode()


def _authenticate(conn: imaplib.IMAP4, sign_in: SignIn, what: str) -> None:
    if sign_in.oauth:
        if "AUTH=XOAUTH2" not in conn.capabilities:
            raise NotAServer(sign_in.not_offered(what))
        conn.authenticate("XOAUTH2", sign_in.imap_response)
    elif "AUTH=PLAIN" in conn.capabilities:
        conn.authenticate(
            "PLAIN", lambda _challenge: _plain_sasl(sign_in.username, sign_in.secret)
        )
    else:
        conn.login(sign_in.username, sign_in.secret.reveal())


def _imap_login(
    server: MailServer,
    sign_in: SignIn,
    ctx: ssl.SSLContext | None,
    timeout_s: float,
) -> ImapLogin:
    what = server.label("IMAP")
    sock = _connect(server, ctx, timeout_s, what)
    try:
        conn = _ImapOnSocket(sock, server.host, server.port, timeout_s)
    except ssl.SSLError as exc:
        sock.close()
        raise tls_failure(what, exc, _IMAP_TLS_HINT) from None
    except (imaplib.IMAP4.error, OSError) as exc:
        sock.close()
        raise _no_imap(what, exc, timeout_s) from None
    try:
        if server.security is Security.STARTTLS:
            if "STARTTLS" not in conn.capabilities:
                raise TlsFailure(
                    f"{what} does not offer STARTTLS, so the {sign_in.credential} "
                    "cannot be sent safely. Choose TLS (usually port 993)."
                )
            try:
                conn.starttls(ssl_context=ctx)
            except ssl.SSLError as exc:
                raise tls_failure(what, exc, _IMAP_TLS_HINT) from None
            except imaplib.IMAP4.error as exc:
                raise TlsFailure(
                    f"{what} could not start TLS ({server_text(str(exc))}). Choose "
                    "TLS (usually port 993)."
                ) from None
        if "LOGINDISABLED" in conn.capabilities:
            raise TlsFailure(
                f"{what} accepts sign-in only over TLS; choose TLS or STARTTLS."
            )
        try:
            _authenticate(conn, sign_in, what)
        except UnicodeEncodeError:
            # LOGIN (RFC 3501) carries ASCII only; AUTH=PLAIN would carry UTF-8
            raise ConnectionCheckFailed(
                f"{what} offers only the LOGIN command, which cannot carry "
                "non-ASCII characters; use a user name and password without them "
                "(an app-specific password, for example)."
            ) from None
        except imaplib.IMAP4.abort:
            raise ConnectionCheckFailed(
                f"{what} closed the connection during sign-in; try again later."
            ) from None
        except imaplib.IMAP4.error as exc:
            raise _refused(what, exc, sign_in) from None
        capabilities = frozenset(str(c).upper() for c in conn.capabilities)
        try:
            typ, data = conn.capability()
            if typ == "OK" and data and isinstance(data[-1], bytes):
                capabilities = frozenset(
                    data[-1].decode("ascii", "replace").upper().split()
                )
        except (imaplib.IMAP4.error, OSError):
            pass  # the login is proven; capabilities are a bonus
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            conn.logout()
        return ImapLogin(capabilities=capabilities)
    except (TimeoutError, imaplib.IMAP4.abort) as exc:
        raise ConnectionCheckFailed(
            f"{what} stopped answering during sign-in ({type(exc).__name__}); try "
            "again later."
        ) from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise tls_failure(what, exc, _IMAP_TLS_HINT) from None
        raise ConnectionCheckFailed(
            f"{what} dropped the connection during sign-in ({type(exc).__name__}); "
            "try again later."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown()


async def verify_imap(
    server: MailServer,
    username: str,
    password: Secret,
    *,
    oauth: bool = False,
    extra_ca_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ImapLogin:
    """Sign in to an IMAP server and sign out again.

    Idempotent and read-only: nothing on the server changes. With ``oauth``,
    ``password`` is an OAuth 2.0 access token (SASL XOAUTH2).

    Returns:
        The capabilities the server announced after sign-in.

    Raises:
        ValidationFailed: ``Security.NONE`` for a host that is not loopback.
        ConfigError: ``extra_ca_file`` cannot be loaded.
        HostUnreachable: DNS failure, connection refused or timed out.
        TlsFailure: the certificate is not trusted, the handshake failed, or
            STARTTLS was asked for but not offered.
        NotAServer: the peer did not greet like an IMAP server, or offers no
            XOAUTH2 for an access token.
        WrongCredentials: the server refused the user name or password (or
            the access token).
        ConnectionCheckFailed: the server failed during sign-in (try later).
    """
    what = server.label("IMAP")
    check_transport(server, "IMAP")
    ctx = None if server.security is Security.NONE else client_context(extra_ca_file)
    result = await asyncio.to_thread(
        _imap_login, server, SignIn(username, password, oauth), ctx, timeout_s
    )
    _log.info("IMAP sign-in verified on %s", what)
    return result


# ---------------------------------------------------------------------- SMTP


def _os_cause(exc: BaseException) -> OSError | None:
    """The socket-level error under an aiosmtplib error (which are OSErrors too)."""
    inner = exc.__cause__ or exc.__context__
    found = None if inner is None else network_cause(inner)
    return None if isinstance(found, aiosmtplib.SMTPException) else found


def _smtp_error(
    what: str,
    exc: aiosmtplib.SMTPException,
    timeout_s: float,
    *,
    connected: bool,
    sign_in: SignIn,
) -> ConnectionCheckFailed:
    """Translate an aiosmtplib error; ``connected``: the session was set up
    (greeting, EHLO, STARTTLS) and sign-in had started."""
    ssl_error = cause(exc, ssl.SSLError)
    if ssl_error is not None:
        return tls_failure(what, ssl_error, _SMTP_TLS_HINT)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        reply = server_text(exc.message)
        if 400 <= exc.code < 500:
            return ConnectionCheckFailed(
                f"{what} is temporarily unable to sign you in ({exc.code} {reply}); "
                "try again later."
            )
        return WrongCredentials(sign_in.refused(what, f"{exc.code} {reply}"))
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        if isinstance(exc.__cause__, aiosmtplib.SMTPTimeoutError):
            return NotAServer(
                f"{what}: the connection opened, but no SMTP greeting came within "
                f"{timeout_s:g} s. If this port uses implicit TLS (usually 465), "
                "choose the TLS security setting; otherwise check the port."
            )
        return unreachable(what, TimeoutError(), timeout_s)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        # a well-formed reply, but not "220 ready" (RFC 5321 §4.3.1: 554)
        return ConnectionCheckFailed(
            f"{what} refused the session ({exc.code} {server_text(exc.message)}); "
            "check the port, or try again later."
        )
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        os_error = _os_cause(exc)
        if os_error is not None:
            return unreachable(what, os_error, timeout_s)
        return NotAServer(
            f"{what} closed the connection without an SMTP greeting; check the host "
            "and port (mail submission uses 465 with TLS or 587 with STARTTLS)."
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not connected:
        return NotAServer(
            f"{what}: the server did not answer like an SMTP server; check the host "
            "and port (mail submission uses 465 with TLS or 587 with STARTTLS)."
        )
    message = str(exc)
    if type(exc) is aiosmtplib.SMTPException:
        if "STARTTLS extension not supported" in message:
            return TlsFailure(
                f"{what} does not offer STARTTLS, so the {sign_in.credential} "
                "cannot be sent safely. Choose TLS (usually port 465)."
            )
        if "AUTH extension is not supported" in message and "TLS" in message:
            # aiosmtplib adds the TLS hint when the connection is unencrypted
            return TlsFailure(
                f"{what} offers sign-in only after STARTTLS or TLS; choose STARTTLS "
                "(usually port 587) or TLS (usually port 465)."
            )
        if "AUTH extension is not supported" in message:
            return NotAServer(
                f"{what} does not offer sign-in (SMTP AUTH). Use the provider's "
                "mail submission port (465 with TLS or 587 with STARTTLS)."
            )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected):
        return ConnectionCheckFailed(
            f"{what} stopped answering during sign-in; try again later."
        )
    return ConnectionCheckFailed(
        f"{what} failed during sign-in ({type(exc).__name__}); try again later."
    )


async def verify_smtp(
    server: MailServer,
    username: str,
    password: Secret,
    *,
    oauth: bool = False,
    extra_ca_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Sign in to an SMTP submission server (AUTH) and quit; nothing is sent.

    With ``oauth``, ``password`` is an OAuth 2.0 access token (AUTH XOAUTH2).

    Raises:
        ValidationFailed: ``Security.NONE`` for a host that is not loopback.
        ConfigError: ``extra_ca_file`` cannot be loaded.
        HostUnreachable: DNS failure, connection refused or timed out.
        TlsFailure: the certificate is not trusted, the handshake failed, or
            STARTTLS was asked for but not offered.
        NotAServer: the peer did not greet like an SMTP server, or offers no
            AUTH (no XOAUTH2, for an access token) on this connection.
        WrongCredentials: the server refused the user name or password (or
            the access token).
        ConnectionCheckFailed: the server failed during sign-in (try later).
    """
    what = server.label("SMTP")
    check_transport(server, "SMTP")
    ctx = None if server.security is Security.NONE else client_context(extra_ca_file)
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        use_tls=server.security is Security.TLS,
        # True: STARTTLS is required (an error when not offered); False: never
        start_tls=server.security is Security.STARTTLS,
        tls_context=ctx,
        timeout=timeout_s,
        local_hostname=_EHLO_NAME,
    )
    sign_in = SignIn(username, password, oauth)
    connected = False
    try:
        await client.connect()
        connected = True
        await smtp_sign_in(client, sign_in)
    except MechanismNotOffered:
        raise NotAServer(sign_in.not_offered(what)) from None
    except aiosmtplib.SMTPException as exc:
        raise _smtp_error(
            what, exc, timeout_s, connected=connected, sign_in=sign_in
        ) from None
    except ssl.SSLError as exc:
        raise tls_failure(what, exc, _SMTP_TLS_HINT) from None
    except OSError as exc:
        if connected:
            raise ConnectionCheckFailed(
                f"{what} dropped the connection during sign-in; try again later."
            ) from None
        raise unreachable(what, exc, timeout_s) from None
    finally:
        await _close(client)
    _log.info("SMTP sign-in verified on %s", what)


async def _close(client: aiosmtplib.SMTP) -> None:
    """QUIT, then drop the connection at once.

    A graceful TLS close waits for the server's close_notify after QUIT; the
    session is over by then, so the transport is aborted instead, and the loop
    gets a few turns to run the callbacks that close the sockets (otherwise
    they are left to the garbage collector).
    """
    transport = client.transport
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    client.close()
    for _turn in range(_CLOSE_TURNS):
        await asyncio.sleep(0)
