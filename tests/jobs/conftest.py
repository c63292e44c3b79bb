"""Fixtures for background work: the calendar and mail services on the
sandbox (connected through the real OAuth flow), and a runner whose clock the
test moves."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from crmflow.bootstrap import Services
from crmflow.domain.schedule import Schedule
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.jobs.runner import InProcessRunner, SyncScheduler
from crmflow.jobs.tasks import SyncTasks
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.store.db import Database
from crmflow.store.push import Delivery, PushChannelStore, PushInbox
from tests.calendar_sync.conftest import calendar_sync
from tests.connections import conftest as connections
from tests.email.conftest import mail

settings = connections.settings
pauses = connections.pauses
integrations = connections.integrations
flow = connections.flow
app = connections.app
web = connections.web
__all__ = ["calendar_sync", "mail"]

INTERVAL = dt.timedelta(minutes=5)


class Clock:
    """The runner's clock: real time at first, moved on by the test."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_runner(
    admin_db: Database, calendar: CalendarSync, mail: MailService, clock: Clock
) -> InProcessRunner:
    """A runner on the scheduling (owner) database; jitter 0, random 0.5."""
    scheduler = SyncScheduler(
        admin_db,
        SyncTasks(calendar, mail),
        Schedule(INTERVAL, jitter=0.1),
        clock=clock,
        rand=lambda: 0.5,  # the middle of the jitter: exactly the interval
    )
    return InProcessRunner(scheduler, concurrency=2, tick_s=0.05)


@pytest.fixture
def runner(
    admin_db: Database,
    calendar_sync: CalendarSync,
    mail: MailService,
    clock: Clock,
) -> InProcessRunner:
    return make_runner(admin_db, calendar_sync, mail, clock)


async def subscribe_mailbox(
    services: Services,
    ctx: TenantContext,
    account_id: uuid.UUID,
    *,
    subscription_id: str = "subscription-1",
    client_state: str = "state",
) -> None:
    """A Graph subscription row on a mailbox."""
    async with services.db.tenant(ctx) as session:
        await PushChannelStore(session).add(
            account_id,
            "microsoft",
            channel_id=subscription_id,
            resource_id="messages",
            token=Secret(client_state),
            expires_at=None,
            mailbox=True,
        )


async def notify_mailbox(admin_db: Database, now: dt.datetime) -> None:
    """What the Graph receiver does for a genuine change notification of
    :func:`subscribe_mailbox`'s subscription."""
    async with admin_db.admin() as session:
        result = await PushInbox(session).change(
            "microsoft",
            subscription_id="subscription-1",
            client_state="state",
            digest="d1",
            now=now,
        )
    assert result is Delivery.ACCEPTED
