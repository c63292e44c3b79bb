from __future__ import annotations

import base64
import datetime as dt
import os
import random
import time
import tracemalloc

import pytest

from crmflow.domain.mail import Address, IncomingMessage, MailFolder
from crmflow.mail.html import plain_text
from crmflow.mail.parse import (
    MAX_FILENAME_LENGTH,
    MAX_REFERENCES,
    message_ids,
    parse_message,
)


def parse(raw: bytes | str) -> IncomingMessage:
    data = raw.encode() if isinstance(raw, str) else raw
    return parse_message(data, provider_id="p1", folder=MailFolder.INBOX, is_read=False)


HEAD = b"From: Anna <anna@example.com>\nTo: bob@example.org\nMessage-ID: <m1@example.com>\n"


def text_mail(body: bytes, charset: str, encoding: str = "8bit") -> bytes:
    return (
        HEAD
        + f"Content-Type: text/plain; charset={charset}\n".encode()
        + f"Content-Transfer-Encoding: {encoding}\n\n".encode()
        + body
    )


def multipart(
    *parts: bytes, kind: str = "mixed", boundary: str = "BOUND", head: bytes = HEAD
) -> bytes:
    out = head + f'Content-Type: multipart/{kind}; boundary="{boundary}"\n\n'.encode()
    out += b"preamble\n"
    for part in parts:
        out += f"--{boundary}\n".encode() + part + b"\n"
    return out + f"--{boundary}--\n".encode()


# -- a well-formed message ----------------------------------------------------------


def test_well_formed_message() -> None:
    raw = (
        b'From: "Berg, Anna" <anna@example.com>\r\n'
        b"To: Bob <bob@example.org>, cleo@example.net\r\n"
        b"Cc: Dan <dan@example.com>\r\n"
        b"Bcc: eve@example.com\r\n"
        b"Subject: Offer\r\n"
        b"  for you\r\n"
        b"Date: Tue, 5 Mar 2024 14:07:09 +0100\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        b"In-Reply-To: <p@example.com> (Bob's message)\r\n"
        b"References: <r@example.com>\r\n <p@example.com>\r\n"
        b"\r\n"
        b"Hello\r\nBob\r\n"
    )
    parsed = parse(raw)
    assert parsed.sender == Address("anna@example.com", "Berg, Anna")
    assert parsed.to == (Address("bob@example.org", "Bob"), Address("cleo@example.net"))
    assert parsed.cc == (Address("dan@example.com", "Dan"),)
    assert parsed.bcc == (Address("eve@example.com"),)
    assert parsed.subject == "Offer for you"
    assert parsed.date == dt.datetime(2024, 3, 5, 13, 7, 9, tzinfo=dt.UTC)
    assert parsed.message_id == "<m1@example.com>"
    assert parsed.in_reply_to == "<p@example.com>"
    assert parsed.references == ("<r@example.com>", "<p@example.com>")
    assert parsed.text == "Hello\nBob\n"
    assert parsed.html is None
    assert parsed.attachments == ()
    assert parsed.defects == ()
    assert (parsed.provider_id, parsed.folder, parsed.is_read) == (
        "p1",
        MailFolder.INBOX,
        False,
    )


def test_message_ids() -> None:
    assert message_ids("<a@x> junk <b@y>\n <c@z>") == ("<a@x>", "<b@y>", "<c@z>")
    assert message_ids(None) == ()


# -- malformed MIME ----------------------------------------------------------------


def test_missing_closing_boundary_keeps_the_complete_parts() -> None:
    raw = (
        HEAD + b'Content-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nthe text\n"
        b'--B\nContent-Type: application/pdf\nContent-Disposition: attachment; filename="a.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\nJVBERi0=\n"
    )
    parsed = parse(raw)
    assert parsed.text == "the text"
    assert [(a.filename, a.data) for a in parsed.attachments] == [("a.pdf", b"%PDF-")]
    assert "CloseBoundaryNotFoundDefect" in parsed.defects


def test_multipart_without_boundary_is_read_as_text() -> None:
    raw = (
        HEAD
        + b"Content-Type: multipart/mixed\n\n--X\nContent-Type: text/plain\n\nhello\n--X--\n"
    )
    parsed = parse(raw)
    assert parsed.text is not None
    assert "hello" in parsed.text
    assert "NoBoundaryInMultipartDefect" in parsed.defects


def test_boundary_that_never_appears() -> None:
    raw = (
        HEAD + b'Content-Type: multipart/alternative; boundary="nowhere"\n\njust text\n'
    )
    parsed = parse(raw)
    assert parsed.text is not None
    assert "just text" in parsed.text
    assert parsed.defects


def test_bad_base64_is_decoded_leniently() -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nsee attached",
        b'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="x.bin"\n'
        b"Content-Transfer-Encoding: base64\n\nYWJj!!ZGVm\n*Z2hp=\n",
    )
    parsed = parse(raw)
    assert parsed.text == "see attached"
    [attachment] = parsed.attachments
    assert attachment.data is not None
    assert attachment.data.startswith(b"abcdef")
    assert attachment.size == len(attachment.data)
    assert "InvalidBase64CharactersDefect" in parsed.defects


