"""Fixtures for the email service: crmflow in-process on each database, Gmail
and Graph over real HTTP (the sandbox), mailboxes connected through the real
OAuth flow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import EmailAccountInfo
from crmflow.domain.tenancy import TenantContext
from crmflow.services.mail import MailService
from tests.connections import conftest as connections
from tests.connections.conftest import Flow
from tests.servers.dovecot import DovecotServer
from tests.servers.sandbox import Sandbox
from tests.servers.smtp_delivery import DeliveryServer, running_delivery_server

settings = connections.settings
pauses = connections.pauses
integrations = connections.integrations
app = connections.app
web = connections.web
flow = connections.flow


@pytest.fixture(scope="module")
def delivery(dovecot: DovecotServer) -> Iterator[DeliveryServer]:
    """Submission servers (STARTTLS and TLS) delivering into Dovecot."""
    with running_delivery_server(dovecot) as server:
        yield server


@pytest.fixture
def mail(integrations: Integrations, sandbox: Sandbox) -> MailService:
    return MailService(integrations, clock=sandbox.state.clock.now)


async def connect_mailbox(
    flow: Flow,
    mail: MailService,
    ctx: TenantContext,
    email: str,
    provider: ProviderKey = ProviderKey.GOOGLE,
) -> EmailAccountInfo:
    """Connect ``email``'s mailbox through the OAuth flow; its email account."""
    kind = (
        IntegrationKind.GMAIL
        if provider is ProviderKey.GOOGLE
        else IntegrationKind.MAIL
    )
    await flow.connect(ctx, provider, kind, email)
    return next(a for a in await mail.accounts(ctx) if a.email_address == email)
