"""How an IMAP/SMTP mailbox signs in: a password, or an OAuth 2.0 access token.

A password goes out with ``AUTHENTICATE PLAIN`` / ``LOGIN`` (IMAP) and
``AUTH PLAIN`` / ``LOGIN`` (SMTP). An access token goes out with the SASL
mechanism ``XOAUTH2`` that Gmail and Outlook document for IMAP and SMTP: the
initial client response is ``user=<name>^Aauth=Bearer <token>^A^A`` (base64
on the wire). A server that refuses the token first sends a base64 JSON error
as a continuation; the client answers with an empty line and then gets the
final ``NO`` / ``535`` (Google, "OAuth 2.0 Mechanism" / XOAUTH2 protocol).

Nothing here logs or formats the secret: :class:`~crmflow.domain.secret.Secret`
masks it in reprs, and messages name the server, never the credential.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosmtplib

from crmflow.domain.secret import Secret

__all__ = ["MechanismNotOffered", "SignIn", "smtp_sign_in"]

#: the SASL mechanism for OAuth 2.0 bearer tokens
XOAUTH2 = "XOAUTH2"


class MechanismNotOffered(Exception):
    """The server does not offer the sign-in mechanism the account needs."""


@dataclass(frozen=True, slots=True)
class SignIn:
    """Who signs in and with what."""

    username: str
    #: the password, or the OAuth 2.0 access token when ``oauth``
    secret: Secret
    #: True: ``secret`` is an access token, sent with SASL XOAUTH2
    oauth: bool = False

    @property
    def credential(self) -> str:
        """What the secret is, in words ("password", "access token")."""
        return "access token" if self.oauth else "password"

    def xoauth2(self) -> bytes:
        """The XOAUTH2 initial client response (before base64)."""
        return (
            f"user={self.username}\x01auth=Bearer {self.secret.reveal()}\x01\x01"
        ).encode()

    def imap_response(self, challenge: bytes) -> bytes:
        """The answer to a server challenge during IMAP ``AUTHENTICATE XOAUTH2``.

        The first (empty) challenge gets the credentials; a non-empty one is
        the server's JSON error, answered with an empty line so the server
        finishes with ``NO``.
        """
        return b"" if challenge else self.xoauth2()

    def refused(self, what: str, reply: str) -> str:
        """What to tell a person whose sign-in ``what`` refused with ``reply``."""
        if self.oauth:
            return (
                f"{what} refused the account's OAuth access ({reply}); connect the "
                "account again in Settings -> Integrations and allow full mailbox "
                "access (IMAP and SMTP need it)."
            )
        return (
            f"{what} refused the user name or password ({reply}); check both in "
            "Settings -> Integrations (many providers need an app-specific "
            "password)."
        )

    def not_offered(self, what: str) -> str:
        """The message for a server that offers no XOAUTH2."""
        return (
            f"{what} does not offer OAuth sign-in (SASL XOAUTH2); sign in with a "
            "password instead, or check the server in the crmflow configuration."
        )


async def smtp_sign_in(client: aiosmtplib.SMTP, sign_in: SignIn) -> None:
    """AUTH on a connected (and, where configured, encrypted) SMTP session.

    Raises:
        MechanismNotOffered: an access token, but the server's EHLO lists no
            ``AUTH XOAUTH2``.
        aiosmtplib.SMTPException: as ``SMTP.login`` / ``SMTP.auth_xoauth2``.
    """
    if not sign_in.oauth:
        await client.login(sign_in.username, sign_in.secret.reveal())
        return
    if client.is_ehlo_or_helo_needed:
        # after STARTTLS the session starts over: EHLO again lists AUTH
        await client.ehlo()
    if XOAUTH2.casefold() not in client.server_auth_methods:
        raise MechanismNotOffered(XOAUTH2)
    await client.auth_xoauth2(sign_in.username, sign_in.secret.reveal())
