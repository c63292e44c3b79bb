"""Microsoft 365: the Microsoft identity platform (microsoft-graph.md section 1).

Public surface: :class:`MicrosoftOAuth`, the
:class:`~crmflow.providers.base.OAuthProvider` adapter, and :class:`GraphCalendar`,
one Outlook calendar as a ``CalendarProvider`` sync side. The Graph mail adapter
joins this package with the mail work.
"""

from __future__ import annotations

from crmflow.providers.microsoft._calendar import GraphCalendar
from crmflow.providers.microsoft._calendars import list_calendars
from crmflow.providers.microsoft._oauth import MicrosoftEndpoints, MicrosoftOAuth

__all__ = [
    "GraphCalendar",
    "MicrosoftEndpoints",
    "MicrosoftOAuth",
    "list_calendars",
]
