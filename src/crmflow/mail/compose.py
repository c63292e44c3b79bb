"""Building the messages the CRM sends, and replies and forwards.

:func:`build_message` turns a checked :class:`~crmflow.domain.mail.OutgoingMessage`
into RFC 5322 bytes that every provider accepts (Gmail API ``raw``, Graph
MIME upload, SMTP ``DATA``):

* CRLF line ends, header lines folded at 78 characters.
* No ``Bcc`` header: Bcc recipients are envelope-only, so no recipient ever
  sees them (the adapter passes them to the provider beside the bytes).
* Non-ASCII in names and the subject is RFC 2047-encoded; international
  domains are written in IDNA (``xn--``) form. A non-ASCII local part
  (``jörg@…``) needs SMTPUTF8, which not every path supports, so it is
  refused with a message the user can act on.
* The body is ``text/plain``, or ``multipart/alternative`` (text, HTML) when
  there is HTML; with attachments both go into ``multipart/mixed``.
  Attachment names use RFC 2231 when they are not ASCII.
* Every part is 7-bit: ``7bit`` when it is ASCII with short lines,
  otherwise ``quoted-printable`` or ``base64``, whichever is smaller. The
  message survives any relay, 8BITMIME or not.
* ``message/*`` and ``multipart/*`` attachment types are sent as
  ``application/octet-stream`` (their transfer encoding is restricted; the
  file name still tells the receiver what it is).
"""

from __future__ import annotations

import datetime as dt
import email.headerregistry
import email.message
import email.policy
import email.utils
import re
from typing import Any

from crmflow.domain.mail import Address, OutgoingMessage
from crmflow.errors import ValidationFailed
from crmflow.mail.addresses import format_address

__all__ = [
    "MAX_REFERENCES",
    "build_message",
    "forward_subject",
    "forward_text",
    "new_message_id",
    "quote_text",
    "reply_references",
    "reply_subject",
]

#: References kept in a reply: the thread's root and the newest ones. RFC 5322
#: sets no limit; long threads otherwise grow the header without bound, and
#: some servers reject header fields over a few kilobytes.
MAX_REFERENCES = 20

_MSGID = re.compile(r"<[^<>\s]+>")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_CONTENT_TYPE = re.compile(r"([A-Za-z0-9!#$&^_.+-]+)/([A-Za-z0-9!#$&^_.+-]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _MessageIdsHeader(email.headerregistry.BaseHeader):
    """In-Reply-To / References: message ids folded between ids, never encoded.

    The standard library treats these fields as unstructured text and
    RFC 2047-encodes ids too long for a line, which receivers do not decode.
    """

    max_count = None

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = " ".join(str(value).split())
        kwds["parse_tree"] = None
        kwds["defects"] = []

    def fold(self, *, policy: email.policy.Policy) -> str:
        limit = policy.max_line_length or 0
        lines: list[str] = []
        line = f"{getattr(self, 'name', '')}:"
        has_id = False
        for msgid in str(self).split():
            if has_id and limit and len(line) + 1 + len(msgid) > limit:
                lines.append(line)
                line = ""
            line += " " + msgid
            has_id = True
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


def _registry() -> email.headerregistry.HeaderRegistry:
    registry = email.headerregistry.HeaderRegistry()
    registry.map_to_type("references", _MessageIdsHeader)
    registry.map_to_type("in-reply-to", _MessageIdsHeader)
    return registry


# parts are encoded for 7-bit transports; the bytes use CRLF (SMTP policy)
_POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=_registry())


def new_message_id(domain: str) -> str:
    """A new, unique ``<…@domain>`` Message-ID (``domain``: the sender's).

    Raises:
        ValidationFailed: ``domain`` is not a domain name.
    """
    ascii_domain = _idna(domain.strip().rstrip("."))
    if not _DOMAIN.fullmatch(ascii_domain):
        raise ValidationFailed(f"{domain!r} is not a domain name.")
    return email.utils.make_msgid(domain=ascii_domain)


