"""CalDAV calendar adapters: presets and account discovery.

Public surface:

* :class:`CalendarPreset`, :data:`CALENDAR_PRESETS`, :func:`calendar_preset`
  (``presets.py``);
* :func:`discover`, :func:`start_url`, :func:`normalize_url`,
  :class:`CalDAVAccount`, :class:`DiscoveredCalendar` (``_discovery.py``):
  RFC 6764 / 5397 / 4791 discovery that proves the credentials and reports
  failures as ``ConnectionCheckFailed`` subclasses.

* :class:`CalDAVCalendar` (``_calendar.py``): one calendar collection as a
  ``CalendarProvider`` side of the two-way sync (iCalendar mapping in
  ``_ical.py``).
"""

from __future__ import annotations

from crmflow.providers.caldav._calendar import CalDAVCalendar
from crmflow.providers.caldav._discovery import (
    DEFAULT_TIMEOUT_S,
    CalDAVAccount,
    DiscoveredCalendar,
    discover,
    normalize_url,
    start_url,
)
from crmflow.providers.caldav.presets import (
    CALENDAR_PRESETS,
    CalendarPreset,
    calendar_preset,
)

__all__ = [
    "CALENDAR_PRESETS",
    "DEFAULT_TIMEOUT_S",
    "CalDAVAccount",
    "CalDAVCalendar",
    "CalendarPreset",
    "DiscoveredCalendar",
    "calendar_preset",
    "discover",
    "normalize_url",
    "start_url",
]
