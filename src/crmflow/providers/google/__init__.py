"""Google: OAuth 2.0 for web-server apps (google-apis.md section 1).

Public surface: :class:`GoogleOAuth`, the :class:`~crmflow.providers.base.OAuthProvider`
adapter. Calendar and Gmail adapters join this package with the sync and mail
work.
"""

from __future__ import annotations

from crmflow.providers.google._calendar import GoogleCalendar
from crmflow.providers.google._calendars import list_calendars
from crmflow.providers.google._oauth import GoogleEndpoints, GoogleOAuth

__all__ = [
    "GoogleCalendar",
    "GoogleEndpoints",
    "GoogleOAuth",
    "list_calendars",
]
