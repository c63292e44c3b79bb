"""Google: OAuth 2.0 for web-server apps (google-apis.md section 1), Calendar
and Gmail.

Public surface: :class:`GoogleOAuth`, the :class:`~crmflow.providers.base.OAuthProvider`
adapter; :class:`GoogleCalendar` and :func:`list_calendars` (Calendar v3);
:class:`GmailMailbox`, the :class:`~crmflow.domain.mail.MailProvider` adapter
(Gmail v1); :func:`watch_events` and :func:`stop_channel` (Calendar push).
"""

from __future__ import annotations

from crmflow.providers.google._calendar import GoogleCalendar
from crmflow.providers.google._calendars import list_calendars
from crmflow.providers.google._gmail import GmailMailbox
from crmflow.providers.google._oauth import GoogleEndpoints, GoogleOAuth
from crmflow.providers.google._push import WatchChannel, stop_channel, watch_events

__all__ = [
    "GmailMailbox",
    "GoogleCalendar",
    "GoogleEndpoints",
    "GoogleOAuth",
    "WatchChannel",
    "list_calendars",
    "stop_channel",
    "watch_events",
]