def _idna(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationFailed(f"{domain!r} is not a valid domain name.") from None


def _header_address(address: Address) -> email.headerregistry.Address:
    local, at, domain = address.email.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValidationFailed(f"{address.email!r} is not a valid email address.")
    if not local.isascii():
        raise ValidationFailed(
            f"{address.email!r} has non-ASCII characters before the @, which "
            "not every mail server accepts; ask the recipient for another "
            "address."
        )
    try:
        return email.headerregistry.Address(
            display_name=" ".join(address.name.split()),
            username=local,
            domain=_idna(domain),
        )
    except (ValueError, TypeError, IndexError):
        raise ValidationFailed(
            f"{address.email!r} is not a valid email address."
        ) from None


def _msgid(value: str, what: str) -> str:
    value = value.strip()
    if not _MSGID.fullmatch(value) or not value.isascii():
        raise ValidationFailed(f"The {what} {value!r} is not a <…@…> message id.")
    return value


def _attachment_type(content_type: str) -> tuple[str, str]:
    match = _CONTENT_TYPE.fullmatch(content_type.split(";", 1)[0].strip())
    if not match:
        return "application", "octet-stream"
    maintype, subtype = match.group(1).lower(), match.group(2).lower()
    if maintype in {"message", "multipart"}:
        return "application", "octet-stream"
    return maintype, subtype


def _attachment_name(filename: str) -> str:
    name = _CONTROL.sub("", filename).replace("/", "_").replace("\\", "_")
    return " ".join(name.split()) or "attachment"


def _check_encodable(message: OutgoingMessage) -> None:
    # lone surrogates (possible in JSON input) have no UTF-8 form
    fields = {
        "subject": message.subject,
        "text": message.text,
        "HTML": message.html or "",
        "sender": message.sender.name + message.sender.email,
    }
    for address in message.recipients:
        fields[f"address {address.email!r}"] = address.name + address.email
    for attachment in message.attachments:
        fields["attachment name"] = attachment.filename
    for what, value in fields.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed(
                f"The {what} contains characters that cannot be sent; retype it."
            ) from None


def build_message(
    message: OutgoingMessage, *, date: dt.datetime | None = None
) -> bytes:
    """The RFC 5322 bytes of ``message`` (rules: module docstring).

    ``date`` defaults to now; a naive datetime is refused.

    Raises:
        ValidationFailed: ``message`` fails :meth:`OutgoingMessage.check`, or
            an address or message id cannot be written into a header.
    """
    message.check()
    _check_encodable(message)
    if date is None:
        date = dt.datetime.now(dt.UTC)
    elif date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    msg = email.message.EmailMessage(policy=_POLICY)
    msg["From"] = _header_address(message.sender)
    if message.to:
        msg["To"] = tuple(_header_address(a) for a in message.to)
    if message.cc:
        msg["Cc"] = tuple(_header_address(a) for a in message.cc)
    if not message.to and not message.cc:  # Bcc only: RFC 5322 §3.6.3
        msg["To"] = "undisclosed-recipients:;"
    for bcc in message.bcc:  # validated like the others, never written
        _header_address(bcc)
    msg["Subject"] = message.subject
    msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = _msgid(message.message_id, "Message-ID")
    if message.in_reply_to:
        msg["In-Reply-To"] = _msgid(message.in_reply_to, "In-Reply-To")
    if message.references:
        msg["References"] = " ".join(
            _msgid(ref, "reference") for ref in message.references
        )
    msg["MIME-Version"] = "1.0"
    msg.set_content(message.text, subtype="plain", charset="utf-8")
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html", charset="utf-8")
    for attachment in message.attachments:
        maintype, subtype = _attachment_type(attachment.content_type)
        msg.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=_attachment_name(attachment.filename),
        )
    for part in msg.walk():  # the library repeats it on every part
        if part is not msg:
            del part["MIME-Version"]
    return msg.as_bytes(policy=_POLICY)


# -- replies and forwards ------------------------------------------------------

# Prefixes that already mark a reply. "Re" is the standard one (RFC 5322
# §3.6.5), in any case and with a counter ("Re[2]:", "Re(2):", "Re^2:");
# also recognized: the German "Aw", Dutch "Antw", Scandinavian "Sv" and Polish
# "Odp", whose clients put them on the wire. Such a subject is left as it is,
# so "Aw: Angebot" is answered as "Aw: Angebot", not "Re: Aw: Angebot".
_REPLY_PREFIX = re.compile(
    r"\s*(?:re|aw|antw|sv|odp)\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*:", re.IGNORECASE
)
# "Fwd", "Fw", German "WG", French "TR", Spanish "RV", Portuguese "Enc"
_FORWARD_PREFIX = re.compile(
    r"\s*(?:fwd|fw|wg|tr|rv|enc)\s*(?:\[\d+\]|\(\d+\))?\s*:", re.IGNORECASE
)


