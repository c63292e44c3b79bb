"""RFC 5322 / MIME bytes -> :class:`~crmflow.domain.mail.IncomingMessage`.

Built on the standard library's ``email`` package with ``policy.default``.
Mail in the wild is often broken, so parsing never raises on content, and
what went wrong is listed in ``IncomingMessage.defects`` (names of the
problems only: never header values or text, which must not reach logs).

Headers:

* A line without a colon inside the header block (``X-Broken header``) is
  dropped when header fields follow it; the standard library would read it as
  the start of the body and lose every field after it. A colon-less line
  followed by something else still starts the body (a missing blank line
  between header and body).
* RFC 2047 encoded-words are decoded here, not by the library, so that a
  broken one degrades gracefully: adjacent words are joined before decoding
  (some senders split a UTF-8 character across two words), bad base64 is
  decoded leniently, and bytes that are not in the declared charset are read
  like an undeclared body (below). Raw 8-bit bytes in a header are read as
  UTF-8, else Windows-1252.
* A missing Message-ID, From or Date gives None; a Message-ID written
  without its angle brackets gets them. References keep the first id and
  the newest ones, :data:`MAX_REFERENCES` in all.

Bodies:

* ``text`` is the first ``text/plain`` and ``html`` the first ``text/html``
  part that is not an attachment. A message with only HTML keeps
  ``text=None``: callers that need text (full-text index, snippets) use
  :func:`crmflow.mail.html.plain_text`, which falls back to the HTML's text.
  The HTML is kept as received, scripts included: it is sanitized when shown
  (:func:`crmflow.mail.html.sanitize_html`), with the rules of that day.
* Charsets: the declared one, with the superset the sender usually means
  (``gb2312`` -> ``gb18030``, ``iso-8859-1`` -> ``windows-1252``,
  ``shift_jis`` -> ``cp932``…). Text that is not in its declared charset, or
  whose charset is unknown, is read as UTF-8 if it is (mostly) UTF-8,
  otherwise as Windows-1252, the most common mislabel. Line ends become
  ``\\n``; NUL characters are removed (PostgreSQL cannot store them).
* A forwarded message (``message/rfc822``, also inside ``multipart/digest``)
  is one attachment: its bytes as a ``.eml`` file. Its text and its
  attachments are not mistaken for the outer message's.
* A part with a Content-ID that is ``inline``, or has no disposition inside
  ``multipart/related``, is an inline image (``IncomingAttachment.inline``).
* Attachment names lose directories, control and bidirectional-formatting
  characters (``invoice\\u202eFDP.exe``), and are cut to
  :data:`MAX_FILENAME_LENGTH` characters keeping their extension.
* A multipart part without a boundary is read as text; an unterminated
  multipart keeps the parts that were complete.
"""

from __future__ import annotations

import binascii
import codecs
import datetime as dt
import email.generator
import email.headerregistry
import email.parser
import email.policy
import email.utils
import functools
import io
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage, Message

from crmflow.domain.mail import (
    MAX_HEADER_LENGTH,
    Address,
    IncomingAttachment,
    IncomingMessage,
    MailFolder,
)

__all__ = [
    "MAX_FILENAME_LENGTH",
    "MAX_PARSED_HEADER",
    "MAX_REFERENCES",
    "message_ids",
    "parse_message",
]

#: References kept from a received message (a hostile one may hold thousands)
MAX_REFERENCES = 100
#: the longest attachment name kept (most file systems allow 255)
MAX_FILENAME_LENGTH = 255

#: header values longer than this (characters) are cut before the library
#: parses them: its parser of structured fields (addresses, MIME parameters)
#: takes quadratic time, and a few hundred kilobytes would take minutes
MAX_PARSED_HEADER = 8 * 1024


_REGISTRY = email.headerregistry.HeaderRegistry()


@functools.lru_cache(maxsize=512)
def _parsed_header(name: str, value: str) -> email.headerregistry.BaseHeader:
    return _REGISTRY(name, value)


def _header_factory(name: str, value: str) -> email.headerregistry.BaseHeader:
    """``policy.default``'s header registry, fed at most MAX_PARSED_HEADER.

    Cached: the library parses a part's Content-Type again on every question
    about it (header objects are immutable, so sharing them is safe).
    """
    return _parsed_header(name, value[:MAX_PARSED_HEADER])


