"""``CalendarEvent`` <-> Google Calendar v3 ``Event`` JSON (google-apis.md §2.6-§2.9).

* all-day events use ``start.date``/``end.date`` (exclusive end); Google keeps no
  zone for them, so the calendar's zone (or UTC) is used when reading back;
* timed events send ``dateTime`` in local wall-clock time plus ``timeZone`` (an
  IANA name, required for recurring events); read back as aware instants;
* attendees with ``responseStatus``, location, description, status, recurrence
  lines (RRULE, EXRULE, RDATE, EXDATE) and ``iCalUID`` <-> ``ical_uid``;
* recurrence exceptions are Google instance events (``recurringEventId`` +
  ``originalStartTime``), modified or cancelled; their id is
  ``<masterId>_<YYYYMMDDTHHMMSSZ>`` (timed) or ``<masterId>_<YYYYMMDD>`` (all-day).

Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.domain.appointments import (
    ResponseStatus,
    TimeSpan,
    all_day_span,
    timed_span,
    zone,
)
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    EventStatus,
    RecurrenceException,
)
from crmflow.domain.recurrence import occurrence_starts, recurrence_properties
from crmflow.errors import ValidationFailed

#: key under ``extendedProperties.private`` holding crmflow's UID (a backup of
#: ``iCalUID``, which Google keeps as sent)
UID_PROPERTY = "crmflowUid"

_RESPONSES = {r.value: r for r in ResponseStatus}
_STATUSES = {s.value: s for s in EventStatus}


def _zone_or_utc(name: str | None) -> str:
    if not name:
        return "UTC"
    try:
        zone(name)
    except ValidationFailed:
        return "UTC"  # unknown/custom zones fall back to UTC (case 25)
    return name


def span_to_google(span: TimeSpan) -> tuple[dict[str, str], dict[str, str]]:
    """``start`` and ``end`` as Google ``EventDateTime`` objects."""
    if span.all_day:
        return (
            {"date": span.start_date.isoformat()},
            {"date": span.end_date.isoformat()},
        )
    tz = zone(span.timezone)
    return (
        {
            "dateTime": span.start_at.astimezone(tz).isoformat(),
            "timeZone": span.timezone,
        },
        {
            "dateTime": span.end_at.astimezone(tz).isoformat(),
            "timeZone": span.timezone,
        },
    )


def span_from_google(
    start: Mapping[str, Any], end: Mapping[str, Any], default_zone: str | None
) -> TimeSpan:
    """A ``TimeSpan`` from Google's ``start``/``end``.

    Raises:
        ValidationFailed: the times are missing or unreadable.
    """
    try:
        if "date" in start:
            tz = _zone_or_utc(start.get("timeZone") or default_zone)
            return all_day_span(
                dt.date.fromisoformat(start["date"]),
                dt.date.fromisoformat(end["date"]),
                tz,
            )
        tz = _zone_or_utc(start.get("timeZone") or default_zone)
        begin = dt.datetime.fromisoformat(start["dateTime"])
        finish = dt.datetime.fromisoformat(end["dateTime"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"Unreadable event times: {exc}") from exc
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=zone(tz))
    if finish.tzinfo is None:
        finish = finish.replace(tzinfo=zone(tz))
    return timed_span(begin, finish, tz)


def _attendees_to_google(attendees: Iterable[Attendee]) -> list[dict[str, str]]:
    out = []
    for attendee in attendees:
        item = {
            "email": attendee.email,
            "responseStatus": str(attendee.response_status),
        }
        if attendee.name:
            item["displayName"] = attendee.name
        out.append(item)
    return out


def _attendees_from_google(raw: Any) -> tuple[Attendee, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Attendee(
            str(a["email"]),
            a.get("displayName") or None,
            _RESPONSES.get(str(a.get("responseStatus")), ResponseStatus.NEEDS_ACTION),
        )
        for a in raw
        if isinstance(a, dict) and a.get("email")
    )


def event_to_google(event: CalendarEvent) -> dict[str, Any]:
    """The master's body for insert/update (not its exceptions)."""
    start, end = span_to_google(event.span)
    return {
        "iCalUID": event.ical_uid,
        "summary": event.title,
        "description": event.description or "",
        "location": event.location or "",
        "start": start,
        "end": end,
        "status": str(event.status),
        "attendees": _attendees_to_google(event.attendees),
        "recurrence": list(event.recurrence),
        "extendedProperties": {"private": {UID_PROPERTY: event.ical_uid[:1024]}},
    }


