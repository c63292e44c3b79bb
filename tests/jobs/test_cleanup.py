"""Housekeeping on SQLite and PostgreSQL: OAuth flows a day past their
expiry and attachment files no message names are removed; everything else
(a named file, a young file, a live flow) stays."""

from __future__ import annotations

import datetime as dt
import os
import time

from sqlalchemy import func, select

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.mail import Address, OutgoingAttachment
from crmflow.domain.schedule import Schedule
from crmflow.jobs.runner import SyncScheduler
from crmflow.jobs.tasks import SyncTasks
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import Draft, MailService
from crmflow.store import models
from crmflow.store.blobs import BlobStore
from crmflow.store.db import Database
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import INTERVAL, Clock
from tests.servers.sandbox import Sandbox

ADA = "ada@contoso.test"
BEN = "ben@contoso.test"
HOURS_AGO = 2 * 3600


def _age(path: os.PathLike[str] | str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def _flows(admin_db: Database) -> set[str]:
    async with admin_db.admin() as session:
        return set(await session.scalars(select(models.OAuthFlow.state)))


async def test_expired_flows_and_unnamed_files_are_removed(
    flow: Flow,
    sandbox: Sandbox,
    calendar_sync: CalendarSync,
    mail: MailService,
    admin_db: Database,
    settings,
    clock: Clock,
    tenants,
) -> None:
    ada, ben = tenants.alice.ctx, tenants.bob.ctx
    a = await connect_mailbox(flow, mail, ada, ADA, ProviderKey.MICROSOFT)
    b = await connect_mailbox(flow, mail, ben, BEN, ProviderKey.MICROSOFT)
    await mail.send(
        ada,
        Draft(
            a.id,
            to=(Address(BEN),),
            subject="Drawings",
            text="Attached.",
            attachments=(
                OutgoingAttachment(
                    "drawings.bin", "application/octet-stream", b"x" * 999
                ),
            ),
        ),
    )
    await mail.sync(ben, b.id)
    (message,) = (await mail.messages(ben))[0]
    (attachment,) = (await mail.message(ben, message.id)).attachments
    b"".join((await mail.attachment(ben, attachment.id)).chunks)  # stored now

    root = settings.effective_blob_dir
    blobs = BlobStore(root)
    org = tenants.bob.ctx.organization_id
    # the received copy's file, and the sender's (its Sent copy names it)
    named = [p for p in root.rglob("*") if p.is_file()]
    assert named
    orphan_key, _ = blobs.put(org, b"a message deleted long ago")
    young_key, _ = blobs.put(org, b"written a moment ago, not named yet")
    orphan, young = root / orphan_key, root / young_key
    torn = orphan.parent / ".tmp-crashed"
    torn.write_bytes(b"half")
    for path in (*named, orphan, torn):
        _age(path, HOURS_AGO)

    async with admin_db.admin() as session:
        for state, expired in (("old", dt.timedelta(days=2)), ("live", -INTERVAL)):
            session.add(
                models.OAuthFlow(
                    organization_id=org,
                    user_id=tenants.bob.ctx.user_id,
                    provider="google",
                    kind="calendar",
                    state=state,
                    code_verifier="sealed",
                    redirect_uri="https://crm.test/callback",
                    scopes=[],
                    expires_at=clock.now - expired,
                )
            )
    before = await _flows(admin_db)

    scheduler = SyncScheduler(
        admin_db,
        SyncTasks(calendar_sync, mail),
        Schedule(INTERVAL),
        clock=clock,
        blobs=blobs,
    )
    done = await scheduler.cleanup()
    assert done is not None
    assert (done.oauth_flows, done.blobs) == (1, 2)
    assert before - await _flows(admin_db) == {"old"}
    assert "live" in await _flows(admin_db)
    assert not orphan.exists()
    assert not torn.exists()
    assert young.exists()
    assert all(p.exists() for p in named)
    # the named file still downloads
    assert b"".join((await mail.attachment(ben, attachment.id)).chunks) == b"x" * 999
    # once an hour: a second call right away does nothing
    assert await scheduler.cleanup() is None


async def test_content_stored_again_is_not_swept(
    settings, admin_db: Database, clock: Clock, calendar_sync, mail, tenants
) -> None:
    """A file that a new message is about to name (same content, already
    stored, old) is made young again by the write, so the sweep keeps it."""
    blobs = BlobStore(settings.effective_blob_dir)
    org = tenants.alice.ctx.organization_id
    key, _ = blobs.put(org, b"the same quote, sent twice")
    path = settings.effective_blob_dir / key
    _age(path, HOURS_AGO)
    blobs.put(org, b"the same quote, sent twice")  # the second message's import
    scheduler = SyncScheduler(
        admin_db,
        SyncTasks(calendar_sync, mail),
        Schedule(INTERVAL),
        clock=clock,
        blobs=blobs,
    )
    done = await scheduler.cleanup(force=True)
    assert done is not None
    assert done.blobs == 0
    assert path.exists()
    async with admin_db.admin() as session:
        assert (
            await session.scalar(select(func.count()).select_from(models.OAuthFlow))
            == 0
        )
