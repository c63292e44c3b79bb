"""Mailboxes and their messages, for the acting user.

Every query is scoped to the acting user in the acting organization (the
tables are ``personal``; PostgreSQL's row level security says the same), so a
message, a thread or an attachment of another user is "not found".

Storing a fetched message (:meth:`MailStore.store`) is idempotent: a message is
found again by its provider id, then by its de-duplication key (Message-ID, or
a hash of its content when it has none), so a resync after an expired cursor
or a UIDVALIDITY change, and the Sent-folder copy of a message the CRM sent,
update the existing row instead of adding another. Attachment content goes to
the blob store; rows name it by key.

Search: PostgreSQL's ``search_vector`` (generated, GIN-indexed) or SQLite's
FTS5 table ``email_search``, both over subject, addresses and body text; every
word of the query must match, as a prefix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.mail import (
    AccountStatus,
    Address,
    AttachmentInfo,
    Direction,
    EmailAccountInfo,
    FlagChange,
    IncomingMessage,
    MailFolder,
    MessageDetail,
    MessageSummary,
)
from crmflow.errors import NotFound
from crmflow.mail.addresses import link_key
from crmflow.mail.html import plain_text, snippet
from crmflow.mail.threading import thread_key
from crmflow.store import leases, models
from crmflow.store.blobs import BlobStore
from crmflow.store.db import tenant_of

_MESSAGES = models.Base.metadata.tables["email_messages"]
_ATTACHMENTS = models.Base.metadata.tables["email_attachments"]
_ADDRESSES = models.Base.metadata.tables["email_message_addresses"]
#: ids per ``IN (...)`` (SQLite allows 32,766 variables)
_IN_CHUNK = 500
#: at most this many words of a search query are used
MAX_QUERY_WORDS = 12
_WORD = re.compile(r"\w+", re.UNICODE)


def _addr_json(addresses: Iterable[Address]) -> list[dict[str, str]]:
    return [{"email": a.email, "name": a.name} for a in addresses]


def _addr_tuple(raw: Sequence[Any] | None) -> tuple[Address, ...]:
    found: list[Address] = []
    for item in raw or ():
        if isinstance(item, dict) and item.get("email"):
            found.append(Address(str(item["email"]), str(item.get("name") or "")))
        elif isinstance(item, str):
            found.append(Address(item))
    return tuple(found)


def _search_words(addresses: Iterable[Address]) -> str:
    # names and addresses, plus the address split at "@" and ".", so that
    # "example" finds anna@example.com on both databases (PostgreSQL's parser
    # keeps an address as one token, SQLite's splits it)
    parts: list[str] = []
    for a in addresses:
        parts.extend((a.name, a.email, re.sub(r"[@.+_-]", " ", a.email)))
    return " ".join(p for p in parts if p)


def _content_key(msg: IncomingMessage, body: str) -> str:
    stamp = msg.date.isoformat() if msg.date else ""
    sender = msg.sender.email if msg.sender else ""
    basis = "\x1f".join((stamp, sender, msg.subject, body[:4000]))
    return "h:" + hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()


def _account_info(row: models.EmailAccount) -> EmailAccountInfo:
    return EmailAccountInfo(
        id=row.id,
        user_id=row.user_id,
        integration_id=row.integration_id,
        provider=row.provider,
        email_address=row.email_address,
        display_name=row.display_name,
        status=AccountStatus(row.status)
        if row.status in AccountStatus.__members__.values()
        else AccountStatus.ACTIVE,
        last_synced_at=row.last_synced_at,
        last_error=row.last_error,
        import_since=row.import_since,
        created_at=row.created_at,
        next_sync_at=row.next_sync_at,
        sync_failures=row.sync_failures,
    )


def _summary(row: models.EmailMessage) -> MessageSummary:
    return MessageSummary(
        id=row.id,
        account_id=row.email_account_id,
        thread_id=row.thread_id,
        folder=MailFolder(row.folder),
        direction=Direction(row.direction),
        subject=row.subject or "",
        sender=Address(row.from_address, row.from_name or "")
        if row.from_address
        else None,
        to=_addr_tuple(row.to_addresses),
        cc=_addr_tuple(row.cc_addresses),
        snippet=row.snippet or "",
        is_read=row.is_read,
        has_attachments=row.has_attachments,
        date=row.received_at or row.sent_at,
    )


@dataclass(slots=True)
class _Rows:
    """The rows a page of new messages inserts, per table."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    addresses: list[dict[str, Any]] = field(default_factory=list)
    #: (key, content) of attachment files to write
    blobs: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stored:
    """The outcome of :meth:`MailStore.store`."""

    id: uuid.UUID
    created: bool


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """Where an attachment's bytes are, for a download."""

    info: AttachmentInfo
    blob_key: str | None
    email_message_id: uuid.UUID
    email_account_id: uuid.UUID
    provider_message_id: str
    provider_attachment_id: str | None


