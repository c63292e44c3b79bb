"""Gmail v1 data and rules: mailboxes, messages, labels, threads, history.

HTTP lives in :mod:`crmflow.sandbox.google.gmail`; the rules come from the
Gmail reference and guides as collected in google-apis.md §6 (checklist
24-28):

* ``messages.send`` takes base64url RFC 2822 ``raw``; the sender's copy gets
  ``SENT``; it joins ``threadId`` only when "1. The requested threadId must be
  specified on the Message … 2. The References and In-Reply-To headers must be
  set … 3. The Subject headers must match." Otherwise it starts a new thread.
* Mail to other sandbox users is delivered: the recipient's copy lands in
  ``INBOX`` + ``UNREAD`` (+ ``CATEGORY_PERSONAL``) and their history, threaded by
  References/In-Reply-To and subject. Mail to anyone else goes to the outbox
  (readable through the control API).
* History ids "increase chronologically but are not contiguous with random
  gaps in between valid IDs". A ``startHistoryId`` older than the mailbox's
  retained history gets 404 (``expire_history`` moves that floor).
* ``messages.list`` returns ``id`` + ``threadId`` only, newest first, default
  100 / max 500, ``labelIds`` AND-ed, SPAM and TRASH excluded unless
  ``includeSpamTrash``.

All methods must be called with the sandbox state lock held.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from crmflow.sandbox.google import errors, mime, search
from crmflow.sandbox.google.errors import GoogleApiError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "SYSTEM_LABELS",
    "HistoryRecord",
    "Mail",
    "MailData",
    "Mailbox",
    "StoredLabel",
    "StoredMessage",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
#: modify: "addLabelIds[] / removeLabelIds[] (≤ 100 each)"
MAX_MODIFY_LABELS = 100

#: system labels with their labels.list visibility fields ([OBS]; Gmail does
#: not enumerate them in discovery)
SYSTEM_LABELS: dict[str, dict[str, str]] = {
    "CHAT": {"messageListVisibility": "hide", "labelListVisibility": "labelHide"},
    "SENT": {},
    "INBOX": {},
    "IMPORTANT": {"messageListVisibility": "hide", "labelListVisibility": "labelHide"},
    "TRASH": {"messageListVisibility": "hide", "labelListVisibility": "labelHide"},
    "DRAFT": {},
    "SPAM": {"messageListVisibility": "hide", "labelListVisibility": "labelHide"},
    "CATEGORY_FORUMS": {},
    "CATEGORY_UPDATES": {},
    "CATEGORY_PERSONAL": {},
    "CATEGORY_PROMOTIONS": {},
    "CATEGORY_SOCIAL": {},
    "STARRED": {},
    "UNREAD": {},
}
#: labels a client may not add or remove (discovery: DRAFT and SENT cannot be
#: changed; INBOX and UNREAD can)
_FIXED_LABELS = frozenset({"SENT", "DRAFT", "CHAT"})
_RECEIVED_LABELS = ["UNREAD", "CATEGORY_PERSONAL", "INBOX"]


def _gmail_bad(message: str) -> GoogleApiError:
    return errors.bad_request(message, flavor="aip", reason="invalidArgument")


@dataclass
class StoredMessage:
    """One message in one mailbox."""

    id: str
    thread_id: str
    #: base64url of the RFC 2822 bytes
    raw: str
    label_ids: list[str]
    internal_date_ms: int
    #: last history record that modified this message
    history_id: int
    #: the Message-ID header (threading, rfc822msgid:)
    message_id_header: str
    subject: str

    def raw_bytes(self) -> bytes:
        """The RFC 2822 bytes."""
        return mime.unb64url(self.raw)


@dataclass
class StoredLabel:
    """A user label."""

    id: str
    name: str
    message_list_visibility: str = "show"
    label_list_visibility: str = "labelShow"
    color: dict[str, str] | None = None


@dataclass
class HistoryRecord:
    """One history entry."""

    id: int
    #: messageAdded | messageDeleted | labelAdded | labelRemoved
    kind: str
    message_id: str
    thread_id: str
    #: labels at add time / labels changed
    label_ids: list[str]


@dataclass
class Mailbox:
    """One user's mailbox."""

    email: str
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    labels: dict[str, StoredLabel] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    history_id: int = 0
    #: startHistoryId below this is "too old" (404)
    history_floor: int = 0
    next_label: int = 1