def test_bad_base64_in_a_text_body() -> None:
    parsed = parse(text_mail(b"SGVsbG8gd29y\nbGQ", "utf-8", "base64"))
    assert parsed.text is not None
    assert parsed.text.startswith("Hello wor")


def test_header_line_without_colon_between_fields_is_dropped() -> None:
    raw = b"From: anna@example.com\nX-Broken header line\nSubject: kept\nDate: Tue, 5 Mar 2024 10:00:00 +0000\n\nbody\n"
    parsed = parse(raw)
    assert parsed.subject == "kept"
    assert parsed.date == dt.datetime(2024, 3, 5, 10, tzinfo=dt.UTC)
    assert parsed.text == "body\n"
    assert "header line without a colon dropped" in parsed.defects


def test_first_line_without_colon() -> None:
    parsed = parse(b"garbage line\nFrom: anna@example.com\nSubject: kept\n\nbody\n")
    assert parsed.subject == "kept"
    assert parsed.sender == Address("anna@example.com")


def test_missing_blank_line_between_header_and_body() -> None:
    parsed = parse(
        b"From: anna@example.com\nSubject: s\nHello Bob,\nsee you. Regards: Anna\n"
    )
    assert parsed.subject == "s"
    assert parsed.text == "Hello Bob,\nsee you. Regards: Anna\n"
    assert "MissingHeaderBodySeparatorDefect" in parsed.defects


def test_missing_blank_line_before_first_boundary() -> None:
    raw = (
        b"From: anna@example.com\nContent-Type: multipart/mixed; boundary=B\n"
        b"--B\nContent-Type: text/plain\n\nhello\n--B--\n"
    )
    parsed = parse(raw)
    assert parsed.sender == Address("anna@example.com")
    assert parsed.text is not None
    assert "hello" in parsed.text


def test_mbox_envelope_line_is_ignored() -> None:
    parsed = parse(
        b"From anna@example.com Tue Mar  5 10:00:00 2024\nFrom: anna@example.com\nSubject: s\n\nbody\n"
    )
    assert parsed.subject == "s"
    assert parsed.text == "body\n"


def test_empty_and_headerless_input() -> None:
    assert parse(b"").text == ""  # one empty text/plain part
    assert parse(b"\n\njust a body\n").text == "\njust a body\n"
    only_headers = parse(b"Subject: nothing else")
    assert only_headers.subject == "nothing else"


def test_garbage_never_raises() -> None:
    sample = multipart(
        b"Content-Type: multipart/alternative; boundary=ALT\n\n--ALT\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe\n--ALT\nContent-Type: text/html\n\n<p>x</p>\n--ALT--",
        b"Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/plain\n\ninner",
        b'Content-Type: image/png; name="=?utf-8?b?w6Q=?="\nContent-ID: <c@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=',
        head=HEAD
        + b"Subject: =?utf-8?q?a=C3=A4?=\nDate: Tue, 5 Mar 2024 10:00:00 +0000\n",
    )
    rng = random.Random(20240305)
    for _ in range(400):
        mutated = bytearray(sample)
        for _ in range(rng.randint(1, 12)):
            position = rng.randrange(len(mutated))
            mutated[position] = rng.choice(
                b"\x00\n\r:;<>=?\"'-\\ \xff\xc3" + bytes([rng.randrange(256)])
            )
        cut = rng.randint(0, len(mutated))
        parse(bytes(mutated[:cut]) if rng.random() < 0.3 else bytes(mutated))


