"""``GmailMailbox`` against the Gmail sandbox over real HTTP.

Two sandbox Gmail accounts are connected through the real OAuth flow; mail
goes from one to the other through ``messages.send``. Outcomes are read back
from what the adapter returns, from the sandbox's mailboxes (control API) and
from its request log: sending (HTML + text + attachment, replies threaded,
a vanished thread), full fetches (parsing, SENT vs INBOX, drafts skipped,
``since``, paging, batch reads, the cursor taken before listing), incremental
fetches (new, read/unread, deleted, added-then-deleted, paging, one request
when nothing changed), an expired history id, read flags, attachments and
error translation (scopes, 401, 429 with Retry-After, 403 rate limits, 5xx,
invalid messages).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from crmflow.config import Settings
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import (
    Address,
    FlagChange,
    IncomingMessage,
    MailBatch,
    MailFolder,
    OutgoingMessage,
)
from crmflow.errors import ValidationFailed
from crmflow.mail.compose import build_message
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemNotFound,
    MissingScope,
    RateLimited,
    TransientProviderError,
)
from crmflow.providers.google import GmailMailbox
from crmflow.providers.google._gmail import (
    GMAIL_MODIFY,
    GMAIL_READONLY,
    GMAIL_SEND,
)
from tests.conftest import Tenants
from tests.servers.sandbox import Sandbox

from .conftest import ConnectMailbox, MailAccount, compose, sandbox_now

ANN = "ann@gmail.test"
BEN = "ben@gmail.test"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"


@pytest.fixture
def gmail_root(settings: Settings) -> str:
    return str(settings.google_api_url).rstrip("/") + "/gmail/v1/"


@pytest.fixture
async def ann(connect_mailbox: ConnectMailbox, tenants: Tenants) -> MailAccount:
    return await connect_mailbox(
        tenants.alice.ctx, ProviderKey.GOOGLE, IntegrationKind.GMAIL, ANN
    )


@pytest.fixture
async def ben(connect_mailbox: ConnectMailbox, tenants: Tenants) -> MailAccount:
    return await connect_mailbox(
        tenants.bob.ctx, ProviderKey.GOOGLE, IntegrationKind.GMAIL, BEN
    )


def mailbox(root: str, account: MailAccount, page_size: int = 100) -> GmailMailbox:
    return GmailMailbox(root, account.token, page_size=page_size)


def outgoing(
    raw_from: str,
    to: str,
    subject: str,
    *,
    thread: str | None = None,
    in_reply_to: str | None = None,
) -> OutgoingMessage:
    return OutgoingMessage(
        sender=Address(raw_from),
        to=(Address(to),),
        subject=subject,
        text="",
        message_id="<unused@crm.test>",
        in_reply_to=in_reply_to,
        provider_thread_id=thread,
    )


async def collect(batches: AsyncIterator[MailBatch]) -> list[MailBatch]:
    return [batch async for batch in batches]


def day_ago(sandbox: Sandbox) -> dt.datetime:
    return sandbox_now(sandbox) - dt.timedelta(days=1)


async def fetch_all(
    box: GmailMailbox, sandbox: Sandbox, cursor: str | None = None
) -> list[MailBatch]:
    return await collect(box.fetch(cursor, since=day_ago(sandbox)))


def messages_of(batches: list[MailBatch]) -> list[IncomingMessage]:
    return [m for b in batches for m in b.messages]


async def stored(sandbox: Sandbox, email: str) -> dict[str, Any]:
    """The mailbox as the sandbox holds it (historyId, messages with labels)."""
    return dict((await sandbox.control("google", "GET", f"mailboxes/{email}")).json())


async def deliver(sandbox: Sandbox, email: str, **fields: Any) -> str:
    """Mail from outside arriving in ``email``'s mailbox; returns its id."""
    fields.setdefault("from", "Carol <carol@example.com>")
    fields.setdefault("to", email)
    fields.setdefault("text", "hello")
    response = await sandbox.control(
        "google", "POST", f"mailboxes/{email}/messages", json=fields
    )
    return str(response.json()["id"])


async def forget_requests(sandbox: Sandbox) -> None:
    await sandbox.control("google", "DELETE", "requests")


