"""Email address normalization shared by users, contacts and attendees."""

from __future__ import annotations

import re

from crmflow.errors import ValidationFailed

# Deliberately permissive: internal domains (``.local``, ``.corp``) are real in
# company directories; deliverability is the mail server's business.
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
MAX_EMAIL_LENGTH = 320  # RFC 3696 errata: 64 local + @ + 255 domain


def normalize_email(email: str) -> str:
    """Strip and lower-case an address.

    Raises:
        ValidationFailed: not of the form ``local@domain.tld``.
    """
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > MAX_EMAIL_LENGTH:
        raise ValidationFailed(f"{email!r} is not a valid email address.")
    return value
