"""Gmail through IMAP and SMTP with OAuth (SASL XOAUTH2), chosen per connection.

A Gmail connection reads and sends through the Gmail API by default
(``mail_protocol`` ``api``). Switched to ``imap``, the same connection uses
Gmail's IMAP and SMTP servers (``CRMFLOW_GOOGLE_IMAP_URL`` /
``CRMFLOW_GOOGLE_SMTP_URL``) and signs in with its OAuth access token: no
password is stored, the token refreshes itself as for the API, and a revoked
grant fails with "connect again" like any OAuth connection. Google accepts
XOAUTH2 only for tokens with the full mailbox scope ``https://mail.google.com/``
(the optional feature ``imap_smtp`` of :mod:`.scopes`).

:func:`set_mail_protocol`:

1. ``imap`` needs that scope in the grant, else ``ValidationFailed`` saying
   to use "Grant access" first;
2. signs in to the IMAP and to the SMTP server with a fresh token (a real
   check: when either refuses, nothing changes and the error says why);
3. stores ``mail_protocol`` (and the IMAP capabilities) in the connection's
   settings. The mailbox's sync cursor belongs to the protocol that wrote it,
   so the next sync imports the window again through the new one; messages
   stored already are matched by Message-ID and not duplicated.

The servers are the deployment's choice, never a user's: the token grants
full access to the mailbox, so it is sent only to the configured hosts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from crmflow.config import Settings
from crmflow.connections._deps import Deps
from crmflow.connections.scopes import CATALOGUE, GMAIL_FULL, IMAP_SMTP
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import ValidationFailed
from crmflow.providers import imap
from crmflow.store.integrations import IntegrationInfo, IntegrationStore

__all__ = [
    "MAIL_PROTOCOLS",
    "MailProtocol",
    "gmail_servers",
    "mail_protocol",
    "set_mail_protocol",
]

_log = logging.getLogger(__name__)

MailProtocol = Literal["api", "imap"]
MAIL_PROTOCOLS: tuple[MailProtocol, ...] = ("api", "imap")


def mail_protocol(info: IntegrationInfo) -> MailProtocol:
    """How a mail connection reads and sends: ``api`` unless switched."""
    return "imap" if info.settings.get("mail_protocol") == "imap" else "api"


def gmail_servers(settings: Settings) -> tuple[imap.MailServer, imap.MailServer]:
    """Gmail's IMAP and SMTP servers as configured."""
    return (
        imap.MailServer.from_url(settings.google_imap_url),
        imap.MailServer.from_url(settings.google_smtp_url),
    )


def _feature_label() -> str:
    spec = CATALOGUE[(ProviderKey.GOOGLE, IntegrationKind.GMAIL)]
    return spec.feature(IMAP_SMTP).label


async def set_mail_protocol(
    deps: Deps,
    ctx: TenantContext,
    info: IntegrationInfo,
    protocol: str,
    token: Callable[[], Awaitable[Secret]],
) -> IntegrationInfo:
    """Switch the mail connection ``info`` to ``protocol`` (see the module).

    Args:
        info: the acting user's integration (already looked up as theirs).
        token: a valid access token of that integration.

    Returns:
        The integration as stored afterwards.

    Raises:
        ValidationFailed: an unknown protocol, a connection that is not
            Gmail, or a grant without full mailbox access.
        AuthError: the grant is gone (connect again).
        ConnectionCheckFailed: the IMAP or SMTP server refused the token or
            could not be reached; nothing was changed.
    """
    if protocol not in MAIL_PROTOCOLS:
        raise ValidationFailed(
            f"Unknown mail protocol {protocol!r}; choose "
            + " or ".join(MAIL_PROTOCOLS)
            + "."
        )
    if (info.provider, info.kind) != (ProviderKey.GOOGLE, IntegrationKind.GMAIL):
        raise ValidationFailed(
            "Only a Gmail connection can switch between the Gmail API and IMAP + "
            "SMTP; other mail connections use one protocol."
        )
    changes: dict[str, object] = {"mail_protocol": protocol}
    if protocol == "imap":
        if GMAIL_FULL.casefold() not in {s.casefold() for s in info.scopes}:
            raise ValidationFailed(
                "Reading and sending through IMAP and SMTP needs full access to "
                "your mailbox, which this Gmail connection was not granted; use "
                f"'Grant access' next to '{_feature_label()}' first."
            )
        if not info.email:
            raise ValidationFailed(
                "This Gmail connection does not know its address; connect it again."
            )
        imap_server, smtp_server = gmail_servers(deps.settings)
        access = await token()
        ca_file = deps.settings.extra_ca_file
        login = await imap.verify_imap(
            imap_server, info.email, access, oauth=True, extra_ca_file=ca_file
        )
        await imap.verify_smtp(
            smtp_server, info.email, access, oauth=True, extra_ca_file=ca_file
        )
        changes["imap_capabilities"] = sorted(login.capabilities)
    async with deps.db.tenant(ctx) as session:
        stored = await IntegrationStore(session, deps.vault).update_settings(
            info.id, changes
        )
    _log.info("mail integration %s now uses %s", info.id, protocol)
    return stored
