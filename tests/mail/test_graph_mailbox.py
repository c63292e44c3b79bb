"""``GraphMailbox`` against the Microsoft Graph sandbox over real HTTP.

Sandbox users are connected as crmflow users through the real OAuth flow
(start, consent page, callback); each mailbox's token comes from
``Integrations.refresh_if_needed``, so moving sandbox time on refreshes it the
way production does. Outcomes are read from what the adapter returns, the
sandbox's mailboxes and its request log; a recording transport shows what the
adapter put on the wire where the log has no bodies or headers.

A connect asks for Mail.ReadWrite by default (the "organize_email" feature):
drafts, large attachments and read flags need it. A consent that leaves it
out (only Mail.Send + Mail.Read) is covered on its own (``sendMail``, no id
back).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import (
    Address,
    IncomingMessage,
    MailBatch,
    MailFolder,
    OutgoingAttachment,
    OutgoingMessage,
)
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import ValidationFailed
from crmflow.providers.base import (
    CursorExpired,
    MissingScope,
    RateLimited,
    TransientProviderError,
)
from crmflow.providers.microsoft import GraphMailbox
from crmflow.sandbox.microsoft.store import MicrosoftStore
from tests.conftest import DbUrls, Tenants
from tests.connections import conftest as connections
from tests.connections.conftest import Flow
from tests.servers.sandbox import Sandbox, query_of

# the connection tests' fixtures: settings pointing at the sandbox, the
# connections service on the sandbox's clock and the OAuth flow
settings = connections.settings
pauses = connections.pauses
integrations = connections.integrations
flow = connections.flow

M = ProviderKey.MICROSOFT
MAIL = IntegrationKind.MAIL
ALICE = "alice@contoso.test"
BOB = "bob@contoso.test"
CAROL = "carol@fabrikam.test"
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    """SQLite only: the adapter never touches the database, which only holds
    the OAuth grants (the connection tests cover both backends)."""
    path = tmp_path / "crmflow.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{path}"
    return DbUrls("sqlite", url, url)


class Recorder(httpx.AsyncBaseTransport):
    """The network, remembering every request the adapter made."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open across the adapter's clients; closed by the fixture."""

    def bodies(self, method: str, path_end: str) -> list[dict[str, Any]]:
        return [
            json.loads(r.content)
            for r in self.sent
            if r.method == method and r.url.path.endswith(path_end)
        ]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    found = Recorder()
    yield found
    await found.network.aclose()


@dataclass
class Account:
    """A sandbox mailbox connected as a crmflow user."""

    ctx: TenantContext
    email: str
    scopes: tuple[str, ...]
    integrations: Integrations
    graph: str
    transport: httpx.AsyncBaseTransport

    async def token(self) -> Secret:
        return await self.integrations.refresh_if_needed(self.ctx, MAIL, M)

    def mailbox(self, *, page_size: int = 50) -> GraphMailbox:
        return GraphMailbox(
            self.graph, self.token, transport=self.transport, page_size=page_size
        )


async def connect(
    flow: Flow,
    recorder: Recorder,
    ctx: TenantContext,
    email: str,
    *,
    read_write: bool = True,
    untick: tuple[str, ...] = (),
) -> Account:
    """Connect ``email`` as the crmflow user ``ctx`` (kind MAIL); without
    ``read_write`` the consent leaves Mail.ReadWrite out."""
    sandbox, service = flow.sandbox, flow.integrations
    await sandbox.add_user("microsoft", email)
    started = await service.start_connect(ctx, MAIL, M)
    url = started.authorization_url
    if not read_write:
        untick = (*untick, "Mail.ReadWrite")
    back = await sandbox.consent(url, email, untick=untick)
    q = query_of(back)
    result = await service.complete_connect(
        ctx, M, state=q["state"], code=q.get("code"), error=q.get("error")
    )
    return Account(
        ctx,
        email,
        tuple(result.integration.scopes),
        service,
        sandbox.microsoft_url + "/v1.0",
        recorder,
    )


