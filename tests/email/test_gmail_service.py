"""The email service over a sandbox Gmail mailbox, on SQLite and PostgreSQL:
import, threads, attachments, replies, search, contact linking, expiry and
tenant isolation."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from crmflow.bootstrap import Services
from crmflow.domain.appointments import timed_span
from crmflow.domain.crm import AppointmentDraft, Attendee, ContactDraft
from crmflow.domain.mail import Address, MailFolder
from crmflow.errors import NotFound, ValidationFailed
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import Draft, MailService
from crmflow.store.repositories import AppointmentRepository, ContactRepository
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"
BOB = "bob@gmail.test"


async def _seeded(flow: Flow, sandbox: Sandbox, mail: MailService, ctx):  # type: ignore[no-untyped-def]
    seed_demo_google(sandbox.state, ALICE)
    return await connect_mailbox(flow, mail, ctx, ALICE)


async def _mailbox_ids(sandbox: Sandbox, email: str) -> list[str]:
    box = (await sandbox.control("google", "GET", f"mailboxes/{email}")).json()
    return [m["id"] for m in box["messages"]]


async def test_first_sync_imports_the_mailbox_with_threads_and_attachments(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    result = await mail.sync(ctx, account.id)
    assert result.error is None
    in_sandbox = await _mailbox_ids(sandbox, ALICE)
    page, total = await mail.messages(ctx, limit=200)
    assert result.imported == total == len(in_sandbox) > 0

    proposal = [m for m in page if m.subject.endswith("Proposal for Q3")]
    assert len(proposal) == 3
    assert len({m.thread_id for m in proposal}) == 1
    thread = await mail.thread(ctx, proposal[0].thread_id or "")
    assert [m.summary.direction.value for m in thread] == [
        "inbound",
        "outbound",
        "inbound",
    ]
    assert thread[1].summary.folder is MailFolder.SENT

    contract = next(m for m in page if m.subject == "Contract draft v2")
    assert contract.has_attachments
    assert not contract.is_read
    detail = await mail.message(ctx, contract.id)
    (pdf,) = detail.attachments
    download = await mail.attachment(ctx, pdf.id)
    data = b"".join(download.chunks)
    assert download.filename == "contract-v2.pdf"
    assert data.startswith(b"%PDF")
    assert len(data) == pdf.size


async def test_second_sync_sends_one_request_and_stores_nothing_new(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    before = len(await sandbox.requests())
    again = await mail.sync(ctx, account.id)
    sent = (await sandbox.requests())[before:]
    assert (again.imported, again.updated, again.removed) == (0, 0, 0)
    assert [r["apiMethod"] for r in sent] == ["gmail.users.history.list"]


async def test_new_mail_read_flags_and_deletions_arrive_incrementally(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    bob_account = await connect_mailbox(flow, mail, tenants.bob.ctx, BOB)
    await mail.sync(ctx, account.id)
    await mail.send(
        tenants.bob.ctx,
        Draft(
            bob_account.id,
            to=(Address(ALICE, "Alice"),),
            subject="Lunch on Friday?",
            text="Are you free at noon?",
        ),
    )
    result = await mail.sync(ctx, account.id)
    assert result.imported == 1
    (found,) = await mail.search(ctx, "lunch friday")
    assert found.sender == Address(BOB, found.sender.name if found.sender else "")
    assert not found.is_read

    await mail.mark_read(ctx, found.id)
    detail = await mail.message(ctx, found.id)
    assert detail.summary.is_read
    box = (await sandbox.control("google", "GET", f"mailboxes/{ALICE}")).json()
    labels = next(m for m in box["messages"] if m["id"] == detail.provider_message_id)
    assert "UNREAD" not in labels["labelIds"]

    await sandbox.control(
        "google", "DELETE", f"mailboxes/{ALICE}/messages/{detail.provider_message_id}"
    )
    result = await mail.sync(ctx, account.id)
    assert result.removed == 1
    with pytest.raises(NotFound):
        await mail.message(ctx, found.id)


async def test_expired_history_resyncs_without_duplicates(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    _, total = await mail.messages(ctx)
    await sandbox.control("google", "POST", f"mailboxes/{ALICE}/expire-history")
    result = await mail.sync(ctx, account.id)
    assert result.resynced
    assert result.error is None
    assert result.imported == 0
    assert (await mail.messages(ctx))[1] == total
    # the new cursor works: the next run is one history request again
    before = len(await sandbox.requests())
    await mail.sync(ctx, account.id)
    methods = [r["apiMethod"] for r in (await sandbox.requests())[before:]]
    assert methods == ["gmail.users.history.list"]


async def test_reply_threads_in_gmail_and_in_the_crm_and_is_stored_once(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    page, _ = await mail.messages(ctx, limit=200)
    follow_up = next(
        m
        for m in page
        if m.subject == "Re: Proposal for Q3" and m.direction.value == "inbound"
    )
    parent = await mail.message(ctx, follow_up.id)
    sent = await mail.send(
        ctx,
        Draft(
            account.id,
            to=(Address("jane.doe@acme.example", "Jane Doe"),),
            subject="",
            text="Wednesday works. I'll bring the price list.",
            html="<p>Wednesday works. <b>I'll bring the price list.</b></p>",
            reply_to=follow_up.id,
        ),
    )
    assert sent.summary.subject == "Re: Proposal for Q3"
    assert sent.in_reply_to == parent.message_id
    assert parent.message_id in sent.references
    assert sent.summary.thread_id == follow_up.thread_id
    assert sent.provider_thread_id == parent.provider_thread_id

    (call,) = await sandbox.requests("gmail.users.messages.send")
    box = (await sandbox.control("google", "GET", f"mailboxes/{ALICE}")).json()
    stored = next(m for m in box["messages"] if m["id"] == sent.provider_message_id)
    assert stored["threadId"] == parent.provider_thread_id
    assert call["status"] == 200

    # the Sent copy found by the next sync is the same row
    result = await mail.sync(ctx, account.id)
    assert result.imported == 0
    thread = await mail.thread(ctx, follow_up.thread_id or "")
    assert [m.summary.id for m in thread].count(sent.summary.id) == 1
    assert len(thread) == 4


async def test_header_injection_is_refused_and_nothing_is_sent_or_stored(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    base = Draft(account.id, to=(Address("x@example.com"),), subject="ok", text="hi")
    bad = [
        dataclasses.replace(base, subject="Hi\r\nBcc: victim@example.com"),
        dataclasses.replace(base, to=(Address("x@example.com", "X\nBcc: v@e.com"),)),
        dataclasses.replace(base, to=(Address("x@example.com\r\nCc: v@e.com"),)),
        dataclasses.replace(base, to=()),
    ]
    for draft in bad:
        with pytest.raises(ValidationFailed):
            await mail.send(ctx, draft)
    assert await sandbox.requests("gmail.users.messages.send") == []
    assert (await mail.messages(ctx))[1] == 0


async def test_search_finds_subject_body_and_addresses_of_own_mail_only(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    by_body = await mail.search(ctx, "requirements")
    assert [m.subject for m in by_body] == ["Proposal for Q3"]
    by_prefix = await mail.search(ctx, "requir")
    assert [m.id for m in by_prefix] == [m.id for m in by_body]
    by_address = await mail.search(ctx, "legal acme")
    assert [m.subject for m in by_address] == ["Contract draft v2"]
    assert await mail.search(ctx, "no-such-word-anywhere") == []
    assert await mail.search(ctx, '"); DROP TABLE email_messages; --') == []
    for other in (tenants.amy, tenants.bob):
        assert await mail.search(other.ctx, "requirements") == []


async def test_contact_page_links_mail_and_meetings_by_normalized_address(
    flow: Flow, sandbox: Sandbox, mail: MailService, services: Services, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    async with services.db.tenant(ctx) as session:
        jane = await ContactRepository(session).create(
            ContactDraft("Jane Doe", email_addresses=("Jane.Doe+crm@ACME.example",))
        )
        start = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
        await AppointmentRepository(session).create(
            AppointmentDraft(
                "Pricing call",
                timed_span(start, start + dt.timedelta(hours=1), "UTC"),
                attendees=(Attendee("jane.doe@acme.example", "Jane"),),
            )
        )
        await AppointmentRepository(session).create(
            AppointmentDraft(
                "Internal",
                timed_span(start, start + dt.timedelta(hours=1), "UTC"),
                attendees=(Attendee("jane.doe.other@acme.example"),),
            )
        )
    activity = await mail.contact_activity(ctx, jane.id)
    subjects = sorted(m.subject for m in activity.messages)
    assert subjects == ["Proposal for Q3", "Re: Proposal for Q3", "Re: Proposal for Q3"]
    assert [a.title for a in activity.appointments] == ["Pricing call"]
    # amy shares the contact but not alice's mailbox
    other = await mail.contact_activity(tenants.amy.ctx, jane.id)
    assert other.messages == []
    assert [a.title for a in other.appointments] == ["Pricing call"]


async def test_another_user_never_reads_a_mailbox_message_or_attachment(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await _seeded(flow, sandbox, mail, ctx)
    await mail.sync(ctx, account.id)
    page, _ = await mail.messages(ctx, limit=200)
    contract = next(m for m in page if m.has_attachments)
    attachment = (await mail.message(ctx, contract.id)).attachments[0]
    for other in (tenants.amy, tenants.bob):
        assert await mail.messages(other.ctx) == ([], 0)
        for call in (
            mail.message(other.ctx, contract.id),
            mail.attachment(other.ctx, attachment.id),
            mail.thread(other.ctx, contract.thread_id or ""),
            mail.sync(other.ctx, account.id),
            mail.mark_read(other.ctx, contract.id),
        ):
            with pytest.raises(NotFound):
                await call