@pytest.mark.parametrize(
    "raw",
    [
        b"From: \x00\x01\x02\n\n",
        b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n",
        b'Content-Type: text/plain; charset="\xff\xfe"\n\n\xff\xfe',
        b"Content-Type: text/plain; charset*=utf-8''%FF%FE\n\nx",
        b"Content-Disposition: attachment; filename*0*=x''%ZZ; filename*1=y\n\nx",
        b"Content-Type: message/rfc822\n\n",
        b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b\n",
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\n\n",
        b"Date: Tue, 5 Mar 10000 10:00:00 +0000\n\n",
        b'From: =?utf-8?b?####?= <a@b.c>\nTo: ,,,;;;<>@,\nCc: "unterminated <a@b.c>\n\n',
        b"To: " + b"x@y.z, " * 5000 + b"\n\n",
        b"Subject: " + b"=?utf-8?q?" + b"=" * 5000 + b"?=\n\n",
        b"Content-Type: multipart/mixed; boundary=B\n\n"
        + b"--B\nContent-Type: multipart/mixed; boundary=B\n\n" * 300,
    ],
)
def test_pathological_input_never_raises(raw: bytes) -> None:
    parse(raw)


def test_thousands_of_nested_multiparts_keep_the_header() -> None:
    nested = b"".join(
        b"Content-Type: multipart/mixed; boundary=B%d\n\n--B%d\n" % (i, i)
        for i in range(3000)
    )
    parsed = parse(
        b"From: anna@example.com\nSubject: deep\n"
        + nested
        + b"Content-Type: text/plain\n\nhi\n"
    )
    assert parsed.sender == Address("anna@example.com")
    assert parsed.subject == "deep"
    assert "MIME structure unreadable" in parsed.defects


@pytest.mark.parametrize(
    "raw",
    [
        b"To: " + b"Anna <anna@example.com>, " * 40_000 + b"\n\nx",
        b"Content-Type: text/plain; " + b"a=b; " * 40_000 + b"charset=utf-8\n\nx",
        b"Content-Type: application/pdf\nContent-Disposition: attachment; "
        + b"filename*0=a; " * 20_000
        + b"\n\nx",
        b"Subject: " + b"=?utf-8?q?a?= " * 50_000 + b"\n\nx",
        b"References: " + b"<a@b> " * 100_000 + b"\n\nx",
        b"X-A: b\n" * 100_000 + b"\nx",
        b"Content-Type: multipart/mixed; boundary=B\n\n"
        + b"--B\nContent-Type: text/plain\n\nx\n" * 20_000
        + b"--B--\n",
        b"Subject: x\n\n" + b"a" * 20_000_000,
    ],
    ids=[
        "addresses",
        "mime-parameters",
        "rfc2231-continuations",
        "encoded-words",
        "references",
        "fields",
        "parts",
        "long-line",
    ],
)
def test_hostile_sizes_parse_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    parse(raw)
    assert time.perf_counter() - started < 10  # each takes under a second


# -- charsets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("iso-8859-1", "Grüße aus Köln, à bientôt"),
        ("ISO-8859-1", "Grüße"),
        ("windows-1252", "“Smart quotes” – 10 €"),
        ("iso-2022-jp", "お見積もりをお送りします"),
        ("koi8-r", "Привет, как дела?"),
        ("gb2312", "你好，请查收报价。"),
        ("utf-8", "Grüße 👋"),
        ('"utf-8"', "Grüße"),
        ("shift_jis", "見積書"),
        ("euc-kr", "안녕하세요"),
        ("big5", "報價單"),
    ],
)
def test_declared_charsets(charset: str, text: str) -> None:
    codec = charset.strip('"').lower()
    parsed = parse(text_mail(text.encode(codec) + b"\n", charset))
    assert parsed.text == text + "\n"
    assert parsed.defects == ()


