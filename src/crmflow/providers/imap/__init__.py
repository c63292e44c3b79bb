"""IMAP/SMTP mail adapters: presets of the big providers and credential checks.

Public surface:

* :class:`Security`, :class:`MailServer`, :class:`MailPreset`,
  :data:`MAIL_PRESETS`, :func:`mail_preset` (``presets.py``);
* :func:`verify_imap`, :func:`verify_smtp`, :func:`check_transport`,
  :class:`ImapLogin` (``_verify.py``):
  sign in for real and report failures as ``ConnectionCheckFailed`` subclasses.

Mailbox sync (``ImapMailbox``) and sending arrive with the email feature.
"""

from __future__ import annotations

from crmflow.providers.imap._verify import (
    DEFAULT_TIMEOUT_S,
    ImapLogin,
    check_transport,
    verify_imap,
    verify_smtp,
)
from crmflow.providers.imap.presets import (
    MAIL_PRESETS,
    MailPreset,
    MailServer,
    Security,
    mail_preset,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAIL_PRESETS",
    "ImapLogin",
    "MailPreset",
    "MailServer",
    "Security",
    "check_transport",
    "mail_preset",
    "verify_imap",
    "verify_smtp",
]
