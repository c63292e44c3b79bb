"""The email service over IMAP + SMTP: a real Dovecot and an aiosmtpd server
that delivers into it, on SQLite and PostgreSQL.

Send via SMTP -> the message arrives via IMAP import; the Sent copy is the
same row; replies thread; a UIDVALIDITY reset resyncs without duplicates;
broken mail in the wild is stored, never lost; a changed password is a failed
sync that says what to do.
"""

from __future__ import annotations

import uuid

import pytest

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.connections.credentials import connect_imap
from crmflow.domain.mail import Address, EmailAccountInfo, OutgoingAttachment
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.mail.html import sanitize_html
from crmflow.providers.imap import MailServer, Security
from crmflow.services.mail import Draft, MailService
from crmflow.store.integrations import IntegrationStore
from tests.servers.dovecot import DovecotServer
from tests.servers.smtp_delivery import DeliveryServer

pytestmark = pytest.mark.servers

ATTACHMENT = b"%PDF-1.7\n" + bytes(range(256)) * 16


@pytest.fixture
def settings(settings: Settings, dovecot: DovecotServer) -> Settings:
    """The email tests' settings, trusting the test servers' certificate."""
    return settings.model_copy(update={"extra_ca_file": dovecot.cert.cert_file})


class Mailboxes:
    """Dovecot accounts connected as crmflow mail integrations."""

    def __init__(
        self,
        services: Services,
        mail: MailService,
        dovecot: DovecotServer,
        delivery: DeliveryServer,
    ) -> None:
        self.services, self.mail = services, mail
        self.dovecot, self.delivery = dovecot, delivery

    def new_address(self) -> tuple[str, str]:
        address = f"{uuid.uuid4().hex[:10]}@example.test"
        password = f"pässwört-{uuid.uuid4()}"
        self.dovecot.add_users({address: password})
        return address, password

    async def connect(self, ctx: TenantContext) -> EmailAccountInfo:
        address, password = self.new_address()
        await connect_imap(
            self.services,
            ctx,
            email=address,
            password=Secret(password),
            imap_server=MailServer(
                self.dovecot.host, self.dovecot.imaps_port, Security.TLS
            ),
            smtp_server=MailServer(
                self.delivery.host, self.delivery.starttls_port, Security.STARTTLS
            ),
        )
        return next(
            a for a in await self.mail.accounts(ctx) if a.email_address == address
        )

    async def store_stale_password(
        self, ctx: TenantContext, account: EmailAccountInfo, stale: str
    ) -> None:
        """What crmflow holds becomes wrong (the password changed at the provider)."""
        async with self.services.db.tenant(ctx) as session:
            store = IntegrationStore(session, self.services.vault)
            info = await store.get(account.integration_id)  # type: ignore[arg-type]
            await store.save_credentials(
                info.provider,
                info.kind,
                email=account.email_address,
                username=str(info.settings["username"]),
                password=Secret(stale),
                settings={k: v for k, v in info.settings.items() if k != "username"},
            )


@pytest.fixture
def boxes(
    services: Services, mail: MailService, dovecot: DovecotServer, delivery
) -> Mailboxes:
    return Mailboxes(services, mail, dovecot, delivery)


async def test_smtp_send_arrives_through_imap_import_and_replies_thread(
    boxes: Mailboxes, mail: MailService, tenants
) -> None:
    alice, bob = tenants.alice.ctx, tenants.bob.ctx
    a = await boxes.connect(alice)
    b = await boxes.connect(bob)
    sent = await mail.send(
        alice,
        Draft(
            a.id,
            to=(Address(b.email_address, "Bob"),),
            bcc=(Address(a.email_address),),
            subject="Offer Grüße",
            text="Please find the offer attached.",
            attachments=(
                OutgoingAttachment("offer.pdf", "application/pdf", ATTACHMENT),
            ),
        ),
    )
    assert sent.summary.folder.value == "sent"

    result = await mail.sync(bob, b.id)
    assert (result.imported, result.error) == (1, None)
    (received,) = (await mail.messages(bob))[0]
    assert received.subject == "Offer Grüße"
    assert received.sender is not None
    assert received.sender.email == a.email_address
    detail = await mail.message(bob, received.id)
    assert detail.bcc == ()  # Bcc is envelope-only
    download = await mail.attachment(bob, detail.attachments[0].id)
    assert b"".join(download.chunks) == ATTACHMENT

    # alice's own sync finds the Sent copy and the Bcc copy: one row each
    # message, the sent one updated in place
    first = await mail.sync(alice, a.id)
    assert first.error is None
    page, total = await mail.messages(alice)
    assert [m.id for m in page if m.folder.value == "sent"] == [sent.summary.id]
    assert total == 1  # the Bcc copy has the same Message-ID: stored once

    reply = await mail.send(
        bob,
        Draft(
            b.id,
            to=(Address(a.email_address),),
            subject="",
            text="Thanks, looks good.",
            reply_to=received.id,
        ),
    )
    assert reply.summary.subject == "Re: Offer Grüße"
    await mail.sync(alice, a.id)
    thread = await mail.thread(alice, sent.summary.thread_id or "")
    assert [m.summary.subject for m in thread] == ["Offer Grüße", "Re: Offer Grüße"]
    assert thread[1].in_reply_to == sent.message_id


