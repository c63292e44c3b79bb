"""RFC 5322 / MIME bytes -> :class:`~crmflow.domain.mail.IncomingMessage`.

Built on the standard library's ``email`` package with ``policy.default``.
Mail in the wild is often broken, so parsing never raises on content: a
header that does not parse is read as raw text, a part in an unknown or wrong
charset is decoded with replacement characters, and what went wrong is listed
in ``IncomingMessage.defects``.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import email.utils
import re
from email.message import Message

from crmflow.domain.mail import (
    Address,
    IncomingAttachment,
    IncomingMessage,
    MailFolder,
)

_PARSER = email.parser.BytesParser(policy=email.policy.default)
_MSGID = re.compile(r"<[^<>\s]+>")


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ``<…>`` ids in an In-Reply-To / References value, in order."""
    return tuple(_MSGID.findall(value or ""))


def _header(msg: Message, name: str, defects: list[str]) -> str:
    try:
        value = msg.get(name)
    except Exception as exc:  # a broken header must not lose the mail
        defects.append(f"{name}: {exc}")
        raw = msg.get_all(name, failobj=[])
        return " ".join(str(v) for v in raw) if raw else ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _addresses(msg: Message, name: str, defects: list[str]) -> tuple[Address, ...]:
    try:
        values = [str(v) for v in msg.get_all(name, failobj=[])]
    except Exception as exc:
        defects.append(f"{name}: {exc}")
        return ()
    found: list[Address] = []
    for display, addr in email.utils.getaddresses(values):
        if addr and "@" in addr:
            found.append(Address(email=addr.strip(), name=" ".join(display.split())))
    return tuple(found)


def _date(msg: Message, defects: list[str]) -> dt.datetime | None:
    raw = _header(msg, "Date", defects)
    if not raw:
        return None
    try:
        value = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        defects.append(f"Date: cannot read {raw[:60]!r}")
        return None
    if value.tzinfo is None:  # RFC 5322 "-0000": time zone unknown; read as UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _text_of(part: Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except LookupError:
        defects.append(f"unknown charset {charset!r}")
    except UnicodeDecodeError:
        defects.append(f"text not in its declared charset {charset!r}")
    # the usual mislabel is Windows-1252 text declared as ASCII or Latin-1;
    # UTF-8 with replacement keeps every valid byte sequence readable
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", errors="replace")


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception as exc:
        defects.append(f"attachment name: {exc}")
        return None
    if name is None:
        return None
    return " ".join(str(name).replace("/", "_").replace("\\", "_").split()) or None


def _walk(
    msg: Message, defects: list[str]
) -> tuple[str | None, str | None, list[IncomingAttachment]]:
    text: str | None = None
    html: str | None = None
    attachments: list[IncomingAttachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = _filename(part, defects)
        is_body = disposition != "attachment" and filename is None
        if is_body and ctype == "text/plain" and text is None:
            text = _text_of(part, defects)
            continue
        if is_body and ctype == "text/html" and html is None:
            html = _text_of(part, defects)
            continue
        if ctype == "message/rfc822" or part.get_content_maintype() == "multipart":
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = b""
        content_id = _header(part, "Content-ID", defects).strip("<> ") or None
        attachments.append(
            IncomingAttachment(
                filename=filename,
                content_type=ctype,
                size=len(data),
                content_id=content_id,
                data=data,
                inline=disposition == "inline" and content_id is not None,
            )
        )
    return text, html, attachments


def parse_message(
    raw: bytes,
    *,
    provider_id: str,
    folder: MailFolder,
    is_read: bool,
    thread_id: str | None = None,
    labels: tuple[str, ...] = (),
) -> IncomingMessage:
    """Parse one message; never raises on malformed content."""
    msg: Message = _PARSER.parsebytes(raw)
    defects = [type(d).__name__ for d in msg.defects]
    text, html, attachments = _walk(msg, defects)
    message_id = next(iter(message_ids(_header(msg, "Message-ID", defects))), None)
    in_reply_to = next(iter(message_ids(_header(msg, "In-Reply-To", defects))), None)
    senders = _addresses(msg, "From", defects)
    return IncomingMessage(
        provider_id=provider_id,
        folder=folder,
        thread_id=thread_id,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=message_ids(_header(msg, "References", defects)),
        subject=_header(msg, "Subject", defects),
        sender=senders[0] if senders else None,
        to=_addresses(msg, "To", defects),
        cc=_addresses(msg, "Cc", defects),
        bcc=_addresses(msg, "Bcc", defects),
        date=_date(msg, defects),
        text=text,
        html=html,
        is_read=is_read,
        labels=labels,
        attachments=tuple(attachments),
        defects=tuple(defects),
    )
