"""Access tokens that end within ten minutes are refreshed ahead of need by the
scheduler's sweep (SQLite and PostgreSQL), once a minute at most; a revoked
grant is recorded as needing a reconnect, and the sweep goes on."""

from __future__ import annotations

import datetime as dt

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind
from crmflow.domain.schedule import Schedule
from crmflow.jobs.runner import SyncScheduler
from crmflow.jobs.tasks import SyncTasks
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.store.db import Database
from crmflow.store.integrations import IntegrationStatus
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import INTERVAL, Clock
from tests.servers.sandbox import GOOGLE_TOKEN_LIFETIME_S, Sandbox

ALICE = "alice@gmail.test"


async def test_tokens_ending_soon_are_refreshed_ahead(
    flow: Flow,
    sandbox: Sandbox,
    mail: MailService,
    calendar_sync: CalendarSync,
    integrations: Integrations,
    admin_db: Database,
    clock: Clock,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    await connect_mailbox(flow, mail, ctx, ALICE)
    scheduler = SyncScheduler(
        admin_db,
        SyncTasks(calendar_sync, mail),
        Schedule(INTERVAL),
        clock=clock,
        integrations=integrations,
    )
    refreshes = len(await sandbox.requests("oauth.token"))
    assert await scheduler.sweep_tokens() == 0  # an hour left: nothing to do

    # five minutes left: the sweep refreshes it
    await sandbox.advance_clock(GOOGLE_TOKEN_LIFETIME_S - 300)
    assert await scheduler.sweep_tokens() == 1
    assert len(await sandbox.requests("oauth.token")) == refreshes + 1
    view = await integrations.get_integration(ctx, IntegrationKind.GMAIL)
    assert view.info.expires_at is not None
    assert view.info.expires_at > sandbox.state.clock.now() + dt.timedelta(minutes=50)
    # at most once a minute, and nothing is due anyway
    assert await scheduler.sweep_tokens() == 0
    assert len(await sandbox.requests("oauth.token")) == refreshes + 1

    # the grant is revoked at Google: the next sweep records it and goes on
    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.advance_clock(GOOGLE_TOKEN_LIFETIME_S - 300)
    assert await scheduler.sweep_tokens() == 0
    view = await integrations.get_integration(ctx, IntegrationKind.GMAIL)
    assert view.info.status is IntegrationStatus.NEEDS_REAUTH
    assert view.reconnect_required
