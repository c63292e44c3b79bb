"""Outlook mail rules: folders, messages, drafts, sending, delivery, attachments, upload sessions.

Graph's behaviour (microsoft-graph.md §7, checklist 22-23):

* Well-known folders: inbox, drafts, sentitems, deleteditems, archive,
  junkemail, outbox (addressable by those names).
* ``POST /me/sendMail`` answers 202 with no body; the message is saved to Sent
  Items unless ``saveToSentItems`` is false, and delivered — here, to the inbox
  of every sandbox user among the recipients.
* ``POST /me/messages`` creates a draft (201); ``/send`` sends it (202) and
  moves it to Sent Items.
* An item's ``id`` "changes when the item moves folders unless the request
  sends ``Prefer: IdType="ImmutableId"``": every message has a regular id
  (new on each move) and an immutable id; lookups accept both.
* Attachments under 3 MB are POSTed inline (``fileAttachment`` with
  ``contentBytes``); 3-150 MB go through ``createUploadSession`` and ranged
  PUTs; an upload session for a smaller file is 400
  ``ErrorAttachmentSizeShouldNotBeLessThanMinimumSize``.

All methods must be called with the state lock held.
"""

from __future__ import annotations

import base64
import binascii
import copy
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from crmflow.sandbox.microsoft import _ids
from crmflow.sandbox.microsoft.errors import (
    GraphError,
    irresolvable_conflict,
    item_not_found,
)
from crmflow.sandbox.microsoft.eventjson import (
    check_properties,
    normalize_body,
    normalize_pass_through,
    preview,
    render_body,
)
from crmflow.sandbox.microsoft.timezones import format_utc

__all__ = [
    "MESSAGE_PROPERTIES",
    "MIN_UPLOAD_SESSION_BYTES",
    "Folder",
    "MailData",
    "Mailboxes",
    "StoredAttachment",
    "StoredMessage",
    "UploadSession",
]

WELL_KNOWN = (
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
)
#: "Files < 3 MB: POST …/attachments. Files 3-150 MB: createUploadSession"
MIN_UPLOAD_SESSION_BYTES = 3 * 1024 * 1024
MAX_UPLOAD_SESSION_BYTES = 150 * 1024 * 1024
#: upload sessions expire (uploadSession.expirationDateTime); Outlook gives ~6 h
UPLOAD_SESSION_LIFETIME = timedelta(hours=6)

MESSAGE_PROPERTIES = frozenset(
    {
        "id", "categories", "changeKey", "createdDateTime", "lastModifiedDateTime",
        "attachments", "bccRecipients", "body", "bodyPreview", "ccRecipients",
        "conversationId", "conversationIndex", "extensions", "flag", "from",
        "hasAttachments", "importance", "inferenceClassification",
        "internetMessageHeaders", "internetMessageId", "isDeliveryReceiptRequested",
        "isDraft", "isRead", "isReadReceiptRequested", "multiValueExtendedProperties",
        "parentFolderId", "receivedDateTime", "replyTo", "sender", "sentDateTime",
        "singleValueExtendedProperties", "subject", "toRecipients", "uniqueBody", "webLink",
    }
)  # fmt: skip
_RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients", "replyTo")
MailChange = Literal["created", "updated", "deleted"]


@dataclass
class Folder:
    """A mail folder."""

    id: str
    display_name: str
    well_known: str | None = None
    parent_id: str | None = None


@dataclass
class StoredAttachment:
    """A fileAttachment."""

    id: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    content_b64: str
    last_modified: datetime


@dataclass
class StoredMessage:
    """A message in a folder."""

    id: str
    immutable_id: str
    folder_id: str
    change_key: str
    created: datetime
    last_modified: datetime
    received: datetime
    sent: datetime | None
    is_draft: bool
    is_read: bool
    conversation_id: str
    internet_message_id: str
    subject: str
    body: dict[str, str]
    sender: dict[str, Any] | None
    recipients: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    importance: str = "normal"
    categories: list[str] = field(default_factory=list)
    flag_status: str = "notFlagged"
    headers: list[dict[str, str]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)