@pytest.fixture
async def alice(flow: Flow, recorder: Recorder, tenants: Tenants) -> Account:
    return await connect(flow, recorder, tenants.alice.ctx, ALICE)


@pytest.fixture
async def bob(flow: Flow, recorder: Recorder, tenants: Tenants) -> Account:
    return await connect(flow, recorder, tenants.amy.ctx, BOB)


def outgoing(
    sender: str,
    to: str,
    subject: str,
    *,
    html: str | None = None,
    attachments: tuple[OutgoingAttachment, ...] = (),
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
) -> OutgoingMessage:
    token = random.Random(subject).getrandbits(64)
    return OutgoingMessage(
        sender=Address(sender, "Sender"),
        to=(Address(to, "Recipient"),),
        subject=subject,
        text=f"{subject} (text)",
        html=html,
        message_id=f"<{token:016x}@crm.test>",
        attachments=attachments,
        in_reply_to=in_reply_to,
        references=references,
    )


def rfc5322(message: OutgoingMessage) -> bytes:
    """The message's RFC 5322 form (the port hands it over; Graph builds its own)."""
    msg = EmailMessage()
    msg["From"] = message.sender.email
    msg["To"] = ", ".join(a.email for a in message.to)
    msg["Subject"] = message.subject
    msg["Message-ID"] = message.message_id
    msg.set_content(message.text)
    return msg.as_bytes()


async def send(account: Account, message: OutgoingMessage) -> Any:
    return await account.mailbox().send(message, rfc5322(message))


async def fetch_all(
    mailbox: GraphMailbox, cursor: str | None, since: dt.datetime
) -> list[MailBatch]:
    return [batch async for batch in mailbox.fetch(cursor, since=since)]


def messages_of(batches: list[MailBatch]) -> list[IncomingMessage]:
    return [m for b in batches for m in b.messages]


def now(sandbox: Sandbox) -> dt.datetime:
    return sandbox.state.clock.now()


def drafts(sandbox: Sandbox, email: str) -> list[Any]:
    with sandbox.state.lock:
        box = sandbox.state.extension(MicrosoftStore).mail(email)
        return box.in_folder(box.folder("drafts").id)


async def deliver(sandbox: Sandbox, email: str, subject: str) -> str:
    """A message from outside arrives in ``email``'s inbox; its id."""
    response = await sandbox.control(
        "microsoft",
        "POST",
        f"users/{email}/messages",
        json={
            "message": {
                "subject": subject,
                "body": {"contentType": "text", "content": subject},
            },
            "from": "someone@external.example",
        },
    )
    return str(response.json()["id"])


async def api_methods(sandbox: Sandbox, since_seq: int = 0) -> list[str]:
    return [e["apiMethod"] for e in await sandbox.requests() if e["seq"] > since_seq]


async def last_seq(sandbox: Sandbox) -> int:
    entries = await sandbox.requests()
    return entries[-1]["seq"] if entries else 0


# ---------------------------------------------------------------- sending