class MailStore:
    """Email accounts and messages of the acting user."""

    def __init__(self, session: AsyncSession, blobs: BlobStore) -> None:
        self._session = session
        self._ctx = tenant_of(session)
        self._blobs = blobs

    @property
    def _sqlite(self) -> bool:
        return self._session.get_bind().dialect.name == "sqlite"

    def _mine(self, model: Any) -> list[Any]:
        return [
            model.organization_id == self._ctx.organization_id,
            model.user_id == self._ctx.user_id,
        ]

    # ------------------------------------------------------------- accounts

    async def accounts(self) -> list[EmailAccountInfo]:
        rows = await self._session.scalars(
            select(models.EmailAccount)
            .where(*self._mine(models.EmailAccount))
            .order_by(models.EmailAccount.created_at)
        )
        return [_account_info(r) for r in rows]

    async def _account_row(self, account_id: uuid.UUID) -> models.EmailAccount:
        row = await self._session.scalar(
            select(models.EmailAccount).where(
                models.EmailAccount.id == account_id, *self._mine(models.EmailAccount)
            )
        )
        if row is None:
            raise NotFound("No such mailbox.")
        return row

    async def account(self, account_id: uuid.UUID) -> EmailAccountInfo:
        """Raises NotFound: unknown (or another user's) mailbox."""
        return _account_info(await self._account_row(account_id))

    async def ensure_account(
        self,
        integration_id: uuid.UUID,
        provider: str,
        email_address: str,
        display_name: str | None,
        import_since: dt.datetime,
    ) -> EmailAccountInfo:
        """The mailbox of an integration, created on first use."""
        row = await self._session.scalar(
            select(models.EmailAccount).where(
                models.EmailAccount.integration_id == integration_id,
                *self._mine(models.EmailAccount),
            )
        )
        if row is None:
            row = models.EmailAccount(
                organization_id=self._ctx.organization_id,
                user_id=self._ctx.user_id,
                integration_id=integration_id,
                provider=provider,
                email_address=email_address,
                display_name=display_name,
                sync_state={},
                status=AccountStatus.ACTIVE.value,
                import_since=import_since,
            )
            self._session.add(row)
            await self._session.flush()
        return _account_info(row)

    async def remove_accounts_without_integration(self) -> int:
        """Forget mailboxes whose integration was disconnected (and their mail)."""
        result = await self._session.execute(
            delete(models.EmailAccount).where(
                models.EmailAccount.integration_id.is_(None),
                *self._mine(models.EmailAccount),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def cursor(
        self, account_id: uuid.UUID, source: str | None = None
    ) -> str | None:
        """The sync cursor, if ``source`` wrote it (None: the default one).

        A cursor belongs to the protocol that wrote it (a Gmail history id
        means nothing to IMAP): after a switch there is none.
        """
        row = await self._account_row(account_id)
        state = row.sync_state or {}
        value = state.get("cursor")
        if not value or state.get("source") != source:
            return None
        return str(value)

    async def save_cursor(
        self, account_id: uuid.UUID, cursor: str | None, source: str | None = None
    ) -> None:
        row = await self._account_row(account_id)
        row.sync_state = {**(row.sync_state or {}), "cursor": cursor, "source": source}

    async def acquire_lease(
        self, account_id: uuid.UUID, now: dt.datetime, until: dt.datetime
    ) -> bool:
        """Take the account's sync lease unless a live one is held."""
        result = await self._session.execute(
            update(models.EmailAccount)
            .where(
                models.EmailAccount.id == account_id,
                *self._mine(models.EmailAccount),
                or_(
                    models.EmailAccount.sync_lease_until.is_(None),
                    models.EmailAccount.sync_lease_until < now,
                ),
            )
            .values(sync_lease_until=until)
        )
        return bool(getattr(result, "rowcount", 0))

    async def renew_lease(
        self, account_id: uuid.UUID, held: dt.datetime, until: dt.datetime
    ) -> bool:
        """Move the lease that ends at ``held`` on to ``until``; False when it
        is no longer that one (it ran out and another sync took the mailbox)."""
        account = models.EmailAccount
        return await leases.renew(
            self._session,
            account,
            [account.id == account_id, *self._mine(account)],
            held,
            until,
        )

    async def finish_sync(
        self,
        account_id: uuid.UUID,
        synced_at: dt.datetime,
        error: str | None,
        held: Sequence[dt.datetime] = (),
    ) -> None:
        """Release the lease and record the outcome; with ``held``, only a
        lease that ends at one of those instants (a sync whose lease another
        sync took over leaves that one alone)."""
        account = models.EmailAccount
        await leases.release(
            self._session,
            account,
            [account.id == account_id, *self._mine(account)],
            held,
        )
        row = await self._account_row(account_id)
        row.last_error = error
        row.status = (AccountStatus.ERROR if error else AccountStatus.ACTIVE).value
        if error is None:
            row.last_synced_at = synced_at

    # ------------------------------------------------------------- storing

    async def _column_map(
        self, account_id: uuid.UUID, key: Any, value: Any, keys: set[str]
    ) -> dict[str, Any]:
        """``{key: value}`` of this mailbox's messages whose ``key`` is in ``keys``.

        Scoped by the mailbox alone (its owner was checked when it was read):
        tenant columns in the filter would lead SQLite, which has no planner
        statistics on a young database, to scan the user's whole mail through
        the ``(user_id, received_at)`` index for every lookup.
        """
        found: dict[str, Any] = {}
        wanted = sorted(k for k in keys if k)
        for start in range(0, len(wanted), _IN_CHUNK):
            rows = await self._session.execute(
                select(key, value).where(
                    models.EmailMessage.email_account_id == account_id,
                    key.in_(wanted[start : start + _IN_CHUNK]),
                )
            )
            for k, v in rows:
                found.setdefault(str(k), v)
        return found

    async def store(self, account: EmailAccountInfo, msg: IncomingMessage) -> Stored:
        """Insert a fetched message, or update the row that already holds it."""
        (stored,) = await self.store_many(account, [msg])
        return stored

    async def store_many(
        self, account: EmailAccountInfo, messages: Sequence[IncomingMessage]
    ) -> list[Stored]:
        """Store a page of fetched messages: a few queries for the whole page
        (existing rows by provider id and de-duplication key, thread parents),
        one flush, one search-index insert."""
        bodies = [plain_text(m.text, m.html) for m in messages]
        dedupes = [
            m.message_id or _content_key(m, b)
            for m, b in zip(messages, bodies, strict=True)
        ]
        by_provider = await self._column_map(
            account.id,
            models.EmailMessage.provider_message_id,
            models.EmailMessage.id,
            {m.provider_id for m in messages},
        )
        by_dedupe = await self._column_map(
            account.id,
            models.EmailMessage.dedupe_key,
            models.EmailMessage.id,
            set(dedupes),
        )
        refs = {
            r
            for m in messages
            for r in (m.message_id, m.in_reply_to, *m.references)
            if r
        }
        threads = await self._column_map(
            account.id,
            models.EmailMessage.message_id_header,
            models.EmailMessage.thread_id,
            refs,
        )
        threads = {k: v for k, v in threads.items() if v}
        results: list[Stored] = []
        created: list[uuid.UUID] = []
        rows: _Rows = _Rows()
        for msg, body, dedupe in zip(messages, bodies, dedupes, strict=True):
            existing = by_provider.get(msg.provider_id) or by_dedupe.get(dedupe)
            if existing is not None:
                await self._refresh(existing, msg)
                results.append(Stored(existing, created=False))
                continue
            thread = thread_key(
                msg.message_id,
                msg.in_reply_to,
                msg.references,
                msg.thread_id,
                lambda ids: next((threads[i] for i in ids if i in threads), None),
            )
            row_id = self._add(account, msg, body, dedupe, thread, rows)
            # later messages of the same page find this one
            by_provider[msg.provider_id] = row_id
            by_dedupe[dedupe] = row_id
            if msg.message_id:
                threads.setdefault(msg.message_id, thread)
            created.append(row_id)
            results.append(Stored(row_id, created=True))
        # attachment files first (in a thread: hashing is done, writing and
        # fsync wait on the disk), so no committed row names a missing file
        if rows.blobs:
            await asyncio.to_thread(self._blobs.write_all, rows.blobs)
        # one Core INSERT per table (executemany), parents first; the ORM's
        # bulk path costs about as much again in per-row bookkeeping
        for table, values in (
            (_MESSAGES, rows.messages),
            (_ATTACHMENTS, rows.attachments),
            (_ADDRESSES, rows.addresses),
        ):
            if values:
                await self._session.execute(insert(table), values)
        if self._sqlite and created:
            await self._session.execute(
                text(
                    "INSERT INTO email_search (rowid, subject, addresses, body) "
                    "SELECT rowid, subject, addresses_text, body_text "
                    "FROM email_messages WHERE id IN (SELECT value FROM json_each(:ids))"
                ),
                {"ids": _json_list([i.hex for i in created])},
            )
        return results

    async def _refresh(self, row_id: uuid.UUID, msg: IncomingMessage) -> None:
        """A message stored already: take its current provider id and flags."""
        values: dict[str, Any] = {
            "provider_message_id": msg.provider_id,
            "is_read": msg.is_read,
            "labels": list(msg.labels),
        }
        if msg.thread_id:
            values["provider_thread_id"] = msg.thread_id
        await self._session.execute(
            update(models.EmailMessage)
            .where(models.EmailMessage.id == row_id, *self._mine(models.EmailMessage))
            .values(**values)
        )

    def _add(
        self,
        account: EmailAccountInfo,
        msg: IncomingMessage,
        body: str,
        dedupe: str,
        thread: str,
        rows: _Rows,
    ) -> uuid.UUID:
        """Queue a new message with its attachments and correspondents."""
        outbound = msg.folder is MailFolder.SENT or (
            msg.sender is not None
            and msg.sender.email.lower() == account.email_address.lower()
        )
        when = msg.date
        row_id = uuid.uuid4()
        owner = {
            "organization_id": self._ctx.organization_id,
            "user_id": self._ctx.user_id,
        }
        rows.messages.append(
            dict(
                id=row_id,
                **owner,
                email_account_id=account.id,
                provider_message_id=msg.provider_id,
                message_id_header=msg.message_id,
                thread_id=thread,
                provider_thread_id=msg.thread_id,
                in_reply_to=msg.in_reply_to,
                references=list(msg.references),
                dedupe_key=dedupe,
                folder=msg.folder.value,
                direction=(Direction.OUTBOUND if outbound else Direction.INBOUND).value,
                subject=msg.subject,
                from_address=msg.sender.email[:320] if msg.sender else None,
                from_name=msg.sender.name[:200] if msg.sender else None,
                to_addresses=_addr_json(msg.to),
                cc_addresses=_addr_json(msg.cc),
                bcc_addresses=_addr_json(msg.bcc),
                addresses_text=_search_words(
                    ([msg.sender] if msg.sender else []) + [*msg.to, *msg.cc, *msg.bcc]
                ),
                snippet=snippet(body),
                body_text=body,
                body_html=msg.html,
                is_read=msg.is_read,
                labels=list(msg.labels),
                has_attachments=any(not a.inline for a in msg.attachments),
                sent_at=when if outbound else None,
                received_at=when,
            )
        )
        for attachment in msg.attachments:
            key = digest = None
            if attachment.data is not None:
                key, digest = self._blobs.address(
                    self._ctx.organization_id, attachment.data
                )
                rows.blobs.append((key, attachment.data))
            rows.attachments.append(
                dict(
                    id=uuid.uuid4(),
                    **owner,
                    email_message_id=row_id,
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    size_bytes=attachment.size,
                    content_id=attachment.content_id,
                    provider_attachment_id=attachment.provider_attachment_id,
                    blob_key=key,
                    sha256=digest,
                    inline=attachment.inline,
                )
            )
        roles = [("from", msg.sender)] if msg.sender else []
        roles += [("to", a) for a in msg.to] + [("cc", a) for a in msg.cc]
        roles += [("bcc", a) for a in msg.bcc]
        seen: set[tuple[str, str]] = set()
        for role, address in roles:
            key_ = link_key(address.email)
            if key_ is None or (role, key_) in seen:
                continue
            seen.add((role, key_))
            rows.addresses.append(
                dict(
                    id=uuid.uuid4(),
                    **owner,
                    email_message_id=row_id,
                    role=role,
                    link_key=key_,
                )
            )
        return row_id

    async def apply_flags(
        self, account_id: uuid.UUID, flags: Iterable[FlagChange]
    ) -> int:
        changed = 0
        for flag in flags:
            result = await self._session.execute(
                update(models.EmailMessage)
                .where(
                    models.EmailMessage.email_account_id == account_id,
                    *self._mine(models.EmailMessage),
                    models.EmailMessage.provider_message_id == flag.provider_id,
                    models.EmailMessage.is_read.is_not(flag.is_read),
                )
                .values(is_read=flag.is_read)
            )
            changed += int(getattr(result, "rowcount", 0) or 0)
        return changed

    async def remove(self, account_id: uuid.UUID, provider_ids: Iterable[str]) -> int:
        """Delete messages gone from the mailbox (attachment rows go with them;
        their blobs stay, shared by content, until a sweep removes orphans)."""
        ids = list(provider_ids)
        if not ids:
            return 0
        where = (
            models.EmailMessage.email_account_id == account_id,
            *self._mine(models.EmailMessage),
            models.EmailMessage.provider_message_id.in_(ids),
        )
        if self._sqlite:
            await self._session.execute(
                text(
                    "DELETE FROM email_search WHERE rowid IN (SELECT rowid FROM "
                    "email_messages WHERE email_account_id = :a AND user_id = :u "
                    "AND provider_message_id IN (SELECT value FROM json_each(:ids)))"
                ),
                {
                    "a": account_id.hex,
                    "u": self._ctx.user_id.hex,
                    "ids": _json_list(ids),
                },
            )
        result = await self._session.execute(delete(models.EmailMessage).where(*where))
        return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------- reading

    def _messages(self) -> Any:
        return select(models.EmailMessage).where(*self._mine(models.EmailMessage))

    async def page(
        self,
        *,
        account_id: uuid.UUID | None = None,
        folder: MailFolder | None = None,
        unread_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[MessageSummary], int]:
        """Newest first; returns ``(page, total)``."""
        stmt = self._messages()
        if account_id is not None:
            stmt = stmt.where(models.EmailMessage.email_account_id == account_id)
        if folder is not None:
            stmt = stmt.where(models.EmailMessage.folder == folder.value)
        if unread_only:
            stmt = stmt.where(models.EmailMessage.is_read.is_(False))
        total = await self._session.scalar(
            select(func.count()).select_from(stmt.subquery())
        )
        rows = await self._session.scalars(
            stmt.order_by(
                models.EmailMessage.received_at.desc(), models.EmailMessage.id
            )
            .limit(limit)
            .offset(offset)
        )
        return [_summary(r) for r in rows], int(total or 0)

    async def thread(self, thread_id: str) -> list[MessageSummary]:
        """The messages of a thread, oldest first. Raises NotFound."""
        rows = list(
            await self._session.scalars(
                self._messages()
                .where(models.EmailMessage.thread_id == thread_id)
                .order_by(
                    models.EmailMessage.received_at,
                    models.EmailMessage.created_at,
                    models.EmailMessage.id,
                )
            )
        )
        if not rows:
            raise NotFound("No such conversation.")
        return [_summary(r) for r in rows]

    async def by_link_keys(
        self, keys: Iterable[str], *, limit: int = 50
    ) -> list[MessageSummary]:
        """Messages with any of these correspondents, newest first."""
        wanted = sorted(set(keys))
        if not wanted:
            return []
        matching = (
            select(models.EmailMessageAddress.email_message_id)
            .where(
                *self._mine(models.EmailMessageAddress),
                models.EmailMessageAddress.link_key.in_(wanted),
            )
            .scalar_subquery()
        )
        rows = await self._session.scalars(
            self._messages()
            .where(models.EmailMessage.id.in_(matching))
            .order_by(models.EmailMessage.received_at.desc())
            .limit(limit)
        )
        return [_summary(r) for r in rows]

    async def search(self, query: str, *, limit: int = 50) -> list[MessageSummary]:
        """Messages matching every word of ``query`` (as prefixes), best first."""
        words = [w.lower() for w in _WORD.findall(query)][:MAX_QUERY_WORDS]
        if not words:
            return []
        if self._sqlite:
            match = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
            hits = text(
                "SELECT m.id FROM email_search JOIN email_messages m "
                "ON m.rowid = email_search.rowid WHERE email_search MATCH :q "
                "AND m.user_id = :u AND m.organization_id = :o "
                "ORDER BY bm25(email_search, 10.0, 5.0, 1.0) LIMIT :n"
            )
            params: dict[str, Any] = {
                "q": match,
                "u": self._ctx.user_id.hex,
                "o": self._ctx.organization_id.hex,
                "n": limit,
            }
        else:
            hits = text(
                "SELECT id FROM email_messages WHERE search_vector @@ "
                "to_tsquery('crmflow_search', :q) AND user_id = :u AND organization_id = :o "
                "ORDER BY ts_rank(search_vector, to_tsquery('crmflow_search', :q)) DESC "
                "LIMIT :n"
            )
            params = {
                "q": " & ".join(f"{w}:*" for w in words),
                "u": self._ctx.user_id,
                "o": self._ctx.organization_id,
                "n": limit,
            }
        ids = [
            uuid.UUID(str(i))
            for i in (await self._session.execute(hits, params)).scalars()
        ]
        if not ids:
            return []
        rows = {
            r.id: r
            for r in await self._session.scalars(
                self._messages().where(models.EmailMessage.id.in_(ids))
            )
        }
        return [_summary(rows[i]) for i in ids if i in rows]

    async def _row(self, message_id: uuid.UUID) -> models.EmailMessage:
        row: models.EmailMessage | None = await self._session.scalar(
            self._messages().where(models.EmailMessage.id == message_id)
        )
        if row is None:
            raise NotFound("No such message.")
        return row

    async def get(self, message_id: uuid.UUID) -> MessageDetail:
        """Raises NotFound: unknown (or another user's) message."""
        row = await self._row(message_id)
        attachments = await self._session.scalars(
            select(models.EmailAttachment)
            .where(
                *self._mine(models.EmailAttachment),
                models.EmailAttachment.email_message_id == row.id,
            )
            .order_by(models.EmailAttachment.created_at, models.EmailAttachment.id)
        )
        return MessageDetail(
            summary=_summary(row),
            bcc=_addr_tuple(row.bcc_addresses),
            body_text=row.body_text,
            body_html=row.body_html,
            message_id=row.message_id_header,
            in_reply_to=row.in_reply_to,
            references=tuple(str(r) for r in row.references or ()),
            provider_message_id=row.provider_message_id,
            provider_thread_id=row.provider_thread_id,
            attachments=tuple(_attachment_info(a) for a in attachments),
        )

    async def set_read(self, message_id: uuid.UUID, is_read: bool) -> None:
        row = await self._row(message_id)
        row.is_read = is_read

    async def attachment(self, attachment_id: uuid.UUID) -> AttachmentContent:
        """Raises NotFound: unknown (or another user's) attachment."""
        found = (
            await self._session.execute(
                select(models.EmailAttachment, models.EmailMessage)
                .join(
                    models.EmailMessage,
                    models.EmailMessage.id == models.EmailAttachment.email_message_id,
                )
                .where(
                    models.EmailAttachment.id == attachment_id,
                    *self._mine(models.EmailAttachment),
                    *self._mine(models.EmailMessage),
                )
            )
        ).one_or_none()
        if found is None:
            raise NotFound("No such attachment.")
        attachment, message = found
        return AttachmentContent(
            info=_attachment_info(attachment),
            blob_key=attachment.blob_key,
            email_message_id=message.id,
            email_account_id=message.email_account_id,
            provider_message_id=message.provider_message_id,
            provider_attachment_id=attachment.provider_attachment_id,
        )

    async def attachment_stored(
        self, attachment_id: uuid.UUID, blob_key: str, sha256: str
    ) -> None:
        await self._session.execute(
            update(models.EmailAttachment)
            .where(
                models.EmailAttachment.id == attachment_id,
                *self._mine(models.EmailAttachment),
            )
            .values(blob_key=blob_key, sha256=sha256)
        )


def _attachment_info(row: models.EmailAttachment) -> AttachmentInfo:
    return AttachmentInfo(
        id=row.id,
        filename=row.filename,
        content_type=row.content_type,
        size=row.size_bytes,
        content_id=row.content_id,
        inline=row.inline,
    )


def _json_list(values: list[str]) -> str:
    return json.dumps(values)