def event_patch_to_google(event: CalendarEvent) -> dict[str, Any]:
    """The master's body for ``events.patch``: :func:`event_to_google` with the
    other form of ``start``/``end`` cleared.

    A patch changes only the fields it names, so what crmflow does not map
    (reminders, colour, conference data, other extended properties) stays as
    the user set it. Google merges nested objects in a patch: turning a timed
    event into an all-day one (or back) must clear ``dateTime`` (``date``)
    with ``null``, or the event would carry both and the patch be refused.
    """
    body = event_to_google(event)
    body["start"], body["end"] = _cleared(body["start"]), _cleared(body["end"])
    return body


def _cleared(time: Mapping[str, Any]) -> dict[str, Any]:
    """A ``start``/``end`` for a patch: the other form set to ``null``."""
    if "date" in time:
        return {**time, "dateTime": None, "timeZone": None}
    return {**time, "date": None}


def instance_suffix(original_start: dt.date | dt.datetime) -> str:
    """The part after ``_`` of an instance id (google-apis.md §2.6)."""
    if isinstance(original_start, dt.datetime):
        return original_start.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return original_start.strftime("%Y%m%d")


def exception_to_google(
    exception: RecurrenceException, master: CalendarEvent
) -> dict[str, Any]:
    """A PATCH body for the instance ``exception`` overrides."""
    if exception.status is EventStatus.CANCELLED:
        return {"status": "cancelled"}
    body: dict[str, Any] = {"status": str(exception.status)}
    if exception.title is not None:
        body["summary"] = exception.title
    if exception.description is not None:
        body["description"] = exception.description
    if exception.location is not None:
        body["location"] = exception.location
    if exception.attendees is not None:
        body["attendees"] = _attendees_to_google(exception.attendees)
    if exception.span is not None:
        body["start"], body["end"] = span_to_google(exception.span)
    return body


def occurrence_to_google(
    original: dt.date | dt.datetime, series: CalendarEvent
) -> dict[str, Any]:
    """A PATCH body that puts the instance at ``original`` back to what the
    series gives it: its fields and the rule's time (an exception undone)."""
    span = series.span
    if isinstance(original, dt.datetime):
        length = span.end_at - span.start_at
        instance = timed_span(original, original + length, span.timezone)
    else:
        days = span.end_date - span.start_date
        instance = all_day_span(original, original + days, span.timezone)
    start, end = span_to_google(instance)
    body = event_to_google(series)
    return {
        **{
            key: body[key]
            for key in ("status", "summary", "description", "location", "attendees")
        },
        "start": _cleared(start),
        "end": _cleared(end),
    }


#: how far around an original start the rule is searched for it
_NEAR = dt.timedelta(minutes=1)


def rule_gives(event: CalendarEvent, original: dt.date | dt.datetime) -> bool:
    """Whether ``event``'s recurrence has an occurrence at ``original`` (a
    date for an all-day series, an instant otherwise)."""
    timed = isinstance(original, dt.datetime)
    if timed == event.span.all_day:
        return False
    if isinstance(original, dt.datetime):
        low, high = original - _NEAR, original + _NEAR
    else:
        low = dt.datetime.combine(original, dt.time(), ZoneInfo(event.span.timezone))
        high = low + dt.timedelta(days=1)
    starts = occurrence_starts(event.span, event.recurrence, low, high) or []
    key = RecurrenceException(original).key
    return any(RecurrenceException(start).key == key for start in starts)


