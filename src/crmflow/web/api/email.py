"""``/api/email-accounts``, ``/api/emails`` and friends: the user's mailboxes and
messages, search, sending and attachments.

Bearer-token endpoints acting as the token's user; another user's mailbox,
message, thread or attachment is 404.

=====================================================  ======================================
``GET    /api/email-accounts``                         the user's mailboxes (one per mail
                                                       integration, created on first use)
``POST   /api/email-accounts/{id}/sync``               fetch new mail now; the run's summary
``POST   /api/email-accounts/sync``                    every mailbox
``GET    /api/emails?account_id=&folder=&unread=``     messages, newest first (paged)
``GET    /api/emails/search?q=``                       full-text search: subject, addresses,
                                                       body; every word must match
``GET    /api/emails/{id}``                            one, with bodies and attachments
``PATCH  /api/emails/{id}``                            ``{"is_read": true}`` (also in the
                                                       mailbox)
``POST   /api/emails``                                 send (201): to/cc/bcc, subject, text,
                                                       html, attachments, reply_to/forward_of
``GET    /api/email-threads/{thread_id}``              a conversation, oldest first
``GET    /api/email-attachments/{id}``                 the attachment's bytes (download)
``GET    /api/contacts/{id}/emails``                   the user's mail with a contact
=====================================================  ======================================

A header field with a line break, a bad address or attachments over the limit
answer 422 and nothing is sent. A sync that fails answers 200 with ``error``
saying what to do; one already running for the mailbox is 409.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from crmflow.domain.mail import (
    Address,
    AttachmentInfo,
    Direction,
    EmailAccountInfo,
    MailFolder,
    MailSyncResult,
    MessageDetail,
    MessageSummary,
    OutgoingAttachment,
)
from crmflow.errors import ValidationFailed
from crmflow.services.mail import Draft, MailService
from crmflow.web.api.integrations import IntegrationsDep, ProviderErrorRoute
from crmflow.web.api.schemas import PageOut, Strict
from crmflow.web.deps import TenantDep

#: content types a browser may show inline (never HTML or SVG: they run script)
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"}
)


def get_mail(request: Request, integrations: IntegrationsDep) -> MailService:
    """The process's email service (shares the connections service)."""
    found = getattr(request.app.state, "mail", None)
    if isinstance(found, MailService):
        return found
    created = MailService(integrations)
    request.app.state.mail = created
    return created


MailDep = Annotated[MailService, Depends(get_mail)]

router = APIRouter(prefix="/api", tags=["email"], route_class=ProviderErrorRoute)


# ------------------------------------------------------------------ schemas


class AddressModel(BaseModel):
    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=200)

    @classmethod
    def of(cls, a: Address) -> AddressModel:
        return cls(email=a.email, name=a.name)

    def to_address(self) -> Address:
        return Address(self.email.strip(), self.name.strip())


class EmailAccountOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID | None
    provider: str
    email_address: str
    status: str
    last_synced_at: dt.datetime | None
    last_error: str | None = Field(description="What went wrong and what to do.")
    import_since: dt.datetime | None
    next_sync_at: dt.datetime | None = Field(
        description="When the background sync runs next (None: as soon as it can)."
    )
    sync_failures: int = Field(
        description="Background syncs that failed in a row (they back off)."
    )

    @classmethod
    def of(cls, a: EmailAccountInfo) -> EmailAccountOut:
        return cls(
            id=a.id,
            integration_id=a.integration_id,
            provider=a.provider,
            email_address=a.email_address,
            status=a.status.value,
            last_synced_at=a.last_synced_at,
            last_error=a.last_error,
            import_since=a.import_since,
            next_sync_at=a.next_sync_at,
            sync_failures=a.sync_failures,
        )


class MailSyncOut(BaseModel):
    account_id: uuid.UUID
    imported: int
    updated: int
    removed: int
    resynced: bool = Field(description="The cursor had expired; mail was listed again.")
    error: str | None

    @classmethod
    def of(cls, r: MailSyncResult) -> MailSyncOut:
        return cls(
            account_id=r.account_id,
            imported=r.imported,
            updated=r.updated,
            removed=r.removed,
            resynced=r.resynced,
            error=r.error,
        )


