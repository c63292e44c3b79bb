"""IMAP/SMTP mail adapters: presets of the big providers and credential checks.

Public surface:

* :class:`Security`, :class:`MailServer`, :class:`MailPreset`,
  :data:`MAIL_PRESETS`, :func:`mail_preset` (``presets.py``);
* :func:`verify_imap`, :func:`verify_smtp`, :func:`check_transport`,
  :class:`ImapLogin` (``_verify.py``):
  sign in for real and report failures as ``ConnectionCheckFailed`` subclasses;
* :class:`ImapMailbox` (``_mailbox.py``, sending in ``_smtp.py``): the
  ``MailProvider`` of an IMAP + SMTP account: fetch INBOX and Sent with UIDs,
  CONDSTORE and QRESYNC, send by SMTP and file the copy in Sent, set the read
  flag, and wait for new mail with IDLE. It signs in with a password, or with
  an OAuth access token through SASL XOAUTH2 (``_signin.py``).
"""

from __future__ import annotations

from crmflow.providers.imap._mailbox import ImapMailbox, InboxState
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
    "ImapMailbox",
    "InboxState",
    "MailPreset",
    "MailServer",
    "Security",
    "check_transport",
    "mail_preset",
    "verify_imap",
    "verify_smtp",
]
