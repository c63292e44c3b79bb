"""Microsoft 365: the Microsoft identity platform (microsoft-graph.md section 1).

Public surface: :class:`MicrosoftOAuth`, the
:class:`~crmflow.providers.base.OAuthProvider` adapter; :class:`GraphCalendar`,
one Outlook calendar as a ``CalendarProvider`` sync side; and
:class:`GraphMailbox`, the user's Outlook mailbox as a ``MailProvider``.
"""

from __future__ import annotations

from crmflow.providers.microsoft._calendar import GraphCalendar
from crmflow.providers.microsoft._calendars import list_calendars
from crmflow.providers.microsoft._mail import GraphMailbox
from crmflow.providers.microsoft._oauth import MicrosoftEndpoints, MicrosoftOAuth

__all__ = [
    "GraphCalendar",
    "GraphMailbox",
    "MicrosoftEndpoints",
    "MicrosoftOAuth",
    "list_calendars",
]
