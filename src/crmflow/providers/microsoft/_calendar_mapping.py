"""``CalendarEvent`` <-> Microsoft Graph v1.0 ``event`` JSON.

* crmflow's UID lives in a single-value extended property (Graph's ``iCalUId``
  is read-only); ``iCalUId`` is the fallback for events made elsewhere;
* timed events are written as local wall-clock time plus the IANA ``timeZone``
  and read back in UTC (``Prefer: outlook.timezone="UTC"``) with the zone from
  ``originalStartTimeZone``; all-day events are midnight to midnight
  (exclusive end) with ``isAllDay``;
* body text is written as ``text`` and read back from Outlook's HTML form;
* attendees with their response; the organizer cannot set responses, so the
  responses crmflow wrote are kept in an extended property and used while Graph
  reports none;
* ``showAs: tentative`` / ``isCancelled`` -> status;
* ``recurrence``: daily, weekly, absoluteMonthly and absoluteYearly patterns with
  ``COUNT``/``UNTIL``/no end. Anything else (EXDATE, RDATE, EXRULE, BYSETPOS,
  recurrence exceptions, other RRULE parts) raises ``UnsupportedOperation``.

Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping
from typing import Any

from crmflow.domain.appointments import (
    ResponseStatus,
    TimeSpan,
    all_day_span,
    timed_span,
    zone,
)
from crmflow.domain.calendar import Attendee, CalendarEvent, EventStatus
from crmflow.errors import ValidationFailed
from crmflow.providers.base import UnsupportedOperation

_GUID = "{9d7c7a43-4b5e-4c55-9f0b-5a3f0e2c6d11}"
#: extended property holding crmflow's UID
UID_PROPERTY = f"String {_GUID} Name crmflowUid"
#: extended property holding the idempotency key of the create
KEY_PROPERTY = f"String {_GUID} Name crmflowKey"
#: extended property holding the attendee responses crmflow wrote (JSON)
RESPONSES_PROPERTY = f"String {_GUID} Name crmflowResponses"
PROPERTIES = (UID_PROPERTY, KEY_PROPERTY, RESPONSES_PROPERTY)

_TO_GRAPH_RESPONSE = {
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "tentativelyAccepted",
    ResponseStatus.NEEDS_ACTION: "notResponded",
}
_FROM_GRAPH_RESPONSE = {
    "accepted": ResponseStatus.ACCEPTED,
    "declined": ResponseStatus.DECLINED,
    "tentativelyaccepted": ResponseStatus.TENTATIVE,
}
_DAYS = {
    "MO": "monday",
    "TU": "tuesday",
    "WE": "wednesday",
    "TH": "thursday",
    "FR": "friday",
    "SA": "saturday",
    "SU": "sunday",
}
_RRULE_DAYS = {v: k for k, v in _DAYS.items()}
_FREQ = {
    "DAILY": "daily",
    "WEEKLY": "weekly",
    "MONTHLY": "absoluteMonthly",
    "YEARLY": "absoluteYearly",
}
_KNOWN_PARTS = frozenset(
    {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST", "BYMONTHDAY", "BYMONTH"}
)
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def _zone_or_utc(name: Any) -> str:
    if not isinstance(name, str) or not name:
        return "UTC"
    try:
        zone(name)
    except ValidationFailed:
        return "UTC"  # Windows or custom zone names: UTC
    return name


def _wall(value: dt.datetime, tz: str) -> str:
    return value.astimezone(zone(tz)).replace(tzinfo=None).isoformat()


def span_to_graph(span: TimeSpan) -> dict[str, Any]:
    """``start``, ``end`` and ``isAllDay``."""
    if span.all_day:
        return {
            "isAllDay": True,
            "start": {
                "dateTime": f"{span.start_date}T00:00:00",
                "timeZone": span.timezone,
            },
            "end": {"dateTime": f"{span.end_date}T00:00:00", "timeZone": span.timezone},
        }
    return {
        "isAllDay": False,
        "start": {
            "dateTime": _wall(span.start_at, span.timezone),
            "timeZone": span.timezone,
        },
        "end": {
            "dateTime": _wall(span.end_at, span.timezone),
            "timeZone": span.timezone,
        },
    }


def _parse_utc(value: Any) -> dt.datetime:
    text = _FRACTION.sub(r"\1", str(value))
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def span_from_graph(raw: Mapping[str, Any]) -> TimeSpan:
    """A ``TimeSpan`` from an event read with ``Prefer: outlook.timezone="UTC"``.

    Raises:
        ValidationFailed: the times are missing or unreadable.
    """
    try:
        start = raw["start"]["dateTime"]
        end = raw["end"]["dateTime"]
        tz = _zone_or_utc(raw.get("originalStartTimeZone"))
        if raw.get("isAllDay"):
            return all_day_span(
                dt.date.fromisoformat(str(start)[:10]),
                dt.date.fromisoformat(str(end)[:10]),
                tz,
            )
        return timed_span(_parse_utc(start), _parse_utc(end), tz)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"Unreadable event times: {exc}") from exc


def body_text(body: Any) -> str | None:
    """The text of an ``itemBody`` (Outlook's HTML form turned back into lines)."""
    if not isinstance(body, Mapping):
        return None
    content = str(body.get("content") or "")
    if str(body.get("contentType", "text")).lower() == "html":
        match = _BODY.search(content)
        inner = match.group(1) if match else content
        inner = inner.replace("\r\n", "").replace("\n", "")
        content = html.unescape(_TAG.sub("", _BR.sub("\n", inner)))
    return content.strip() or None


# ------------------------------------------------------------------ recurrence


def _rrule_parts(line: str) -> dict[str, str]:
    name, _, value = line.partition(":")
    if name.upper() != "RRULE":
        raise UnsupportedOperation(
            f"Outlook calendars take no {name.upper()} lines from crmflow yet."
        )
    parts: dict[str, str] = {}
    for part in value.split(";"):
        key, _, val = part.partition("=")
        parts[key.strip().upper()] = val.strip().upper()
    unknown = set(parts) - _KNOWN_PARTS
    if unknown or parts.get("FREQ") not in _FREQ:
        raise UnsupportedOperation(
            f"The recurrence {line!r} has no Outlook pattern crmflow maps."
        )
    return parts


def recurrence_to_graph(event: CalendarEvent) -> dict[str, Any] | None:
    """``patternedRecurrence`` for the event's single RRULE (None: not recurring).

    Raises:
        UnsupportedOperation: the recurrence has no mapped Outlook pattern.
    """
    if not event.recurrence:
        return None
    if len(event.recurrence) != 1 or event.exceptions:
        raise UnsupportedOperation(
            "Outlook series with EXDATE, RDATE or exceptions are not mapped yet."
        )
    parts = _rrule_parts(event.recurrence[0])
    span = event.span
    tz = span.timezone
    local_start = span.start_at.astimezone(zone(tz))
    kind = _FREQ[parts["FREQ"]]
    pattern: dict[str, Any] = {
        "type": kind,
        "interval": int(parts.get("INTERVAL", "1")),
    }
    try:
        if kind == "weekly":
            days = parts.get("BYDAY") or _RRULE_DAYS[_weekday(local_start)]
            pattern["daysOfWeek"] = [_DAYS[d] for d in days.split(",")]
            pattern["firstDayOfWeek"] = _DAYS[parts.get("WKST", "MO")]
        elif "BYDAY" in parts or "WKST" in parts:
            raise KeyError("BYDAY")
        if kind in ("absoluteMonthly", "absoluteYearly"):
            pattern["dayOfMonth"] = int(parts.get("BYMONTHDAY", local_start.day))
        elif "BYMONTHDAY" in parts:
            raise KeyError("BYMONTHDAY")
        if kind == "absoluteYearly":
            pattern["month"] = int(parts.get("BYMONTH", local_start.month))
        elif "BYMONTH" in parts:
            raise KeyError("BYMONTH")
    except (KeyError, ValueError):
        raise UnsupportedOperation(
            f"The recurrence {event.recurrence[0]!r} has no Outlook pattern crmflow maps."
        ) from None
    rng: dict[str, Any] = {
        "startDate": local_start.date().isoformat(),
        "recurrenceTimeZone": tz,
    }
    if "COUNT" in parts:
        rng |= {"type": "numbered", "numberOfOccurrences": int(parts["COUNT"])}
    elif "UNTIL" in parts:
        rng |= {"type": "endDate", "endDate": _until_date(parts["UNTIL"], tz)}
    else:
        rng["type"] = "noEnd"
    return {"pattern": pattern, "range": rng}


def _until_date(until: str, tz: str) -> str:
    """An RRULE ``UNTIL`` as the last date in the series' zone (ISO text)."""
    try:
        day = dt.date(int(until[:4]), int(until[4:6]), int(until[6:8]))
        if "T" not in until:
            return day.isoformat()
        clock = until[9:15]
        moment = dt.datetime.combine(
            day,
            dt.time(int(clock[:2]), int(clock[2:4]), int(clock[4:6])),
            tzinfo=dt.UTC if until.endswith("Z") else zone(tz),
        )
    except (ValueError, IndexError):
        raise UnsupportedOperation(f"Unreadable RRULE UNTIL {until!r}.") from None
    return moment.astimezone(zone(tz)).date().isoformat()


def _weekday(value: dt.datetime) -> str:
    return [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ][value.weekday()]


def recurrence_from_graph(raw: Any, span: TimeSpan) -> tuple[str, ...]:
    """The RRULE of a ``patternedRecurrence`` (empty: none or not mappable)."""
    if not isinstance(raw, Mapping):
        return ()
    pattern = raw.get("pattern") or {}
    rng = raw.get("range") or {}
    freq = {v: k for k, v in _FREQ.items()}.get(str(pattern.get("type")))
    if freq is None:
        return ()
    parts = [f"FREQ={freq}"]
    interval = int(pattern.get("interval") or 1)
    if interval != 1:
        parts.append(f"INTERVAL={interval}")
    if freq == "WEEKLY":
        days = [_RRULE_DAYS[str(d).lower()] for d in pattern.get("daysOfWeek") or ()]
        parts.append("BYDAY=" + ",".join(days))
        first = str(pattern.get("firstDayOfWeek") or "monday").lower()
        if first != "monday":
            parts.append(f"WKST={_RRULE_DAYS[first]}")
    if freq in ("MONTHLY", "YEARLY"):
        parts.append(f"BYMONTHDAY={int(pattern.get('dayOfMonth') or 1)}")
    if freq == "YEARLY":
        parts.append(f"BYMONTH={int(pattern.get('month') or 1)}")
    if rng.get("type") == "numbered":
        parts.append(f"COUNT={int(rng.get('numberOfOccurrences') or 1)}")
    elif rng.get("type") == "endDate" and rng.get("endDate"):
        end = dt.date.fromisoformat(str(rng["endDate"]))
        if span.all_day:
            parts.append(f"UNTIL={end:%Y%m%d}")
        else:
            local = span.start_at.astimezone(zone(span.timezone))
            last = dt.datetime.combine(end, local.timetz()).astimezone(dt.UTC)
            parts.append(f"UNTIL={last:%Y%m%dT%H%M%SZ}")
    return ("RRULE:" + ";".join(parts),)


# ------------------------------------------------------------------ events


def _extended(raw: Mapping[str, Any], prop: str) -> str | None:
    for item in raw.get("singleValueExtendedProperties") or ():
        if isinstance(item, Mapping) and " ".join(
            str(item.get("id")).split()
        ).lower() == (prop.lower()):
            value = item.get("value")
            return None if value is None else str(value)
    return None


def event_to_graph(event: CalendarEvent) -> dict[str, Any]:
    """The body for POST/PATCH (without ``transactionId`` and the key).

    Raises:
        UnsupportedOperation: the recurrence has no mapped Outlook pattern.
    """
    responses = {
        a.email.strip().lower(): str(a.response_status) for a in event.attendees
    }
    return {
        "subject": event.title,
        "body": {"contentType": "text", "content": event.description or ""},
        "location": {"displayName": event.location or ""},
        **span_to_graph(event.span),
        "showAs": "tentative" if event.status is EventStatus.TENTATIVE else "busy",
        "attendees": [
            {
                "type": "required",
                "status": {"response": _TO_GRAPH_RESPONSE[a.response_status]},
                "emailAddress": {"address": a.email}
                | ({"name": a.name} if a.name else {}),
            }
            for a in event.attendees
        ],
        "recurrence": recurrence_to_graph(event),
        "singleValueExtendedProperties": [
            {"id": UID_PROPERTY, "value": event.ical_uid},
            {"id": RESPONSES_PROPERTY, "value": json.dumps(responses)},
        ],
    }


def _attendees(raw: Mapping[str, Any]) -> tuple[Attendee, ...]:
    try:
        stored = json.loads(_extended(raw, RESPONSES_PROPERTY) or "{}")
    except ValueError:
        stored = {}
    out = []
    for item in raw.get("attendees") or ():
        address = (item.get("emailAddress") or {}) if isinstance(item, Mapping) else {}
        email = address.get("address")
        if not email:
            continue
        answer = str((item.get("status") or {}).get("response") or "").lower()
        status = _FROM_GRAPH_RESPONSE.get(answer)
        if status is None:
            known = {r.value: r for r in ResponseStatus}
            status = known.get(
                str(stored.get(str(email).lower())), ResponseStatus.NEEDS_ACTION
            )
        name = address.get("name") or None
        if name is not None and str(name).strip().lower() == str(email).lower():
            name = None  # Outlook shows the address when no name was given
        out.append(Attendee(str(email), name, status))
    return tuple(out)


def event_from_graph(raw: Mapping[str, Any]) -> CalendarEvent:
    """A ``CalendarEvent`` from a Graph event (extended properties expanded).

    Raises:
        ValidationFailed: the event cannot be represented (no times).
    """
    span = span_from_graph(raw)
    uid = _extended(raw, UID_PROPERTY) or raw.get("iCalUId") or f"{raw['id']}@graph"
    if raw.get("isCancelled"):
        status = EventStatus.CANCELLED
    elif raw.get("showAs") == "tentative":
        status = EventStatus.TENTATIVE
    else:
        status = EventStatus.CONFIRMED
    location = raw.get("location") or {}
    return CalendarEvent(
        ical_uid=str(uid),
        title=str(raw.get("subject") or ""),
        span=span,
        description=body_text(raw.get("body")),
        location=(location.get("displayName") or None)
        if isinstance(location, Mapping)
        else None,
        attendees=_attendees(raw),
        status=status,
        recurrence=recurrence_from_graph(raw.get("recurrence"), span),
    )


def parse_modified(value: Any) -> dt.datetime | None:
    """Graph ``lastModifiedDateTime`` as an aware instant, None if absent."""
    if not isinstance(value, str):
        return None
    try:
        return _parse_utc(value)
    except ValueError:
        return None