@dataclass
class UploadSession:
    """A large-attachment upload in progress."""

    id: str
    message_id: str
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: str | None
    received_b64: str
    expires: datetime


@dataclass
class MailChangeRecord:
    """A journal entry (delta, notifications)."""

    seq: int
    message_id: str
    folder_id: str
    change_type: str
    at: datetime


@dataclass
class MailData:
    """Everything one mailbox's mail persists."""

    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    uploads: dict[str, UploadSession] = field(default_factory=dict)
    journal: list[MailChangeRecord] = field(default_factory=list)
    seq: int = 0


def _collection(body: dict[str, Any], name: str) -> list[Any]:
    """``body[name]`` as a list (absent or null: empty); 400 if it is no collection."""
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise GraphError(
            400, "RequestBodyRead", f"Property '{name}' must be a collection."
        )
    return value


def _recipients(value: object, name: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise GraphError(
            400, "RequestBodyRead", f"Property '{name}' must be a collection."
        )
    out = []
    for item in value:
        addr = item.get("emailAddress") if isinstance(item, dict) else None
        if (
            not isinstance(addr, dict)
            or not isinstance(addr.get("address"), str)
            or "@" not in addr["address"]
        ):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid., Recipient '' is not resolved. All recipients must be resolved before a message can be submitted.",
            )
        out.append(
            {
                "emailAddress": {
                    "name": str(addr.get("name") or addr["address"]),
                    "address": addr["address"],
                }
            }
        )
    return out


