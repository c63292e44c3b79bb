from __future__ import annotations

import datetime as dt
import email.message
import email.parser
import email.policy
import re
from dataclasses import replace
from typing import Any

import pytest

from crmflow.domain.mail import (
    MAX_ATTACHMENTS_BYTES,
    Address,
    IncomingMessage,
    MailFolder,
    OutgoingAttachment,
    OutgoingMessage,
)
from crmflow.errors import ValidationFailed
from crmflow.mail.compose import (
    MAX_REFERENCES,
    build_message,
    forward_subject,
    forward_text,
    new_message_id,
    quote_text,
    reply_references,
    reply_subject,
)
from crmflow.mail.parse import parse_message

DATE = dt.datetime(2024, 3, 5, 14, 7, 9, tzinfo=dt.timezone(dt.timedelta(hours=1)))
LONG_ID = (
    "<" + "A" * 70 + ".EUR01.PROD.OUTLOOK.COM@AM0PR01MB1234.eurprd01.prod.outlook.com>"
)


def outgoing(**changes: Any) -> OutgoingMessage:
    message = OutgoingMessage(
        sender=Address("anna@example.com", "Anna Berg"),
        to=(Address("bob@example.org", "Bob"),),
        subject="Offer",
        text="Hello Bob,\nhere it is.\n",
        message_id="<1.2.3@example.com>",
    )
    return replace(message, **changes)


def roundtrip(message: OutgoingMessage) -> IncomingMessage:
    return parse_message(
        build_message(message, date=DATE),
        provider_id="p1",
        folder=MailFolder.SENT,
        is_read=True,
    )


def mime(raw: bytes) -> email.message.EmailMessage:
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def header_block(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii")


def field_lines(raw: bytes, name: str) -> list[str]:
    """The physical lines of one header field (first line + continuations)."""
    lines = header_block(raw).split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(name + ":"))
    end = start + 1
    while end < len(lines) and lines[end].startswith((" ", "\t")):
        end += 1
    return lines[start:end]


# -- round trip ----------------------------------------------------------------


def test_every_field_survives_build_and_parse() -> None:
    message = outgoing(
        sender=Address("anna@example.com", 'Berg, Anna "the CEO" Müller'),
        to=(
            Address("bob@example.org", "Smith, Bob"),
            Address("cleo@example.net", "Cléo Ünïcødé"),
        ),
        cc=(Address("dan@example.com", 'Dan "D" O\'Neil'), Address("eve@example.com")),
        subject="Grüße aus Köln — 見積もり, please review",
        text="Grüße,\n\nthe offer is attached.\n> not a quote\n",
        html="<p>Grüße, <b>the offer</b> is attached.</p>",
        in_reply_to=LONG_ID,
        references=("<root@example.com>", LONG_ID),
        attachments=(
            OutgoingAttachment(
                "Angebot März.pdf", "application/pdf", b"%PDF-1.7\n\x00\xff"
            ),
            OutgoingAttachment("notes.txt", "text/plain", "naïve\n".encode()),
        ),
    )

    parsed = roundtrip(message)

    assert parsed.sender == message.sender
    assert parsed.to == message.to
    assert parsed.cc == message.cc
    assert parsed.bcc == ()
    assert parsed.subject == message.subject
    assert parsed.date == DATE
    assert parsed.message_id == message.message_id
    assert parsed.in_reply_to == LONG_ID
    assert parsed.references == message.references
    assert parsed.text == message.text
    assert parsed.html is not None
    assert parsed.html.strip() == message.html
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("Angebot März.pdf", "application/pdf", b"%PDF-1.7\n\x00\xff"),
        ("notes.txt", "text/plain", "naïve\n".encode()),
    ]
    assert parsed.defects == ()


@pytest.mark.parametrize(
    "name",
    [
        "Berg, Anna",
        'Anna "AB" Berg',
        "Anna \\ Berg",
        "Ånna Bérg",
        'Bérg, "Å" Anna',
        "李小龙",
        "anna@example.com",
        "(Anna) <Berg>; x",
    ],
)
def test_display_names_round_trip(name: str) -> None:
    parsed = roundtrip(outgoing(sender=Address("anna@example.com", name)))
    assert parsed.sender == Address("anna@example.com", name)


def test_long_text_lines_and_non_ascii_bodies_round_trip() -> None:
    text = "x" * 2000 + "\n" + "ü" * 1500 + "\n" + "日本語のテキスト\n" * 50
    parsed = roundtrip(outgoing(text=text, html="<p>" + "é" * 3000 + "</p>"))
    assert parsed.text == text
    assert parsed.html is not None
    assert "é" * 3000 in parsed.html