_POLICY = email.policy.default.clone(header_factory=_header_factory)
_PARSER = email.parser.BytesParser(policy=_POLICY)
# re-serializes an embedded message: source header lines and 8-bit bodies are
# written back as they were read
_GENERATOR_POLICY = _POLICY.clone(linesep="\r\n", refold_source="none")
_MSGID = re.compile(r"<[^<>\s]+>")
_BARE_MSGID = re.compile(r"[^<>\s@]+@[^<>\s@]+")


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ``<…>`` ids in an In-Reply-To / References value, in order."""
    return tuple(_MSGID.findall(value or ""))


class _Defects:
    """Problem names in order of appearance, each once."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        self.names.setdefault(name, None)

    def add_from(self, part: Message) -> None:
        for defect in part.defects:
            self.add(type(defect).__name__)


# -- text in unknown or wrong charsets -----------------------------------------

#: charsets senders declare -> the superset they actually use
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "us-ascii": ("ascii",),
    "ascii": ("ascii",),
    "iso-8859-1": ("cp1252", "latin-1"),
    "iso8859-1": ("cp1252", "latin-1"),
    "latin1": ("cp1252", "latin-1"),
    "latin-1": ("cp1252", "latin-1"),
    "windows-1252": ("cp1252", "latin-1"),
    "cp1252": ("cp1252", "latin-1"),
    "iso-8859-15": ("iso-8859-15",),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "x-gbk": ("gb18030",),
    "euc-cn": ("gb18030",),
    "big5": ("big5hkscs", "cp950"),
    "shift_jis": ("cp932",),
    "shift-jis": ("cp932",),
    "sjis": ("cp932",),
    "x-sjis": ("cp932",),
    "iso-2022-jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2"),
    "euc-kr": ("cp949",),
    "ks_c_5601-1987": ("cp949",),
    "tis-620": ("cp874",),
    "windows-874": ("cp874",),
    "iso-8859-8-i": ("iso-8859-8",),
    "iso-8859-6-i": ("iso-8859-6",),
    "x-mac-roman": ("mac-roman",),
    "utf8": ("utf-8",),
}
#: declared charsets whose text is read as UTF-8 instead when it is valid
#: UTF-8 (a frequent mislabel; valid UTF-8 by accident is rare in them)
_WESTERN = frozenset(
    {"us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin1", "latin-1",
     "windows-1252", "cp1252", "iso-8859-15"}
)  # fmt: skip
_NON_ASCII_TEXT = re.compile(r"[^\x00-\x7f\ufffd]")


