"""Mail submission over SMTP (RFC 5321, submission RFC 6409, AUTH RFC 4954).

:func:`submit` hands one message to the account's submission server with
``aiosmtplib``: implicit TLS or STARTTLS per the
:class:`~crmflow.providers.imap.presets.MailServer` (plaintext only to
loopback), sign-in with the account's password (or, for an account connected
through OAuth, its access token with ``AUTH XOAUTH2``), then one mail transaction
whose envelope is the sender's address and every To, Cc and Bcc address.

The transaction is all or nothing: the first recipient the server refuses
ends it with ``RSET`` before any data is sent, so a message never reaches only
some of its recipients. ``SIZE`` (RFC 1870) announces the message's size, so
a server with a smaller limit refuses it before the data is transferred.

Keeping a copy in the Sent folder is the IMAP side's job (SMTP servers do not
keep one); see :meth:`crmflow.providers.imap.ImapMailbox.send`.

Errors become the ``crmflow.providers.base`` tree (no ``aiosmtplib``,
``ssl`` or socket exception escapes), never with the password in the message:

* sign-in refused -> ``AuthError``; refused for now (4xx) ->
  ``TransientProviderError``;
* a recipient or the sender refused (5xx), or the message too big (552) ->
  ``crmflow.errors.ValidationFailed`` naming what to change;
* the server cannot be reached, drops the connection or answers 4xx ->
  ``TransientProviderError``;
* TLS failures and other permanent refusals -> ``ProviderError``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import aiosmtplib

from crmflow.domain.mail import OutgoingMessage
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers._tls import cause, server_text, tls_failure
from crmflow.providers.base import (
    AuthError,
    ProviderError,
    TransientProviderError,
)
from crmflow.providers.imap._signin import MechanismNotOffered, SignIn, smtp_sign_in
from crmflow.providers.imap._verify import _EHLO_NAME, _close
from crmflow.providers.imap.presets import MailServer, Security

__all__ = ["submit"]

_SMTP_TLS_HINT = (
    "The port may not use implicit TLS: SMTP uses TLS on 465 and STARTTLS on 587."
)
#: RFC 5321 §4.2.2 / RFC 1870: "exceeded storage allocation" (message too big)
_TOO_BIG = 552


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {server_text(exc.message)}"


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


@contextmanager
def _session_errors(what: str, sign_in: SignIn) -> Iterator[None]:
    """Translate connection and sign-in failures of an SMTP session."""
    try:
        yield
    except MechanismNotOffered:
        raise ProviderError(sign_in.not_offered(what)) from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.code < 500:
            raise TransientProviderError(
                f"{what} could not sign you in right now ({_reply(exc)}); crmflow "
                "tries again later."
            ) from None
        raise AuthError(sign_in.refused(what, _reply(exc))) from None
    except ssl.SSLError as exc:
        raise ProviderError(tls_failure(what, exc, _SMTP_TLS_HINT).message) from None
    except aiosmtplib.SMTPException as exc:
        ssl_error = cause(exc, ssl.SSLError)
        if ssl_error is not None:
            raise ProviderError(
                tls_failure(what, ssl_error, _SMTP_TLS_HINT).message
            ) from None
        message = str(exc)
        if type(exc) is aiosmtplib.SMTPException and (
            "STARTTLS extension not supported" in message
            or "AUTH extension is not supported" in message
        ):
            raise ProviderError(
                f"{what} does not offer STARTTLS or sign-in on this port; check the "
                "mail server settings (submission uses 465 with TLS or 587 with "
                "STARTTLS)."
            ) from None
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 500:
            raise ProviderError(
                f"{what} refused the session ({_reply(exc)})."
            ) from None
        raise TransientProviderError(
            f"{what} could not be reached or stopped answering ("
            f"{type(exc).__name__}); crmflow tries again later."
        ) from None
    except OSError as exc:
        raise TransientProviderError(
            f"{what} could not be reached ({type(exc).__name__}); crmflow tries "
            "again later."
        ) from None


def _envelope(message: OutgoingMessage) -> tuple[str, list[str]]:
    """The envelope sender and recipients (each address once, in order)."""
    seen: set[str] = set()
    recipients: list[str] = []
    for address in message.recipients:
        key = address.email.casefold()
        if key not in seen:
            seen.add(key)
            recipients.append(address.email)
    return message.sender.email, recipients


async def _transaction(
    client: aiosmtplib.SMTP, what: str, message: OutgoingMessage, raw: bytes
) -> None:
    """MAIL, RCPT for each recipient, DATA; refusals become errors."""
    sender, recipients = _envelope(message)
    options: list[str] = []
    encoding = "ascii"
    if not all(a.isascii() for a in (sender, *recipients)):
        # RFC 6531: internationalized addresses need SMTPUTF8
        if not client.supports_extension("smtputf8"):
            raise ValidationFailed(
                f"{what} cannot send to or from addresses with non-ASCII "
                "characters; use an ASCII form of the address."
            )
        options.append("SMTPUTF8")
        encoding = "utf-8"
    if client.supports_extension("size"):
        options.append(f"SIZE={len(raw)}")
    if not raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")

    try:
        await client.mail(sender, options=options, encoding=encoding)
    except aiosmtplib.SMTPSenderRefused as exc:
        if exc.code == _TOO_BIG:
            raise _too_big(what, raw, exc) from None
        if exc.code >= 500:
            raise ValidationFailed(
                f"{what} refused the sender address {sender} ({_reply(exc)}); send "
                "from the address of the connected account."
            ) from None
        raise _temporary(what, exc) from None
    for recipient in recipients:
        try:
            await client.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            await _reset(client)
            if exc.code >= 500:
                raise ValidationFailed(
                    f"{what} refused the recipient {recipient} ({_reply(exc)}); "
                    "check the address. Nothing was sent."
                ) from None
            raise _temporary(what, exc) from None
    try:
        await client.data(raw)
    except aiosmtplib.SMTPDataError as exc:
        if exc.code == _TOO_BIG:
            raise _too_big(what, raw, exc) from None
        if exc.code >= 500:
            raise ProviderError(
                f"{what} refused the message ({_reply(exc)})."
            ) from None
        raise _temporary(what, exc) from None


def _too_big(
    what: str, raw: bytes, exc: aiosmtplib.SMTPResponseException
) -> ValidationFailed:
    return ValidationFailed(
        f"{what} refused the message as too big ({_megabytes(len(raw))}; "
        f"{_reply(exc)}). Remove attachments or share large files as a link."
    )


def _temporary(
    what: str, exc: aiosmtplib.SMTPResponseException
) -> TransientProviderError:
    return TransientProviderError(
        f"{what} cannot take the message right now ({_reply(exc)}); crmflow tries "
        "again later."
    )


async def _reset(client: aiosmtplib.SMTP) -> None:
    # best effort: the session ends next anyway
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.rset()


async def submit(
    server: MailServer,
    username: str,
    password: Secret,
    *,
    oauth: bool = False,
    tls_context: ssl.SSLContext | None,
    timeout_s: float,
    message: OutgoingMessage,
    raw: bytes,
) -> None:
    """Send ``raw`` to every recipient of ``message`` through ``server``.

    Args:
        password: the password, or with ``oauth`` an OAuth 2.0 access token
            (sent with ``AUTH XOAUTH2``).
        tls_context: the verifying client context; None only for
            ``Security.NONE`` (checked by the caller).
        raw: the RFC 5322 message as built by the caller (without a Bcc
            header: the Bcc recipients are in the envelope only).

    Raises:
        AuthError: the server refused the user name or password (or token).
        ValidationFailed: a recipient or the sender was refused, or the
            message is too big; nothing was sent.
        TransientProviderError: the server could not be reached, dropped the
            connection or asked to try later.
        ProviderError: TLS failed, or the server refused permanently.
    """
    what = server.label("SMTP")
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        use_tls=server.security is Security.TLS,
        # True: STARTTLS is required (an error when not offered); False: never
        start_tls=server.security is Security.STARTTLS,
        tls_context=tls_context,
        timeout=timeout_s,
        local_hostname=_EHLO_NAME,
    )
    sign_in = SignIn(username, password, oauth)
    try:
        with _session_errors(what, sign_in):
            await client.connect()
            await smtp_sign_in(client, sign_in)
            await _transaction(client, what, message, raw)
    finally:
        await _close(client)