class MessageOut(BaseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    thread_id: str | None
    folder: MailFolder
    direction: Direction
    subject: str
    sender: AddressModel | None
    to: list[AddressModel]
    cc: list[AddressModel]
    snippet: str
    is_read: bool
    has_attachments: bool
    date: dt.datetime | None

    @classmethod
    def of(cls, m: MessageSummary) -> MessageOut:
        return cls(
            id=m.id,
            account_id=m.account_id,
            thread_id=m.thread_id,
            folder=m.folder,
            direction=m.direction,
            subject=m.subject,
            sender=AddressModel.of(m.sender) if m.sender else None,
            to=[AddressModel.of(a) for a in m.to],
            cc=[AddressModel.of(a) for a in m.cc],
            snippet=m.snippet,
            is_read=m.is_read,
            has_attachments=m.has_attachments,
            date=m.date,
        )


class AttachmentOut(BaseModel):
    id: uuid.UUID
    filename: str | None
    content_type: str
    size: int
    inline: bool
    url: str

    @classmethod
    def of(cls, a: AttachmentInfo) -> AttachmentOut:
        return cls(
            id=a.id,
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            inline=a.inline,
            url=f"/api/email-attachments/{a.id}",
        )


class MessageDetailOut(MessageOut):
    bcc: list[AddressModel]
    body_text: str | None
    body_html: str | None = Field(
        description="As received: sanitize before showing it (the UI does)."
    )
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    attachments: list[AttachmentOut]

    @classmethod
    def detail(cls, d: MessageDetail) -> MessageDetailOut:
        base = MessageOut.of(d.summary).model_dump()
        return cls(
            **base,
            bcc=[AddressModel.of(a) for a in d.bcc],
            body_text=d.body_text,
            body_html=d.body_html,
            message_id=d.message_id,
            in_reply_to=d.in_reply_to,
            references=list(d.references),
            attachments=[AttachmentOut.of(a) for a in d.attachments],
        )


class AttachmentIn(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    content_base64: str


class SendIn(Strict):
    account_id: uuid.UUID
    to: list[AddressModel] = Field(default_factory=list)
    cc: list[AddressModel] = Field(default_factory=list)
    bcc: list[AddressModel] = Field(default_factory=list)
    subject: str = Field(default="", max_length=998)
    text: str = ""
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    reply_to: uuid.UUID | None = Field(
        default=None, description="A stored message this answers (threads the reply)."
    )
    forward_of: uuid.UUID | None = Field(
        default=None, description="A stored message to forward with its attachments."
    )

    def draft(self) -> Draft:
        if self.reply_to is not None and self.forward_of is not None:
            raise ValidationFailed(
                "A message is either a reply or a forward, not both."
            )
        files = []
        for a in self.attachments:
            try:
                data = base64.b64decode(a.content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationFailed(
                    f"The attachment {a.filename!r} is not valid base64."
                ) from None
            files.append(OutgoingAttachment(a.filename, a.content_type, data))
        return Draft(
            account_id=self.account_id,
            to=tuple(a.to_address() for a in self.to),
            cc=tuple(a.to_address() for a in self.cc),
            bcc=tuple(a.to_address() for a in self.bcc),
            subject=self.subject,
            text=self.text,
            html=self.html,
            attachments=tuple(files),
            reply_to=self.reply_to,
            forward_of=self.forward_of,
        )


class ReadIn(Strict):
    is_read: bool


# ------------------------------------------------------------------ routes


@router.get("/email-accounts")
async def list_accounts(ctx: TenantDep, mail: MailDep) -> list[EmailAccountOut]:
    return [EmailAccountOut.of(a) for a in await mail.accounts(ctx)]


@router.post("/email-accounts/sync")
async def sync_all(ctx: TenantDep, mail: MailDep) -> list[MailSyncOut]:
    return [MailSyncOut.of(r) for r in await mail.sync_all(ctx)]


@router.post("/email-accounts/{email_account_id}/sync")
async def sync_account(
    email_account_id: uuid.UUID,
    ctx: TenantDep,
    mail: MailDep,
    full: Annotated[bool, Query(description="List the import window again.")] = False,
) -> MailSyncOut:
    return MailSyncOut.of(await mail.sync(ctx, email_account_id, full=full))


@router.get("/emails")
async def list_messages(
    ctx: TenantDep,
    mail: MailDep,
    account_id: uuid.UUID | None = None,
    folder: MailFolder | None = None,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PageOut[MessageOut]:
    items, total = await mail.messages(
        ctx,
        account_id=account_id,
        folder=folder,
        unread_only=unread,
        limit=limit,
        offset=offset,
    )
    return PageOut(
        items=[MessageOut.of(m) for m in items], total=total, limit=limit, offset=offset
    )


@router.get("/emails/search")
async def search_messages(
    ctx: TenantDep,
    mail: MailDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[MessageOut]:
    return [MessageOut.of(m) for m in await mail.search(ctx, q, limit=limit)]


@router.post("/emails", status_code=201)
async def send_message(body: SendIn, ctx: TenantDep, mail: MailDep) -> MessageDetailOut:
    return MessageDetailOut.detail(await mail.send(ctx, body.draft()))


@router.get("/emails/{message_id}")
async def get_message(
    message_id: uuid.UUID, ctx: TenantDep, mail: MailDep
) -> MessageDetailOut:
    return MessageDetailOut.detail(await mail.message(ctx, message_id))


@router.patch("/emails/{message_id}")
async def mark_message(
    message_id: uuid.UUID, body: ReadIn, ctx: TenantDep, mail: MailDep
) -> MessageDetailOut:
    await mail.mark_read(ctx, message_id, body.is_read)
    return MessageDetailOut.detail(await mail.message(ctx, message_id))


@router.get("/email-threads/{thread_id}")
async def get_thread(
    thread_id: str, ctx: TenantDep, mail: MailDep
) -> list[MessageDetailOut]:
    return [MessageDetailOut.detail(d) for d in await mail.thread(ctx, thread_id)]


@router.get("/email-attachments/{attachment_id}")
async def download_attachment(
    attachment_id: uuid.UUID, ctx: TenantDep, mail: MailDep, inline: bool = False
) -> Response:
    found = await mail.attachment(ctx, attachment_id)
    show = inline and found.content_type.lower() in INLINE_TYPES
    name = found.filename.replace('"', "").replace("\\", "")
    quoted = "".join(c if c.isascii() and c.isprintable() else "_" for c in name)
    disposition = (
        f'{"inline" if show else "attachment"}; filename="{quoted}"; '
        f"filename*=UTF-8''{quote(name)}"
    )
    return StreamingResponse(
        found.chunks,
        media_type=found.content_type if show else "application/octet-stream",
        headers={
            "Content-Disposition": disposition,
            "Content-Length": str(found.size),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.get("/contacts/{contact_id}/emails")
async def contact_messages(
    contact_id: uuid.UUID,
    ctx: TenantDep,
    mail: MailDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[MessageOut]:
    activity = await mail.contact_activity(ctx, contact_id, limit=limit)
    return [MessageOut.of(m) for m in activity.messages]
