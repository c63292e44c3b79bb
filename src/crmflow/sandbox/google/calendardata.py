"""Calendar data: stored calendars, events and exceptions, and the views of them.

Plain dataclasses persisted by :class:`~crmflow.sandbox.google.store.GoogleStore`
(via pydantic), plus small helpers every calendar module shares: id rules
(client-chosen ids are base32hex, 5-1024 characters), opaque token codecs and
instance end times. The behaviour lives in
:mod:`~crmflow.sandbox.google.calendars` (writes),
:mod:`~crmflow.sandbox.google.listing` (list/instances) and
:mod:`~crmflow.sandbox.google.eventjson` (rendering).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.sandbox.google.eventtime import EventTime, stored_event_time, zone

__all__ = [
    "BASE32HEX",
    "EVENT_ID",
    "CalendarsData",
    "EventView",
    "StoredCalendar",
    "StoredEvent",
    "b64_token",
    "instance_end",
    "new_event_id",
    "read_b64_token",
]

#: client-chosen event ids: base32hex (lowercase a-v, 0-9), 5-1024 characters
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
#: the base32hex alphabet (RFC 2938 §3.1.2) of Google event ids
BASE32HEX = "0123456789abcdefghijklmnopqrstuv"


@dataclass
class StoredEvent:
    """One event, exception or tombstone as stored."""

    id: str
    #: writable fields; ``start``/``end`` in EventTime storage form
    body: dict[str, Any]
    status: str
    ical_uid: str
    created_ms: int
    #: last modification of the main event data (reminder-only edits excluded)
    updated_ms: int
    #: bumped on every write; the etag is derived from it
    version_ms: int
    #: position in the calendar's change sequence (sync tokens)
    change_seq: int
    sequence: int
    event_type: str
    #: {"email", "displayName"?}
    organizer: dict[str, Any]
    #: first (or only) instance, ms since epoch; all-day in the calendar's zone
    start_ms: int
    end_ms: int
    #: set on exceptions (modified or cancelled instances)
    recurring_event_id: str | None = None
    original_start: dict[str, str] | None = None

    @property
    def cancelled(self) -> bool:
        """True for tombstones and cancelled exceptions."""
        return self.status == "cancelled"

    @property
    def is_series(self) -> bool:
        """True for a recurring master (not for its instances)."""
        return self.recurring_event_id is None and bool(self.body.get("recurrence"))

    def etag(self) -> str:
        """``"<2 × updated µs>"`` — [OBS] in real payloads; opaque to clients."""
        return f'"{self.version_ms * 2000}"'

    def start(self) -> EventTime:
        """The parsed ``start``."""
        return stored_event_time(self.body["start"])

    def end(self) -> EventTime:
        """The parsed ``end``."""
        return stored_event_time(self.body["end"])


@dataclass
class StoredCalendar:
    """One calendar and its events."""

    id: str
    owner: str
    summary: str
    time_zone: str
    primary: bool
    description: str = ""
    events: dict[str, StoredEvent] = field(default_factory=dict)
    #: last change number handed out
    seq: int = 0
    #: sync tokens of older epochs get 410
    epoch: int = 0
    #: last version timestamp handed out (keeps etags strictly increasing)
    clock_ms: int = 0
    #: updatedMin older than this gets 410 updatedMinTooLongAgo
    updated_min_floor_ms: int = 0
    #: the calendarList change number of this entry
    entry_seq: int = 0
    color_id: str = "14"
    background_color: str = "#9fe1e7"
    foreground_color: str = "#000000"

    def tz(self) -> ZoneInfo:
        """The calendar's zone."""
        return zone(self.time_zone)


@dataclass
class CalendarsData:
    """Everything :class:`Calendars` persists."""

    calendars: dict[str, StoredCalendar] = field(default_factory=dict)
    #: email -> calendar ids on the user's calendar list, primary first
    lists: dict[str, list[str]] = field(default_factory=dict)
    #: last calendarList change number (all users)
    list_seq: int = 0


@dataclass(frozen=True)
class EventView:
    """What ``get`` returns: a stored event, or an instance of a series."""

    #: the stored event; for an instance, the series master
    event: StoredEvent
    #: for instances: the original start
    original: EventTime | None = None
    #: for instances: the stored exception, if the instance was modified
    exception: StoredEvent | None = None

    @property
    def effective(self) -> StoredEvent:
        """The stored record that carries this view's data and etag."""
        return self.exception or self.event

    def etag(self) -> str:
        """The etag clients must send in If-Match."""
        return self.effective.etag()


def b64_token(data: dict[str, Any]) -> str:
    """Encode an opaque token (sync tokens, page tokens)."""
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def read_b64_token(token: str) -> dict[str, Any] | None:
    """Decode :func:`b64_token`; None for anything else."""
    try:
        data = json.loads(base64.b64decode(token.encode(), validate=True))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def new_event_id() -> str:
    """A Google-style generated id: 26 base32hex characters."""
    return "".join(secrets.choice(BASE32HEX) for _ in range(26))


def instance_end(master: StoredEvent, original: EventTime) -> EventTime:
    """End of the instance of ``master`` originally starting at ``original``."""
    m_start, m_end = master.start(), master.end()
    tz_name = master.body["end"].get("timeZone")
    if original.day is not None and m_start.day is not None and m_end.day is not None:
        # Whole days: DST-proof, unlike a timedelta between midnights.
        return EventTime(original.day + (m_end.day - m_start.day), None, tz_name)
    assert original.instant is not None  # noqa: S101 - same kind as the series
    assert m_start.instant is not None  # noqa: S101 - same kind
    assert m_end.instant is not None  # noqa: S101 - same kind
    return EventTime(
        None, original.instant + (m_end.instant - m_start.instant), tz_name
    )