def test_cp1252_declared_as_latin1() -> None:
    parsed = parse(text_mail("Price: 10 € – “ok”".encode("cp1252"), "iso-8859-1"))
    assert parsed.text == "Price: 10 € – “ok”"


def test_gbk_characters_declared_as_gb2312() -> None:
    text = "朱镕基"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gb2312")
    assert parse(text_mail(text.encode("gbk"), "gb2312")).text == text


def test_unknown_charset_name() -> None:
    parsed = parse(text_mail("Grüße".encode(), "x-made-up-charset"))
    assert parsed.text == "Grüße"
    assert "unknown charset" in parsed.defects
    latin = parse(text_mail("Grüße".encode("cp1252"), "x-made-up-charset"))
    assert latin.text == "Grüße"


@pytest.mark.parametrize("charset", ["base64", "zlib", "rot13", "hex"])
def test_codecs_that_are_not_text_encodings_count_as_unknown(charset: str) -> None:
    parsed = parse(text_mail(b"plain ascii", charset))
    assert parsed.text == "plain ascii"
    assert "unknown charset" in parsed.defects


def test_text_declared_utf8_that_is_not() -> None:
    parsed = parse(text_mail("Grüße aus Köln".encode("cp1252"), "utf-8"))
    assert parsed.text == "Grüße aus Köln"
    assert "text not in its declared charset" in parsed.defects


def test_mostly_utf8_with_one_broken_byte_stays_utf8() -> None:
    parsed = parse(
        text_mail(
            "Grüße aus Köln, schöne ".encode() + b"\xff" + " Grüße".encode(), "utf-8"
        )
    )
    assert parsed.text == "Grüße aus Köln, schöne \ufffd Grüße"


def test_utf8_declared_as_latin1_or_ascii() -> None:
    assert parse(text_mail("Grüße".encode(), "iso-8859-1")).text == "Grüße"
    assert parse(text_mail("Grüße".encode(), "us-ascii")).text == "Grüße"
    no_charset = HEAD + b"Content-Type: text/plain\n\n" + "Grüße".encode()
    assert parse(no_charset).text == "Grüße"


def test_quoted_printable_and_base64_bodies() -> None:
    assert (
        parse(
            text_mail(b"Gr=FC=DFe=\n aus K=F6ln", "iso-8859-1", "quoted-printable")
        ).text
        == "Grüße aus Köln"
    )
    encoded = base64.encodebytes("Привет".encode("koi8-r"))
    assert parse(text_mail(encoded, "koi8-r", "base64")).text == "Привет"


def test_line_ends_and_nul_characters_are_normalized() -> None:
    parsed = parse(text_mail(b"a\r\nb\rc\nd\x00e", "us-ascii"))
    assert parsed.text == "a\nb\nc\nde"


# -- RFC 2047 and raw 8-bit headers -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "subject"),
    [
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        ("=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"),
        ("Re: =?iso-8859-1?q?Gr=FC=DFe?= und mehr", "Re: Grüße und mehr"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?=\n =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c"),
        ("=?utf-8?b?8J+R?= =?utf-8?b?iw==?=", "👋"),
        ("=?iso-2022-jp?B?GyRCOEYkUyQrJDEbKEI=?=", "呼びかけ"),
        ("=?koi8-r?b?8NLJ18XU?=", "Привет"),
        ("=?gb2312?B?xOO6ww==?=", "你好"),
        ("=?utf-8*en?q?hello?=", "hello"),
        ("=?utf-8?q?caf=E9?=", "café"),
        ("=?x-unknown?q?caf=C3=A9?=", "café"),
        ("=?utf-8?b?R3LDvMOfZQ?=", "Grüße"),
        ("=?utf-8?B?R3LDvMOfZQ=?=", "Grüße"),
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("=?utf-8?x?bad-encoding?=", "=?utf-8?x?bad-encoding?="),
        ("plain = ?text? =", "plain = ?text? ="),
    ],
)
def test_encoded_word_subjects(raw: str, subject: str) -> None:
    assert parse(f"Subject: {raw}\n\nbody\n".encode()).subject == subject