def exdate_keys(event: CalendarEvent) -> frozenset[str]:
    """The occurrences ``event``'s EXDATE lines remove, as exception keys
    (``RecurrenceException.key``); a value without a zone is on the series'
    wall clock. Parsed by icalendar, one line at a time."""
    keys: set[str] = set()
    where = ZoneInfo(event.span.timezone)
    for line in event.recurrence:
        if not line.upper().startswith("EXDATE"):
            continue
        try:
            properties = recurrence_properties([line])
        except ValueError:
            continue  # an unreadable line removes nothing we can name
        for _, values in properties:
            for value in getattr(values, "dts", ()):
                day = value.dt
                if isinstance(day, dt.datetime) and day.tzinfo is None:
                    day = day.replace(tzinfo=where)
                keys.add(RecurrenceException(day).key)
    return frozenset(keys)


def _original_start(raw: Mapping[str, Any]) -> dt.date | dt.datetime:
    if "date" in raw:
        return dt.date.fromisoformat(raw["date"])
    return dt.datetime.fromisoformat(raw["dateTime"]).astimezone(dt.UTC)


def _keeps_rule_time(
    span: TimeSpan, original: dt.date | dt.datetime, series: TimeSpan
) -> bool:
    """Whether an instance is at the time and length the rule gives it."""
    length = series.end_at - series.start_at
    if span.all_day != series.all_day or span.end_at - span.start_at != length:
        return False
    if isinstance(original, dt.datetime):
        return span.start_at == original
    return span.all_day and span.start_date == original


def _exception_from_google(
    raw: Mapping[str, Any], master: CalendarEvent, default_zone: str | None
) -> RecurrenceException:
    original = _original_start(raw["originalStartTime"])
    if raw.get("status") == "cancelled":
        return RecurrenceException(original, EventStatus.CANCELLED)
    span = None
    if "start" in raw and "end" in raw:
        span = span_from_google(raw["start"], raw["end"], master.span.timezone)
        if _keeps_rule_time(span, original, master.span):
            span = None  # Google repeats the rule's time on every instance
    return RecurrenceException(
        original,
        _STATUSES.get(str(raw.get("status")), EventStatus.CONFIRMED),
        title=raw.get("summary", ""),
        span=span,
        description=raw.get("description"),
        location=raw.get("location"),
        attendees=_attendees_from_google(raw.get("attendees")),
    )


def event_from_google(
    raw: Mapping[str, Any],
    exceptions: Iterable[Mapping[str, Any]] = (),
    *,
    default_zone: str | None = None,
) -> CalendarEvent:
    """A ``CalendarEvent`` from a master (or single) event and its instance exceptions.

    Raises:
        ValidationFailed: the event cannot be represented (no times).
    """
    private = (raw.get("extendedProperties") or {}).get("private") or {}
    uid = raw.get("iCalUID") or private.get(UID_PROPERTY) or f"{raw['id']}@google.com"
    master = CalendarEvent(
        ical_uid=str(uid),
        title=raw.get("summary") or "",
        span=span_from_google(raw.get("start", {}), raw.get("end", {}), default_zone),
        description=raw.get("description") or None,
        location=raw.get("location") or None,
        attendees=_attendees_from_google(raw.get("attendees")),
        status=_STATUSES.get(str(raw.get("status")), EventStatus.CONFIRMED),
        recurrence=tuple(raw.get("recurrence") or ()),
    )
    if not master.recurrence:
        return master
    found = {}
    for item in exceptions:
        if "originalStartTime" not in item:
            continue
        exception = _exception_from_google(item, master, default_zone)
        # an instance edited back to what the rule gives (as crmflow reverts
        # one) is an occurrence like the others, not an exception
        if not exception.repeats(master):
            found[exception.key] = exception
    if not found:
        return master
    return CalendarEvent(
        ical_uid=master.ical_uid,
        title=master.title,
        span=master.span,
        description=master.description,
        location=master.location,
        attendees=master.attendees,
        status=master.status,
        recurrence=master.recurrence,
        exceptions=tuple(found[k] for k in sorted(found)),
    )


def parse_updated(value: Any) -> dt.datetime | None:
    """Google ``updated`` (RFC 3339) as an aware instant, None if absent."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
