"""Sign-in values of the IMAP/SMTP adapter: XOAUTH2 responses, server URLs,
the optional IMAP + SMTP feature of Gmail, and the settings that name servers."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from crmflow.config import Settings
from crmflow.connections import scopes as sc
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail_servers import MailServer, Security
from crmflow.domain.secret import Secret
from crmflow.providers.imap._signin import SignIn

TOKEN = "ya29.a0-secret-token"


def test_xoauth2_response_is_the_documented_string() -> None:
    sign_in = SignIn("someuser@example.com", Secret(TOKEN), oauth=True)
    raw = sign_in.xoauth2()
    assert (
        raw == b"user=someuser@example.com\x01auth=Bearer ya29.a0-secret-token\x01\x01"
    )
    # Google's worked example, base64 of the same shape
    assert base64.b64decode(base64.b64encode(raw)) == raw
    # the first (empty) challenge gets the credentials, an error challenge
    # (base64 JSON) an empty line
    assert sign_in.imap_response(b"") == raw
    assert sign_in.imap_response(b'{"status":"400"}') == b""


def test_messages_name_the_credential_and_never_show_it() -> None:
    token = SignIn("u@example.com", Secret(TOKEN), oauth=True)
    password = SignIn("u@example.com", Secret("hunter2-password"))
    assert token.credential == "access token"
    assert password.credential == "password"
    refused = token.refused("IMAP server imap.gmail.com:993", "NO [AUTH] Invalid")
    assert "connect the account again" in refused
    assert TOKEN not in refused + repr(token) + token.not_offered("x")
    assert "hunter2" not in password.refused("x", "535") + repr(password)
    assert "app-specific password" in password.refused("x", "535")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://imap.gmail.com:993", MailServer("imap.gmail.com", 993, Security.TLS)),
        ("smtps://smtp.gmail.com:465", MailServer("smtp.gmail.com", 465, Security.TLS)),
        (
            "smtp://smtp.example.com:587",
            MailServer("smtp.example.com", 587, Security.STARTTLS),
        ),
        (
            "IMAP://Mail.Example.com:143",
            MailServer("mail.example.com", 143, Security.STARTTLS),
        ),
        ("imap+plain://127.0.0.1:1143", MailServer("127.0.0.1", 1143, Security.NONE)),
    ],
)
def test_server_urls(url: str, expected: MailServer) -> None:
    assert MailServer.from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://imap.gmail.com:993",
        "imaps://imap.gmail.com",
        "imaps://:993",
        "smtp://h:99999",
        "",
    ],
)
def test_bad_server_urls_say_what_to_write(url: str) -> None:
    with pytest.raises(ValueError, match="imaps://host:993"):
        MailServer.from_url(url)


def test_settings_check_the_gmail_server_urls() -> None:
    assert Settings().google_imap_url == "imaps://imap.gmail.com:993"
    assert Settings().google_smtp_url == "smtps://smtp.gmail.com:465"
    with pytest.raises(ValidationError, match="google_smtp_url"):
        Settings(google_smtp_url="http://smtp.gmail.com")


def test_imap_smtp_is_asked_for_only_when_named() -> None:
    spec = sc.spec_of(ProviderKey.GOOGLE, IntegrationKind.GMAIL)
    assert sc.GMAIL_FULL not in sc.requested_scopes(spec)
    assert sc.GMAIL_FULL in sc.requested_scopes(spec, [sc.IMAP_SMTP])
    granted = sc.requested_scopes(spec)
    report = sc.analyse(spec, granted, has_refresh_token=True)
    assert report.complete
    assert report.summary() is None
    (optional,) = [f for f in report.features if f.key == sc.IMAP_SMTP]
    assert optional.optional
    assert not optional.enabled
    assert optional.missing_scopes == (sc.GMAIL_FULL,)
    assert optional.message is not None
    assert optional.message.startswith("Optional, off")
    full = sc.analyse(spec, [*granted, sc.GMAIL_FULL], has_refresh_token=True)
    assert all(f.enabled for f in full.features)