def test_bytes_are_crlf_7bit_with_short_lines() -> None:
    raw = build_message(
        outgoing(
            subject="Ünïcødé " * 30,
            text="ä" * 3000,
            html="<p>" + "€" * 3000 + "</p>",
            references=tuple(f"<{i}.{'x' * 60}@example.com>" for i in range(15)),
            attachments=(
                OutgoingAttachment(
                    "ä.bin", "application/octet-stream", bytes(range(256)) * 50
                ),
            ),
        ),
        date=DATE,
    )
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_headers() -> None:
    raw = build_message(
        outgoing(
            in_reply_to="<p@example.com>",
            references=("<r@example.com>", "<p@example.com>"),
        ),
        date=DATE,
    )
    headers = mime(raw)
    assert headers["Date"] == "Tue, 05 Mar 2024 14:07:09 +0100"
    assert headers["MIME-Version"] == "1.0"
    assert headers["Message-ID"] == "<1.2.3@example.com>"
    assert headers["In-Reply-To"] == "<p@example.com>"
    assert headers["References"] == "<r@example.com> <p@example.com>"
    assert mime(build_message(outgoing(), date=DATE))["References"] is None


def test_date_defaults_to_now_and_must_be_aware() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    parsed = parse_message(
        build_message(outgoing()), provider_id="p", folder=MailFolder.SENT, is_read=True
    )
    assert parsed.date is not None
    assert before <= parsed.date <= dt.datetime.now(dt.UTC)
    with pytest.raises(ValueError, match="timezone"):
        build_message(outgoing(), date=dt.datetime(2024, 1, 1))


def test_long_message_ids_are_folded_between_ids_never_encoded() -> None:
    refs = tuple(f"<{i}.{'y' * 90}@example.com>" for i in range(5))
    raw = build_message(outgoing(references=refs, in_reply_to=refs[-1]), date=DATE)
    references = field_lines(raw, "References")
    assert len(references) > 1
    for line in references:
        assert re.fullmatch(r"(References:)?( <[^<>\s]+>)+", line)
        assert len(line) <= 998
    assert field_lines(raw, "In-Reply-To") == [f"In-Reply-To: {refs[-1]}"]
    parsed = roundtrip(outgoing(references=refs, in_reply_to=refs[-1]))
    assert parsed.references == refs


def test_international_domain_is_written_as_idna() -> None:
    parsed = roundtrip(outgoing(to=(Address("jorg@bücher.de", "Jorg"),)))
    assert parsed.to == (Address("jorg@xn--bcher-kva.de", "Jorg"),)


def test_non_ascii_local_part_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="non-ASCII"):
        build_message(outgoing(to=(Address("jörg@example.com"),)))


# -- Bcc ---------------------------------------------------------------------------


def test_bcc_recipients_are_not_in_the_bytes() -> None:
    raw = build_message(
        outgoing(bcc=(Address("secret.boss@example.com", "Secret Boss"),)), date=DATE
    )
    assert b"bcc" not in raw.lower()
    assert b"secret" not in raw.lower()
    assert roundtrip(outgoing(bcc=(Address("secret.boss@example.com"),))).bcc == ()


def test_bcc_only_message_has_undisclosed_recipients() -> None:
    raw = build_message(
        outgoing(to=(), bcc=(Address("hidden@example.com"),)), date=DATE
    )
    assert "To: undisclosed-recipients:;" in header_block(raw)
    assert b"hidden" not in raw
    parsed = roundtrip(outgoing(to=(), bcc=(Address("hidden@example.com"),)))
    assert parsed.to == ()


def test_bcc_addresses_are_still_validated() -> None:
    with pytest.raises(ValidationFailed):
        build_message(outgoing(bcc=(Address("not-an-address"),)))


# -- header injection and validation --------------------------------------------


INJECTIONS: dict[str, Any] = {
    "subject": lambda evil: {"subject": evil},
    "sender name": lambda evil: {"sender": Address("anna@example.com", evil)},
    "sender address": lambda evil: {"sender": Address(f"anna@example.com{evil}")},
    "to name": lambda evil: {"to": (Address("bob@example.org", evil),)},
    "to address": lambda evil: {"to": (Address(f"bob@exa{evil}mple.org"),)},
    "cc address": lambda evil: {"cc": (Address(f"{evil}@example.org"),)},
    "bcc name": lambda evil: {"bcc": (Address("b@example.org", evil),)},
    "filename": lambda evil: {
        "attachments": (OutgoingAttachment(f"a{evil}.pdf", "application/pdf", b"x"),)
    },
    "content type": lambda evil: {
        "attachments": (OutgoingAttachment("a.pdf", f"application/pdf{evil}", b"x"),)
    },
    "reference": lambda evil: {"references": (f"<a@example.com>{evil}",)},
    "in-reply-to": lambda evil: {"in_reply_to": f"<a@example.com>{evil}"},
}


