"""``ImapMailbox`` against a real Dovecot and an aiosmtpd server that delivers
into it (``tests/servers/smtp_delivery.py``).

Every test gets mailboxes of its own (accounts added to the running Dovecot,
with non-ASCII passwords, so every sign-in proves UTF-8 safe IMAP and SMTP
AUTH), and checks outcomes on the servers: what Dovecot holds and logs (sign-ins,
``Logged out``), the flags a separate IMAP connection sees, the process title
of an idling session, and the envelopes the SMTP server accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.utils
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import DELETED, SEEN, IMAPClient  # type: ignore[import-untyped]

from crmflow.domain.mail import (
    Address,
    FlagChange,
    IncomingMessage,
    MailBatch,
    MailFolder,
    MailProvider,
    OutgoingAttachment,
    OutgoingMessage,
)
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.mail.compose import build_message
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemNotFound,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.imap import ImapMailbox, MailServer, Security
from tests.servers.dovecot import DovecotServer
from tests.servers.net import free_port
from tests.servers.smtp_delivery import (
    MAX_MESSAGE_BYTES,
    DeliveryServer,
    running_delivery_server,
)

pytestmark = pytest.mark.servers

#: long enough for a loaded machine, short enough to fail fast, in seconds
WAIT_S = 10.0
#: accounts added to Dovecot at a time
ACCOUNTS_PER_BATCH = 20
#: a PDF-like attachment with every byte value, to prove a binary round trip
ATTACHMENT = b"%PDF-1.7\n" + bytes(range(256)) * 8


@dataclass(frozen=True)
class Account:
    address: str
    password: str


@dataclass(frozen=True)
class Env:
    """The servers, and how tests reach them."""

    dovecot: DovecotServer
    delivery: DeliveryServer
    #: accounts made in advance (Dovecot needs up to a second to see new ones)
    spare: list[Account]

    def account(self) -> Account:
        """A new, empty mailbox on Dovecot."""
        if not self.spare:
            batch = [
                Account(
                    f"{uuid.uuid4().hex[:10]}@example.test", f"pässwört-{uuid.uuid4()}"
                )
                for _ in range(ACCOUNTS_PER_BATCH)
            ]
            self.dovecot.add_users({a.address: a.password for a in batch})
            self.spare.extend(batch)
        return self.spare.pop()

    def mailbox(
        self,
        account: Account,
        *,
        imap: Security = Security.TLS,
        smtp: Security = Security.STARTTLS,
        password: str | None = None,
        page_size: int = 200,
    ) -> ImapMailbox:
        imap_port = (
            self.dovecot.imaps_port if imap is Security.TLS else self.dovecot.imap_port
        )
        smtp_port = (
            self.delivery.tls_port
            if smtp is Security.TLS
            else self.delivery.starttls_port
        )
        return ImapMailbox(
            MailServer(self.dovecot.host, imap_port, imap),
            MailServer(self.delivery.host, smtp_port, smtp),
            account.address,
            Secret(account.password if password is None else password),
            address=account.address,
            extra_ca_file=self.dovecot.cert.cert_file,
            timeout_s=WAIT_S,
            page_size=page_size,
        )

    @contextlib.contextmanager
    def imap(self, account: Account) -> Iterator[IMAPClient]:
        """A separate IMAP connection of the test (not the adapter's)."""
        ctx = ssl.create_default_context(cafile=str(self.dovecot.cert.cert_file))
        client = IMAPClient(
            self.dovecot.host, port=self.dovecot.imaps_port, ssl_context=ctx
        )
        try:
            client.plain_login(account.address, account.password)
            yield client
        finally:
            client.logout()

    def deliver(self, account: Account, subject: str) -> str:
        """Deliver a message into ``account``'s INBOX (as an MTA would);
        returns its Message-ID."""
        message_id = f"<{uuid.uuid4().hex}@sender.example.org>"
        raw = (
            f"From: Sam Sender <sam@sender.example.org>\n"
            f"To: {account.address}\n"
            f"Subject: {subject}\n"
            f"Message-ID: {message_id}\n"
            f"Date: {email.utils.format_datetime(dt.datetime.now(dt.UTC))}\n"
            "\n"
            f"Text of {subject}.\n"
        ).encode()
        self.dovecot.deliver(account.address, "sam@sender.example.org", raw)
        return message_id

    def sessions_logged_out(self, account: Account) -> int:
        return sum(
            1
            for line in self.dovecot.log().splitlines()
            if f"imap({account.address})" in line and "Disconnected: Logged out" in line
        )

    def sessions_ended(self, account: Account) -> int:
        """Sessions that ended, logged out or not."""
        return sum(
            1
            for line in self.dovecot.log().splitlines()
            if f"imap({account.address})" in line and ": Disconnected" in line
        )

    def logins(self, account: Account) -> int:
        return self.dovecot.log().count(f"Login: user=<{account.address}>")


@pytest.fixture(scope="module")
def delivery(dovecot: DovecotServer) -> Iterator[DeliveryServer]:
    with running_delivery_server(dovecot) as server:
        yield server


@pytest.fixture(scope="module")
def spare_accounts() -> list[Account]:
    return []


@pytest.fixture
def env(
    dovecot: DovecotServer, delivery: DeliveryServer, spare_accounts: list[Account]
) -> Env:
    return Env(dovecot, delivery, spare_accounts)


def outgoing(
    sender: Account,
    to: Sequence[Account | str],
    *,
    cc: Sequence[Account] = (),
    bcc: Sequence[Account] = (),
    subject: str = "Quarterly numbers",
    attachments: tuple[OutgoingAttachment, ...] = (),
) -> OutgoingMessage:
    def address(who: Account | str) -> Address:
        return Address(who if isinstance(who, str) else who.address)

    return OutgoingMessage(
        sender=Address(sender.address, "Alice Example"),
        to=tuple(address(a) for a in to),
        cc=tuple(address(a) for a in cc),
        bcc=tuple(address(a) for a in bcc),
        subject=subject,
        text="Hello,\nthe numbers are attached.\n",
        message_id=f"<{uuid.uuid4().hex}@crmflow.test>",
        attachments=attachments,
    )


async def fetch_all(
    mailbox: ImapMailbox, cursor: str | None = None, *, days: int = 7
) -> list[MailBatch]:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    return [batch async for batch in mailbox.fetch(cursor, since=since)]


def messages_of(batches: list[MailBatch]) -> list[IncomingMessage]:
    return [m for batch in batches for m in batch.messages]


def cursor_of(batches: list[MailBatch]) -> str:
    """The cursor, checked to be on the last batch only."""
    assert batches
    assert all(batch.cursor is None for batch in batches[:-1])
    assert batches[-1].cursor is not None
    return batches[-1].cursor


def raw_messages(env: Env, account: Account, folder: str = "INBOX") -> list[bytes]:
    with env.imap(account) as client:
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        return [fetched[uid][b"BODY[]"] for uid in sorted(fetched)]


def flags_on_server(env: Env, account: Account, provider_id: str) -> tuple[bytes, ...]:
    _folder, _uidvalidity, uid = provider_id.split("/")
    with env.imap(account) as client:
        client.select_folder("INBOX", readonly=True)
        return tuple(client.get_flags([int(uid)])[int(uid)])


async def eventually(
    check: Callable[[], bool], what: str, wait_s: float = WAIT_S
) -> None:
    """Poll ``check`` (blocking, cheap) until it holds."""
    deadline = time.monotonic() + wait_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def idling(address: str) -> bool:
    """Whether Dovecot runs an IMAP session of ``address`` in IDLE (the
    fixture turns on ``verbose_proctitle``)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            title = cmdline.read_bytes()
            if f"[{address} ".encode() in title and b" IDLE]" in title:
                return True
    return False


@contextlib.asynccontextmanager
async def waiting_for_change(
    mailbox: ImapMailbox, timeout_s: float
) -> AsyncIterator[asyncio.Task[bool]]:
    """``wait_for_change`` as a task, cancelled if the test leaves it behind."""
    task = asyncio.create_task(mailbox.wait_for_change(timeout_s))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# --------------------------------------------------------------- send + fetch


@pytest.mark.parametrize(
    ("imap", "smtp"),
    [
        (Security.TLS, Security.STARTTLS),
        (Security.STARTTLS, Security.TLS),
        (Security.NONE, Security.STARTTLS),  # plaintext IMAP, loopback only
    ],
)
async def test_sent_message_arrives_and_is_fetched_parsed(env, imap, smtp):
    alice, bob = env.account(), env.account()
    message = outgoing(
        alice,
        [bob],
        attachments=(OutgoingAttachment("numbers.pdf", "application/pdf", ATTACHMENT),),
    )

    provider: MailProvider = env.mailbox(alice, imap=imap, smtp=smtp)

    sent = await provider.send(message, build_message(message))

    # the SMTP server got the envelope; Dovecot got the message
    (transaction,) = env.delivery.transactions_from(alice.address)
    assert transaction.rcpt_tos == (bob.address,)
    (received,) = messages_of(await fetch_all(env.mailbox(bob, imap=imap)))
    assert received.folder is MailFolder.INBOX
    assert received.message_id == message.message_id
    assert received.subject == "Quarterly numbers"
    assert received.sender == Address(alice.address, "Alice Example")
    assert received.to == (Address(bob.address),)
    assert received.text is not None
    assert "the numbers are attached." in received.text
    (attachment,) = received.attachments
    assert (attachment.filename, attachment.content_type) == (
        "numbers.pdf",
        "application/pdf",
    )
    assert attachment.data == ATTACHMENT
    assert not received.is_read
    assert received.provider_id.startswith("inbox/")
    # BODY.PEEK: fetching did not mark it read on the server
    assert SEEN not in flags_on_server(env, bob, received.provider_id)

    # the copy in the sender's Sent folder (created by send), read, same id
    assert sent.provider_id is not None
    assert sent.provider_id.startswith("sent/")
    (copy,) = raw_messages(env, alice, "Sent")
    assert message.message_id.encode() in copy
    (fetched_copy,) = messages_of(await fetch_all(env.mailbox(alice, imap=imap)))
    assert fetched_copy.folder is MailFolder.SENT
    assert fetched_copy.provider_id == sent.provider_id
    assert fetched_copy.message_id == message.message_id
    assert fetched_copy.is_read
    assert fetched_copy.attachments[0].data == ATTACHMENT


async def test_bcc_recipients_get_the_mail_without_a_bcc_header(env):
    alice, bob, carol, dave = (env.account() for _ in range(4))
    message = outgoing(alice, [bob], cc=[carol], bcc=[dave])

    await env.mailbox(alice).send(message, build_message(message))

    (transaction,) = env.delivery.transactions_from(alice.address)
    assert set(transaction.rcpt_tos) == {bob.address, carol.address, dave.address}
    for account in (bob, carol, dave):
        (raw,) = raw_messages(env, account)
        assert message.message_id.encode() in raw
        headers = raw.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\nbcc:" not in b"\n" + headers
        assert dave.address.encode() not in raw
    (seen_by_dave,) = messages_of(await fetch_all(env.mailbox(dave)))
    assert seen_by_dave.bcc == ()
    assert seen_by_dave.to == (Address(bob.address),)


async def test_sent_message_without_a_saved_copy_is_not_an_error(env, caplog):
    """The message went out; failing to file the copy must not make the
    caller send it again."""
    alice, bob = env.account(), env.account()
    unreachable_imap = MailServer("127.0.0.1", free_port(), Security.NONE)
    mailbox = ImapMailbox(
        unreachable_imap,
        MailServer(env.delivery.host, env.delivery.starttls_port, Security.STARTTLS),
        alice.address,
        Secret(alice.password),
        address=alice.address,
        extra_ca_file=env.dovecot.cert.cert_file,
    )
    message = outgoing(alice, [bob])

    sent = await mailbox.send(message, build_message(message))

    assert sent.provider_id is None
    (raw,) = raw_messages(env, bob)
    assert message.message_id.encode() in raw
    assert "no copy could be saved in the Sent folder" in caplog.text


async def test_refused_recipient_sends_nothing_and_names_the_address(env):
    alice, bob = env.account(), env.account()
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.test"
    message = outgoing(alice, [bob, unknown])

    with pytest.raises(ValidationFailed, match=unknown) as caught:
        await env.mailbox(alice).send(message, build_message(message))

    assert "550" in caught.value.message
    assert env.delivery.transactions_from(alice.address) == []
    assert raw_messages(env, bob) == []  # all or nothing


async def test_too_big_message_is_refused_before_sending(env):
    alice, bob = env.account(), env.account()
    big = OutgoingAttachment("scan.bin", "application/octet-stream", b"\0" * 900_000)
    message = outgoing(alice, [bob], attachments=(big,))
    raw = build_message(message)
    assert len(raw) > MAX_MESSAGE_BYTES

    with pytest.raises(ValidationFailed, match="too big") as caught:
        await env.mailbox(alice).send(message, raw)

    assert "552" in caught.value.message
    assert raw_messages(env, bob) == []


# ------------------------------------------------------------------ fetching


async def test_incremental_fetch_returns_only_what_is_new(env):
    bob = env.account()
    mailbox = env.mailbox(bob)
    env.deliver(bob, "first")
    first = await fetch_all(mailbox)
    assert [m.subject for m in messages_of(first)] == ["first"]
    cursor = cursor_of(first)
    state = json.loads(cursor)
    assert set(state) == {"inbox"}  # no Sent folder in this mailbox yet
    assert state["inbox"]["last_uid"] == 1

    new_id = env.deliver(bob, "second")
    second = await fetch_all(mailbox, cursor)

    (new,) = messages_of(second)
    assert (new.subject, new.message_id) == ("second", new_id)
    assert new.provider_id == f"inbox/{state['inbox']['uidvalidity']}/2"
    nothing = await fetch_all(mailbox, cursor_of(second))
    assert nothing == [MailBatch(cursor=nothing[0].cursor)]
    assert json.loads(cursor_of(nothing))["inbox"]["last_uid"] == 2


async def test_flag_changes_via_condstore_and_expunges_via_qresync(env):
    bob = env.account()
    mailbox = env.mailbox(bob)
    for subject in ("keep", "read elsewhere", "delete elsewhere"):
        env.deliver(bob, subject)
    batches = await fetch_all(mailbox)
    ids = {m.subject: m.provider_id for m in messages_of(batches)}
    cursor = cursor_of(batches)

    with env.imap(bob) as client:
        assert {b"CONDSTORE", b"QRESYNC"} <= set(client.capabilities())
        client.select_folder("INBOX")
        by_subject = {
            data[b"ENVELOPE"].subject.decode(): uid
            for uid, data in client.fetch(client.search("ALL"), ["ENVELOPE"]).items()
        }
        client.add_flags([by_subject["read elsewhere"]], [SEEN])
        client.add_flags([by_subject["delete elsewhere"]], [DELETED])
        client.expunge()

    changes = await fetch_all(mailbox, cursor)

    assert messages_of(changes) == []
    flags = [f for batch in changes for f in batch.flags]
    removed = [r for batch in changes for r in batch.removed]
    assert flags == [FlagChange(ids["read elsewhere"], is_read=True)]
    assert removed == [ids["delete elsewhere"]]
    # and nothing more the next time
    again = await fetch_all(mailbox, cursor_of(changes))
    assert again == [MailBatch(cursor=again[0].cursor)]


@pytest.mark.parametrize("folder", ["INBOX", "Sent"])
async def test_uidvalidity_change_expires_the_cursor(env, folder):
    bob = env.account()
    mailbox = env.mailbox(bob)
    env.deliver(bob, "before the reset")
    with env.imap(bob) as client:
        client.create_folder("Sent")
    cursor = cursor_of(await fetch_all(mailbox))
    old = json.loads(cursor)[folder.lower()]["uidvalidity"]

    if folder == "INBOX":
        env.dovecot.doveadm(
            "mailbox", "update", "-u", bob.address, "--uid-validity", "12345", "INBOX"
        )
    else:  # a client deleted the folder and made a new one of the same name
        with env.imap(bob) as client:
            client.delete_folder("Sent")
            client.create_folder("Sent")

    with pytest.raises(CursorExpired, match="UIDVALIDITY"):
        await fetch_all(mailbox, cursor)
    fresh = await fetch_all(mailbox)  # what the caller does next
    assert json.loads(cursor_of(fresh))[folder.lower()]["uidvalidity"] != old
    (again,) = messages_of(fresh)
    assert again.subject == "before the reset"


async def test_unreadable_cursor_expires(env):
    mailbox = env.mailbox(env.account())
    for cursor in ("not json", "[]", '{"inbox": {"uidvalidity": "1"}}'):
        with pytest.raises(CursorExpired):
            await fetch_all(mailbox, cursor)


async def test_pages_of_page_size_with_the_cursor_on_the_last(env):
    bob = env.account()
    for n in range(5):
        env.deliver(bob, f"message {n}")

    batches = await fetch_all(env.mailbox(bob, page_size=2))

    assert [len(b.messages) for b in batches] == [2, 2, 1]
    cursor_of(batches)
    assert [m.subject for m in messages_of(batches)] == [
        f"message {n}" for n in range(5)
    ]


async def test_abandoned_fetch_logs_out(env):
    bob = env.account()
    for n in range(3):
        env.deliver(bob, f"message {n}")
    before = env.sessions_logged_out(bob)

    pages = env.mailbox(bob, page_size=1).fetch(
        None, since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    async with contextlib.aclosing(pages):
        first = await anext(pages)
        assert first.cursor is None

    await eventually(
        lambda: env.sessions_logged_out(bob) == before + 1, "Dovecot to log LOGOUT"
    )


async def test_cancelled_fetch_ends_its_session(env):
    bob = env.account()
    for n in range(3):
        env.deliver(bob, f"message {n}")
    pages = env.mailbox(bob, page_size=1).fetch(
        None, since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    await anext(pages)

    second = asyncio.ensure_future(anext(pages))
    await asyncio.sleep(0)  # now waiting for the page from a worker thread
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second

    await eventually(lambda: env.sessions_ended(bob) == 1, "Dovecot to end the session")


async def test_since_leaves_out_older_messages(env):
    bob = env.account()
    now = dt.datetime.now(dt.UTC)
    with env.imap(bob) as client:
        for subject, when in (("old", now - dt.timedelta(days=30)), ("new", now)):
            client.append(
                "INBOX",
                f"Subject: {subject}\r\nMessage-ID: <{subject}@x.test>\r\n\r\nhi\r\n",
                msg_time=when,
            )

    batches = await fetch_all(env.mailbox(bob), days=7)

    assert [m.subject for m in messages_of(batches)] == ["new"]
    # the older message is behind the cursor: it does not come later either
    assert messages_of(await fetch_all(env.mailbox(bob), cursor_of(batches))) == []


async def test_sent_folder_found_by_name_without_special_use(env):
    bob = env.account()
    with env.imap(bob) as client:
        client.create_folder("Sent Items")
        flags = {name: f for f, _delim, name in client.list_folders()}
        assert b"\\Sent" not in flags["Sent Items"]
        client.append(
            "Sent Items",
            "Subject: written elsewhere\r\nMessage-ID: <w@x.test>\r\n\r\nhi\r\n",
            flags=[SEEN],
        )

    batches = await fetch_all(env.mailbox(bob))

    (message,) = messages_of(batches)
    assert (message.folder, message.subject) == (MailFolder.SENT, "written elsewhere")
    assert set(json.loads(cursor_of(batches))) == {"inbox", "sent"}


# ------------------------------------------------------------------- writes


async def test_mark_read_sets_and_clears_seen_on_the_server(env):
    bob = env.account()
    env.deliver(bob, "to read")
    mailbox = env.mailbox(bob)
    (message,) = messages_of(await fetch_all(mailbox))

    await mailbox.mark_read(message.provider_id, True)
    assert SEEN in flags_on_server(env, bob, message.provider_id)

    await mailbox.mark_read(message.provider_id, False)
    assert SEEN not in flags_on_server(env, bob, message.provider_id)

    folder, uidvalidity, _uid = message.provider_id.split("/")
    for gone in (f"{folder}/{uidvalidity}/99", f"{folder}/1/1", "sent/1/1", "x"):
        with pytest.raises(ItemNotFound):
            await mailbox.mark_read(gone, True)


async def test_attachments_are_never_fetched_separately(env):
    with pytest.raises(UnsupportedOperation, match="IMAP"):
        await env.mailbox(env.account()).attachment("inbox/1/1", "2")


# ------------------------------------------------------------------- errors


async def test_wrong_password_is_an_auth_error_without_the_password(env, caplog):
    caplog.set_level(logging.DEBUG)
    bob = env.account()
    wrong = f"wrong-{uuid.uuid4().hex}"
    plain = base64.b64encode(f"\0{bob.address}\0{wrong}".encode()).decode()
    mailbox = env.mailbox(bob, password=wrong)
    message = outgoing(bob, [bob])

    with pytest.raises(AuthError, match="refused the user name or password") as imap:
        await fetch_all(mailbox)
    with pytest.raises(
        AuthError, match=r"SMTP server .* refused the user name or password"
    ) as smtp:
        await mailbox.send(message, build_message(message))

    assert "Settings -> Integrations" in imap.value.message
    assert "Settings -> Integrations" in smtp.value.message
    assert not imap.value.retryable
    for text in (imap.value.message, smtp.value.message, caplog.text):
        assert wrong not in text
        assert plain not in text
    assert "Password mismatch" in env.dovecot.log()
    assert env.delivery.attempts[-1] == (bob.address, False)
    assert env.delivery.transactions_from(bob.address) == []


async def test_unreachable_server_is_transient(env):
    bob = env.account()
    mailbox = ImapMailbox(
        MailServer("127.0.0.1", free_port(), Security.NONE),
        MailServer("127.0.0.1", free_port(), Security.NONE),
        bob.address,
        Secret(bob.password),
        address=bob.address,
    )
    with pytest.raises(TransientProviderError, match="refused") as caught:
        await fetch_all(mailbox)
    assert caught.value.retryable


async def test_plaintext_to_a_remote_host_is_refused_before_any_io(env):
    bob = env.account()
    remote = MailServer("imap.example.com", 143, Security.NONE)
    mailbox = ImapMailbox(
        remote, remote, bob.address, Secret(bob.password), address=bob.address
    )
    with pytest.raises(ValidationFailed, match="only to this machine"):
        await fetch_all(mailbox)


# ---------------------------------------------------------------------- IDLE


async def test_idle_returns_true_when_mail_arrives(env):
    alice, bob = env.account(), env.account()
    async with waiting_for_change(env.mailbox(bob), WAIT_S) as waiting:
        await eventually(lambda: idling(bob.address), "the IDLE session")

        message = outgoing(alice, [bob])
        await env.mailbox(alice).send(message, build_message(message))

        # True is the change heard: a wait that ran out says False
        assert await waiting is True
    # IDLE ended with DONE, then LOGOUT
    await eventually(lambda: env.sessions_logged_out(bob) == 1, "the logout")
    assert not idling(bob.address)


async def test_idle_returns_false_on_timeout(env):
    bob = env.account()
    started = time.monotonic()

    assert await env.mailbox(bob).wait_for_change(0.5) is False

    # it waited (a server without IDLE answers False at once)
    assert time.monotonic() - started >= 0.5
    await eventually(lambda: env.sessions_logged_out(bob) == 1, "the logout")


async def test_idle_reports_mail_that_came_after_the_last_fetch(env):
    """The listener's race: mail delivered between fetch and IDLE."""
    bob = env.account()
    mailbox = env.mailbox(bob)
    await fetch_all(mailbox)
    assert await mailbox.wait_for_change(0.2) is False

    env.deliver(bob, "in between")

    # no new mail arrives while it waits: only the comparison with the
    # fetch can say True
    assert await mailbox.wait_for_change(WAIT_S) is True


async def test_idle_reports_mail_that_came_between_two_connections(env):
    """A listener opens a new connection (a new object) for each IDLE: given
    the state the previous one left, it reports mail delivered in between.
    After a change that state is read again, so the change itself is not
    reported twice."""
    bob = env.account()
    first = env.mailbox(bob)
    async with waiting_for_change(first, WAIT_S) as waiting:
        await eventually(lambda: idling(bob.address), "the IDLE session")
        env.deliver(bob, "heard")
        assert await waiting is True

    quiet = env.mailbox(bob)
    quiet.expect_inbox(first.inbox_state)
    assert await quiet.wait_for_change(0.3) is False  # "heard" is not news

    env.deliver(bob, "in between")
    second = env.mailbox(bob)
    second.expect_inbox(quiet.inbox_state)
    assert await second.wait_for_change(0.3) is True
    # without the previous state nothing tells: IDLE hears no change
    assert await env.mailbox(bob).wait_for_change(0.3) is False


async def test_cancelled_idle_still_ends_cleanly(env):
    bob = env.account()
    async with waiting_for_change(env.mailbox(bob), WAIT_S) as waiting:
        await eventually(lambda: idling(bob.address), "the IDLE session")

        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    await eventually(lambda: env.sessions_logged_out(bob) == 1, "the logout")
    assert env.logins(bob) == 1