def test_raw_8bit_headers() -> None:
    utf8 = parse("Subject: Grüße\nFrom: Jörg Müller <joerg@example.com>\n\nx".encode())
    assert utf8.subject == "Grüße"
    assert utf8.sender == Address("joerg@example.com", "Jörg Müller")
    latin = parse(
        "Subject: Grüße\nFrom: Jörg Müller <joerg@example.com>\n\nx".encode("latin-1")
    )
    assert latin.subject == "Grüße"
    assert latin.sender == Address("joerg@example.com", "Jörg Müller")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?=", "Jörg Müller"),
        ("=?iso-8859-1?q?J=F6rg?=", "Jörg"),
        ("=?utf-8?b?QsOpcmcsIEFubmE=?=", "Bérg, Anna"),
        ('"=?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?="', "Müller, Jörg"),
        ("=?utf-8?q?J=F6rg?=", "Jörg"),
        ("=?unknown-8bit?q?J=F6rg?=", "Jörg"),
        ("=?utf-8?b?broken", "=?utf-8?b?broken"),
    ],
)
def test_encoded_word_names(raw: str, name: str) -> None:
    parsed = parse(f"From: {raw} <joerg@example.com>\n\nx".encode())
    assert parsed.sender == Address("joerg@example.com", name)


def test_control_characters_are_removed_from_headers() -> None:
    parsed = parse(b"Subject: a\x00b\x07c\td\n\nx")
    assert parsed.subject == "abc d"
    encoded = parse(b"Subject: =?utf-8?q?a=00b=0Ac?=\n\nx")
    assert encoded.subject == "ab c"


# -- missing headers -------------------------------------------------------------------


def test_message_without_message_id_from_and_date() -> None:
    parsed = parse(b"Subject: bare\n\nbody\n")
    assert parsed.message_id is None
    assert parsed.sender is None
    assert parsed.date is None
    assert parsed.to == ()
    assert parsed.subject == "bare"
    assert parsed.text == "body\n"


def test_message_id_without_brackets_gets_them() -> None:
    assert (
        parse(b"Message-ID: abc.123@example.com\n\nx").message_id
        == "<abc.123@example.com>"
    )
    assert parse(b"Message-ID: not an id\n\nx").message_id is None
    assert (
        parse(b"Message-ID:\n <folded@example.com>\n\nx").message_id
        == "<folded@example.com>"
    )


def test_unreadable_dates() -> None:
    assert parse(b"Date: yesterday\n\nx").date is None
    assert "Date: unreadable" in parse(b"Date: yesterday\n\nx").defects
    assert parse(b"Date: 5 Mar 2024 10:00:00 -0000\n\nx").date == dt.datetime(
        2024, 3, 5, 10, tzinfo=dt.UTC
    )
    assert parse(b"Date: Tue, 5 Mar 24 10:00 EST\n\nx").date == dt.datetime(
        2024, 3, 5, 15, tzinfo=dt.UTC
    )


def test_address_edge_cases() -> None:
    parsed = parse(
        b"From: anna@example.com (Anna)\n"
        b"To: undisclosed-recipients:;\n"
        b'Cc: Team: a@example.com, b@example.com;, "no address"\n\nx'
    )
    assert parsed.sender is not None
    assert parsed.sender.email == "anna@example.com"
    assert parsed.to == ()
    assert [a.email for a in parsed.cc] == ["a@example.com", "b@example.com"]


def test_many_references_keep_root_and_newest() -> None:
    refs = " ".join(f"<{i}@x>" for i in range(1000))
    parsed = parse(f"References: {refs}\n\nx".encode())
    assert len(parsed.references) == MAX_REFERENCES
    assert parsed.references[0] == "<0@x>"
    assert parsed.references[-1] == "<999@x>"


# -- attachments -----------------------------------------------------------------------


