"""Calendar events as JSON documents, for the columns that keep them.

``appointments.recurrence_exceptions`` holds :func:`exceptions_to_json`;
``calendar_sync_conflicts.crm_event`` / ``calendar_event`` hold
:func:`event_to_json`. The format is plain JSON (ISO 8601 times in UTC, dates
as ``YYYY-MM-DD``), so it reads the same on SQLite and PostgreSQL and outlives
the dataclasses: readers ignore keys they do not know.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from crmflow.domain.appointments import AppointmentStatus, ResponseStatus, TimeSpan
from crmflow.domain.calendar import Attendee, CalendarEvent, RecurrenceException


def span_to_json(span: TimeSpan) -> dict[str, Any]:
    """A time span: UTC instants, the IANA zone, all-day or not."""
    return {
        "start": span.start_at.astimezone(dt.UTC).isoformat(),
        "end": span.end_at.astimezone(dt.UTC).isoformat(),
        "timezone": span.timezone,
        "all_day": span.all_day,
    }


def span_from_json(data: dict[str, Any]) -> TimeSpan:
    """What :func:`span_to_json` wrote."""
    return TimeSpan(
        dt.datetime.fromisoformat(data["start"]),
        dt.datetime.fromisoformat(data["end"]),
        str(data["timezone"]),
        bool(data["all_day"]),
    )


def attendees_to_json(attendees: tuple[Attendee, ...]) -> list[dict[str, Any]]:
    """Attendees as ``appointments.attendees`` keeps them."""
    return [
        {"email": a.email, "name": a.name, "response_status": a.response_status.value}
        for a in attendees
    ]


def attendees_from_json(data: list[Any]) -> tuple[Attendee, ...]:
    """What :func:`attendees_to_json` wrote."""
    return tuple(
        Attendee(
            email=a["email"],
            name=a.get("name"),
            response_status=ResponseStatus(a.get("response_status", "needsAction")),
        )
        for a in data
    )


def _start_to_json(start: dt.date | dt.datetime) -> str:
    if isinstance(start, dt.datetime):
        return start.astimezone(dt.UTC).isoformat()
    return start.isoformat()


def _start_from_json(text: str) -> dt.date | dt.datetime:
    # a date has no "T"; an instant always has one
    if "T" in text:
        return dt.datetime.fromisoformat(text)
    return dt.date.fromisoformat(text)


def exceptions_to_json(
    exceptions: tuple[RecurrenceException, ...],
) -> list[dict[str, Any]]:
    """Overridden and cancelled occurrences; fields taken from the series are left
    out."""
    out: list[dict[str, Any]] = []
    for e in exceptions:
        item: dict[str, Any] = {
            "original_start": _start_to_json(e.original_start),
            "status": e.status.value,
        }
        if e.title is not None:
            item["title"] = e.title
        if e.span is not None:
            item["span"] = span_to_json(e.span)
        if e.description is not None:
            item["description"] = e.description
        if e.location is not None:
            item["location"] = e.location
        if e.attendees is not None:
            item["attendees"] = attendees_to_json(e.attendees)
        out.append(item)
    return out


def exceptions_from_json(data: list[Any]) -> tuple[RecurrenceException, ...]:
    """What :func:`exceptions_to_json` wrote."""
    return tuple(
        RecurrenceException(
            original_start=_start_from_json(item["original_start"]),
            status=AppointmentStatus(item.get("status", "confirmed")),
            title=item.get("title"),
            span=span_from_json(item["span"]) if "span" in item else None,
            description=item.get("description"),
            location=item.get("location"),
            attendees=attendees_from_json(item["attendees"])
            if "attendees" in item
            else None,
        )
        for item in data
    )


def event_to_json(event: CalendarEvent) -> dict[str, Any]:
    """A whole event (conflict records keep both versions this way)."""
    return {
        "ical_uid": event.ical_uid,
        "title": event.title,
        "span": span_to_json(event.span),
        "description": event.description,
        "location": event.location,
        "attendees": attendees_to_json(event.attendees),
        "status": event.status.value,
        "recurrence": list(event.recurrence),
        "exceptions": exceptions_to_json(event.exceptions),
    }


def event_from_json(data: dict[str, Any]) -> CalendarEvent:
    """What :func:`event_to_json` wrote."""
    return CalendarEvent(
        ical_uid=str(data["ical_uid"]),
        title=str(data["title"]),
        span=span_from_json(data["span"]),
        description=data.get("description"),
        location=data.get("location"),
        attendees=attendees_from_json(data.get("attendees", [])),
        status=AppointmentStatus(data.get("status", "confirmed")),
        recurrence=tuple(data.get("recurrence", ())),
        exceptions=exceptions_from_json(data.get("exceptions", [])),
    )
