"""RFC 2822 messages rendered as Gmail ``Message``/``MessagePart`` JSON.

Gmail's shape (discovery ``MessagePart``; google-apis.md §6.2, checklist 28):

* ``payload`` is a ``MessagePart`` tree: ``partId`` ("" at the top, then "0",
  "1", nested "1.0" …), ``mimeType``, ``filename``, ``headers[{name, value}]``,
  ``body{size, data?, attachmentId?}``, ``parts[]`` for multiparts.
* Leaf ``body.data`` is the transfer-decoded content, base64url encoded; a
  multipart's body is ``{"size": 0}``.
* Parts with a file name are attachments: their body carries ``attachmentId``
  and ``size`` instead of ``data``; ``attachments.get`` returns the data.
* ``snippet`` is a short plain-text excerpt with HTML entities escaped.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import html
import re
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

__all__ = [
    "b64url",
    "find_attachment",
    "parse_message",
    "payload_json",
    "snippet",
    "text_content",
    "unb64url",
]

#: Gmail snippets are roughly this long (characters)
SNIPPET_LENGTH = 200


def b64url(data: bytes) -> str:
    """Base64url with padding, the alphabet Gmail uses for ``raw`` and ``data``."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding.

    Raises:
        ValueError: characters outside the base64url alphabet.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_message(raw: bytes) -> EmailMessage:
    """Parse RFC 2822 bytes with the modern email policy (decoded header values)."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)  # noqa: S101 - policy.default guarantees it
    return parsed


def attachment_id(message_id: str, part_id: str) -> str:
    """A stable opaque attachment id for part ``part_id`` of ``message_id``."""
    digest = hashlib.sha256(f"{message_id}/{part_id}".encode()).digest()
    return "ANGjdJ" + base64.urlsafe_b64encode(digest * 3).decode().rstrip("=")


def _headers(part: Message) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in part.items()]


def _leaf_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            first = inner[0]
            if isinstance(first, Message):
                return first.as_bytes()
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def payload_json(message_id: str, msg: Message, part_id: str = "") -> dict[str, Any]:
    """Return the ``MessagePart`` JSON of ``msg`` (format=full)."""
    mime_type = msg.get_content_type()
    filename = msg.get_filename() or ""
    out: dict[str, Any] = {
        "partId": part_id,
        "mimeType": mime_type,
        "filename": filename,
        "headers": _headers(msg),
    }
    if msg.is_multipart() and mime_type != "message/rfc822":
        out["body"] = {"size": 0}
        children = msg.get_payload()
        assert isinstance(children, list)  # noqa: S101 - multipart payloads are lists
        out["parts"] = [
            payload_json(message_id, child, f"{part_id}.{i}" if part_id else str(i))
            for i, child in enumerate(children)
            if isinstance(child, Message)
        ]
        return out
    data = _leaf_bytes(msg)
    if filename:
        out["body"] = {
            "attachmentId": attachment_id(message_id, part_id),
            "size": len(data),
        }
    elif data:
        out["body"] = {"size": len(data), "data": b64url(data)}
    else:
        out["body"] = {"size": 0}
    return out


def find_attachment(
    message_id: str, msg: Message, wanted: str, part_id: str = ""
) -> bytes | None:
    """Return the decoded content of the attachment ``wanted``, or None."""
    if msg.is_multipart() and msg.get_content_type() != "message/rfc822":
        children = msg.get_payload()
        assert isinstance(children, list)  # noqa: S101 - multipart payloads are lists
        for i, child in enumerate(children):
            if not isinstance(child, Message):
                continue
            found = find_attachment(
                message_id, child, wanted, f"{part_id}.{i}" if part_id else str(i)
            )
            if found is not None:
                return found
        return None
    if msg.get_filename() and attachment_id(message_id, part_id) == wanted:
        return _leaf_bytes(msg)
    return None


def text_content(msg: Message) -> str:
    """Return the first text/plain body (or text/html with tags stripped)."""
    html_text: str | None = None
    for part in msg.walk():
        if part.is_multipart() or part.get_filename():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        text = raw.decode(part.get_content_charset() or "utf-8", errors="replace")
        if ctype == "text/plain":
            return text
        if html_text is None:
            html_text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return html_text or ""


def snippet(msg: Message) -> str:
    """Gmail-style snippet: collapsed whitespace, ~200 characters, HTML-escaped."""
    text = " ".join(text_content(msg).split())[:SNIPPET_LENGTH]
    # Gmail escapes &, <, >, " and ' (as &#39;) in snippets.
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def has_attachment(msg: Message) -> bool:
    """True when some part has a file name."""
    return any(part.get_filename() for part in msg.walk() if not part.is_multipart())


def attachment_names(msg: Message) -> list[str]:
    """File names of all attachments."""
    return [
        name
        for part in msg.walk()
        if not part.is_multipart() and (name := part.get_filename())
    ]