def test_huge_attachment_parses_in_sane_time_and_memory() -> None:
    data = os.urandom(30 * 1024 * 1024)
    raw = multipart(
        b"Content-Type: text/plain\n\nsee attached",
        b'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="big.bin"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data),
    )
    started = time.perf_counter()
    tracemalloc.start()
    try:
        parsed = parse(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    [attachment] = parsed.attachments
    assert attachment.size == len(data)
    assert attachment.data == data
    assert parsed.text == "see attached"
    assert elapsed < 30  # about 3 s under tracemalloc on a laptop
    assert peak < 12 * len(raw)  # about 8x: raw, its text, the decoded bytes


def test_forwarded_message_is_one_eml_attachment() -> None:
    inner = multipart(
        b"Content-Type: text/plain\n\ninner text",
        b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="inner.pdf"\n\n%PDF',
        head=b"From: cleo@example.net\nSubject: Original offer\nMessage-ID: <inner@x>\n",
        boundary="INNER",
    )
    raw = multipart(
        b"Content-Type: text/plain\n\nFYI, see below",
        b"Content-Type: message/rfc822\nContent-Disposition: attachment\n\n" + inner,
    )
    parsed = parse(raw)
    assert parsed.text == "FYI, see below"
    assert parsed.message_id == "<m1@example.com>"
    [eml] = parsed.attachments
    assert eml.content_type == "message/rfc822"
    assert eml.filename == "Original offer.eml"
    assert eml.data is not None
    assert eml.size == len(eml.data)
    again = parse(eml.data)
    assert again.subject == "Original offer"
    assert again.message_id == "<inner@x>"
    assert again.text == "inner text"
    assert [a.filename for a in again.attachments] == ["inner.pdf"]


def test_forwarded_message_keeps_its_bytes() -> None:
    inner = (
        "From: cleo@example.net\r\nSubject: Grüße\r\nX-Long: "
        + "y " * 60
        + "\r\n\r\nRaw 8-bit body: Grüße\r\n"
    )
    raw = multipart(
        b"Content-Type: text/plain\n\nouter",
        b'Content-Type: message/rfc822; name="fwd.eml"\n\n' + inner.encode(),
    )
    [eml] = parse(raw).attachments
    assert eml.filename == "fwd.eml"
    assert eml.data == inner.encode()


def test_forwarded_message_as_the_only_body_does_not_become_the_text() -> None:
    raw = multipart(b"Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n")
    parsed = parse(raw)
    assert parsed.text is None
    assert parsed.html is None
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


def test_base64_encoded_forwarded_message() -> None:
    inner = b"Subject: inner\n\ninner body\n"
    raw = multipart(
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner)
    )
    [eml] = parse(raw).attachments
    assert eml.data == inner
    assert eml.filename == "forwarded message.eml"


def test_digest_parts_are_messages() -> None:
    raw = multipart(
        b"\nSubject: one\n\nfirst",
        b"\nSubject: two\n\nsecond",
        kind="digest",
    )
    parsed = parse(raw)
    assert parsed.text is None
    assert [a.filename for a in parsed.attachments] == ["one.eml", "two.eml"]


def test_inline_images_with_content_id() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n")
    raw = multipart(
        multipart(
            b"Content-Type: text/plain\n\nlogo below",
            multipart(
                b'Content-Type: text/html\n\n<p>logo: <img src="cid:logo@example.com"></p>',
                b"Content-Type: image/png\nContent-ID: <logo@example.com>\nContent-Transfer-Encoding: base64\n\n"
                + png,
                b"Content-Type: image/gif\nContent-ID: <sig@example.com>\nContent-Disposition: inline\n"
                b"Content-Transfer-Encoding: base64\n\nR0lGODlh",
                kind="related",
                boundary="REL",
                head=b"",
            ),
            kind="alternative",
            boundary="ALT",
            head=b"",
        ),
        b'Content-Type: image/png\nContent-ID: <att@example.com>\nContent-Disposition: attachment; filename="a.png"\n'
        b"Content-Transfer-Encoding: base64\n\n" + png,
        b"Content-Type: image/png\nContent-ID: <mixed@example.com>\nContent-Transfer-Encoding: base64\n\n"
        + png,
    )
    parsed = parse(raw)
    assert parsed.text == "logo below"
    assert parsed.html == '<p>logo: <img src="cid:logo@example.com"></p>'
    assert [(a.content_id, a.inline, a.content_type) for a in parsed.attachments] == [
        ("logo@example.com", True, "image/png"),
        ("sig@example.com", True, "image/gif"),
        ("att@example.com", False, "image/png"),
        ("mixed@example.com", False, "image/png"),
    ]
    assert parsed.attachments[0].data == b"\x89PNG\r\n\x1a\n"


