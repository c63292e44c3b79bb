"""Calendar ``EventDateTime`` values and RFC 3339 timestamps.

Rules (Calendar API discovery, ``EventDateTime``; google-apis.md §2.7):

* ``date`` (``yyyy-mm-dd``) marks an all-day event; ``dateTime`` a timed one.
  Exactly one of them; start and end must be of the same kind.
* "A time zone offset is required unless a time zone is explicitly specified in
  timeZone" — a ``dateTime`` without offset is read as wall time in
  ``timeZone``.
* ``end`` is exclusive (a one-day all-day event on 2024-07-24 ends 2024-07-25).
* Responses render ``dateTime`` in the event's ``timeZone`` when it has one,
  otherwise in the calendar's (or the request's ``timeZone``) zone; a zero
  offset renders as ``Z``.

Timed values are stored as UTC instants (``"2024-01-01T08:00:00Z"``) plus the
optional zone name, and re-rendered per request.

Event times must lie between :data:`EARLIEST` and :data:`LATEST` (one day inside
what Python can represent, so rendering in any zone and expanding never
overflow); Google's own limits are undocumented, values outside get 400
"Invalid start time." / "Invalid end time.".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from datetime import tzinfo as tzinfo_
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "EARLIEST",
    "LATEST",
    "EventTime",
    "TimeError",
    "format_rfc3339",
    "format_updated",
    "parse_event_time",
    "parse_rfc3339",
    "zone",
]

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")

#: earliest / latest accepted event time (a day of slack to datetime.min/max)
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


class TimeError(ValueError):
    """An EventDateTime or timestamp Google would reject; ``message`` is Google's wording."""


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``.

    Raises:
        TimeError: unknown zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimeError(f"Invalid time zone: {name}") from exc