def reply_subject(subject: str) -> str:
    """``"Re: " + subject``, unless it already is a reply (see ``_REPLY_PREFIX``).

    ``"Re: x"``, ``"RE: x"``, ``"re[2]: x"`` and ``"Aw: x"`` come back
    unchanged (stripped), so a long exchange never reads "Re: Re: Re:".
    """
    subject = " ".join(subject.split())
    if _REPLY_PREFIX.match(subject):
        return subject
    return f"Re: {subject}".rstrip()


def forward_subject(subject: str) -> str:
    """``"Fwd: " + subject``, unless it already starts with a forward prefix."""
    subject = " ".join(subject.split())
    if _FORWARD_PREFIX.match(subject):
        return subject
    return f"Fwd: {subject}".rstrip()


def _as_msgid(value: str) -> str | None:
    value = value.strip()
    if _MSGID.fullmatch(value):
        return value
    if value and not any(c in value for c in "<> \t\r\n\x00"):
        return f"<{value}>"  # stored without its angle brackets
    return None


def reply_references(
    parent_message_id: str | None, parent_references: tuple[str, ...]
) -> tuple[str, ...]:
    """The References of a reply (RFC 5322 §3.6.4).

    The parent's References followed by the parent's Message-ID, without
    duplicates or malformed ids. Longer than :data:`MAX_REFERENCES`, the
    first id (the thread's root) and the newest ones are kept, as mail
    clients do: threading needs the root and the nearest ancestors.
    """
    ids: list[str] = []
    for value in (*parent_references, parent_message_id or ""):
        msgid = _as_msgid(value)
        if msgid and msgid not in ids:
            ids.append(msgid)
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return tuple(ids)


_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _human_date(date: dt.datetime) -> str:
    # built by hand: strftime's names follow the process locale
    offset = date.strftime("%z") if date.tzinfo else ""
    return (
        f"{_WEEKDAYS[date.weekday()]}, {date.day} {_MONTHS[date.month - 1]} "
        f"{date.year} at {date:%H:%M}" + (f" {offset}" if offset else "")
    ).rstrip()


def _who(sender: Address | str | None) -> str:
    if isinstance(sender, Address):
        return format_address(sender)
    return " ".join((sender or "").split())


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")


def quote_text(
    text: str, *, sender: Address | str | None, date: dt.datetime | None
) -> str:
    """The quoted parent below a plain-text reply.

    ``On Tue, 2 Jan 2024 at 14:05 +0100, Anna <anna@example.com> wrote:``
    followed by the parent's lines prefixed with ``"> "`` (``">"`` for an
    already quoted or an empty line, so quotes nest as ``>>``). Ends with a
    line break.
    """
    who = _who(sender) or "someone"
    head = f"On {_human_date(date)}, {who} wrote:" if date else f"{who} wrote:"
    quoted = [
        ">" + line if not line or line.startswith(">") else "> " + line
        for line in _lines(text)
    ]
    return "\n".join([head, *quoted]) + "\n"


def forward_text(
    text: str,
    *,
    sender: Address | str | None,
    date: dt.datetime | None,
    subject: str,
    to: tuple[Address, ...] = (),
    cc: tuple[Address, ...] = (),
) -> str:
    """The forwarded message below a plain-text forward.

    A ``---------- Forwarded message ----------`` block with the original's
    From, Date, Subject, To and Cc, a blank line, then its text unchanged.
    """
    header = ["---------- Forwarded message ----------"]
    if who := _who(sender):
        header.append(f"From: {who}")
    if date:
        header.append(f"Date: {_human_date(date)}")
    header.append(f"Subject: {' '.join(subject.split())}")
    if to:
        header.append("To: " + ", ".join(format_address(a) for a in to))
    if cc:
        header.append("Cc: " + ", ".join(format_address(a) for a in cc))
    body = "\n".join(_lines(text))
    return "\n".join(header) + "\n\n" + body + "\n"
