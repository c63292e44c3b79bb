"""Fixtures for mailbox adapter tests: providers over real HTTP (the sandbox),
accounts connected through the real OAuth flow.

* ``db_urls`` (overrides the root one): SQLite only. The mailbox adapters never
  touch the database; it only holds the OAuth grants their tokens come from,
  and the connection tests already cover both backends.
* ``connect_mailbox``: connects a sandbox account as a crmflow user
  (``flow.connect``: start, consent page, callback) and returns a
  :class:`MailAccount` whose ``token`` is the connections service's fresh
  access token (``Integrations.refresh_if_needed``), so sandbox time moving on
  refreshes it the way production does.
* :func:`compose` builds RFC 5322 bytes with the standard library (text, an
  optional HTML alternative, attachments, threading headers).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from tests.conftest import DbUrls
from tests.connections import conftest as connections
from tests.connections.conftest import Flow
from tests.servers.sandbox import Sandbox

# the connection tests' fixtures: settings pointing at the sandbox, the
# connections service on the sandbox's clock and the OAuth flow
settings = connections.settings
pauses = connections.pauses
integrations = connections.integrations
flow = connections.flow


@pytest.fixture
def db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    """A fresh, migrated SQLite database (see the module docstring)."""
    path = tmp_path / "crmflow.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{path}"
    return DbUrls("sqlite", url, url)


@dataclass(frozen=True)
class MailAccount:
    """A mailbox connected as a crmflow user."""

    ctx: TenantContext
    #: the account's address at the provider (sandbox user)
    email: str
    provider: ProviderKey
    kind: IntegrationKind
    integration_id: uuid.UUID
    #: the granted scopes, as stored by crmflow
    scopes: tuple[str, ...]
    #: a fresh access token, refreshed by the connections service when due
    token: Callable[[], Awaitable[Secret]]


ConnectMailbox = Callable[..., Awaitable[MailAccount]]


@pytest.fixture
def connect_mailbox(flow: Flow, integrations: Integrations) -> ConnectMailbox:
    """``await connect_mailbox(ctx, provider, kind, email, features=None,
    untick=())``: connect through the real OAuth flow."""

    async def connect(
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        email: str,
        *,
        features: list[str] | None = None,
        untick: tuple[str, ...] = (),
    ) -> MailAccount:
        result = await flow.connect(
            ctx, provider, kind, email, features=features, untick=untick
        )

        async def token() -> Secret:
            return await integrations.refresh_if_needed(ctx, kind, provider)

        return MailAccount(
            ctx=ctx,
            email=email,
            provider=provider,
            kind=kind,
            integration_id=result.integration.id,
            scopes=tuple(result.integration.scopes),
            token=token,
        )

    return connect


def sandbox_now(sandbox: Sandbox) -> dt.datetime:
    """The sandbox's time (it runs ahead of the wall clock once advanced)."""
    return sandbox.state.clock.now()


def compose(
    *,
    sender: str,
    to: list[str],
    subject: str,
    text: str,
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> bytes:
    """RFC 5322 bytes: text, an optional HTML alternative, then attachments
    (``(filename, content type, data)``)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain="crm.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
