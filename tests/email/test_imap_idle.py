"""IMAP IDLE listeners against a real Dovecot, on SQLite and PostgreSQL: mail
delivered to a connected mailbox makes it due at once (and wakes the runner);
the number of connections is bounded; a mailbox whose credentials fail is
retried after minutes, never in a hot loop; removed mailboxes lose their
listener."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete

from crmflow.domain.mail import EmailAccountInfo
from crmflow.jobs.idle import IdleListeners
from crmflow.services.mail import MailService
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.store.schedule import ScheduleStore, SyncKind
from tests.email.test_imap_service import Mailboxes, boxes, settings

pytestmark = pytest.mark.servers

__all__ = ["boxes", "settings"]

WAIT_S = 15.0


class Woken:
    """The runner's wake-up, counted."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
def woken() -> Woken:
    return Woken()


@pytest.fixture
async def listeners(
    admin_db: Database, mail: MailService, woken: Woken
) -> AsyncIterator[IdleListeners]:
    idle = IdleListeners(
        admin_db, mail, limit=1, on_change=woken, idle_s=30, refresh_s=0.2
    )
    idle.start()
    try:
        yield idle
    finally:
        await idle.stop()


async def _until(check, timeout_s: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def _message(to: str, subject: str) -> bytes:
    return (
        f"From: sender@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.test>\r\n\r\nHello.\r\n"
    ).encode()


async def _pushed(admin_db: Database) -> dict[uuid.UUID, bool]:
    async with admin_db.admin() as session:
        due = await ScheduleStore(session).due(
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1), limit=10
        )
    return {d.account_id: d.pushed for d in due if d.kind is SyncKind.MAIL}


async def test_new_mail_makes_the_mailbox_due_at_once(
    boxes: Mailboxes,
    mail: MailService,
    listeners: IdleListeners,
    woken: Woken,
    admin_db: Database,
    tenants,
) -> None:
    first = await boxes.connect(tenants.alice.ctx)
    second = await boxes.connect(tenants.bob.ctx)
    # synced: not due any more
    for ctx, box in ((tenants.alice.ctx, first), (tenants.bob.ctx, second)):
        assert (await mail.sync(ctx, box.id)).error is None
        async with admin_db.admin() as session:
            await ScheduleStore(session).claim(SyncKind.MAIL, box.id, *_hour_from_now())
    await _until(lambda: bool(listeners.listening))
    # one connection at most (the limit): the first mailbox has it
    assert listeners.listening == {first.id}

    # IDLE starts a moment after the listener: deliver until it is heard
    for attempt in range(int(WAIT_S)):
        boxes.dovecot.deliver(
            first.email_address,
            "sender@example.test",
            _message(first.email_address, f"n{attempt}"),
        )
        try:
            await asyncio.wait_for(woken.event.wait(), 1.0)
            break
        except TimeoutError:
            continue
    assert woken.count >= 1
    assert (await _pushed(admin_db)).get(first.id) is True
    assert second.id not in await _pushed(admin_db)

    # the mailbox removed (as when its integration is disconnected): its
    # listener goes, and the other mailbox gets the slot
    await _forget(admin_db, first)
    await _until(lambda: listeners.listening == {second.id})


def _hour_from_now() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now, now + dt.timedelta(hours=1)


async def _forget(admin_db: Database, box: EmailAccountInfo) -> None:
    async with admin_db.admin() as session:
        await session.execute(
            delete(models.EmailAccount).where(models.EmailAccount.id == box.id)
        )


async def test_a_refused_sign_in_is_retried_after_minutes(
    boxes: Mailboxes,
    mail: MailService,
    listeners: IdleListeners,
    services,
    tenants,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = tenants.alice.ctx
    account = await boxes.connect(ctx)
    await boxes.store_stale_password(ctx, account, "stale-pässword-1234")
    with caplog.at_level(logging.WARNING, logger="crmflow.jobs.idle"):
        await _until(lambda: bool(listeners.listening))
        await asyncio.sleep(3.5)
    failures = [r for r in caplog.records if "IMAP IDLE" in r.getMessage()]
    # a refused sign-in waits the longest pause (minutes): one try in 3.5 s,
    # not hundreds, and no lock-out for the account
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "AuthError" in failures[0].getMessage()
    assert "stale" not in caplog.text
