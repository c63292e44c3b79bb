"""Appointment rules: time spans, all-day dates, time zones and recurrence."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmflow.errors import ValidationFailed


class AppointmentStatus(enum.StrEnum):
    """The state of an appointment (mirrors iCalendar STATUS for VEVENT)."""

    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


class ResponseStatus(enum.StrEnum):
    """An attendee's answer (iCalendar PARTSTAT, Google responseStatus)."""

    NEEDS_ACTION = "needsAction"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TENTATIVE = "tentative"


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``.

    Raises:
        ValidationFailed: the name is not a known IANA zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(
            f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'."
        ) from exc


@dataclass(frozen=True, slots=True)
class TimeSpan:
    """When an appointment happens, normalised for storage.

    ``start_at``/``end_at`` are aware UTC instants used for ordering and range
    queries. For all-day appointments they are midnight of ``start_date`` and of the
    exclusive ``end_date`` in ``timezone``, as in iCalendar and Google Calendar.
    """

    start_at: dt.datetime
    end_at: dt.datetime
    timezone: str
    all_day: bool

    @property
    def start_date(self) -> dt.date:
        """First day (all-day appointments), in the appointment's zone."""
        return self.start_at.astimezone(zone(self.timezone)).date()

    @property
    def end_date(self) -> dt.date:
        """Exclusive last day (all-day appointments), in the appointment's zone."""
        return self.end_at.astimezone(zone(self.timezone)).date()


def _local_instant(value: dt.datetime, tz: ZoneInfo, name: str) -> dt.datetime:
    """``value`` as a UTC instant; naive values are wall-clock times in ``tz``.

    Raises:
        ValidationFailed: a naive time that does not exist in ``tz`` (skipped when
            the clocks go forward), rather than silently moving it by an hour.
    """
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    instant = value.replace(tzinfo=tz).astimezone(dt.UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != value:
        raise ValidationFailed(
            f"The {name} time {value:%Y-%m-%d %H:%M} does not exist in {tz.key}: the "
            "clocks go forward then. Pick a time an hour later."
        )
    return instant


def timed_span(start: dt.datetime, end: dt.datetime, timezone: str) -> TimeSpan:
    """Build the span of a timed appointment.

    Naive datetimes are wall-clock times in ``timezone``; aware ones keep their
    instant.

    Raises:
        ValidationFailed: unknown zone, or ``end`` not after ``start``.
    """
    tz = zone(timezone)
    start_at = _local_instant(start, tz, "start")
    end_at = _local_instant(end, tz, "end")
    if end_at <= start_at:
        raise ValidationFailed("The end must be after the start.")
    return TimeSpan(start_at, end_at, timezone, all_day=False)


def all_day_span(start: dt.date, end: dt.date | None, timezone: str) -> TimeSpan:
    """Build the span of an all-day appointment.

    ``end`` is exclusive (the day after the last day), as in iCalendar; ``None``
    means a one-day appointment.

    Raises:
        ValidationFailed: unknown zone, or ``end`` not after ``start``.
    """
    tz = zone(timezone)
    last = end if end is not None else start + dt.timedelta(days=1)
    if last <= start:
        raise ValidationFailed(
            "The end date must be after the start date (it is exclusive: "
            "a one-day appointment on 3 May ends on 4 May)."
        )
    start_at = dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
    end_at = dt.datetime.combine(last, dt.time(), tz).astimezone(dt.UTC)
    return TimeSpan(start_at, end_at, timezone, all_day=True)


_RRULE_PARTS = frozenset(
    {
        "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR",
        "BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
    }
)  # fmt: skip
_FREQS = frozenset(
    {"SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
)


def normalize_rrule(rule: str | None) -> str | None:
    """Check an RFC 5545 RRULE value and return it upper-cased without ``RRULE:``.

    Only the syntax of the parts is checked here (pure); the store checks that the
    rule expands (``dateutil``) before saving.

    Raises:
        ValidationFailed: the rule is not a valid RRULE.
    """
    if rule is None or not rule.strip():
        return None
    text = rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[len("RRULE:") :]
    if "\n" in text or "\r" in text:
        raise ValidationFailed("The recurrence rule must be a single RRULE line.")
    parts: dict[str, str] = {}
    for chunk in text.split(";"):
        key, sep, value = chunk.partition("=")
        key = key.strip().upper()
        if not sep or not value or key not in _RRULE_PARTS:
            raise ValidationFailed(
                f"Invalid recurrence rule part {chunk!r}; expected e.g. "
                "'FREQ=WEEKLY;BYDAY=MO,WE'."
            )
        if key in parts:
            raise ValidationFailed(f"The recurrence rule repeats {key}.")
        parts[key] = value.strip().upper() if key != "UNTIL" else value.strip()
    if parts.get("FREQ") not in _FREQS:
        raise ValidationFailed(
            "The recurrence rule needs FREQ=DAILY, WEEKLY, MONTHLY or YEARLY "
            "(or SECONDLY/MINUTELY/HOURLY)."
        )
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValidationFailed("A recurrence rule may have COUNT or UNTIL, not both.")
    for key in ("INTERVAL", "COUNT"):
        # RFC 5545: positive integers (INTERVAL=0 would never advance)
        if key in parts and not (parts[key].isdigit() and int(parts[key]) >= 1):
            raise ValidationFailed(
                f"The recurrence rule's {key} must be a whole number of 1 or more."
            )
    return ";".join(f"{k}={v}" for k, v in parts.items())
