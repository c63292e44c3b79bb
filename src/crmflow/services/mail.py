"""The email service: what the API, the CLI, the UI and the jobs call.

:class:`MailService` gives a user their mailboxes (one per connected Gmail,
Outlook or IMAP integration, created on first use), syncs them, lists, reads
and searches their messages, marks them read, serves attachments and sends mail
from the user's own account.

A sync (:meth:`MailService.sync`) takes the mailbox's lease (one sync at a
time, across processes), fetches changes since the saved cursor page by page,
and stores each page in its own transaction; the new cursor is saved in the
same transaction as the last page, so it never runs ahead of what is stored.
An expired cursor (Gmail history 404, Graph delta 410, IMAP UIDVALIDITY
change) starts the import window again; stored messages are found by provider
id or Message-ID, so nothing is duplicated.

Sending (:meth:`MailService.send`) validates first (no CR/LF in headers, size
limits: a 422 with nothing sent and nothing stored), builds the RFC 5322
message, hands it to the provider, and stores the sent message with the
provider's ids; when the provider's Sent copy is fetched later it updates that
row instead of adding one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.connections.mail_protocol import gmail_servers, mail_protocol
from crmflow.connections.service import Integrations
from crmflow.domain.crm import Appointment, Contact
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.lease import Lease
from crmflow.domain.mail import (
    Address,
    EmailAccountInfo,
    IncomingMessage,
    MailBatch,
    MailFolder,
    MailProvider,
    MailSyncResult,
    MessageDetail,
    MessageSummary,
    OutgoingAttachment,
    OutgoingMessage,
)
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import (
    UNEXPECTED_FAILURE,
    Conflict,
    CrmflowError,
    NotFound,
    ValidationFailed,
)
from crmflow.mail.addresses import link_key
from crmflow.mail.compose import (
    build_message,
    forward_subject,
    new_message_id,
    reply_references,
    reply_subject,
)
from crmflow.mail.parse import parse_message
from crmflow.metrics import record_sync
from crmflow.providers import google, imap, microsoft
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    MissingScope,
    RateLimited,
    TransientProviderError,
)
from crmflow.store.blobs import BlobStore
from crmflow.store.integrations import IntegrationInfo, IntegrationStore
from crmflow.store.mail import MailStore
from crmflow.store.repositories import AppointmentRepository, ContactRepository

#: how long a sync may hold its mailbox before another run may take it over
LEASE = dt.timedelta(minutes=15)

_MAIL_KINDS = {
    (ProviderKey.GOOGLE, IntegrationKind.GMAIL),
    (ProviderKey.MICROSOFT, IntegrationKind.MAIL),
    (ProviderKey.IMAP, IntegrationKind.MAIL),
    (ProviderKey.APPLE, IntegrationKind.MAIL),
}


#: see ``MailService.sync``: ``(session, result)``, in the outcome's transaction
MailOutcome = Callable[[AsyncSession, MailSyncResult], Awaitable[None]]


class MailSyncInProgress(Conflict):
    """A sync of this mailbox is running already."""


class MailLeaseLost(Conflict):
    """Another sync took over this sync's mailbox: its lease ran out."""


@dataclass(frozen=True, slots=True)
class Draft:
    """What a user composes; turned into an :class:`OutgoingMessage`."""

    account_id: uuid.UUID
    to: tuple[Address, ...]
    subject: str
    text: str
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    html: str | None = None
    attachments: tuple[OutgoingAttachment, ...] = ()
    #: the stored message this replies to, or forwards
    reply_to: uuid.UUID | None = None
    forward_of: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Download:
    """An attachment's name, type and content, streamed."""

    filename: str
    content_type: str
    size: int
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class ContactActivity:
    """What the contact page shows besides the contact itself."""

    contact: Contact
    messages: list[MessageSummary]
    appointments: Sequence[Appointment]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _words(exc: CrmflowError, account: EmailAccountInfo) -> str:
    """A failed sync, in words a user can act on."""
    where = account.email_address
    if isinstance(exc, MissingScope):
        return (
            f"{where}: crmflow may not read this mailbox. Connect it again in "
            "Settings -> Integrations and allow reading email."
        )
    if isinstance(exc, AuthError):
        return (
            f"{where}: the mailbox refused the sign-in ({exc}). Connect it again "
            "in Settings -> Integrations."
        )
    if isinstance(exc, RateLimited):
        return f"{where}: the provider asked to slow down; the next sync retries."
    if isinstance(exc, TransientProviderError):
        return (
            f"{where}: the mail server did not answer ({exc}); the next sync retries."
        )
    return f"{where}: {exc}"


