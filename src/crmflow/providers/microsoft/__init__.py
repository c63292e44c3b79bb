"""Microsoft 365: the Microsoft identity platform (microsoft-graph.md section 1).

Public surface: :class:`MicrosoftOAuth`, the
:class:`~crmflow.providers.base.OAuthProvider` adapter; :class:`GraphCalendar`,
one Outlook calendar as a ``CalendarProvider`` sync side; and
:class:`GraphMailbox`, the user's Outlook mailbox as a ``MailProvider``;
and change-notification subscriptions (:func:`create_subscription`,
:func:`renew_subscription`, :func:`delete_subscription`).
"""

from __future__ import annotations

from crmflow.providers.microsoft._calendar import GraphCalendar
from crmflow.providers.microsoft._calendars import list_calendars
from crmflow.providers.microsoft._mail import GraphMailbox
from crmflow.providers.microsoft._oauth import MicrosoftEndpoints, MicrosoftOAuth
from crmflow.providers.microsoft._subscriptions import (
    MAX_LIFETIME,
    GraphSubscription,
    create_subscription,
    delete_subscription,
    lifetime_end,
    renew_subscription,
)

__all__ = [
    "MAX_LIFETIME",
    "GraphCalendar",
    "GraphMailbox",
    "GraphSubscription",
    "MicrosoftEndpoints",
    "MicrosoftOAuth",
    "create_subscription",
    "delete_subscription",
    "lifetime_end",
    "list_calendars",
    "renew_subscription",
]