async def test_uidvalidity_reset_resyncs_without_duplicates(
    boxes: Mailboxes, mail: MailService, dovecot: DovecotServer, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await boxes.connect(ctx)
    for n in range(3):
        dovecot.deliver(
            account.email_address,
            "someone@example.org",
            f"From: someone@example.org\r\nTo: {account.email_address}\r\n"
            f"Subject: note {n}\r\nMessage-ID: <n{n}@example.org>\r\n\r\nbody {n}\r\n".encode(),
        )
    # one without Message-ID: found again by its content
    dovecot.deliver(
        account.email_address,
        "old@example.org",
        b"From: old@example.org\r\nSubject: no id\r\n"
        b"Date: Mon, 16 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n",
    )
    assert (await mail.sync(ctx, account.id)).imported == 4
    dovecot.doveadm(
        "mailbox",
        "update",
        "-u",
        account.email_address,
        "--uid-validity",
        "777",
        "INBOX",
    )
    result = await mail.sync(ctx, account.id)
    assert result.resynced
    assert (result.imported, result.error) == (0, None)
    assert (await mail.messages(ctx))[1] == 4
    # and the new cursor carries on
    dovecot.deliver(
        account.email_address,
        "someone@example.org",
        b"From: someone@example.org\r\nSubject: after\r\nMessage-ID: <after@x>\r\n\r\nx\r\n",
    )
    again = await mail.sync(ctx, account.id)
    assert (again.imported, again.resynced) == (1, False)


BROKEN = {
    "bad-boundary": (
        b"From: a@example.org\r\nSubject: broken multipart\r\nMessage-ID: <b1@x>\r\n"
        b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
        b"Content-Type: text/plain\r\n\r\nstill readable\r\n"
    ),
    "latin1": (
        b"From: =?iso-8859-1?q?J=F6rg?= <j@example.org>\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
        b"Message-ID: <b2@x>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
        b"Sch\xf6ne Gr\xfc\xdfe\r\n"
    ),
    "unknown-charset": (
        b"From: x@example.org\r\nSubject: odd charset\r\nMessage-ID: <b3@x>\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\ncaf\xc3\xa9\r\n"
    ),
    "script": (
        b"From: evil@example.org\r\nSubject: click me\r\nMessage-ID: <b4@x>\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p onclick="steal()">hi<script>alert(1)</script>'
        b'<img src="https://tracker.example/p.gif"><a href="javascript:alert(2)">x</a></p>\r\n'
    ),
}


async def test_malformed_charsets_and_script_mail_is_stored_and_never_runs(
    boxes: Mailboxes, mail: MailService, dovecot: DovecotServer, tenants
) -> None:
    ctx = tenants.alice.ctx
    account = await boxes.connect(ctx)
    for raw in BROKEN.values():
        dovecot.deliver(account.email_address, "x@example.org", raw)
    result = await mail.sync(ctx, account.id)
    assert (result.imported, result.error) == (len(BROKEN), None)
    page, _ = await mail.messages(ctx)
    by_subject = {m.subject: m for m in page}
    assert set(by_subject) == {"broken multipart", "Grüße", "odd charset", "click me"}
    latin = await mail.message(ctx, by_subject["Grüße"].id)
    assert latin.body_text is not None
    assert "Schöne Grüße" in latin.body_text
    assert latin.summary.sender == Address("j@example.org", "Jörg")
    assert "café" in (
        (await mail.message(ctx, by_subject["odd charset"].id)).body_text or ""
    )
    assert "still readable" in (
        (await mail.message(ctx, by_subject["broken multipart"].id)).body_text or ""
    )
    evil = await mail.message(ctx, by_subject["click me"].id)
    shown = sanitize_html(evil.body_html or "")
    for needle in ("<script", "onclick", "javascript:", "tracker.example"):
        assert needle not in shown.html
    assert shown.blocked_images == 1
    assert [m.subject for m in await mail.search(ctx, "schone")] == ["Grüße"]


async def test_changed_password_fails_the_sync_with_words_to_act_on(
    boxes: Mailboxes, mail: MailService, services: Services, tenants
) -> None:
    """The password changed at the provider: what crmflow holds is refused."""
    ctx = tenants.alice.ctx
    account = await boxes.connect(ctx)
    stale = "stale-pässword-1234"
    await boxes.store_stale_password(ctx, account, stale)
    result = await mail.sync(ctx, account.id)
    assert result.error is not None
    assert "Connect it again" in result.error
    assert stale not in result.error
    (stored,) = [a for a in await mail.accounts(ctx) if a.id == account.id]
    assert stored.status.value == "error"
    assert stored.last_error == result.error