@pytest.mark.parametrize(
    "evil",
    ["x\r\nBcc: victim@example.com", "x\nBcc: v@example.com", "x\rX: y", "x\x00y"],
)
@pytest.mark.parametrize("where", sorted(INJECTIONS))
def test_line_breaks_in_any_header_field_are_refused(where: str, evil: str) -> None:
    with pytest.raises(ValidationFailed):
        build_message(outgoing(**INJECTIONS[where](evil)))


def test_no_recipient_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="recipient"):
        build_message(outgoing(to=()))


@pytest.mark.parametrize(
    "msgid",
    [
        "no-brackets@example.com",
        "<two words@example.com>",
        "<a@b> <c@d>",
        "<ü@example.com>",
    ],
)
def test_malformed_message_ids_are_refused(msgid: str) -> None:
    with pytest.raises(ValidationFailed):
        build_message(outgoing(message_id=msgid))
    with pytest.raises(ValidationFailed):
        build_message(outgoing(in_reply_to=msgid))


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="subject"):
        build_message(outgoing(subject="bad \udcff"))
    with pytest.raises(ValidationFailed, match="text"):
        build_message(outgoing(text="bad \ud800"))


# -- structure -------------------------------------------------------------------


def structure(raw: bytes) -> list[str]:
    return [part.get_content_type() for part in mime(raw).walk()]


def test_text_only_is_a_single_text_plain_part() -> None:
    raw = build_message(outgoing(), date=DATE)
    assert structure(raw) == ["text/plain"]
    assert mime(raw).get_content_charset() == "utf-8"


def test_html_makes_multipart_alternative_text_first() -> None:
    raw = build_message(outgoing(html="<p>Hi</p>"), date=DATE)
    assert structure(raw) == ["multipart/alternative", "text/plain", "text/html"]


def test_attachments_make_multipart_mixed() -> None:
    attachment = OutgoingAttachment("a.pdf", "application/pdf", b"%PDF")
    assert structure(build_message(outgoing(attachments=(attachment,)), date=DATE)) == [
        "multipart/mixed",
        "text/plain",
        "application/pdf",
    ]
    raw = build_message(
        outgoing(html="<p>Hi</p>", attachments=(attachment, attachment)), date=DATE
    )
    assert structure(raw) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
        "application/pdf",
    ]
    parts = list(mime(raw).walk())
    assert all(part.get_content_disposition() == "attachment" for part in parts[4:])
    assert all("MIME-Version" not in part for part in parts[1:])


def test_non_ascii_filenames_use_rfc2231() -> None:
    name = "Prüfbericht — Übersicht 2024 mit einem sehr langen Dateinamen.pdf"
    raw = build_message(
        outgoing(attachments=(OutgoingAttachment(name, "application/pdf", b"x"),)),
        date=DATE,
    )
    assert b"filename*" in raw
    assert b"=?utf-8?" not in raw.split(b"Content-Disposition")[1]
    assert (
        roundtrip(
            outgoing(attachments=(OutgoingAttachment(name, "application/pdf", b"x"),))
        )
        .attachments[0]
        .filename
        == name
    )


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("application/pdf", "application/pdf"),
        ("IMAGE/PNG", "image/png"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("", "application/octet-stream"),
        ("pdf", "application/octet-stream"),
        ("message/rfc822", "application/octet-stream"),
        ("multipart/mixed", "application/octet-stream"),
    ],
)
def test_attachment_content_types(given: str, sent: str) -> None:
    parsed = roundtrip(outgoing(attachments=(OutgoingAttachment("f", given, b"data"),)))
    assert parsed.attachments[0].content_type == sent
    assert parsed.attachments[0].data == b"data"


def test_attachment_names_lose_directories() -> None:
    parsed = roundtrip(
        outgoing(
            attachments=(OutgoingAttachment("../../etc/passwd", "text/plain", b"x"),)
        )
    )
    assert parsed.attachments[0].filename == ".._.._etc_passwd"


def test_attachments_up_to_the_limit_are_sent_and_one_byte_more_is_refused() -> None:
    half = MAX_ATTACHMENTS_BYTES // 2
    at_limit = (
        OutgoingAttachment("a.bin", "application/octet-stream", b"\x01" * half),
        OutgoingAttachment(
            "b.bin",
            "application/octet-stream",
            b"\x02" * (MAX_ATTACHMENTS_BYTES - half),
        ),
    )
    parsed = roundtrip(outgoing(attachments=at_limit))
    assert sum(a.size for a in parsed.attachments) == MAX_ATTACHMENTS_BYTES
    assert parsed.attachments[1].data == at_limit[1].data

    too_big = (*at_limit, OutgoingAttachment("c.txt", "text/plain", b"!"))
    with pytest.raises(ValidationFailed, match="25 MB"):
        build_message(outgoing(attachments=too_big))