def test_html_only_mail_keeps_text_none() -> None:
    raw = HEAD + b"Content-Type: text/html; charset=utf-8\n\n<p>Only <b>HTML</b></p>"
    parsed = parse(raw)
    assert parsed.text is None
    assert parsed.html == "<p>Only <b>HTML</b></p>"
    assert plain_text(parsed.text, parsed.html) == "Only HTML"


def test_script_laden_html_is_kept_as_received() -> None:
    html = '<p onclick="steal()">Hi</p><script>alert(document.cookie)</script>'
    parsed = parse(HEAD + b"Content-Type: text/html\n\n" + html.encode())
    assert parsed.html == html


def test_multipart_alternative_picks_text_and_html() -> None:
    raw = multipart(
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe",
        b"Content-Type: text/html; charset=iso-8859-1\n\n<p>Gr\xfc\xdfe</p>",
        kind="alternative",
    )
    parsed = parse(raw)
    assert parsed.text == "Grüße"
    assert parsed.html == "<p>Grüße</p>"
    assert parsed.attachments == ()


def test_text_attachment_is_not_the_body() -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nthe body",
        b'Content-Type: text/plain\nContent-Disposition: attachment; filename="notes.txt"\n\nthe notes',
        b"Content-Type: text/html\nContent-Disposition: attachment\n\n<p>page</p>",
    )
    parsed = parse(raw)
    assert parsed.text == "the body"
    assert parsed.html is None
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("notes.txt", b"the notes"),
        (None, b"<p>page</p>"),
    ]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('filename="../../etc/passwd"', ".._.._etc_passwd"),
        ('filename="C:\\\\Users\\\\x\\\\evil.exe"', "C:_Users_x_evil.exe"),
        ('filename="a\tb.pdf"', "a b.pdf"),
        ("filename*=utf-8''in%07vo%00ice.pdf", "invoice.pdf"),
        ("filename*=utf-8''invoice%E2%80%AEfdp.exe", "invoicefdp.exe"),
        ("filename*=utf-8''zero%E2%80%8Bwidth.pdf", "zerowidth.pdf"),
        ("filename*=utf-8''Pr%C3%BCfbericht.pdf", "Prüfbericht.pdf"),
        ("filename*=iso-8859-1''Pr%FCfbericht.pdf", "Prüfbericht.pdf"),
        ('filename="=?utf-8?B?w6TDtsO8LnBkZg==?="', "äöü.pdf"),
        ('filename="   "', None),
    ],
)
def test_attachment_names_are_made_safe(header: str, name: str | None) -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nx",
        b"Content-Type: application/octet-stream\nContent-Disposition: attachment; "
        + header.encode()
        + b"\n\ndata",
    )
    [attachment] = parse(raw).attachments
    assert attachment.filename == name


def test_raw_8bit_attachment_name() -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nx",
        'Content-Type: application/pdf\nContent-Disposition: attachment; filename="Prüfbericht.pdf"\n\n%PDF'.encode(),
    )
    assert parse(raw).attachments[0].filename == "Prüfbericht.pdf"


def test_long_attachment_names_keep_their_extension() -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nx",
        b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="'
        + b"n" * 400
        + b'.pdf"\n\n%PDF',
    )
    name = parse(raw).attachments[0].filename
    assert name is not None
    assert len(name) == MAX_FILENAME_LENGTH
    assert name.endswith("n.pdf")


def test_name_from_content_type_when_there_is_no_disposition() -> None:
    raw = multipart(
        b"Content-Type: text/plain\n\nx",
        b'Content-Type: application/pdf; name="offer.pdf"\n\n%PDF',
    )
    [attachment] = parse(raw).attachments
    assert (attachment.filename, attachment.content_type, attachment.inline) == (
        "offer.pdf",
        "application/pdf",
        False,
    )
