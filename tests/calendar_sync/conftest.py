"""Fixtures for the calendar sync service: crmflow in-process on each database,
Google and Microsoft over real HTTP (the sandbox), accounts connected through
the real OAuth flow."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from crmflow.bootstrap import Services
from crmflow.connections.service import Integrations
from crmflow.domain.calendar_accounts import CalendarAccountInfo, Direction, Strategy
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.tenancy import TenantContext
from crmflow.sandbox.google.demo import DemoGoogle, seed_demo_google
from crmflow.services.calendar_sync import CalendarSync
from tests.connections import conftest as connections
from tests.connections.conftest import Flow
from tests.servers.sandbox import Sandbox

GOOGLE_EMAIL = "alice@gmail.test"

# the connection tests' fixtures: settings pointing at the sandbox, the
# connections service on the sandbox's clock, the app and the OAuth flow
settings = connections.settings
pauses = connections.pauses
integrations = connections.integrations
app = connections.app
web = connections.web
flow = connections.flow


@pytest.fixture
def calendar_sync(integrations: Integrations, sandbox: Sandbox) -> CalendarSync:
    return CalendarSync(integrations, clock=sandbox.state.clock.now)


@dataclass
class GoogleAccount:
    """A connected Google calendar integration with the demo calendar seeded."""

    ctx: TenantContext
    demo: DemoGoogle
    account: CalendarAccountInfo


async def connect_google(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    ctx: TenantContext,
    email: str = GOOGLE_EMAIL,
    *,
    strategy: Strategy = Strategy.MANUAL,
    direction: Direction = Direction.TWO_WAY,
) -> GoogleAccount:
    demo = seed_demo_google(sandbox.state, email)
    result = await flow.connect(
        ctx, ProviderKey.GOOGLE, IntegrationKind.CALENDAR, email
    )
    integration_id = result.integration.id
    choices = await calendar_sync.calendars(ctx, integration_id)
    primary = next(c for c in choices if c.primary)
    account = await calendar_sync.add_account(
        ctx, integration_id, primary.id, strategy=strategy, direction=direction
    )
    return GoogleAccount(ctx, demo, account)


@pytest.fixture
async def google(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    tenants,
    services: Services,
) -> GoogleAccount:
    return await connect_google(flow, sandbox, calendar_sync, tenants.alice.ctx)
