"""The IMAP/SMTP presets of the big providers that still allow IMAP/SMTP with a
password (security modes and server endpoints: :mod:`crmflow.domain.mail_servers`).

Sources (checked 2026): Apple's "iCloud Mail server settings for other email
client apps" support article, Google "IMAP, POP, and SMTP"
(developers.google.com/gmail/imap/imap-smtp), Microsoft "POP, IMAP, and SMTP
settings for Outlook.com", Fastmail "Server names and ports"
(fastmail.com/help/technical/servernamesandports.html), Yahoo "IMAP server
settings for Yahoo Mail".

Every one of them wants an app-specific password for IMAP/SMTP once two-step
sign-in is on (Apple and Fastmail always); ``MailPreset.sign_in_help`` tells
the user where to create one.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.mail_servers import MailServer, Security

__all__ = ["MAIL_PRESETS", "MailPreset", "MailServer", "Security", "mail_preset"]


@dataclass(frozen=True, slots=True)
class MailPreset:
    """Known IMAP/SMTP settings of a mail provider."""

    #: stable id used by the API (``"icloud"``)
    key: str
    #: shown to users
    name: str
    #: how the integration is stored: ``apple`` for iCloud, ``imap`` otherwise
    provider: ProviderKey
    imap: MailServer
    smtp: MailServer
    #: other SMTP endpoints the provider documents (e.g. 587 STARTTLS beside 465)
    smtp_alternatives: tuple[MailServer, ...]
    #: whether a normal account password is refused for IMAP/SMTP
    app_password_required: bool
    #: what the user signs in with
    username_help: str
    #: where to get the password to enter here
    sign_in_help: str
    #: anything else the user must know (IMAP switched off by default, ...)
    notes: str = ""
    #: the SMTP server files a copy of what it sends in the Sent folder itself
    #: (an IMAP APPEND would make a second one)
    keeps_sent_copy: bool = False


MAIL_PRESETS: tuple[MailPreset, ...] = (
    MailPreset(
        key="icloud",
        name="iCloud Mail",
        provider=ProviderKey.APPLE,
        imap=MailServer("imap.mail.me.com", 993, Security.TLS),
        smtp=MailServer("smtp.mail.me.com", 587, Security.STARTTLS),
        smtp_alternatives=(),
        app_password_required=True,
        username_help="Your iCloud email address (…@icloud.com, @me.com or @mac.com).",
        sign_in_help=(
            "An app-specific password: create one at account.apple.com -> Sign-In "
            "and Security -> App-Specific Passwords. Your Apple Account password "
            "does not work here."
        ),
    ),
    MailPreset(
        key="gmail",
        name="Gmail (IMAP)",
        provider=ProviderKey.IMAP,
        imap=MailServer("imap.gmail.com", 993, Security.TLS),
        smtp=MailServer("smtp.gmail.com", 465, Security.TLS),
        smtp_alternatives=(MailServer("smtp.gmail.com", 587, Security.STARTTLS),),
        app_password_required=True,
        username_help="Your full Gmail or Google Workspace address.",
        sign_in_help=(
            "An app password (needs 2-Step Verification): create one at "
            "myaccount.google.com/apppasswords. Connecting with Google (OAuth) "
            "instead needs no password."
        ),
        notes="IMAP must be allowed in Gmail settings -> Forwarding and POP/IMAP.",
        # "Gmail automatically saves a copy of sent messages in Sent Mail"
        keeps_sent_copy=True,
    ),
    MailPreset(
        key="outlook",
        name="Outlook.com",
        provider=ProviderKey.IMAP,
        imap=MailServer("outlook.office365.com", 993, Security.TLS),
        smtp=MailServer("smtp-mail.outlook.com", 587, Security.STARTTLS),
        smtp_alternatives=(MailServer("smtp.office365.com", 587, Security.STARTTLS),),
        app_password_required=True,
        username_help="Your full Outlook.com / Hotmail / Live address.",
        sign_in_help=(
            "An app password from account.microsoft.com -> Security -> Advanced "
            "security options."
        ),
        notes=(
            "Microsoft is retiring password sign-in for Outlook.com IMAP/SMTP; if "
            "the password is refused, connect with Microsoft (OAuth) instead. IMAP "
            "must be switched on in Outlook.com settings -> Mail -> Forwarding and "
            "IMAP."
        ),
    ),
    MailPreset(
        key="fastmail",
        name="Fastmail",
        provider=ProviderKey.IMAP,
        imap=MailServer("imap.fastmail.com", 993, Security.TLS),
        smtp=MailServer("smtp.fastmail.com", 465, Security.TLS),
        smtp_alternatives=(MailServer("smtp.fastmail.com", 587, Security.STARTTLS),),
        app_password_required=True,
        username_help="Your Fastmail address, including the domain.",
        sign_in_help=(
            "An app password: Settings -> Privacy & Security -> Manage app "
            "passwords and access. Your Fastmail password does not work here."
        ),
    ),
    MailPreset(
        key="yahoo",
        name="Yahoo Mail",
        provider=ProviderKey.IMAP,
        imap=MailServer("imap.mail.yahoo.com", 993, Security.TLS),
        smtp=MailServer("smtp.mail.yahoo.com", 465, Security.TLS),
        smtp_alternatives=(MailServer("smtp.mail.yahoo.com", 587, Security.STARTTLS),),
        app_password_required=True,
        username_help="Your full Yahoo Mail address.",
        sign_in_help=(
            "An app password: Account info -> Account security -> Generate app "
            "password. Your Yahoo password does not work here."
        ),
    ),
)


def mail_preset(key: str) -> MailPreset | None:
    """The preset with ``key``, or None."""
    return next((p for p in MAIL_PRESETS if p.key == key), None)