class Mailboxes:
    """Mail rules over one mailbox's :class:`MailData`."""

    def __init__(self, data: MailData, owner: dict[str, Any]) -> None:
        self.data = data
        self.owner = owner

    # -- folders ---------------------------------------------------------------------

    def ensure_folders(self) -> None:
        """Create the well-known folders."""
        if self.data.folders:
            return
        for key, name in WELL_KNOWN:
            folder = Folder(id=_ids.new_id(), display_name=name, well_known=key)
            self.data.folders[folder.id] = folder

    def folder(self, key: str) -> Folder:
        """A folder by id or well-known name (case-insensitive).

        Raises:
            GraphError: 404 ErrorItemNotFound.
        """
        self.ensure_folders()
        found = self.data.folders.get(key)
        if found is not None:
            return found
        for folder in self.data.folders.values():
            if folder.well_known == key.casefold():
                return folder
        raise item_not_found()

    def render_folder(self, folder: Folder) -> dict[str, Any]:
        """Graph JSON of a mailFolder."""
        items = [m for m in self.data.messages.values() if m.folder_id == folder.id]
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id or self._root_id(),
            "childFolderCount": 0,
            "unreadItemCount": sum(1 for m in items if not m.is_read),
            "totalItemCount": len(items),
            "sizeInBytes": sum(len(m.body.get("content", "")) for m in items),
            "isHidden": False,
        }

    def _root_id(self) -> str:
        return "AAMkAMsgFolderRoot" + "A" * 8

    # -- journal -------------------------------------------------------------------------

    def _journal(
        self,
        msg: StoredMessage,
        change: MailChange,
        now: datetime,
        folder_id: str | None = None,
    ) -> None:
        self.data.seq += 1
        self.data.journal.append(
            MailChangeRecord(
                self.data.seq, msg.id, folder_id or msg.folder_id, change, now
            )
        )
        if len(self.data.journal) > 5000:
            del self.data.journal[: len(self.data.journal) - 5000]

    # -- messages ----------------------------------------------------------------------------

    def message(self, key: str) -> StoredMessage:
        """A message by regular or immutable id.

        Raises:
            GraphError: 404 ErrorItemNotFound.
        """
        found = self.data.messages.get(key)
        if found is not None:
            return found
        for msg in self.data.messages.values():
            if msg.immutable_id == key:
                return msg
        raise item_not_found()

    def in_folder(self, folder_id: str | None) -> list[StoredMessage]:
        """Messages of a folder (None = all folders), newest received first."""
        out = [
            m
            for m in self.data.messages.values()
            if folder_id is None or m.folder_id == folder_id
        ]
        out.sort(key=lambda m: (m.received, m.id), reverse=True)
        return out

    def _new_message(
        self, body: dict[str, Any], *, folder: Folder, now: datetime, draft: bool
    ) -> StoredMessage:
        check_properties(
            body, MESSAGE_PROPERTIES | {"attachments"}, "microsoft.graph.message"
        )
        subject = body.get("subject") or ""
        if not isinstance(subject, str):
            raise GraphError(
                400, "RequestBodyRead", "Property 'subject' must be a string."
            )
        recipients = {
            name: _recipients(body.get(name), name) for name in _RECIPIENT_FIELDS
        }
        sender = copy.deepcopy(self.owner)
        headers = _collection(body, "internetMessageHeaders")
        attachments = _collection(body, "attachments")
        for header in headers:
            if not isinstance(header, dict) or not str(
                header.get("name", "")
            ).lower().startswith("x-"):
                raise GraphError(
                    400,
                    "InvalidInternetMessageHeader",
                    "The internet message header name should start with 'x-' or 'X-'.",
                )
        msg = StoredMessage(
            id=_ids.new_id(),
            immutable_id=_ids.new_id(),
            folder_id=folder.id,
            change_key=_ids.change_key(),
            created=now,
            last_modified=now,
            received=now,
            sent=None if draft else now,
            is_draft=draft,
            is_read=True,
            conversation_id=_ids.new_id()[:100],
            internet_message_id=_client_message_id(body, draft)
            or f"<{secrets.token_hex(12).upper()}@sandbox.outlook.test>",
            subject=subject,
            body=normalize_body(body.get("body")),
            sender=sender,
            recipients=recipients,
            importance=normalize_pass_through(
                "importance", body.get("importance") or "normal"
            ),
            categories=normalize_pass_through(
                "categories", body.get("categories") or []
            ),
            headers=[
                {"name": str(h["name"]), "value": str(h.get("value", ""))}
                for h in headers
            ],
        )
        for raw in attachments:
            msg.attachments.append(self._attachment_from_json(raw, now))
        return msg

    def create_draft(
        self, body: dict[str, Any], *, folder_key: str, now: datetime
    ) -> StoredMessage:
        """``POST /me/messages`` (or into a folder): a new draft."""
        folder = self.folder(folder_key)
        msg = self._new_message(body, folder=folder, now=now, draft=True)
        self.data.messages[msg.id] = msg
        self._journal(msg, "created", now)
        return msg

    def update(
        self, key: str, body: dict[str, Any], *, if_match: str | None, now: datetime
    ) -> StoredMessage:
        """``PATCH /me/messages/{id}``.

        Raises:
            GraphError: 404, 412 (stale If-Match), 400 (unknown property).
        """
        check_properties(body, MESSAGE_PROPERTIES, "microsoft.graph.message")
        msg = self.message(key)
        _check_if_match(if_match, msg.change_key)
        # Validate every property before changing anything: a rejected PATCH
        # leaves the message as it was (Graph updates are all-or-nothing).
        changes: dict[str, Any] = {}
        if "isRead" in body:
            if not isinstance(body["isRead"], bool):
                raise GraphError(
                    400,
                    "RequestBodyRead",
                    f"Cannot convert the literal '{body['isRead']}' to the expected "
                    "type 'Edm.Boolean'.",
                )
            changes["is_read"] = body["isRead"]
        if "categories" in body:
            changes["categories"] = normalize_pass_through(
                "categories", body["categories"] or []
            )
        if "importance" in body:
            changes["importance"] = normalize_pass_through(
                "importance", body["importance"]
            )
        if "flag" in body and isinstance(body["flag"], dict):
            changes["flag_status"] = str(body["flag"].get("flagStatus") or "notFlagged")
        recipients: dict[str, list[dict[str, Any]]] = {}
        if msg.is_draft:
            if "subject" in body:
                changes["subject"] = normalize_pass_through("subject", body["subject"])
            if "body" in body:
                changes["body"] = normalize_body(body["body"])
            for name in _RECIPIENT_FIELDS:
                if name in body:
                    recipients[name] = _recipients(body[name], name)
        for attr, value in changes.items():
            setattr(msg, attr, value)
        msg.recipients.update(recipients)
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self._journal(msg, "updated", now)
        return msg

    def move(self, msg: StoredMessage, folder: Folder, now: datetime) -> StoredMessage:
        """Move to ``folder``: the regular id changes, the immutable id does not."""
        old_folder = msg.folder_id
        self._journal(msg, "deleted", now, folder_id=old_folder)
        del self.data.messages[msg.id]
        msg.id = _ids.new_id()
        msg.folder_id = folder.id
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self.data.messages[msg.id] = msg
        self._journal(msg, "created", now)
        return msg

    def delete(self, key: str, *, if_match: str | None, now: datetime) -> None:
        """``DELETE /me/messages/{id}``: to Deleted Items, or gone when already there."""
        msg = self.message(key)
        _check_if_match(if_match, msg.change_key)
        trash = self.folder("deleteditems")
        if msg.folder_id == trash.id:
            del self.data.messages[msg.id]
            self._journal(msg, "deleted", now)
            return
        self.move(msg, trash, now)

    def send_draft(self, key: str, now: datetime) -> StoredMessage:
        """``POST /me/messages/{id}/send``: stamp and move to Sent Items.

        Raises:
            GraphError: 400 ErrorInvalidRecipients without recipients.
        """
        msg = self.message(key)
        if not msg.is_draft:
            raise GraphError(400, "ErrorInvalidOperation", "Only a draft can be sent.")
        if not any(
            msg.recipients.get(n)
            for n in ("toRecipients", "ccRecipients", "bccRecipients")
        ):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
            )
        msg.is_draft = False
        msg.sent = now
        msg.received = now
        return self.move(msg, self.folder("sentitems"), now)

    def send_new(
        self, message: dict[str, Any], *, save: bool, now: datetime
    ) -> StoredMessage:
        """``POST /me/sendMail``: build, optionally save to Sent Items, and return the sent copy."""
        sent = self.folder("sentitems")
        msg = self._new_message(message, folder=sent, now=now, draft=False)
        if not any(
            msg.recipients.get(n)
            for n in ("toRecipients", "ccRecipients", "bccRecipients")
        ):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
            )
        if save:
            self.data.messages[msg.id] = msg
            self._journal(msg, "created", now)
        return msg

    def deliver(self, sent: StoredMessage, now: datetime) -> StoredMessage:
        """Put a copy of ``sent`` into this mailbox's inbox (unread)."""
        inbox = self.folder("inbox")
        copy_msg = copy.deepcopy(sent)
        copy_msg.id = _ids.new_id()
        copy_msg.immutable_id = _ids.new_id()
        copy_msg.folder_id = inbox.id
        copy_msg.change_key = _ids.change_key()
        copy_msg.created = copy_msg.last_modified = copy_msg.received = now
        copy_msg.is_read = False
        copy_msg.is_draft = False
        # Bcc is not visible to recipients
        copy_msg.recipients["bccRecipients"] = []
        self.data.messages[copy_msg.id] = copy_msg
        self._journal(copy_msg, "created", now)
        return copy_msg

    def touch(self, key: str, now: datetime) -> StoredMessage:
        """Out-of-band edit (control API): new change key."""
        msg = self.message(key)
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self._journal(msg, "updated", now)
        return msg

    # -- attachments -----------------------------------------------------------------------

    def _attachment_from_json(self, raw: object, now: datetime) -> StoredAttachment:
        if not isinstance(raw, dict):
            raise GraphError(400, "RequestBodyRead", "An attachment must be an object.")
        kind = str(raw.get("@odata.type") or "").casefold()
        if kind != "#microsoft.graph.fileattachment":
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "The sandbox supports #microsoft.graph.fileAttachment attachments only.",
            )
        content = raw.get("contentBytes")
        try:
            data = base64.b64decode(str(content or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GraphError(
                400, "RequestBodyRead", "Invalid base64 string for contentBytes."
            ) from exc
        if len(data) >= MIN_UPLOAD_SESSION_BYTES:
            raise GraphError(
                413,
                "ErrorRequestEntityTooLarge",
                "The attachment is 3 MB or larger; use an upload session.",
            )
        return StoredAttachment(
            id=_ids.new_id(),
            name=str(raw.get("name") or "attachment"),
            content_type=str(raw.get("contentType") or "application/octet-stream"),
            size=len(data),
            is_inline=bool(raw.get("isInline", False)),
            content_id=raw.get("contentId"),
            content_b64=base64.b64encode(data).decode("ascii"),
            last_modified=now,
        )

    def add_attachment(self, key: str, raw: object, now: datetime) -> StoredAttachment:
        """``POST /me/messages/{id}/attachments`` (< 3 MB)."""
        msg = self.message(key)
        att = self._attachment_from_json(raw, now)
        msg.attachments.append(att)
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self._journal(msg, "updated", now)
        return att

    def attachment(self, key: str, attachment_id: str) -> StoredAttachment:
        """One attachment. Raises 404 ErrorItemNotFound."""
        msg = self.message(key)
        for att in msg.attachments:
            if att.id == attachment_id:
                return att
        raise item_not_found()

    def delete_attachment(self, key: str, attachment_id: str, now: datetime) -> None:
        """``DELETE …/attachments/{id}``."""
        msg = self.message(key)
        att = self.attachment(key, attachment_id)
        msg.attachments.remove(att)
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self._journal(msg, "updated", now)

    def create_upload_session(
        self, key: str, item: object, now: datetime
    ) -> UploadSession:
        """``POST …/attachments/createUploadSession`` for a 3-150 MB file.

        Raises:
            GraphError: 400 ErrorAttachmentSizeShouldNotBeLessThanMinimumSize.
        """
        msg = self.message(key)
        if not isinstance(item, dict):
            raise GraphError(
                400, "RequestBodyRead", "The request needs an AttachmentItem."
            )
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise GraphError(
                400, "ErrorInvalidParameter", "The attachment size is required."
            )
        if size < MIN_UPLOAD_SESSION_BYTES:
            raise GraphError(
                400,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            )
        if size > MAX_UPLOAD_SESSION_BYTES:
            raise GraphError(
                400,
                "ErrorAttachmentSizeShouldNotBeMoreThanMaximumSize",
                "Attachment size exceeds the maximum size.",
            )
        session = UploadSession(
            id=secrets.token_urlsafe(24),
            message_id=msg.immutable_id,
            name=str(item.get("name") or "attachment"),
            content_type=str(item.get("contentType") or "application/octet-stream"),
            size=size,
            is_inline=bool(item.get("isInline", False)),
            content_id=item.get("contentId"),
            received_b64="",
            expires=now + UPLOAD_SESSION_LIFETIME,
        )
        self.data.uploads[session.id] = session
        return session

    def upload_chunk(
        self,
        session_id: str,
        first: int,
        last: int,
        total: int,
        chunk: bytes,
        now: datetime,
    ) -> tuple[UploadSession, StoredAttachment | None]:
        """A ranged PUT. Returns the session and, when complete, the attachment.

        Raises:
            GraphError: 404 for an unknown/expired session, 416 for a range that
                is not the next expected one.
        """
        session = self.data.uploads.get(session_id)
        if session is None or session.expires <= now:
            raise GraphError(
                404, "ErrorItemNotFound", "The upload session was not found."
            )
        received = base64.b64decode(session.received_b64)
        if (
            total != session.size
            or first != len(received)
            or last - first + 1 != len(chunk)
            or last >= total
        ):
            raise GraphError(
                416,
                "InvalidRange",
                f"The range is not valid. Expected range starts at {len(received)}.",
            )
        received += chunk
        session.received_b64 = base64.b64encode(received).decode("ascii")
        if len(received) < session.size:
            return session, None
        del self.data.uploads[session_id]
        msg = self.message(session.message_id)
        att = StoredAttachment(
            id=_ids.new_id(),
            name=session.name,
            content_type=session.content_type,
            size=len(received),
            is_inline=session.is_inline,
            content_id=session.content_id,
            content_b64=session.received_b64,
            last_modified=now,
        )
        msg.attachments.append(att)
        msg.change_key = _ids.change_key()
        msg.last_modified = now
        self._journal(msg, "updated", now)
        return session, att

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self,
        msg: StoredMessage,
        *,
        base: str,
        immutable: bool,
        prefer_text: bool,
        select: frozenset[str] | None,
    ) -> dict[str, Any]:
        """Graph JSON of a message."""
        item_id = msg.immutable_id if immutable else msg.id
        data: dict[str, Any] = {
            "@odata.etag": f'W/"{msg.change_key}"',
            "id": item_id,
            "createdDateTime": format_utc(msg.created)[:-9] + "Z",
            "lastModifiedDateTime": format_utc(msg.last_modified)[:-9] + "Z",
            "changeKey": msg.change_key,
            "categories": list(msg.categories),
            "receivedDateTime": format_utc(msg.received)[:-9] + "Z",
            "sentDateTime": format_utc(msg.sent)[:-9] + "Z" if msg.sent else None,
            "hasAttachments": any(not a.is_inline for a in msg.attachments),
            "internetMessageId": msg.internet_message_id,
            "subject": msg.subject,
            "bodyPreview": preview(msg.body),
            "importance": msg.importance,
            "parentFolderId": msg.folder_id,
            "conversationId": msg.conversation_id,
            "conversationIndex": base64.b64encode(
                msg.conversation_id.encode()[:22]
            ).decode("ascii"),
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": msg.is_read,
            "isDraft": msg.is_draft,
            "webLink": f"{base}/owa/?ItemID={item_id}&exvsurl=1&viewmodel=ReadMessageItem",
            "inferenceClassification": "focused",
            "body": render_body(msg.body, prefer_text),
            "sender": copy.deepcopy(msg.sender),
            "from": copy.deepcopy(msg.sender),
            "toRecipients": copy.deepcopy(msg.recipients.get("toRecipients", [])),
            "ccRecipients": copy.deepcopy(msg.recipients.get("ccRecipients", [])),
            "bccRecipients": copy.deepcopy(msg.recipients.get("bccRecipients", [])),
            "replyTo": copy.deepcopy(msg.recipients.get("replyTo", [])),
            "flag": {"flagStatus": msg.flag_status},
        }
        if select is not None:
            keep = {"@odata.etag", "id"} | set(select)
            data = {k: v for k, v in data.items() if k in keep}
            if "internetMessageHeaders" in select:
                data["internetMessageHeaders"] = [dict(h) for h in msg.headers]
            if "uniqueBody" in select:
                data["uniqueBody"] = render_body(msg.body, prefer_text)
        return data

    @staticmethod
    def render_attachment(
        att: StoredAttachment, *, with_content: bool = True
    ) -> dict[str, Any]:
        """Graph JSON of a fileAttachment."""
        data: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": att.id,
            "lastModifiedDateTime": format_utc(att.last_modified)[:-9] + "Z",
            "name": att.name,
            "contentType": att.content_type,
            "size": att.size,
            "isInline": att.is_inline,
            "contentId": att.content_id,
            "contentLocation": None,
        }
        if with_content:
            data["contentBytes"] = att.content_b64
        return data


def _check_if_match(if_match: str | None, change_key: str) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = [t.strip() for t in if_match.split(",")]
    if not any(t in {f'W/"{change_key}"', f'"{change_key}"', change_key} for t in tags):
        raise irresolvable_conflict()


def _client_message_id(body: dict[str, Any], draft: bool) -> str | None:
    """A draft may carry the client's own Message-ID ("internetMessageId …
    Updatable only if isDraft = true", message resource); messages sent
    directly get one from the server."""
    value = body.get("internetMessageId")
    if not draft or value is None:
        return None
    if not isinstance(value, str) or not (
        value.startswith("<") and value.endswith(">") and "@" in value
    ):
        raise GraphError(
            400,
            "ErrorInvalidInternetMessageId",
            "The internetMessageId must be an RFC 2822 message id: <id@domain>.",
        )
    return value