def parse_rfc3339(value: str, *, default_zone: ZoneInfo | None = None) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Fractional seconds are kept (callers drop them where Google ignores them).
    Without an offset the wall time is read in ``default_zone``.

    Raises:
        TimeError: malformed, or no offset and no ``default_zone``.
    """
    m = _RFC3339.match(value)
    if m is None:
        raise TimeError(f"Invalid date-time: {value}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = m.group(7)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    offset = m.group(8)
    try:
        if offset is None:
            if default_zone is None:
                raise TimeError(f"Missing time zone offset: {value}")
            local = datetime(
                year, month, day, hour, minute, second, micro, tzinfo=default_zone
            )
            return local.astimezone(UTC)
        if offset in ("Z", "z"):
            tzinfo: tzinfo_ = UTC
        else:
            sign = 1 if offset[0] == "+" else -1
            tzinfo = timezone(
                timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
            )
        return datetime(
            year, month, day, hour, minute, second, micro, tzinfo=tzinfo
        ).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        # OverflowError: a valid-looking value outside datetime's range once
        # converted to UTC (e.g. 0001-01-01T00:00:00+14:00).
        if isinstance(exc, TimeError):
            raise
        raise TimeError(f"Invalid date-time: {value}") from exc


def format_rfc3339(instant: datetime, tz: ZoneInfo) -> str:
    """Render ``instant`` in ``tz`` without fractions, ``Z`` for a zero offset (Google's style)."""
    local = instant.astimezone(tz)
    offset = local.utcoffset() or timedelta(0)
    # isoformat, not strftime("%Y"): strftime does not zero-pad years < 1000.
    text = local.replace(tzinfo=None).isoformat(timespec="seconds")
    if not offset:
        # Google's formatter writes a zero offset as "Z" (also for e.g.
        # Europe/London in winter).
        return text + "Z"
    total = int(offset.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{text}{sign}{total // 60:02d}:{total % 60:02d}"


def format_updated(ms: int) -> str:
    """Render a millisecond timestamp like Google's ``updated``: ``2020-06-30T15:22:26.358Z``."""
    instant = datetime.fromtimestamp(ms / 1000, UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_of(instant: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(instant.timestamp() * 1000)


@dataclass(frozen=True)
class EventTime:
    """A validated EventDateTime: either a ``date`` or a UTC instant, plus an optional zone."""

    day: date | None
    instant: datetime | None
    #: the ``timeZone`` field as given (IANA name), if any
    tz_name: str | None

    @property
    def all_day(self) -> bool:
        """True for ``date`` values."""
        return self.day is not None

    def start_in(self, tz: ZoneInfo) -> datetime:
        """The aware instant this value denotes; all-day dates start at midnight in ``tz``."""
        if self.day is not None:
            return datetime.combine(self.day, time(0), tzinfo=tz).astimezone(UTC)
        assert self.instant is not None  # noqa: S101 - invariant of the class
        return self.instant

    def stored(self) -> dict[str, str]:
        """Return the storage form (UTC ``dateTime`` or ``date``, plus ``timeZone``)."""
        if self.day is not None:
            out = {"date": self.day.isoformat()}
        else:
            assert self.instant is not None  # noqa: S101 - invariant of the class
            # isoformat pads the year to four digits (fromisoformat needs them).
            utc = self.instant.astimezone(UTC).replace(tzinfo=None)
            out = {"dateTime": utc.isoformat(timespec="seconds") + "Z"}
        if self.tz_name:
            out["timeZone"] = self.tz_name
        return out

    def render(self, display: ZoneInfo) -> dict[str, str]:
        """Return the response form, ``dateTime`` in the value's own zone or ``display``."""
        if self.day is not None:
            out = {"date": self.day.isoformat()}
        else:
            assert self.instant is not None  # noqa: S101 - invariant of the class
            tz = zone(self.tz_name) if self.tz_name else display
            out = {"dateTime": format_rfc3339(self.instant, tz)}
        if self.tz_name:
            out["timeZone"] = self.tz_name
        return out

    def shifted(self, delta: timedelta) -> EventTime:
        """Return this value moved by ``delta`` (whole days for all-day values)."""
        if self.day is not None:
            return EventTime(self.day + timedelta(days=delta.days), None, self.tz_name)
        assert self.instant is not None  # noqa: S101 - invariant of the class
        return EventTime(None, self.instant + delta, self.tz_name)


def parse_event_time(raw: Any, which: str) -> EventTime:
    """Validate an ``EventDateTime`` object from a request body.

    Args:
        raw: the JSON value of ``start``/``end``/``originalStartTime``.
        which: ``start`` or ``end``, for Google's messages.

    Raises:
        TimeError: with Google's message ("Missing time zone definition for
            start time.", "Invalid start time.", ...).
    """
    if not isinstance(raw, dict):
        raise TimeError(f"Invalid {which} time.")
    date_value = raw.get("date")
    date_time = raw.get("dateTime")
    tz_name = raw.get("timeZone") or None
    tz: ZoneInfo | None = None
    if tz_name is not None:
        if not isinstance(tz_name, str):
            raise TimeError(f"Invalid time zone definition for {which} time.")
        try:
            tz = zone(tz_name)
        except TimeError as exc:
            raise TimeError(f"Invalid time zone definition for {which} time.") from exc
    if date_value is not None and date_time is not None:
        raise TimeError(f"Invalid {which} time.")
    if date_value is not None:
        m = _DATE.match(str(date_value))
        if m is None:
            raise TimeError(f"Invalid {which} time.")
        try:
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError as exc:
            raise TimeError(f"Invalid {which} time.") from exc
        if not EARLIEST.date() <= day <= LATEST.date():
            raise TimeError(f"Invalid {which} time.")
        return EventTime(day, None, tz_name)
    if date_time is None:
        raise TimeError(f"Missing {which} time.")
    text = str(date_time)
    m = _RFC3339.match(text)
    if m is None:
        raise TimeError(f"Invalid {which} time.")
    if m.group(8) is None and tz is None:
        raise TimeError(f"Missing time zone definition for {which} time.")
    try:
        instant = parse_rfc3339(text, default_zone=tz)
    except TimeError as exc:
        raise TimeError(f"Invalid {which} time.") from exc
    if not EARLIEST <= instant <= LATEST:
        raise TimeError(f"Invalid {which} time.")
    # Calendar keeps whole seconds.
    return EventTime(None, instant.replace(microsecond=0), tz_name)


def stored_event_time(raw: dict[str, str]) -> EventTime:
    """Rebuild an :class:`EventTime` from its :meth:`EventTime.stored` form."""
    tz_name = raw.get("timeZone")
    if "date" in raw:
        return EventTime(date.fromisoformat(raw["date"]), None, tz_name)
    # The storage form is always "YYYY-MM-DDTHH:MM:SSZ", which fromisoformat
    # reads directly (much faster than the general RFC 3339 parser).
    return EventTime(None, datetime.fromisoformat(raw["dateTime"]), tz_name)