async def test_send_html_with_attachment_reaches_inbox_and_sent_items(
    alice, bob, sandbox, recorder
):
    data = b"quarterly numbers\x00\x01\xff" * 100
    message = outgoing(
        ALICE,
        BOB,
        "Quarterly numbers",
        html="<p>See the <b>numbers</b>.</p>",
        attachments=(OutgoingAttachment("numbers.bin", "application/pdf", data),),
    )
    sent = await send(alice, message)
    assert sent.provider_id
    assert sent.thread_id

    # the draft went out with the CRM's Message-ID and the HTML body
    (draft,) = recorder.bodies("POST", "/me/messages")
    assert draft["internetMessageId"] == message.message_id
    assert draft["body"] == {"contentType": "HTML", "content": message.html}
    assert draft["toRecipients"] == [
        {"emailAddress": {"address": BOB, "name": "Recipient"}}
    ]
    assert drafts(sandbox, ALICE) == []  # sent: nothing left in Drafts
    methods = await api_methods(sandbox)
    assert methods[-4:] == [
        "graph.messages.create",
        "graph.attachments.create",
        "graph.messages.send",
        "graph.messages.get",
    ]

    since = now(sandbox) - HOUR
    batches = await fetch_all(bob.mailbox(), None, since)
    (received,) = messages_of(batches)
    assert received.folder is MailFolder.INBOX
    assert received.subject == "Quarterly numbers"
    assert received.html == message.html
    assert received.text is None
    assert received.sender is not None
    assert received.sender.email == ALICE
    assert received.to == (Address(BOB, "Recipient"),)
    assert received.thread_id
    assert received.is_read is False
    assert received.date is not None
    assert abs(received.date - now(sandbox)) < HOUR
    (attachment,) = received.attachments
    assert attachment.filename == "numbers.bin"
    assert attachment.content_type == "application/pdf"
    assert attachment.size == len(data)
    assert attachment.inline is False
    assert attachment.provider_attachment_id
    assert attachment.data == data  # the listing carries contentBytes
    fetched = await bob.mailbox().attachment(
        received.provider_id, attachment.provider_attachment_id
    )
    assert fetched == data
    assert batches[-1].cursor

    # Alice's Sent Items holds it under the id send() returned
    (copy,) = messages_of(await fetch_all(alice.mailbox(), None, since))
    assert copy.folder is MailFolder.SENT
    assert copy.provider_id == sent.provider_id
    assert copy.thread_id == sent.thread_id
    assert copy.subject == "Quarterly numbers"
    assert copy.to == (Address(BOB, "Recipient"),)
    assert copy.attachments[0].size == len(data)


async def test_large_attachment_goes_through_an_upload_session(
    alice, bob, sandbox, recorder
):
    data = random.Random(4).randbytes(4 * 1024 * 1024)
    message = outgoing(
        ALICE,
        BOB,
        "The big file",
        attachments=(OutgoingAttachment("big.bin", "application/octet-stream", data),),
    )
    before = await last_seq(sandbox)
    await send(alice, message)

    methods = await api_methods(sandbox, before)
    assert methods.count("graph.attachments.createUploadSession") == 1
    assert "graph.attachments.create" not in methods
    puts = [m for m in methods if m == "outlook.attachmentSession.put"]
    assert len(puts) >= 2
    # the upload URL gets byte ranges, and never the bearer token
    uploads = [r for r in recorder.sent if r.method == "PUT"]
    assert len(uploads) == len(puts)
    assert all("authorization" not in r.headers for r in uploads)
    ranges = [r.headers["content-range"] for r in uploads]
    assert ranges[0] == f"bytes 0-{10 * 320 * 1024 - 1}/{len(data)}"
    assert ranges[-1].endswith(f"-{len(data) - 1}/{len(data)}")
    assert all(len(r.content) % (320 * 1024) == 0 for r in uploads[:-1]), (
        "every chunk but the last is a multiple of 320 KiB"
    )

    (received,) = messages_of(await fetch_all(bob.mailbox(), None, now(sandbox) - HOUR))
    (attachment,) = received.attachments
    assert attachment.size == len(data)
    assert attachment.provider_attachment_id
    fetched = await bob.mailbox().attachment(
        received.provider_id, attachment.provider_attachment_id
    )
    assert fetched == data


async def test_reply_carries_message_id_and_references(alice, bob, recorder):
    original = "<first@crm.test>"
    message = outgoing(
        ALICE,
        BOB,
        "Re: Quarterly numbers",
        in_reply_to=original,
        references=("<root@crm.test>", original),
    )
    await send(alice, message)
    (draft,) = recorder.bodies("POST", "/me/messages")
    assert draft["internetMessageId"] == message.message_id
    assert draft["singleValueExtendedProperties"] == [
        {"id": "String 0x1042", "value": original},
        {"id": "String 0x1039", "value": f"<root@crm.test> {original}"},
    ]


