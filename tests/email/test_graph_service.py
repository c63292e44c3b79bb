"""The email service over sandbox Outlook mailboxes (Microsoft Graph), on
SQLite and PostgreSQL: send with a large attachment, import into the
recipient's CRM, the Sent copy stored once, read flags both ways, delta token
expiry."""

from __future__ import annotations

import pytest

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.mail import Address, OutgoingAttachment
from crmflow.services.mail import Draft, MailService
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox

ADA = "ada@contoso.test"
BEN = "ben@contoso.test"
#: over Graph's 3 MB inline limit: goes through an upload session
BIG = bytes(range(256)) * (4 * 1024 * 4)

pytestmark = pytest.mark.usefixtures("sandbox")


async def test_send_import_and_sent_copy_through_graph(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ada, ben = tenants.alice.ctx, tenants.bob.ctx
    a = await connect_mailbox(flow, mail, ada, ADA, ProviderKey.MICROSOFT)
    b = await connect_mailbox(flow, mail, ben, BEN, ProviderKey.MICROSOFT)
    sent = await mail.send(
        ada,
        Draft(
            a.id,
            to=(Address(BEN, "Ben"),),
            subject="Drawings",
            text="The drawings are attached.",
            html="<p>The drawings are <b>attached</b>.</p>",
            attachments=(
                OutgoingAttachment("drawings.bin", "application/octet-stream", BIG),
            ),
        ),
    )
    methods = [r["apiMethod"] for r in await sandbox.requests()]
    assert methods.count("graph.attachments.createUploadSession") == 1

    received = await mail.sync(ben, b.id)
    assert (received.imported, received.error) == (1, None)
    (message,) = (await mail.messages(ben))[0]
    assert message.subject == "Drawings"
    assert not message.is_read
    detail = await mail.message(ben, message.id)
    assert "attached" in (detail.body_text or "")
    (attachment,) = detail.attachments
    download = await mail.attachment(ben, attachment.id)
    assert b"".join(download.chunks) == BIG
    # the second download is served from the blob store: no Graph request
    before = len(await sandbox.requests())
    again = await mail.attachment(ben, attachment.id)
    assert b"".join(again.chunks) == BIG
    assert len(await sandbox.requests()) == before

    await mail.mark_read(ben, message.id)
    assert (await mail.message(ben, message.id)).summary.is_read

    # ada's Sent Items copy is the row made when sending
    synced = await mail.sync(ada, a.id)
    assert synced.error is None
    page, total = await mail.messages(ada)
    assert total == 1
    assert page[0].id == sent.summary.id


async def test_expired_delta_token_resyncs_without_duplicates(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ada, ben = tenants.alice.ctx, tenants.bob.ctx
    a = await connect_mailbox(flow, mail, ada, ADA, ProviderKey.MICROSOFT)
    b = await connect_mailbox(flow, mail, ben, BEN, ProviderKey.MICROSOFT)
    for n in range(3):
        await mail.send(
            ada, Draft(a.id, to=(Address(BEN),), subject=f"note {n}", text="x")
        )
    assert (await mail.sync(ben, b.id)).imported == 3
    await sandbox.control("microsoft", "POST", "delta/expire", json={"email": BEN})
    result = await mail.sync(ben, b.id)
    assert result.resynced
    assert (result.imported, result.error) == (0, None)
    assert (await mail.messages(ben))[1] == 3
