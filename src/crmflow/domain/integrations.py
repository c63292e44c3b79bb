"""Names of providers and integration kinds, as stored in ``user_integrations``."""

from __future__ import annotations

import enum


class ProviderKey(enum.StrEnum):
    """A mail or calendar provider."""

    GOOGLE = "google"
    MICROSOFT = "microsoft"
    APPLE = "apple"
    IMAP = "imap"
    CALDAV = "caldav"


class IntegrationKind(enum.StrEnum):
    """What an integration is used for."""

    GMAIL = "gmail"
    CALENDAR = "calendar"
    MAIL = "mail"