async def test_header_with_line_break_never_reaches_graph(alice, sandbox):
    message = outgoing(ALICE, BOB, "Hello\r\nBcc: everyone@contoso.test")
    before = await last_seq(sandbox)
    with pytest.raises(ValidationFailed, match="line breaks"):
        message.check()
    with pytest.raises(ValidationFailed, match="line breaks"):
        # no RFC 5322 form can be built either: the caller checks first
        await alice.mailbox().send(message, b"")
    assert await api_methods(sandbox, before) == []


async def test_default_grant_sends_through_send_mail(flow, recorder, tenants, sandbox):
    """Mail.Send + Mail.Read (the connect's default): no drafts, so sendMail."""
    carol = await connect(flow, recorder, tenants.bob.ctx, CAROL, read_write=False)
    bob = await connect(flow, recorder, tenants.amy.ctx, BOB)
    assert "Mail.ReadWrite" not in carol.scopes
    data = b"small"
    message = outgoing(
        CAROL,
        BOB,
        "From the default grant",
        attachments=(OutgoingAttachment("small.txt", "text/plain", data),),
    )
    before = await last_seq(sandbox)
    sent = await send(carol, message)
    assert sent.provider_id is None  # sendMail returns no id
    assert await api_methods(sandbox, before) == [
        "graph.messages.create",  # 403: no Mail.ReadWrite
        "graph.mail.send",
    ]
    (received,) = messages_of(await fetch_all(bob.mailbox(), None, now(sandbox) - HOUR))
    assert received.subject == "From the default grant"
    assert received.attachments[0].data == data

    # what the default grant cannot do
    big = outgoing(
        CAROL,
        BOB,
        "Too big without drafts",
        attachments=(OutgoingAttachment("big.bin", "x/y", b"\0" * (3 * 1024 * 1024)),),
    )
    with pytest.raises(MissingScope) as too_big:
        await send(carol, big)
    assert too_big.value.missing == ("Mail.ReadWrite",)
    with pytest.raises(MissingScope) as no_flags:
        await carol.mailbox().mark_read(received.provider_id, True)
    assert no_flags.value.missing == ("Mail.ReadWrite",)
    assert [
        m.subject
        for m in messages_of(await fetch_all(bob.mailbox(), None, now(sandbox) - HOUR))
    ] == ["From the default grant"]


async def test_missing_mail_send_scope(flow, recorder, tenants, sandbox):
    bob = await connect(flow, recorder, tenants.amy.ctx, BOB)
    # without Mail.ReadWrite: the draft is refused, then sendMail
    reader = await connect(
        flow, recorder, tenants.bob.ctx, CAROL, read_write=False, untick=("Mail.Send",)
    )
    assert "Mail.Send" not in reader.scopes
    with pytest.raises(MissingScope) as refused:
        await send(reader, outgoing(CAROL, BOB, "Not allowed"))
    assert refused.value.missing == ("Mail.Send",)

    # with Mail.ReadWrite: the draft is made, /send refused, the draft deleted
    writer = await connect(
        flow, recorder, tenants.alice.ctx, ALICE, untick=("Mail.Send",)
    )
    assert "Mail.Send" not in writer.scopes
    before = await last_seq(sandbox)
    with pytest.raises(MissingScope) as refused_again:
        await send(writer, outgoing(ALICE, BOB, "Not allowed either"))
    assert refused_again.value.missing == ("Mail.Send",)
    assert await api_methods(sandbox, before) == [
        "graph.messages.create",
        "graph.messages.send",
        "graph.messages.delete",
    ]
    assert drafts(sandbox, ALICE) == []
    assert messages_of(await fetch_all(bob.mailbox(), None, now(sandbox) - HOUR)) == []


async def test_throttled_calls_raise_rate_limited(alice, sandbox):
    await sandbox.add_fault(
        "microsoft",
        kind="graph_throttled",
        user=ALICE,
        method="graph.messages.delta",
        retry_after_s=2.5,
        count=1,
    )
    with pytest.raises(RateLimited) as throttled:
        await fetch_all(alice.mailbox(), None, now(sandbox) - HOUR)
    assert throttled.value.retry_after_s == 2.5

    await sandbox.add_fault(
        "microsoft",
        kind="graph_throttled",
        user=ALICE,
        method="graph.messages.create",
        retry_after_s=1,
        count=1,
    )
    before = await last_seq(sandbox)
    with pytest.raises(RateLimited) as again:
        await send(alice, outgoing(ALICE, BOB, "Throttled"))
    assert again.value.retry_after_s == 1.0
    assert await api_methods(sandbox, before) == ["graph.messages.create"]