async def gmail_calls(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What crmflow asked Gmail (token refreshes left out)."""
    return [
        r
        for r in await sandbox.requests()
        if str(r["apiMethod"] or "").startswith("gmail.")
    ]


def methods(calls: list[dict[str, Any]]) -> list[str]:
    return [str(c["apiMethod"]).removeprefix("gmail.") for c in calls]


# ---------------------------------------------------------------- sending


async def test_sent_mail_arrives_parsed_with_attachment_and_as_sent_copy(
    ann: MailAccount, ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    raw = compose(
        sender=f"Ann <{ANN}>",
        to=[BEN],
        subject="Proposal",
        text="Plain version\n",
        html="<p>Rich <b>version</b></p>\n",
        attachments=[("quote.pdf", "application/pdf", PDF)],
        message_id="<proposal-1@crm.test>",
    )
    await forget_requests(sandbox)

    sent = await mailbox(gmail_root, ann).send(outgoing(ANN, BEN, "Proposal"), raw)

    assert sent.provider_id
    assert sent.thread_id
    assert methods(await gmail_calls(sandbox)) == ["users.messages.send"]
    [ann_copy] = (await stored(sandbox, ANN))["messages"]
    assert ann_copy["id"] == sent.provider_id
    assert ann_copy["labelIds"] == ["SENT"]

    ben_batches = await fetch_all(mailbox(gmail_root, ben), sandbox)
    [batch] = ben_batches
    assert batch.cursor == (await stored(sandbox, BEN))["historyId"]
    [received] = batch.messages
    assert received.folder is MailFolder.INBOX
    assert received.message_id == "<proposal-1@crm.test>"
    assert received.subject == "Proposal"
    assert received.sender == Address(ANN, "Ann")
    assert received.to == (Address(BEN),)
    assert received.text == "Plain version\n"
    assert received.html == "<p>Rich <b>version</b></p>\n"
    assert received.is_read is False
    assert {"INBOX", "UNREAD"} <= set(received.labels)
    assert received.date is not None
    [attachment] = received.attachments
    assert (attachment.filename, attachment.content_type) == (
        "quote.pdf",
        "application/pdf",
    )
    assert attachment.data == PDF
    assert attachment.size == len(PDF)

    [ann_batch] = await fetch_all(mailbox(gmail_root, ann), sandbox)
    [own] = ann_batch.messages
    assert own.provider_id == sent.provider_id
    assert own.thread_id == sent.thread_id
    assert own.folder is MailFolder.SENT
    assert own.is_read is True
    assert own.message_id == "<proposal-1@crm.test>"
    assert own.attachments[0].data == PDF


async def test_reply_with_thread_and_references_joins_the_conversation(
    ann: MailAccount, ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    ann_box, ben_box = mailbox(gmail_root, ann), mailbox(gmail_root, ben)
    first = await ann_box.send(
        outgoing(ANN, BEN, "Offer"),
        compose(sender=ANN, to=[BEN], subject="Offer", text="Here it is."),
    )
    [received] = messages_of(await fetch_all(ben_box, sandbox))
    assert received.message_id
    assert received.thread_id

    reply = await ben_box.send(
        outgoing(
            BEN,
            ANN,
            "Re: Offer",
            thread=received.thread_id,
            in_reply_to=received.message_id,
        ),
        compose(
            sender=BEN,
            to=[ANN],
            subject="Re: Offer",
            text="Thanks!",
            in_reply_to=received.message_id,
            references=[received.message_id],
        ),
    )

    # in the replier's mailbox the reply joined the thread it answers ...
    assert reply.thread_id == received.thread_id
    # ... and in the first sender's mailbox it joined the sent message's thread
    by_subject = {m.subject: m for m in messages_of(await fetch_all(ann_box, sandbox))}
    assert by_subject["Re: Offer"].thread_id == first.thread_id
    assert by_subject["Re: Offer"].folder is MailFolder.INBOX
    assert by_subject["Re: Offer"].in_reply_to == received.message_id
    assert by_subject["Offer"].folder is MailFolder.SENT


async def test_reply_to_a_vanished_thread_starts_a_new_one(
    ann: MailAccount, ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    ben_box = mailbox(gmail_root, ben)
    await mailbox(gmail_root, ann).send(
        outgoing(ANN, BEN, "Gone"),
        compose(sender=ANN, to=[BEN], subject="Gone", text="soon deleted"),
    )
    [received] = messages_of(await fetch_all(ben_box, sandbox))
    await sandbox.control(
        "google", "DELETE", f"mailboxes/{BEN}/messages/{received.provider_id}"
    )
    await forget_requests(sandbox)

    reply = await ben_box.send(
        outgoing(BEN, ANN, "Re: Gone", thread=received.thread_id),
        compose(
            sender=BEN,
            to=[ANN],
            subject="Re: Gone",
            text="Answer",
            in_reply_to=received.message_id,
            references=[str(received.message_id)],
        ),
    )

    assert reply.provider_id
    assert reply.thread_id != received.thread_id
    calls = await gmail_calls(sandbox)
    assert [(c["apiMethod"], c["status"]) for c in calls] == [
        ("gmail.users.messages.send", 404),
        ("gmail.users.messages.send", 200),
    ]
    assert [m["id"] for m in (await stored(sandbox, BEN))["messages"]] == [
        reply.provider_id
    ]


async def test_bcc_recipients_get_the_message_without_seeing_the_bcc(
    ann: MailAccount, ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    message = OutgoingMessage(
        sender=Address(ANN, "Ann"),
        to=(Address("carol@example.com"),),
        bcc=(Address(BEN),),
        subject="Quietly",
        text="Between us.",
        message_id="<quietly-1@crm.test>",
    )
    raw = build_message(message)
    assert b"Bcc" not in raw  # the product's bytes leave Bcc out

    await mailbox(gmail_root, ann).send(message, raw)

    [received] = messages_of(await fetch_all(mailbox(gmail_root, ben), sandbox))
    assert received.message_id == "<quietly-1@crm.test>"
    assert received.bcc == ()
    [outside] = (await sandbox.control("google", "GET", "outbox")).json()["messages"]
    assert outside["to"] == ["carol@example.com"]
    assert b"Bcc" not in base64.urlsafe_b64decode(outside["raw"])
    # the sender's own copy keeps it
    [own] = messages_of(await fetch_all(mailbox(gmail_root, ann), sandbox))
    assert own.bcc == (Address(BEN),)


async def test_message_gmail_refuses_raises_validation_failed(
    ann: MailAccount, sandbox: Sandbox, gmail_root: str
):
    no_recipients = b"From: ann@gmail.test\r\nSubject: Nobody\r\n\r\nlost\r\n"

    with pytest.raises(ValidationFailed, match="Recipient address required"):
        await mailbox(gmail_root, ann).send(outgoing(ANN, BEN, "Nobody"), no_recipients)

    assert (await stored(sandbox, ANN))["messages"] == []
    assert (await sandbox.control("google", "GET", "outbox")).json()["messages"] == []


# ---------------------------------------------------------------- full fetch


async def test_full_fetch_reads_bodies_in_one_batch_and_skips_drafts(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    ids = [await deliver(sandbox, BEN, subject=f"Mail {i}") for i in range(3)]
    await deliver(sandbox, BEN, subject="Draft", labelIds=["DRAFT"])
    await deliver(sandbox, BEN, subject="Junk", labelIds=["SPAM"])
    await deliver(sandbox, BEN, subject="Binned", labelIds=["TRASH"])
    await forget_requests(sandbox)

    [batch] = await fetch_all(mailbox(gmail_root, ben), sandbox)

    assert sorted(m.provider_id for m in batch.messages) == sorted(ids)
    assert {m.subject for m in batch.messages} == {"Mail 0", "Mail 1", "Mail 2"}
    calls = await gmail_calls(sandbox)
    # the history id is read before listing; four bodies in one batch request
    assert methods(calls)[:2] == ["users.getProfile", "users.messages.list"]
    assert sorted(methods(calls)[2:]) == ["batch"] + ["users.messages.get"] * 4
    listing = dict(calls[1]["query"])
    assert listing["includeSpamTrash"] == "false"
    assert listing["q"].startswith("after:")
    assert all(
        dict(c["query"])["format"] == "raw"
        for c in calls
        if c["apiMethod"] == "gmail.users.messages.get"
    )


async def test_since_leaves_older_messages_out(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    await deliver(sandbox, BEN, subject="Last month")
    await sandbox.advance_clock(3 * 86_400)
    recent = await deliver(sandbox, BEN, subject="Today")
    since = sandbox_now(sandbox) - dt.timedelta(days=1)

    batches = await collect(mailbox(gmail_root, ben).fetch(None, since=since))

    assert [m.provider_id for m in messages_of(batches)] == [recent]
    [listing] = [
        c
        for c in await gmail_calls(sandbox)
        if c["apiMethod"] == "gmail.users.messages.list"
    ]
    assert dict(listing["query"])["q"] == f"after:{int(since.timestamp())}"


async def test_full_fetch_pages_and_puts_the_cursor_on_the_last_batch(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    ids = [await deliver(sandbox, BEN, subject=f"Mail {i}") for i in range(5)]
    await forget_requests(sandbox)

    batches = await fetch_all(mailbox(gmail_root, ben, page_size=2), sandbox)

    assert [len(b.messages) for b in batches] == [2, 2, 1]
    assert [b.cursor is not None for b in batches] == [False, False, True]
    assert sorted(m.provider_id for m in messages_of(batches)) == sorted(ids)
    listings = [
        c
        for c in await gmail_calls(sandbox)
        if c["apiMethod"] == "gmail.users.messages.list"
    ]
    assert [dict(c["query"])["maxResults"] for c in listings] == ["2"] * 3
    assert [("pageToken" in dict(c["query"])) for c in listings] == [
        False,
        True,
        True,
    ]


async def test_mail_arriving_during_the_listing_comes_with_the_next_fetch(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    for i in range(3):
        await deliver(sandbox, BEN, subject=f"Mail {i}")
    box = mailbox(gmail_root, ben, page_size=2)
    before = (await stored(sandbox, BEN))["historyId"]

    seen: list[MailBatch] = []
    async for batch in box.fetch(None, since=day_ago(sandbox)):
        if not seen:
            late = await deliver(sandbox, BEN, subject="During the listing")
        seen.append(batch)

    assert len(messages_of(seen)) == 3
    assert seen[-1].cursor == before
    [changes] = await fetch_all(box, sandbox, seen[-1].cursor)
    assert [m.provider_id for m in changes.messages] == [late]


# ---------------------------------------------------------------- incremental


async def test_incremental_fetch_returns_only_the_changes(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    kept = await deliver(sandbox, BEN, subject="Kept")
    doomed = await deliver(sandbox, BEN, subject="Doomed")
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    assert first.cursor is not None
    # in Gmail: a new message, one read, one deleted for good
    new = await deliver(sandbox, BEN, subject="New")
    await sandbox.control(
        "google",
        "POST",
        f"mailboxes/{BEN}/messages/{kept}/modify",
        json={"removeLabelIds": ["UNREAD"]},
    )
    await sandbox.control("google", "DELETE", f"mailboxes/{BEN}/messages/{doomed}")
    await forget_requests(sandbox)

    [changes] = await fetch_all(box, sandbox, first.cursor)

    assert [m.provider_id for m in changes.messages] == [new]
    assert changes.messages[0].subject == "New"
    assert changes.messages[0].is_read is False
    assert changes.flags == (FlagChange(kept, True),)
    assert changes.removed == (doomed,)
    assert changes.cursor == (await stored(sandbox, BEN))["historyId"]
    calls = await gmail_calls(sandbox)
    assert methods(calls) == ["users.history.list", "users.messages.get"]
    history = calls[0]["query"]
    assert ["startHistoryId", first.cursor] in history
    assert sorted(v for k, v in history if k == "historyTypes") == [
        "labelAdded",
        "labelRemoved",
        "messageAdded",
        "messageDeleted",
    ]

    # marked unread again in Gmail
    await sandbox.control(
        "google",
        "POST",
        f"mailboxes/{BEN}/messages/{kept}/modify",
        json={"addLabelIds": ["UNREAD"]},
    )
    [again] = await fetch_all(box, sandbox, changes.cursor)
    assert (again.messages, again.removed) == ((), ())
    assert again.flags == (FlagChange(kept, False),)


async def test_incremental_fetch_without_changes_is_one_request(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    await deliver(sandbox, BEN, subject="Old news")
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    await forget_requests(sandbox)

    [nothing] = await fetch_all(box, sandbox, first.cursor)

    assert nothing == MailBatch(cursor=first.cursor)
    assert methods(await gmail_calls(sandbox)) == ["users.history.list"]


async def test_message_added_and_deleted_before_reading_is_not_read(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    fleeting = await deliver(sandbox, BEN, subject="Fleeting")
    await sandbox.control("google", "DELETE", f"mailboxes/{BEN}/messages/{fleeting}")
    await forget_requests(sandbox)

    # same history page: known deleted, so never read
    [changes] = await fetch_all(box, sandbox, first.cursor)
    assert (changes.messages, changes.removed) == ((), (fleeting,))
    assert methods(await gmail_calls(sandbox)) == ["users.history.list"]

    # one record per page: the read finds it gone (404) and skips it
    await forget_requests(sandbox)
    paged = await fetch_all(
        mailbox(gmail_root, ben, page_size=1), sandbox, first.cursor
    )
    assert messages_of(paged) == []
    assert [r for b in paged for r in b.removed] == [fleeting]
    assert paged[-1].cursor == changes.cursor
    assert [
        (c["apiMethod"], c["status"])
        for c in await gmail_calls(sandbox)
        if c["apiMethod"] == "gmail.users.messages.get"
    ] == [("gmail.users.messages.get", 404)]


async def test_incremental_fetch_pages_through_the_history(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    box = mailbox(gmail_root, ben, page_size=2)
    [first] = await fetch_all(box, sandbox)
    ids = [await deliver(sandbox, BEN, subject=f"New {i}") for i in range(3)]
    await forget_requests(sandbox)

    batches = await fetch_all(box, sandbox, first.cursor)

    assert [len(b.messages) for b in batches] == [2, 1]
    assert [b.cursor for b in batches] == [
        None,
        (await stored(sandbox, BEN))["historyId"],
    ]
    assert [m.provider_id for m in messages_of(batches)] == ids
    # two history pages; the first page's two bodies come in one batch
    # (whose parts the sandbox logs before the batch itself)
    assert methods(await gmail_calls(sandbox)) == [
        "users.history.list",
        "users.messages.get",
        "users.messages.get",
        "batch",
        "users.history.list",
        "users.messages.get",
    ]


async def test_expired_history_raises_cursor_expired_and_ids_stay_stable(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    for i in range(3):
        await deliver(sandbox, BEN, subject=f"Mail {i}")
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    await sandbox.control("google", "POST", f"mailboxes/{BEN}/expire-history")
    await forget_requests(sandbox)

    with pytest.raises(CursorExpired):
        await fetch_all(box, sandbox, first.cursor)

    assert [(c["apiMethod"], c["status"]) for c in await gmail_calls(sandbox)] == [
        ("gmail.users.history.list", 404)
    ]
    [again] = await fetch_all(box, sandbox)
    assert sorted(m.provider_id for m in again.messages) == sorted(
        m.provider_id for m in first.messages
    )
    assert again.cursor != first.cursor
    # the new cursor works
    [nothing] = await fetch_all(box, sandbox, again.cursor)
    assert nothing.messages == ()


# ---------------------------------------------------------------- flags, attachments


async def test_mark_read_and_unread_change_the_unread_label(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    mail = await deliver(sandbox, BEN, subject="Flag me")
    box = mailbox(gmail_root, ben)
    await forget_requests(sandbox)

    await box.mark_read(mail, True)
    assert methods(await gmail_calls(sandbox)) == ["users.messages.modify"]
    [stored_mail] = (await stored(sandbox, BEN))["messages"]
    assert "UNREAD" not in stored_mail["labelIds"]

    await box.mark_read(mail, False)
    [stored_mail] = (await stored(sandbox, BEN))["messages"]
    assert "UNREAD" in stored_mail["labelIds"]

    with pytest.raises(ItemNotFound):
        await box.mark_read("0000000000000000", True)


async def test_attachment_returns_the_decoded_bytes(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    mail = await deliver(
        sandbox,
        BEN,
        subject="With a file",
        attachments=[
            {
                "filename": "quote.pdf",
                "mimeType": "application/pdf",
                "data": base64.urlsafe_b64encode(PDF).decode(),
            }
        ],
    )
    # the attachment id as Gmail gives it (format=full)
    token = await ben.token()
    async with httpx.AsyncClient() as http:
        full = await http.get(
            f"{gmail_root}users/me/messages/{mail}",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )
    [part] = [p for p in full.json()["payload"]["parts"] if p["filename"]]
    box = mailbox(gmail_root, ben)

    assert await box.attachment(mail, part["body"]["attachmentId"]) == PDF
    with pytest.raises(ItemNotFound):
        await box.attachment("0000000000000000", part["body"]["attachmentId"])


# ---------------------------------------------------------------- errors


async def test_missing_scopes_raise_missing_scope(
    connect_mailbox: ConnectMailbox,
    tenants: Tenants,
    sandbox: Sandbox,
    gmail_root: str,
):
    reader = await connect_mailbox(
        tenants.alice.ctx,
        ProviderKey.GOOGLE,
        IntegrationKind.GMAIL,
        ANN,
        features=["read_email"],
    )
    sender = await connect_mailbox(
        tenants.bob.ctx,
        ProviderKey.GOOGLE,
        IntegrationKind.GMAIL,
        BEN,
        features=["send_email"],
    )
    assert GMAIL_SEND not in reader.scopes
    assert GMAIL_READONLY not in sender.scopes
    mail = await deliver(sandbox, ANN, subject="Hello")

    with pytest.raises(MissingScope) as sending:
        await mailbox(gmail_root, reader).send(
            outgoing(ANN, BEN, "Hi"),
            compose(sender=ANN, to=[BEN], subject="Hi", text="Hi"),
        )
    assert sending.value.missing == (GMAIL_SEND,)
    with pytest.raises(MissingScope) as marking:
        await mailbox(gmail_root, reader).mark_read(mail, True)
    assert marking.value.missing == (GMAIL_MODIFY,)
    with pytest.raises(MissingScope) as reading:
        await fetch_all(mailbox(gmail_root, sender), sandbox)
    assert reading.value.missing == (GMAIL_READONLY,)
    assert [c["status"] for c in await gmail_calls(sandbox)] == [403, 403, 403]


async def test_refused_token_raises_auth_error_without_the_token(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    await sandbox.add_fault("google", kind="auth_error", api="gmail", user=BEN)
    token = (await ben.token()).reveal()

    with pytest.raises(AuthError) as refused:
        await fetch_all(mailbox(gmail_root, ben), sandbox)

    assert not isinstance(refused.value, MissingScope)
    assert "reconnect" in str(refused.value)
    assert token not in str(refused.value)
    assert token not in repr(refused.value)


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("rate_limit_429", "gmail.users.messages.send"),
        ("user_rate_limit", "gmail.users.messages.send"),
    ],
)
async def test_rate_limits_raise_rate_limited_with_retry_after(
    ann: MailAccount, sandbox: Sandbox, gmail_root: str, kind: str, method: str
):
    await sandbox.add_fault(
        "google", kind=kind, api="gmail", method=method, retry_after_s=7, count=1
    )
    token = (await ann.token()).reveal()

    with pytest.raises(RateLimited) as limited:
        await mailbox(gmail_root, ann).send(
            outgoing(ANN, BEN, "Hi"),
            compose(sender=ANN, to=[BEN], subject="Hi", text="Hi"),
        )

    assert limited.value.retry_after_s == 7
    assert limited.value.retryable
    assert token not in str(limited.value)
    assert (await stored(sandbox, ANN))["messages"] == []


async def test_history_server_error_raises_transient_error(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    await sandbox.add_fault(
        "google", kind="backend_error", method="gmail.users.history.list", count=1
    )

    with pytest.raises(TransientProviderError):
        await fetch_all(box, sandbox, first.cursor)

    [after] = await fetch_all(box, sandbox, first.cursor)
    assert after.cursor == first.cursor


async def test_rate_limited_call_inside_a_batch_is_retried_on_its_own(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    ids = [await deliver(sandbox, BEN, subject=f"Mail {i}") for i in range(3)]
    await sandbox.add_fault(
        "google", kind="rate_limit_429", method="gmail.users.messages.get", count=1
    )
    await forget_requests(sandbox)

    [batch] = await fetch_all(mailbox(gmail_root, ben), sandbox)

    assert sorted(m.provider_id for m in batch.messages) == sorted(ids)
    gets = [
        c["status"]
        for c in await gmail_calls(sandbox)
        if c["apiMethod"] == "gmail.users.messages.get"
    ]
    assert sorted(gets) == [200, 200, 200, 429]


async def test_call_inside_a_batch_still_rate_limited_alone_raises(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    for i in range(3):
        await deliver(sandbox, BEN, subject=f"Mail {i}")
    await sandbox.add_fault(
        "google",
        kind="rate_limit_429",
        method="gmail.users.messages.get",
        retry_after_s=30,
    )

    with pytest.raises(RateLimited) as limited:
        await fetch_all(mailbox(gmail_root, ben), sandbox)

    assert limited.value.retry_after_s == 30


async def test_drafts_stay_out_and_mail_back_from_trash_comes_in(
    ben: MailAccount, sandbox: Sandbox, gmail_root: str
):
    binned = await deliver(sandbox, BEN, subject="Binned", labelIds=["TRASH"])
    box = mailbox(gmail_root, ben)
    [first] = await fetch_all(box, sandbox)
    assert first.messages == ()
    await deliver(sandbox, BEN, subject="Draft", labelIds=["DRAFT"])
    await sandbox.control(
        "google",
        "POST",
        f"mailboxes/{BEN}/messages/{binned}/modify",
        json={"removeLabelIds": ["TRASH"], "addLabelIds": ["INBOX"]},
    )

    [changes] = await fetch_all(box, sandbox, first.cursor)

    assert [m.subject for m in changes.messages] == ["Binned"]
    assert changes.messages[0].provider_id == binned