@dataclass
class MailData:
    """Everything :class:`Mail` persists."""

    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    #: mail sent to addresses outside the sandbox
    outbox: list[dict[str, Any]] = field(default_factory=list)


def normalize_subject(subject: str) -> str:
    """Subject without leading Re:/Fwd: prefixes, for thread matching."""
    return re.sub(
        r"^((re|fw|fwd|aw|wg)\s*:\s*)+", "", subject.strip(), flags=re.IGNORECASE
    ).lower()


class Mail:
    """Gmail rules over :class:`MailData`. Call with the state lock held."""

    def __init__(
        self, data: MailData | None = None, *, random_int: Callable[[int, int], int]
    ) -> None:
        self.data = data or MailData()
        self._random_int = random_int

    # -- mailboxes ---------------------------------------------------------------------

    def mailbox(self, email: str) -> Mailbox:
        """Return the user's mailbox, creating it (history ids start at a random value)."""
        box = self.data.mailboxes.get(email)
        if box is None:
            start = self._random_int(1000, 900_000)
            box = Mailbox(email=email, history_id=start, history_floor=start)
            self.data.mailboxes[email] = box
        return box

    def _next_history(self, box: Mailbox) -> int:
        box.history_id += self._random_int(1, 97)
        return box.history_id

    def _record(
        self, box: Mailbox, kind: str, msg: StoredMessage, labels: list[str]
    ) -> HistoryRecord:
        rec = HistoryRecord(
            self._next_history(box), kind, msg.id, msg.thread_id, list(labels)
        )
        box.history.append(rec)
        msg.history_id = rec.id
        return rec

    def expire_history(self, box: Mailbox) -> None:
        """Make every history id issued so far too old (next history.list from them: 404)."""
        box.history_id += self._random_int(1, 97)
        box.history_floor = box.history_id
        box.history = [r for r in box.history if r.id >= box.history_floor]

    # -- labels --------------------------------------------------------------------------

    def label_exists(self, box: Mailbox, label_id: str) -> bool:
        """True for system labels and the mailbox's user labels."""
        return label_id in SYSTEM_LABELS or label_id in box.labels

    def create_label(self, box: Mailbox, raw: dict[str, Any]) -> StoredLabel:
        """labels.create. Raises 409 when the name exists (Gmail: "Label name exists or conflicts")."""
        name = str(raw.get("name") or "").strip()
        if not name:
            raise _gmail_bad("Invalid label name")
        taken = {label.name.lower() for label in box.labels.values()} | {
            n.lower() for n in SYSTEM_LABELS
        }
        if name.lower() in taken:
            raise errors.error(
                409, "alreadyExists", "Label name exists or conflicts", flavor="aip"
            )
        label = StoredLabel(
            id=f"Label_{box.next_label}",
            name=name,
            message_list_visibility=str(raw.get("messageListVisibility") or "show"),
            label_list_visibility=str(raw.get("labelListVisibility") or "labelShow"),
            color=raw.get("color") if isinstance(raw.get("color"), dict) else None,
        )
        box.next_label += 1
        box.labels[label.id] = label
        return label

    def render_label(
        self, box: Mailbox, label_id: str, *, counts: bool
    ) -> dict[str, Any]:
        """A ``Label``; ``counts`` adds messagesTotal/Unread and threadsTotal/Unread (labels.get)."""
        if label_id in SYSTEM_LABELS:
            out: dict[str, Any] = {
                "id": label_id,
                "name": label_id,
                **SYSTEM_LABELS[label_id],
                "type": "system",
            }
        else:
            label = box.labels[label_id]
            out = {
                "id": label.id,
                "name": label.name,
                "messageListVisibility": label.message_list_visibility,
                "labelListVisibility": label.label_list_visibility,
                "type": "user",
            }
            if label.color:
                out["color"] = dict(label.color)
        if counts:
            with_label = [m for m in box.messages.values() if label_id in m.label_ids]
            unread = [m for m in with_label if "UNREAD" in m.label_ids]
            out["messagesTotal"] = len(with_label)
            out["messagesUnread"] = len(unread)
            out["threadsTotal"] = len({m.thread_id for m in with_label})
            out["threadsUnread"] = len({m.thread_id for m in unread})
        return out

    # -- messages ------------------------------------------------------------------------

    def message(self, box: Mailbox, message_id: str) -> StoredMessage:
        """Return a message. Raises 404 notFound (Gmail wording)."""
        msg = box.messages.get(message_id)
        if msg is None:
            raise errors.not_found(flavor="aip")
        return msg

    def _new_id(self, now_ms: int) -> str:
        # Gmail ids are 16 hex digits that grow with time.
        return f"{now_ms:011x}{secrets.randbelow(16**5):05x}"[-16:]

    def _store(
        self,
        box: Mailbox,
        raw: bytes,
        parsed: EmailMessage,
        *,
        labels: list[str],
        thread_id: str | None,
        now_ms: int,
    ) -> StoredMessage:
        msg_id = self._new_id(now_ms)
        while msg_id in box.messages:
            msg_id = self._new_id(now_ms + 1)
        msg = StoredMessage(
            id=msg_id,
            thread_id=thread_id or msg_id,
            raw=mime.b64url(raw),
            label_ids=list(labels),
            internal_date_ms=now_ms,
            history_id=0,
            message_id_header=str(parsed.get("Message-ID", "")).strip(),
            subject=str(parsed.get("Subject", "")),
        )
        box.messages[msg.id] = msg
        self._record(box, "messageAdded", msg, msg.label_ids)
        return msg

    def _thread_of_reply(
        self, box: Mailbox, parsed: EmailMessage, candidates: list[StoredMessage]
    ) -> str | None:
        refs = " ".join(str(parsed.get(h, "")) for h in ("In-Reply-To", "References"))
        wanted = set(re.findall(r"<[^>]+>", refs))
        if not wanted:
            return None
        subject = normalize_subject(str(parsed.get("Subject", "")))
        for msg in candidates:
            if (
                msg.message_id_header in wanted
                and normalize_subject(msg.subject) == subject
            ):
                return msg.thread_id
        return None

    def send(
        self,
        box: Mailbox,
        raw_b64: Any,
        *,
        thread_id: Any,
        now: datetime,
        sandbox_users: set[str],
        mailbox_of: Callable[[str], Mailbox],
    ) -> StoredMessage:
        """messages.send: store the sender's copy and deliver to sandbox recipients.

        Raises:
            GoogleApiError: 400 for missing/invalid ``raw`` or no recipients,
                404 for an unknown ``threadId``.
        """
        if not isinstance(raw_b64, str) or not raw_b64:
            raise _gmail_bad(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
            )
        try:
            raw = mime.unb64url(raw_b64)
        except ValueError as exc:
            raise _gmail_bad(
                "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed"
            ) from exc
        return self.send_bytes(
            box,
            raw,
            thread_id=thread_id,
            now=now,
            sandbox_users=sandbox_users,
            mailbox_of=mailbox_of,
        )

    def send_bytes(
        self,
        box: Mailbox,
        raw: bytes,
        *,
        thread_id: Any,
        now: datetime,
        sandbox_users: set[str],
        mailbox_of: Callable[[str], Mailbox],
    ) -> StoredMessage:
        """Send RFC 2822 bytes (see :meth:`send`)."""
        parsed = mime.parse_message(raw)
        recipients = [
            addr.lower()
            for _, addr in getaddresses(
                [str(v) for h in ("To", "Cc", "Bcc") for v in parsed.get_all(h, [])]
            )
            if addr
        ]
        if not recipients:
            raise _gmail_bad("Recipient address required")
        # Gmail sets From to the sender and adds Message-ID and Date when absent.
        if parsed.get("From") is None:
            parsed["From"] = box.email
        if parsed.get("Date") is None:
            parsed["Date"] = format_datetime(now.astimezone(UTC))
        if parsed.get("Message-ID") is None:
            parsed["Message-ID"] = make_msgid(domain="mail.gmail.com")
        stored_raw = parsed.as_bytes()
        now_ms = int(now.timestamp() * 1000)
        joined: str | None = None
        if thread_id:
            if not isinstance(thread_id, str) or not any(
                m.thread_id == thread_id for m in box.messages.values()
            ):
                raise errors.not_found(flavor="aip")
            in_thread = [m for m in box.messages.values() if m.thread_id == thread_id]
            joined = self._thread_of_reply(box, parsed, in_thread)
        labels = ["SENT"]
        if box.email in recipients:
            labels += ["INBOX", "UNREAD"]
        sent = self._store(
            box, stored_raw, parsed, labels=labels, thread_id=joined, now_ms=now_ms
        )
        # Recipients never see Bcc.
        delivered = mime.parse_message(stored_raw)
        del delivered["Bcc"]
        delivered_raw = delivered.as_bytes()
        external: list[str] = []
        for address in dict.fromkeys(recipients):
            if address == box.email:
                continue
            if address not in sandbox_users:
                external.append(address)
                continue
            target = mailbox_of(address)
            thread = self._thread_of_reply(
                target, delivered, list(target.messages.values())
            )
            self._store(
                target,
                delivered_raw,
                delivered,
                labels=_RECEIVED_LABELS,
                thread_id=thread,
                now_ms=now_ms,
            )
        if external:
            self.data.outbox.append(
                {
                    "from": box.email,
                    "to": external,
                    "messageId": str(parsed.get("Message-ID")),
                    "subject": str(parsed.get("Subject", "")),
                    "raw": mime.b64url(delivered_raw),
                    "internalDate": str(now_ms),
                }
            )
        return sent

    def receive(
        self, box: Mailbox, raw: bytes, *, labels: list[str] | None, now_ms: int
    ) -> StoredMessage:
        """Deliver an incoming message from outside (control API), threaded like Gmail."""
        parsed = mime.parse_message(raw)
        if parsed.get("Message-ID") is None:
            parsed["Message-ID"] = make_msgid(domain="mail.example.com")
        if parsed.get("Date") is None:
            parsed["Date"] = format_datetime(datetime.fromtimestamp(now_ms / 1000, UTC))
        raw = parsed.as_bytes()
        thread = self._thread_of_reply(box, parsed, list(box.messages.values()))
        return self._store(
            box,
            raw,
            parsed,
            labels=labels or list(_RECEIVED_LABELS),
            thread_id=thread,
            now_ms=now_ms,
        )

    def modify(
        self, box: Mailbox, msg: StoredMessage, add: list[str], remove: list[str]
    ) -> None:
        """messages.modify; records labelAdded / labelRemoved history.

        Raises:
            GoogleApiError: 400 for unknown or unchangeable labels.
        """
        if len(add) > MAX_MODIFY_LABELS or len(remove) > MAX_MODIFY_LABELS:
            raise _gmail_bad("Too many labels")
        for label in [*add, *remove]:
            if not self.label_exists(box, label) or label in _FIXED_LABELS:
                raise _gmail_bad(f"Invalid label: {label}")
        added = [label for label in dict.fromkeys(add) if label not in msg.label_ids]
        removed = [
            label
            for label in dict.fromkeys(remove)
            if label in msg.label_ids and label not in added
        ]
        if added:
            msg.label_ids.extend(added)
            self._record(box, "labelAdded", msg, added)
        if removed:
            msg.label_ids = [label for label in msg.label_ids if label not in removed]
            self._record(box, "labelRemoved", msg, removed)

    def delete(self, box: Mailbox, msg: StoredMessage) -> None:
        """Permanently delete (history messageDeleted)."""
        del box.messages[msg.id]
        self._record(box, "messageDeleted", msg, msg.label_ids)

    # -- listing -------------------------------------------------------------------------

    def facts(self, box: Mailbox, msg: StoredMessage) -> search.MessageFacts:
        """What the search syntax can test about ``msg``."""
        parsed = mime.parse_message(msg.raw_bytes())

        def header(name: str) -> str:
            return " ".join(str(v) for v in parsed.get_all(name, [])).lower()

        names = frozenset(
            box.labels[i].name.lower() for i in msg.label_ids if i in box.labels
        )
        return search.MessageFacts(
            sender=header("From"),
            recipients_to=header("To"),
            recipients_cc=header("Cc"),
            recipients_bcc=header("Bcc"),
            subject=header("Subject"),
            body=mime.text_content(parsed).lower(),
            label_ids=frozenset(msg.label_ids),
            label_names=names,
            internal_date_ms=msg.internal_date_ms,
            message_id_header=msg.message_id_header.lower(),
            attachment_names=tuple(mime.attachment_names(parsed)),
        )

    def search(
        self,
        box: Mailbox,
        *,
        q: str | None,
        label_ids: list[str],
        include_spam_trash: bool,
        now_ms: int,
    ) -> list[StoredMessage]:
        """Messages matching the list filters, newest first."""
        terms = search.compile_query(q, now_ms) if q else []
        exclude = not include_spam_trash and not search.mentions_spam_or_trash(terms)
        out: list[StoredMessage] = []
        for msg in box.messages.values():
            if (
                exclude
                and ({"SPAM", "TRASH"} & set(msg.label_ids))
                and not ({"SPAM", "TRASH"} & set(label_ids))
            ):
                continue
            if not all(label in msg.label_ids for label in label_ids):
                continue
            if terms and not search.matches(terms, self.facts(box, msg)):
                continue
            out.append(msg)
        out.sort(key=lambda m: (m.internal_date_ms, m.id), reverse=True)
        return out

    # -- rendering -----------------------------------------------------------------------

    def render_message(
        self,
        msg: StoredMessage,
        *,
        fmt: str,
        metadata_headers: list[str] | None = None,
    ) -> dict[str, Any]:
        """A ``Message`` in format minimal / full / metadata / raw."""
        raw = msg.raw_bytes()
        parsed = mime.parse_message(raw)
        out: dict[str, Any] = {
            "id": msg.id,
            "threadId": msg.thread_id,
            "labelIds": list(msg.label_ids),
            "snippet": mime.snippet(parsed),
            "sizeEstimate": len(raw),
            "historyId": str(msg.history_id),
            "internalDate": str(msg.internal_date_ms),
        }
        if fmt == "full":
            out["payload"] = mime.payload_json(msg.id, parsed)
        elif fmt == "metadata":
            wanted = {h.lower() for h in metadata_headers or []}
            headers = [
                {"name": name, "value": str(value)}
                for name, value in parsed.items()
                if not wanted or name.lower() in wanted
            ]
            out["payload"] = {"mimeType": parsed.get_content_type(), "headers": headers}
        elif fmt == "raw":
            out["raw"] = msg.raw
        return out

    def render_history(self, rec: HistoryRecord) -> dict[str, Any]:
        """A ``History`` record (messages carry id + threadId, as Gmail's do)."""
        ref = {"id": rec.message_id, "threadId": rec.thread_id}
        out: dict[str, Any] = {"id": str(rec.id), "messages": [dict(ref)]}
        if rec.kind == "messageAdded":
            out["messagesAdded"] = [
                {"message": {**ref, "labelIds": list(rec.label_ids)}}
            ]
        elif rec.kind == "messageDeleted":
            out["messagesDeleted"] = [{"message": dict(ref)}]
        elif rec.kind == "labelAdded":
            out["labelsAdded"] = [
                {"message": dict(ref), "labelIds": list(rec.label_ids)}
            ]
        else:
            out["labelsRemoved"] = [
                {"message": dict(ref), "labelIds": list(rec.label_ids)}
            ]
        return out


def page_token(key: list[Any]) -> str:
    """An opaque page token."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def read_page_token(token: str) -> list[Any]:
    """Decode :func:`page_token`. Raises 400 on garbage."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise _gmail_bad("Invalid pageToken") from exc
    if not isinstance(data, list):
        raise _gmail_bad("Invalid pageToken")
    return data