async def test_failed_send_deletes_the_draft_unless_it_may_have_gone_out(
    alice, bob, sandbox
):
    small = (OutgoingAttachment("a.txt", "text/plain", b"a"),)
    await sandbox.add_fault(
        "microsoft",
        kind="graph_throttled",
        user=ALICE,
        method="graph.attachments.create",
        retry_after_s=3,
        count=1,
    )
    with pytest.raises(RateLimited):
        await send(alice, outgoing(ALICE, BOB, "Refused", attachments=small))
    assert drafts(sandbox, ALICE) == []

    # a 5xx on /send: the message may have been sent, the draft stays
    await sandbox.add_fault(
        "microsoft",
        kind="backend_error",
        user=ALICE,
        method="graph.messages.send",
        count=1,
    )
    with pytest.raises(TransientProviderError):
        await send(alice, outgoing(ALICE, BOB, "Unknown fate"))
    assert [d.subject for d in drafts(sandbox, ALICE)] == ["Unknown fate"]
    assert messages_of(await fetch_all(bob.mailbox(), None, now(sandbox) - HOUR)) == []


async def test_graph_400_is_validation_failed_with_graphs_message():
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "error": {
                    "code": "ErrorInvalidRecipients",
                    "message": "At least one recipient is not valid.",
                }
            },
        )

    async def token() -> Secret:
        return Secret("t")

    mailbox = GraphMailbox(
        "https://graph.test/v1.0", token, transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(ValidationFailed, match="At least one recipient is not valid"):
        await mailbox.send(outgoing(ALICE, BOB, "Refused"), b"")


# ---------------------------------------------------------------- fetching


async def test_incremental_fetch_returns_only_changes(alice, bob, sandbox):
    since = now(sandbox) - HOUR
    await send(alice, outgoing(ALICE, BOB, "First"))
    inbox = bob.mailbox()
    batches = await fetch_all(inbox, None, since)
    (first,) = messages_of(batches)
    cursor = batches[-1].cursor
    assert cursor

    # nothing happened: nothing comes back
    quiet = await fetch_all(inbox, cursor, since)
    assert messages_of(quiet) == []
    assert [b.removed for b in quiet] == [()]
    cursor = quiet[-1].cursor
    assert cursor

    # a new message, in Bob's inbox and in Alice's Sent Items
    outbox = alice.mailbox()
    sent_cursor = (await fetch_all(outbox, None, since))[-1].cursor
    sent = await send(alice, outgoing(ALICE, BOB, "Second"))
    batches = await fetch_all(inbox, cursor, since)
    (second,) = messages_of(batches)
    assert second.subject == "Second"
    cursor = batches[-1].cursor
    assert cursor
    (copy,) = messages_of(await fetch_all(outbox, sent_cursor, since))
    assert (copy.folder, copy.provider_id) == (MailFolder.SENT, sent.provider_id)

    # a read flag
    await inbox.mark_read(first.provider_id, True)
    with sandbox.state.lock:
        box = sandbox.state.extension(MicrosoftStore).mail(BOB)
        assert box.message(first.provider_id).is_read is True
    batches = await fetch_all(inbox, cursor, since)
    (changed,) = messages_of(batches)
    assert (changed.provider_id, changed.is_read) == (first.provider_id, True)
    cursor = batches[-1].cursor
    assert cursor

    # a deletion in Outlook (to Deleted Items)
    async with httpx.AsyncClient() as http:
        token = await bob.token()
        response = await http.delete(
            f"{bob.graph}/me/messages/{quote(second.provider_id, safe='')}",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )
    assert response.status_code == 204, response.text
    batches = await fetch_all(inbox, cursor, since)
    assert messages_of(batches) == []
    assert [r for b in batches for r in b.removed] == [second.provider_id]


async def test_expired_delta_token_raises_cursor_expired(alice, bob, sandbox):
    since = now(sandbox) - HOUR
    await send(alice, outgoing(ALICE, BOB, "Kept"))
    inbox = bob.mailbox()
    first = await fetch_all(inbox, None, since)
    cursor = first[-1].cursor
    assert cursor

    # the control API forgets every token of the mailbox
    await sandbox.control("microsoft", "POST", "delta/expire", json={"email": BOB})
    with pytest.raises(CursorExpired):
        await fetch_all(inbox, cursor, since)
    again = await fetch_all(inbox, None, since)
    assert [m.provider_id for m in messages_of(again)] == [
        m.provider_id for m in messages_of(first)
    ]
    cursor = again[-1].cursor
    assert cursor

    # tokens die of age, too (the sandbox's clock moves on; the access token
    # expires on the way and is refreshed)
    await sandbox.control(
        "microsoft", "PATCH", "config", json={"delta_token_max_age_s": 3600}
    )
    try:
        await sandbox.advance_clock(2 * 3600)
        with pytest.raises(CursorExpired):
            await fetch_all(inbox, cursor, since)
        third = await fetch_all(inbox, None, since)
        assert [m.provider_id for m in messages_of(third)] == [
            m.provider_id for m in messages_of(first)
        ]
    finally:
        await sandbox.control(
            "microsoft", "PATCH", "config", json={"delta_token_max_age_s": None}
        )

    # a cursor of another adapter or host is refused the same way
    with pytest.raises(CursorExpired):
        await fetch_all(inbox, '{"inbox": "https://elsewhere.test/x"}', since)


async def test_since_leaves_older_messages_out(bob, sandbox):
    await deliver(sandbox, BOB, "Old news")
    await sandbox.advance_clock(3 * 24 * 3600)
    await deliver(sandbox, BOB, "Fresh news")
    since = now(sandbox) - dt.timedelta(days=1)
    before = await last_seq(sandbox)
    batches = await fetch_all(bob.mailbox(), None, since)
    assert [m.subject for m in messages_of(batches)] == ["Fresh news"]
    everything = await fetch_all(bob.mailbox(), None, since - dt.timedelta(days=7))
    assert sorted(m.subject for m in messages_of(everything)) == [
        "Fresh news",
        "Old news",
    ]
    first_delta = next(
        e for e in await sandbox.requests("graph.messages.delta") if e["seq"] > before
    )
    query = dict(first_delta["query"])
    assert query["$filter"] == "receivedDateTime ge " + since.astimezone(
        dt.UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_pages_come_as_batches_with_the_cursor_on_the_last(bob, sandbox):
    subjects = [f"Message {n}" for n in range(5)]
    for subject in subjects:
        await deliver(sandbox, BOB, subject)
    before = await last_seq(sandbox)
    batches = await fetch_all(bob.mailbox(page_size=2), None, now(sandbox) - HOUR)

    # inbox: 2 + 2 + 1, then the empty Sent Items page with the cursor
    assert [len(b.messages) for b in batches] == [2, 2, 1, 0]
    assert [b.cursor is not None for b in batches] == [False, False, False, True]
    assert sorted(m.subject for m in messages_of(batches)) == subjects
    assert len({m.provider_id for m in messages_of(batches)}) == 5
    deltas = [
        e for e in await sandbox.requests("graph.messages.delta") if e["seq"] > before
    ]
    assert len(deltas) == 4
    assert all(e["status"] == 200 for e in deltas)

    # the cursor carries on from both folders
    cursor = batches[-1].cursor
    assert cursor
    await deliver(sandbox, BOB, "Message 5")
    later = await fetch_all(bob.mailbox(page_size=2), cursor, now(sandbox) - HOUR)
    assert [m.subject for m in messages_of(later)] == ["Message 5"]