class MailService:
    """Mailboxes and messages of the acting user."""

    def __init__(
        self,
        integrations: Integrations,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._integrations = integrations
        self._deps = integrations.deps
        self._clock = clock
        self._blobs = BlobStore(self._deps.settings.effective_blob_dir)

    # ------------------------------------------------------------ accounts

    async def accounts(self, ctx: TenantContext) -> list[EmailAccountInfo]:
        """The user's mailboxes: one per connected mail integration."""
        since = self._clock() - dt.timedelta(days=self._deps.settings.mail_import_days)
        async with self._deps.db.tenant(ctx) as session:
            store = MailStore(session, self._blobs)
            await store.remove_accounts_without_integration()
            integrations = await IntegrationStore(session, self._deps.vault).all()
            for info in integrations:
                if (info.provider, info.kind) in _MAIL_KINDS and info.email:
                    await store.ensure_account(
                        info.id, info.provider.value, info.email, None, since
                    )
            return await store.accounts()

    async def account(
        self, ctx: TenantContext, account_id: uuid.UUID
    ) -> EmailAccountInfo:
        async with self._deps.db.tenant(ctx) as session:
            return await MailStore(session, self._blobs).account(account_id)

    def _token(
        self, ctx: TenantContext, info: IntegrationInfo
    ) -> Callable[[], Awaitable[Secret]]:
        return self._integrations.token_source(ctx, info.kind, info.provider)

    async def idle_mailbox(
        self, ctx: TenantContext, account_id: uuid.UUID
    ) -> imap.ImapMailbox | None:
        """The mailbox as an IMAP connection an IDLE listener can wait on
        (password IMAP accounts, Gmail over IMAP); None for the others.

        Raises:
            NotFound: no such mailbox (or another user's).
            ValidationFailed: it is no longer connected, or lacks its password.
        """
        account = await self.account(ctx, account_id)
        provider, _source = await self._mailbox(ctx, account)
        return provider if isinstance(provider, imap.ImapMailbox) else None

    async def _provider(
        self, ctx: TenantContext, account: EmailAccountInfo
    ) -> MailProvider:
        return (await self._mailbox(ctx, account))[0]

    async def _mailbox(
        self, ctx: TenantContext, account: EmailAccountInfo
    ) -> tuple[MailProvider, str | None]:
        """The account's adapter, and the source its cursors belong to (None:
        the connection's own protocol; ``imap``: Gmail over IMAP + SMTP)."""
        if account.integration_id is None:
            raise ValidationFailed(
                f"The mailbox {account.email_address} is no longer connected; "
                "connect it again in Settings -> Integrations."
            )
        async with self._deps.db.tenant(ctx) as session:
            store = IntegrationStore(session, self._deps.vault)
            info = await store.get(account.integration_id)
            password = (
                await store.load_password(info.id)
                if info.provider in (ProviderKey.IMAP, ProviderKey.APPLE)
                else None
            )
        settings = self._deps.settings
        transport = self._integrations.api_transport
        if info.provider is ProviderKey.GOOGLE and mail_protocol(info) == "imap":
            imap_server, smtp_server = gmail_servers(settings)
            return imap.ImapMailbox(
                imap_server,
                smtp_server,
                info.email or account.email_address,
                token=self._token(ctx, info),
                address=account.email_address,
                # Gmail files what its SMTP server sends in Sent Mail itself
                save_sent_copy=False,
                extra_ca_file=settings.extra_ca_file,
            ), "imap"
        if info.provider is ProviderKey.GOOGLE:
            return google.GmailMailbox(
                str(settings.google_api_url).rstrip("/") + "/gmail/v1/",
                self._token(ctx, info),
                transport=transport,
            ), None
        if info.provider is ProviderKey.MICROSOFT:
            return microsoft.GraphMailbox(
                str(settings.microsoft_graph_url).rstrip("/") + "/v1.0",
                self._token(ctx, info),
                transport=transport,
            ), None
        if password is None:
            raise ValidationFailed(
                f"The mailbox {account.email_address} has no stored password; "
                "connect it again in Settings -> Integrations."
            )
        preset = imap.mail_preset(str(info.settings.get("preset") or ""))
        return imap.ImapMailbox(
            _server(info, "imap"),
            _server(info, "smtp"),
            str(info.settings.get("username") or info.email or ""),
            password,
            address=account.email_address,
            save_sent_copy=preset is None or not preset.keeps_sent_copy,
            extra_ca_file=settings.extra_ca_file,
        ), None

    # ------------------------------------------------------------ syncing

    async def sync_all(self, ctx: TenantContext) -> list[MailSyncResult]:
        """Sync every mailbox of the user; a busy one is skipped."""
        results = []
        for account in await self.accounts(ctx):
            try:
                results.append(await self.sync(ctx, account.id))
            except MailSyncInProgress:
                continue
        return results

    async def sync(
        self,
        ctx: TenantContext,
        account_id: uuid.UUID,
        *,
        full: bool = False,
        with_outcome: MailOutcome | None = None,
    ) -> MailSyncResult:
        """Fetch what changed in one mailbox and store it.

        ``full`` lists the import window again instead of following the
        cursor. Failures of the provider are recorded on the account and
        returned in ``MailSyncResult.error``; they do not raise.

        ``with_outcome`` is awaited with the session of the transaction that
        records the sync's outcome on the account and with the result,
        before that transaction commits (as ``CalendarSync.sync``'s).

        Raises:
            NotFound: unknown mailbox (or another user's).
            MailSyncInProgress: another sync of this mailbox is running.
        """
        db = self._deps.db
        now = self._clock()
        # write-locked: on SQLite a read-then-write transaction that raced
        # another one's lease would fail ("database is locked") instead of
        # seeing the lease taken
        async with db.tenant(ctx, write_lock=True) as session:
            store = MailStore(session, self._blobs)
            account = await store.account(account_id)
            lease = Lease.taken(now, LEASE)
            if not await store.acquire_lease(account_id, now, lease.held):
                raise MailSyncInProgress(
                    f"The mailbox {account.email_address} is being synced right now."
                )
        result = MailSyncResult(account_id)
        error: str | None = None
        started = time.monotonic()
        try:
            provider, source = await self._mailbox(ctx, account)
            cursor = None
            if not full:
                async with db.tenant(ctx) as session:
                    cursor = await MailStore(session, self._blobs).cursor(
                        account_id, source
                    )
            since = account.import_since or now - dt.timedelta(
                days=self._deps.settings.mail_import_days
            )
            try:
                result = await self._fetch(
                    ctx, account, (provider, source), cursor, since, result, lease
                )
            except CursorExpired:
                async with db.tenant(ctx) as session:
                    await MailStore(session, self._blobs).save_cursor(account_id, None)
                result = dataclasses.replace(result, resynced=True)
                result = await self._fetch(
                    ctx, account, (provider, source), None, since, result, lease
                )
        except CrmflowError as exc:
            error = _words(exc, account)
            result = dataclasses.replace(
                result,
                error=error,
                retry_after_s=(
                    exc.retry_after_s if isinstance(exc, RateLimited) else None
                ),
            )
        except Exception:
            # a bug, not a provider failure: the mailbox says so rather than
            # "synced", the schedule backs off, and the exception goes on to
            # be logged
            error = UNEXPECTED_FAILURE
            result = dataclasses.replace(result, error=error)
            raise
        finally:
            async with db.tenant(ctx) as session:
                await MailStore(session, self._blobs).finish_sync(
                    account_id, self._clock(), error, lease.values()
                )
                if with_outcome is not None:
                    await with_outcome(session, result)
        record_sync(
            "mail",
            account.provider,
            "failed" if error else "success",
            time.monotonic() - started,
            {
                "imported": result.imported,
                "updated": result.updated,
                "deleted": result.removed,
            },
        )
        return result

    async def _fetch(
        self,
        ctx: TenantContext,
        account: EmailAccountInfo,
        mailbox: tuple[MailProvider, str | None],
        cursor: str | None,
        since: dt.datetime,
        result: MailSyncResult,
        lease: Lease,
    ) -> MailSyncResult:
        provider, source = mailbox
        imported, updated, removed = result.imported, result.updated, result.removed
        async for batch in _read_ahead(provider.fetch(cursor, since=since)):
            async with self._deps.db.tenant(ctx) as session:
                store = MailStore(session, self._blobs)
                # each batch is stored only while the lease is this sync's
                await self._keep(store, account.id, lease)
                for stored in await store.store_many(account, batch.messages):
                    if stored.created:
                        imported += 1
                    else:
                        updated += 1
                updated += await store.apply_flags(account.id, batch.flags)
                removed += await store.remove(account.id, batch.removed)
                if batch.cursor is not None:
                    await store.save_cursor(account.id, batch.cursor, source)
        return dataclasses.replace(
            result, imported=imported, updated=updated, removed=removed
        )

    async def _keep(
        self, store: MailStore, account_id: uuid.UUID, lease: Lease
    ) -> None:
        """Renew the sync's lease in ``store``'s transaction when it is due
        (see :mod:`crmflow.domain.lease`).

        Raises:
            MailLeaseLost: another sync holds the mailbox now.
        """
        now = self._clock()
        if not lease.due(now):
            return
        until = lease.renewal(now)
        if not await store.renew_lease(account_id, lease.held, until):
            raise MailLeaseLost(
                "this sync ran so long that its hold on the mailbox ran out and "
                "another sync of it started; this one stopped, and the other one "
                "carries on."
            )
        lease.renewed(until)

    # ------------------------------------------------------------ reading

    async def messages(
        self,
        ctx: TenantContext,
        *,
        account_id: uuid.UUID | None = None,
        folder: MailFolder | None = None,
        unread_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[MessageSummary], int]:
        async with self._deps.db.tenant(ctx) as session:
            store = MailStore(session, self._blobs)
            if account_id is not None:
                await store.account(account_id)
            return await store.page(
                account_id=account_id,
                folder=folder,
                unread_only=unread_only,
                limit=limit,
                offset=offset,
            )

    async def thread(self, ctx: TenantContext, thread_id: str) -> list[MessageDetail]:
        """A conversation, oldest first, with bodies. Raises NotFound."""
        async with self._deps.db.tenant(ctx) as session:
            store = MailStore(session, self._blobs)
            return [await store.get(s.id) for s in await store.thread(thread_id)]

    async def message(self, ctx: TenantContext, message_id: uuid.UUID) -> MessageDetail:
        async with self._deps.db.tenant(ctx) as session:
            return await MailStore(session, self._blobs).get(message_id)

    async def for_addresses(
        self, ctx: TenantContext, addresses: list[str], *, limit: int = 50
    ) -> list[MessageSummary]:
        """The user's messages with any of these correspondents (a contact)."""
        keys = [k for k in (link_key(a) for a in addresses) if k]
        async with self._deps.db.tenant(ctx) as session:
            return await MailStore(session, self._blobs).by_link_keys(keys, limit=limit)

    async def contact_activity(
        self, ctx: TenantContext, contact_id: uuid.UUID, *, limit: int = 50
    ) -> ContactActivity:
        """A contact with the user's mail to and from them and the meetings
        they attend, both found by the contact's addresses' link keys.

        Raises:
            NotFound: unknown contact (or another organization's).
        """
        async with self._deps.db.tenant(ctx) as session:
            contact = await ContactRepository(session).get(contact_id)
            keys = [k for k in (link_key(a) for a in contact.email_addresses) if k]
            messages = await MailStore(session, self._blobs).by_link_keys(
                keys, limit=limit
            )
            meetings = await AppointmentRepository(session).with_attendees(
                keys, limit=limit
            )
        return ContactActivity(contact, messages, meetings)

    async def search(
        self, ctx: TenantContext, query: str, *, limit: int = 50
    ) -> list[MessageSummary]:
        async with self._deps.db.tenant(ctx) as session:
            return await MailStore(session, self._blobs).search(query, limit=limit)

    async def mark_read(
        self, ctx: TenantContext, message_id: uuid.UUID, is_read: bool = True
    ) -> None:
        """Set the read flag in the mailbox, then in the CRM.

        Raises:
            NotFound; ProviderError: the mailbox refused (nothing changed).
        """
        detail = await self.message(ctx, message_id)
        account = await self.account(ctx, detail.summary.account_id)
        if detail.summary.is_read is not is_read:
            provider = await self._provider(ctx, account)
            await provider.mark_read(detail.provider_message_id, is_read)
        async with self._deps.db.tenant(ctx) as session:
            await MailStore(session, self._blobs).set_read(message_id, is_read)

    async def attachment(
        self, ctx: TenantContext, attachment_id: uuid.UUID
    ) -> Download:
        """An attachment of one of the user's messages, fetched once if needed.

        Raises:
            NotFound: unknown attachment, or another user's.
        """
        async with self._deps.db.tenant(ctx) as session:
            found = await MailStore(session, self._blobs).attachment(attachment_id)
        key = found.blob_key
        if key is None or not self._blobs.exists(key):
            if found.provider_attachment_id is None:
                raise NotFound("The attachment's content is not available.")
            account = await self.account(ctx, found.email_account_id)
            provider = await self._provider(ctx, account)
            data = await provider.attachment(
                found.provider_message_id, found.provider_attachment_id
            )
            key, digest = self._blobs.put(ctx.organization_id, data)
            async with self._deps.db.tenant(ctx) as session:
                await MailStore(session, self._blobs).attachment_stored(
                    attachment_id, key, digest
                )
        info = found.info
        return Download(
            filename=info.filename or "attachment",
            content_type=info.content_type,
            size=self._blobs.size(key),
            chunks=self._blobs.stream(key),
        )

    # ------------------------------------------------------------ sending

    async def _outgoing(
        self, ctx: TenantContext, draft: Draft, account: EmailAccountInfo
    ) -> OutgoingMessage:
        subject = draft.subject
        attachments = draft.attachments
        in_reply_to: str | None = None
        references: tuple[str, ...] = ()
        thread: str | None = None
        parent_provider: str | None = None
        parent_id = draft.reply_to or draft.forward_of
        if parent_id is not None:
            parent = await self.message(ctx, parent_id)
            in_reply_to = parent.message_id
            references = reply_references(parent.message_id, parent.references)
            if parent.summary.account_id == account.id:
                thread = parent.provider_thread_id
                parent_provider = parent.provider_message_id
            if draft.reply_to is not None:
                subject = subject or reply_subject(parent.summary.subject)
            else:
                subject = subject or forward_subject(parent.summary.subject)
                attachments = attachments + tuple(
                    [
                        await self._outgoing_attachment(ctx, a.id)
                        for a in parent.attachments
                    ]
                )
        domain = account.email_address.rpartition("@")[2] or "crmflow.invalid"
        return OutgoingMessage(
            sender=Address(account.email_address, account.display_name or ""),
            to=draft.to,
            cc=draft.cc,
            bcc=draft.bcc,
            subject=subject,
            text=draft.text,
            html=draft.html,
            attachments=attachments,
            message_id=new_message_id(domain),
            in_reply_to=in_reply_to,
            references=references,
            provider_thread_id=thread,
            reply_to_provider_id=parent_provider,
        )

    async def _outgoing_attachment(
        self, ctx: TenantContext, attachment_id: uuid.UUID
    ) -> OutgoingAttachment:
        download = await self.attachment(ctx, attachment_id)
        return OutgoingAttachment(
            download.filename, download.content_type, b"".join(download.chunks)
        )

    async def send(self, ctx: TenantContext, draft: Draft) -> MessageDetail:
        """Send from the user's own mailbox and store the sent message.

        Raises:
            ValidationFailed: bad addresses, a line break in a header field,
                attachments over the limit (nothing sent, nothing stored).
            NotFound: unknown mailbox or replied-to message.
            AuthError / ProviderError: the provider refused; nothing stored.
        """
        account = await self.account(ctx, draft.account_id)
        outgoing = await self._outgoing(ctx, draft, account)
        outgoing.check()
        raw = build_message(outgoing, date=self._clock())
        provider = await self._provider(ctx, account)
        sent = await provider.send(outgoing, raw)
        parsed = parse_message(
            raw,
            provider_id=sent.provider_id or f"local:{outgoing.message_id}",
            folder=MailFolder.SENT,
            is_read=True,
            thread_id=sent.thread_id or outgoing.provider_thread_id,
        )
        stored: IncomingMessage = dataclasses.replace(parsed, bcc=outgoing.bcc)
        async with self._deps.db.tenant(ctx) as session:
            store = MailStore(session, self._blobs)
            result = await store.store(account, stored)
            return await store.get(result.id)


async def _read_ahead(pages: AsyncIterator[MailBatch]) -> AsyncIterator[MailBatch]:
    """The pages of ``pages``, the next one fetched while the caller stores
    the current one (the provider's network time and the database's overlap).

    At most one page is ahead, so memory holds two pages at most. If the caller
    stops early, the page being fetched is cancelled and the fetch closed.
    """
    ahead: asyncio.Future[MailBatch] = asyncio.ensure_future(anext(pages))
    try:
        while True:
            try:
                page = await ahead
            except StopAsyncIteration:
                return
            ahead = asyncio.ensure_future(anext(pages))
            yield page
    finally:
        # the caller stopped (or failed): the page fetched ahead is not wanted,
        # nor is its error
        ahead.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await ahead
        aclose = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()


def _server(info: IntegrationInfo, key: str) -> imap.MailServer:
    raw = info.settings.get(key)
    if not isinstance(raw, dict):
        raise ValidationFailed(
            f"This mail connection has no {key.upper()} server; connect it again in "
            "Settings -> Integrations."
        )
    return imap.MailServer(
        str(raw["host"]), int(raw["port"]), imap.Security(str(raw["security"]))
    )
