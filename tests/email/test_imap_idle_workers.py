"""IMAP IDLE spread over the workers of one PostgreSQL deployment: each
mailbox has one listening connection in the deployment (claimed with an
advisory lock), the mailboxes spread over the workers up to each one's
limit, and a worker that stops or loses its database connection frees its
mailboxes for the others. Against a real Dovecot: the IDLE sessions are
counted on the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from crmflow.jobs.idle import IdleListeners
from crmflow.jobs.queue import IDLE_LOCK_SPACE, AdvisoryClaims
from crmflow.services.mail import MailService
from crmflow.store.db import Database
from tests.conftest import DbUrls
from tests.email.test_imap_service import Mailboxes, boxes, settings

pytestmark = [pytest.mark.servers, pytest.mark.postgres]

__all__ = ["boxes", "settings"]

WAIT_S = 20.0


@pytest.fixture
def db_urls(request: pytest.FixtureRequest) -> DbUrls:
    """PostgreSQL only: the claims are its advisory locks."""
    pg = request.getfixturevalue("pg_database")
    return DbUrls("postgres", pg.admin_url, pg.app_url)


def _idle_sessions(address: str) -> int:
    """Dovecot's IMAP sessions of ``address`` in IDLE (``verbose_proctitle``)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            title = cmdline.read_bytes()
            if f"[{address} ".encode() in title and b" IDLE]" in title:
                count += 1
    return count


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def _worker(
    admin_db: Database, mail: MailService, url: str, limit: int
) -> AsyncIterator[IdleListeners]:
    """One worker's listeners, with claims of their own connection."""
    idle = IdleListeners(
        admin_db,
        mail,
        limit=limit,
        claims=AdvisoryClaims(url),
        idle_s=30,
        refresh_s=0.2,
    )
    idle.start()
    try:
        yield idle
    finally:
        await idle.stop()


async def test_workers_share_the_mailboxes_one_connection_each(
    boxes: Mailboxes,
    mail: MailService,
    admin_db: Database,
    db_urls: DbUrls,
    tenants,
) -> None:
    made = [
        await boxes.connect(actor.ctx)
        for actor in (tenants.alice, tenants.amy, tenants.bob)
    ]
    everyone = {m.id for m in made}

    def one_session_each() -> bool:
        return all(_idle_sessions(m.email_address) == 1 for m in made)

    async with _worker(admin_db, mail, db_urls.admin_url, 2) as first:
        async with _worker(admin_db, mail, db_urls.admin_url, 2) as second:
            await _until(
                lambda: len(first.listening) + len(second.listening) == 3,
                "three listeners",
            )
            assert not first.listening & second.listening
            assert first.listening | second.listening == everyone
            assert 1 <= len(first.listening) <= 2
            await _until(one_session_each, "one IDLE session per mailbox")
            kept = set(second.listening)

        # the second worker stopped: its claims went with it, and the first
        # takes up to its limit, keeping what it had
        held = set(first.listening)
        await _until(lambda: len(first.listening) == 2, "the freed mailboxes")
        assert held <= first.listening
        assert first.listening - held <= kept
        async with _worker(admin_db, mail, db_urls.admin_url, 2) as third:
            await _until(lambda: third.listening == everyone - first.listening, "")
            await _until(one_session_each, "one IDLE session per mailbox")


async def test_a_worker_that_loses_its_claims_stops_listening(
    boxes: Mailboxes,
    mail: MailService,
    admin_db: Database,
    db_urls: DbUrls,
    tenants,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its database connection dropped (a restart, a network cut): the locks
    are gone, so another worker may take the mailboxes; the first one stops
    its listeners before it claims again, and no mailbox is listened twice."""
    made = [await boxes.connect(a.ctx) for a in (tenants.alice, tenants.bob)]
    everyone = {m.id for m in made}
    async with _worker(admin_db, mail, db_urls.admin_url, 2) as first:
        await _until(lambda: first.listening == everyone, "the first worker")
        async with _worker(admin_db, mail, db_urls.admin_url, 2) as second:
            await asyncio.sleep(0.5)  # a few refreshes: nothing for it
            assert second.listening == set()
            with caplog.at_level(logging.WARNING, logger="crmflow.jobs.idle"):
                async with admin_db.admin() as session:
                    cut = await session.scalar(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM "
                            "(SELECT DISTINCT pid FROM pg_locks WHERE "
                            "locktype = 'advisory' AND classid = :space) AS holders"
                        ),
                        {"space": IDLE_LOCK_SPACE},
                    )
                assert cut == 1
                await _until(
                    lambda: "claims were lost" in caplog.text, "the lost claims"
                )
            await _until(
                lambda: (
                    first.listening | second.listening == everyone
                    and not first.listening & second.listening
                ),
                "the mailboxes shared again",
            )
            await _until(
                lambda: all(_idle_sessions(m.email_address) == 1 for m in made),
                "one IDLE session per mailbox",
            )
