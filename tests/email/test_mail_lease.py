"""One sync at a time per mailbox: a sync that stalled past its lease, while
another sync took the mailbox, stops before storing more and leaves the
other one's lease alone (the lease's renewal is the calendar sync's too:
``tests/calendar_sync/test_lease.py``, and ``crmflow.domain.lease``).
Gmail over the sandbox; each of its requests takes six minutes on the
sandbox's clock, which is the service's."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.domain.mail import EmailAccountInfo
from crmflow.domain.tenancy import TenantContext
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import LEASE, MailService
from crmflow.store import models
from tests.calendar_sync.test_lease import SlowProvider
from tests.connections.conftest import Flow, Pauses, new_integrations
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"


async def _lease(
    services: Services, ctx: TenantContext, account: EmailAccountInfo
) -> dt.datetime | None:
    async with services.db.tenant(ctx) as session:
        row = await session.get_one(models.EmailAccount, account.id)
        value = row.sync_lease_until
        return value.replace(tzinfo=dt.UTC) if value and not value.tzinfo else value


async def test_a_mail_sync_whose_lease_was_taken_over_stores_nothing_more(
    flow: Flow,
    sandbox: Sandbox,
    services: Services,
    settings: Settings,
    pauses: Pauses,
    mail: MailService,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    seed_demo_google(sandbox.state, ALICE)
    account = await connect_mailbox(flow, mail, ctx, ALICE)
    other = sandbox.state.clock.now() + 2 * LEASE

    async def take_over(n: int) -> None:
        # this sync's lease ran out while it stalled: another sync took it
        if n == 1:
            async with services.db.tenant(ctx) as session:
                row = await session.get_one(models.EmailAccount, account.id)
                row.sync_lease_until = other

    slow = SlowProvider(sandbox, take_over)
    stalled = MailService(
        new_integrations(services, settings, sandbox, pauses, slow),
        clock=sandbox.state.clock.now,
    )
    try:
        result = await stalled.sync(ctx, account.id)
    finally:
        await slow.aclose()

    assert result.error is not None
    assert "another sync of it started" in result.error
    assert slow.seen >= 2  # it read the mailbox, then stopped before storing
    async with services.db.tenant(ctx) as session:
        stored = await session.scalar(
            select(func.count()).select_from(models.EmailMessage)
        )
    assert stored == 0
    assert await _lease(services, ctx, account) == other