def _guess(data: bytes) -> str:
    """Bytes of unknown charset: UTF-8 if they mostly are, else Windows-1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    utf8 = data.decode("utf-8", errors="replace")
    valid = len(_NON_ASCII_TEXT.findall(utf8))
    if valid > utf8.count("\ufffd"):  # UTF-8 with a few broken bytes
        return utf8
    return data.decode("cp1252", errors="replace")


def _codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None
    # bytes-to-bytes codecs (base64, zlib…) are not text encodings
    return info.name if getattr(info, "_is_text_encoding", True) else None


def _decode(data: bytes, charset: str | None, defects: _Defects) -> str:
    """``data`` as text; never raises (rules: module docstring)."""
    if not data:
        return ""
    label = (charset or "us-ascii").strip().strip("\"'").lower().split("*", 1)[0]
    if label in _WESTERN and not data.isascii():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.add(f"text declared {label} is UTF-8")
            return text
    candidates = _SUPERSETS.get(label, (label,))
    known = [codec for codec in map(_codec, candidates) if codec]
    if not known:
        defects.add("unknown charset")
        return _guess(data)
    for codec in known:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    defects.add("text not in its declared charset")
    return _guess(data)


_SURROGATES = re.compile("[\udc80-\udcff]+")


def _unescape(text: str) -> str:
    """Raw 8-bit header bytes (read as surrogate escapes) as real text."""

    def fix(match: re.Match[str]) -> str:
        return _guess(bytes(ord(c) - 0xDC00 for c in match.group()))

    return _SURROGATES.sub(fix, text) if _SURROGATES.search(text) else text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_header(text: str) -> str:
    """One line of header text: no controls, single spaces."""
    return " ".join(_CONTROL.sub("", _unescape(text)).split())


# -- header fields -------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n$")


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("ascii", errors="replace")
    if encoding in "qQ":
        return _QP_ESCAPE.sub(
            lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" ")
        )
    return _lenient_base64(data)


def _lenient_base64(data: bytes) -> bytes:
    """Base64 with stray characters and bad padding tolerated."""
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:  # a lone trailing character carries no full byte
        data = data[:-1]
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _decode_words(raw: str, defects: _Defects) -> str:
    """An unstructured header value (Subject) with its encoded-words decoded."""
    raw = _UNFOLD.sub("", raw)
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(_decode(b"".join(pending), pending_charset, defects))
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(raw):
        between = raw[position : match.start()]
        position = match.end()
        charset = match.group(1).lower().split("*", 1)[0]  # RFC 2231 language
        if between.strip() or charset != pending_charset:
            flush()
            if between.strip() or not out:
                out.append(_unescape(between))
        pending.append(_word_bytes(match.group(2), match.group(3)))
        pending_charset = charset
    flush()
    out.append(_unescape(raw[position:]))
    return "".join(out)


def _raw_values(msg: Message, name: str) -> list[str]:
    wanted = name.lower()
    return [str(value) for key, value in msg.raw_items() if key.lower() == wanted]


def _first_raw(msg: Message, name: str) -> str:
    values = _raw_values(msg, name)
    return values[0] if values else ""


def _unstructured(msg: Message, name: str, defects: _Defects) -> str:
    raw = _first_raw(msg, name)
    return _clean_header(_decode_words(raw, defects)) if raw else ""


def _msgid(raw: str) -> str | None:
    raw = _clean_header(raw)
    ids = message_ids(raw)
    if ids:
        return ids[0] if len(ids[0]) <= MAX_HEADER_LENGTH else None
    bare = _BARE_MSGID.search(raw)
    if bare and len(bare.group()) <= MAX_HEADER_LENGTH - 2:
        return f"<{bare.group()}>"
    return None


def _references(msg: Message) -> tuple[str, ...]:
    ids = message_ids(_clean_header(" ".join(_raw_values(msg, "References"))))
    ids = tuple(i for i in dict.fromkeys(ids) if len(i) <= MAX_HEADER_LENGTH)
    if len(ids) > MAX_REFERENCES:
        ids = (ids[0], *ids[-(MAX_REFERENCES - 1) :])
    return ids


#: address fields longer than this (characters; some 200 addresses) are read
#: with the simpler, linear ``email.utils.getaddresses``
_LONG_ADDRESS_LIST = MAX_PARSED_HEADER


def _addresses(msg: Message, name: str, defects: _Defects) -> tuple[Address, ...]:
    found: list[Address] = []
    for raw in _raw_values(msg, name):
        pairs: list[tuple[str, str]]
        try:
            if len(raw) > _LONG_ADDRESS_LIST:
                raise ValueError(name)  # the library's parser is quadratic
            header = msg.policy.header_fetch_parse(name, raw)
            if not isinstance(header, email.headerregistry.AddressHeader):
                raise TypeError(name)
            pairs = [(a.display_name, a.addr_spec) for a in header.addresses]
        except Exception:  # the library's parser fails on some garbage
            if len(raw) <= _LONG_ADDRESS_LIST:
                defects.add(f"{name}: unreadable address list")
            pairs = [
                (_decode_words(display, defects), addr)
                for display, addr in email.utils.getaddresses([raw])
            ]
        for display, addr in pairs:
            addr = _clean_header(addr).replace(" ", "")
            if "@" in addr and len(addr) <= MAX_HEADER_LENGTH:
                found.append(Address(email=addr, name=_clean_header(display)))
    return tuple(found)


def _date(msg: Message, defects: _Defects) -> dt.datetime | None:
    raw = _clean_header(_first_raw(msg, "Date"))
    if not raw:
        return None
    try:
        value = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.add("Date: unreadable")
        return None
    if value.tzinfo is None:  # RFC 5322 "-0000": time zone unknown; read as UTC
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        defects.add("Date: out of range")
        return None


# -- header block repair --------------------------------------------------------

_HEADER_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
_KNOWN_FIELDS = frozenset(
    b"from to cc bcc subject date message-id in-reply-to references reply-to "
    b"sender return-path received mime-version delivered-to thread-topic "
    b"thread-index importance priority precedence organization user-agent "
    b"dkim-signature domainkey-signature".split()
)
_KNOWN_PREFIXES = (
    b"x-",
    b"content-",
    b"list-",
    b"arc-",
    b"authentication-",
    b"resent-",
)
_HEAD_SCAN_LIMIT = 1024 * 1024  # bytes; a header block is never near this


def _is_known_field(line: bytes) -> bool:
    match = _HEADER_FIELD.match(line)
    if not match:
        return False
    name = match.group(1).lower()
    return name in _KNOWN_FIELDS or name.startswith(_KNOWN_PREFIXES)


def _is_header_line(line: bytes) -> bool:
    """A field, a continuation line, or the end of the block."""
    return (
        bool(_HEADER_FIELD.match(line))
        or line[:1] in (b" ", b"\t")
        or not line.strip(b"\r")
    )


def _repair_header_block(raw: bytes, defects: _Defects) -> bytes:
    """Drop colon-less lines that sit between header fields (module docstring)."""
    blank = re.search(rb"\n\r?\n", raw[:_HEAD_SCAN_LIMIT])
    end = blank.start() + 1 if blank else min(len(raw), _HEAD_SCAN_LIMIT)
    if raw[:2] in (b"\r\n", b"\n\n") or raw[:1] == b"\n":
        return raw
    lines = raw[:end].split(b"\n")
    start = 1 if lines[0].startswith(b"From ") else 0  # an mbox envelope line
    if all(_is_header_line(line) for line in lines[start:]):
        return raw  # the usual case: nothing to repair
    kept: list[bytes] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_header_line(line) or i < start:
            kept.append(line)
            i += 1
            continue
        following = i + 1
        while following < len(lines) and lines[following][:1] in (b" ", b"\t"):
            following += 1  # the broken line's own continuation lines
        if (
            line.startswith(b"--")
            or following >= len(lines)
            or not _is_known_field(lines[following])
        ):
            break  # the body starts here (no blank line before it)
        defects.add("header line without a colon dropped")
        i = following
    return b"\n".join(kept + lines[i:]) + raw[end:]


# -- body ---------------------------------------------------------------------

#: invisible characters: format controls (bidirectional overrides that hide
#: a name's true extension, zero-width spaces), private use, unassigned
_INVISIBLE = frozenset({"Cf", "Cs", "Co", "Cn"})


def _visible(c: str) -> str:
    category = unicodedata.category(c)
    if category in ("Zl", "Zp") or c in "\t\n\r":
        return " "
    if category == "Cc" or category in _INVISIBLE:
        return ""
    return c


def _safe_filename(name: str) -> str | None:
    name = _unescape(name)
    if "=?" in name:  # an encoded-word inside a quoted parameter
        name = _decode_words(name, _Defects())
    name = "".join(map(_visible, name))
    name = " ".join(name.replace("/", "_").replace("\\", "_").split())
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            name = stem[: MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_FILENAME_LENGTH]
    return name or None


def _filename(part: Message, defects: _Defects) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        defects.add("attachment name unreadable")
        return None
    return _safe_filename(str(name)) if name is not None else None


def _disposition(part: Message, defects: _Defects) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        defects.add("Content-Disposition unreadable")
        return None


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def _body_text(data: bytes, charset: str | None, defects: _Defects) -> str:
    text = _decode(data, charset, defects)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _embedded_bytes(part: Message, defects: _Defects) -> bytes:
    """The content of a ``message/*`` part: the forwarded message's bytes."""
    buffer = io.BytesIO()
    if not isinstance(part, EmailMessage):  # always is, with policy.default
        return b""
    try:
        email.generator.BytesGenerator(
            buffer, mangle_from_=False, policy=_GENERATOR_POLICY
        ).flatten(part)
    except Exception:
        defects.add("embedded message unreadable")
        return b""
    data = buffer.getvalue()
    _, separator, body = data.partition(b"\r\n\r\n")
    if data.startswith(b"\r\n"):  # a part without header fields
        body = data[2:]
    elif not separator:
        body = b""
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":  # not allowed for message/*, but seen
        body = _lenient_base64(body)
    elif encoding == "quoted-printable":
        body = binascii.a2b_qp(body)
    return body


def _embedded_name(part: Message, defects: _Defects) -> str:
    name = _filename(part, defects)
    if name:
        return name
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        subject = _unstructured(payload[0], "Subject", defects)
        if subject and (name := _safe_filename(subject)):
            return name[: MAX_FILENAME_LENGTH - 4] + ".eml"
    return "forwarded message.eml"


class _Body:
    def __init__(self) -> None:
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[IncomingAttachment] = []


def _parts(msg: Message) -> Iterator[tuple[Message, str | None]]:
    """Every part with its parent's type; never inside a ``message/*`` part."""
    stack: list[tuple[Message, str | None]] = [(msg, None)]
    while stack:
        part, parent = stack.pop()
        yield part, parent
        is_embedded = part is not msg and part.get_content_maintype() == "message"
        if part.is_multipart() and not is_embedded:
            children = part.get_payload()
            if isinstance(children, list):
                ctype = _content_type(part)
                stack.extend(
                    (child, ctype)
                    for child in reversed(children)
                    if isinstance(child, Message)
                )


def _add_part(
    part: Message, parent: str | None, top: Message, body: _Body, defects: _Defects
) -> None:
    ctype = _content_type(part)
    maintype = ctype.partition("/")[0]
    if part.is_multipart() and (part is top or maintype != "message"):
        return  # a container: its parts come next
    disposition = _disposition(part, defects)
    if maintype == "message" and part is not top:
        data = _embedded_bytes(part, defects)
        body.attachments.append(
            IncomingAttachment(
                filename=_embedded_name(part, defects),
                content_type=ctype,
                size=len(data),
                data=data,
            )
        )
        return
    filename = _filename(part, defects)
    is_body = disposition != "attachment" and filename is None
    if is_body and maintype == "multipart":  # no boundary: its text is all there is
        if body.text is None:
            body.text = _body_text(_payload_bytes(part), _charset(part), defects)
        return
    if is_body and ctype == "text/plain" and body.text is None:
        body.text = _body_text(_payload_bytes(part), _charset(part), defects)
        return
    if is_body and ctype == "text/html" and body.html is None:
        body.html = _body_text(_payload_bytes(part), _charset(part), defects)
        return
    data = _payload_bytes(part)
    content_id = _msgid_like(_first_raw(part, "Content-ID"))
    body.attachments.append(
        IncomingAttachment(
            filename=filename,
            content_type=ctype,
            size=len(data),
            content_id=content_id,
            data=data,
            inline=content_id is not None
            and disposition != "attachment"
            and (disposition == "inline" or parent == "multipart/related"),
        )
    )


def _msgid_like(raw: str) -> str | None:
    """A Content-ID without its angle brackets, or None."""
    value = _clean_header(raw).strip("<> ")
    return value if value and len(value) <= MAX_HEADER_LENGTH else None


def _walk(msg: Message, defects: _Defects) -> _Body:
    body = _Body()
    for part, parent in _parts(msg):
        try:
            _add_part(part, parent, msg, body, defects)
        except Exception:  # one unreadable part must not lose the message
            defects.add(f"unreadable part {_content_type(part)}")
        defects.add_from(part)
    return body


def _parse_mime(raw: bytes, defects: _Defects) -> Message:
    try:
        return _PARSER.parsebytes(raw)
    except Exception:  # RecursionError on thousands of nested multiparts, or
        # a bug of the library's parser: keep the header, the rest is text
        defects.add("MIME structure unreadable")
    try:
        return _PARSER.parsebytes(raw, headersonly=True)
    except Exception:
        msg = EmailMessage(policy=_POLICY)
        msg.set_payload(raw.decode("ascii", errors="surrogateescape"))
        return msg


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
    defects = _Defects()
    msg = _parse_mime(_repair_header_block(raw, defects), defects)
    body = _walk(msg, defects)
    senders = _addresses(msg, "From", defects)
    in_reply_to = _first_raw(msg, "In-Reply-To")
    return IncomingMessage(
        provider_id=provider_id,
        folder=folder,
        thread_id=thread_id,
        message_id=_msgid(_first_raw(msg, "Message-ID")),
        in_reply_to=next(iter(message_ids(_clean_header(in_reply_to))), None),
        references=_references(msg),
        subject=_unstructured(msg, "Subject", defects),
        sender=senders[0] if senders else None,
        to=_addresses(msg, "To", defects),
        cc=_addresses(msg, "Cc", defects),
        bcc=_addresses(msg, "Bcc", defects),
        date=_date(msg, defects),
        text=body.text,
        html=body.html,
        is_read=is_read,
        labels=labels,
        attachments=tuple(body.attachments),
        defects=tuple(defects.names),
    )