# -- Message-ID ----------------------------------------------------------------


def test_new_message_id() -> None:
    first, second = new_message_id("example.com"), new_message_id("example.com")
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", first)
    assert first != second
    assert new_message_id("bücher.de").endswith("@xn--bcher-kva.de>")


@pytest.mark.parametrize("domain", ["", "exa mple.com", "a@b.com", "<x>", "-bad-.com."])
def test_new_message_id_refuses_non_domains(domain: str) -> None:
    with pytest.raises(ValidationFailed):
        new_message_id(domain)


# -- replies and forwards ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Offer", "Re: Offer"),
        ("Re: Offer", "Re: Offer"),
        ("RE: Offer", "RE: Offer"),
        ("re: Offer", "re: Offer"),
        ("Re[2]: Offer", "Re[2]: Offer"),
        ("Re : Offre", "Re : Offre"),
        ("Aw: Angebot", "Aw: Angebot"),
        ("AW: Angebot", "AW: Angebot"),
        ("SV: Tilbud", "SV: Tilbud"),
        ("Fwd: Offer", "Re: Fwd: Offer"),
        ("Regarding the offer", "Re: Regarding the offer"),
        ("Review: draft", "Re: Review: draft"),
        ("Area: north", "Re: Area: north"),
        ("  Offer\t now ", "Re: Offer now"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Offer", "Fwd: Offer"),
        ("Fwd: Offer", "Fwd: Offer"),
        ("FW: Offer", "FW: Offer"),
        ("WG: Angebot", "WG: Angebot"),
        ("Re: Offer", "Fwd: Re: Offer"),
        ("Fwdx: y", "Fwd: Fwdx: y"),
    ],
)
def test_forward_subject(subject: str, expected: str) -> None:
    assert forward_subject(subject) == expected


def test_reply_references_appends_parent_and_deduplicates() -> None:
    assert reply_references("<p@x>", ("<r@x>", "<q@x>", "<r@x>")) == (
        "<r@x>",
        "<q@x>",
        "<p@x>",
    )
    assert reply_references("<p@x>", ("<p@x>",)) == ("<p@x>",)
    assert reply_references(None, ("<r@x>",)) == ("<r@x>",)
    assert reply_references(None, ()) == ()


def test_reply_references_repairs_or_drops_malformed_ids() -> None:
    assert reply_references("p@x", ("<a b@x>", "", "  <r@x> ")) == ("<r@x>", "<p@x>")


def test_reply_references_keeps_root_and_newest_when_too_many() -> None:
    chain = tuple(f"<{i}@x>" for i in range(60))
    result = reply_references("<parent@x>", chain)
    assert len(result) == MAX_REFERENCES
    assert result[0] == "<0@x>"
    assert result[-1] == "<parent@x>"
    assert result[1:-1] == chain[-(MAX_REFERENCES - 2) :]


def test_reply_built_from_parsed_parent_threads_correctly() -> None:
    parent = roundtrip(outgoing(references=("<root@x>",), in_reply_to="<root@x>"))
    reply = outgoing(
        message_id="<reply@example.com>",
        subject=reply_subject(parent.subject),
        in_reply_to=parent.message_id,
        references=reply_references(parent.message_id, parent.references),
    )
    parsed = roundtrip(reply)
    assert parsed.in_reply_to == "<1.2.3@example.com>"
    assert parsed.references == ("<root@x>", "<1.2.3@example.com>")
    assert parsed.subject == "Re: Offer"


def test_quote_text() -> None:
    quoted = quote_text(
        "Hello,\r\n\r\n> earlier\nbye\n",
        sender=Address("anna@example.com", "Berg, Anna"),
        date=DATE,
    )
    assert quoted == (
        'On Tue, 5 Mar 2024 at 14:07 +0100, "Berg, Anna" <anna@example.com> wrote:\n'
        "> Hello,\n"
        ">\n"
        ">> earlier\n"
        "> bye\n"
    )
    assert quote_text("x", sender=None, date=None) == "someone wrote:\n> x\n"


def test_forward_text() -> None:
    text = forward_text(
        "Original body\n",
        sender=Address("anna@example.com", "Anna"),
        date=DATE,
        subject="Offer",
        to=(Address("bob@example.org"),),
        cc=(Address("cleo@example.org", "Cleo"),),
    )
    assert text == (
        "---------- Forwarded message ----------\n"
        "From: Anna <anna@example.com>\n"
        "Date: Tue, 5 Mar 2024 at 14:07 +0100\n"
        "Subject: Offer\n"
        "To: bob@example.org\n"
        "Cc: Cleo <cleo@example.org>\n"
        "\n"
        "Original body\n"
    )
