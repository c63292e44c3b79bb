"""``CalendarEvent`` <-> Microsoft Graph v1.0 ``event`` JSON.

* crmflow's UID lives in a single-value extended property (Graph's ``iCalUId``
  is read-only); ``iCalUId`` is the fallback for events made elsewhere;
* timed events are written as local wall-clock time plus the IANA ``timeZone``
  and read back in UTC (``Prefer: outlook.timezone="UTC"``) with the zone from
  ``originalStartTimeZone`` (common Windows names are mapped to IANA, unknown
  ones read as UTC); all-day events are midnight to midnight (exclusive end)
  with ``isAllDay``;
* body text is written as ``text`` and read back from Outlook's HTML form;
* attendees with their response; the organizer cannot set responses, so the
  responses crmflow wrote are kept in an extended property and used while Graph
  reports none;
* ``showAs: tentative`` / ``isCancelled`` -> status;
* ``recurrence``: one RRULE with a daily, weekly, absoluteMonthly or
  absoluteYearly pattern and ``COUNT``/``UNTIL``/no end, plus EXDATE lines.
  RDATE (Outlook has no extra dates outside a pattern), EXRULE, BYSETPOS and
  other RRULE parts raise ``UnsupportedOperation``;
* recurrence exceptions are the series' ``exception`` instances (keyed by
  ``originalStart``); cancelled occurrences are the master's
  ``cancelledOccurrences`` (``OID.<master id>.<date>``), placed on the rule's
  occurrences that ``/instances`` no longer lists. Outlook does not tell an
  EXDATE from a cancelled exception, so the EXDATE lines crmflow wrote are kept
  verbatim in an extended property: a cancelled occurrence they name reads back
  as that EXDATE, any other as a cancelled ``RecurrenceException``.

Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tzlocal.windows_tz import win_tz

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
from crmflow.domain.recurrence import occurrence_starts
from crmflow.errors import ValidationFailed
from crmflow.providers.base import UnsupportedOperation

_GUID = "{9d7c7a43-4b5e-4c55-9f0b-5a3f0e2c6d11}"
#: extended property holding crmflow's UID
UID_PROPERTY = f"String {_GUID} Name crmflowUid"
#: extended property holding the idempotency key of the create
KEY_PROPERTY = f"String {_GUID} Name crmflowKey"
#: extended property holding the attendee responses crmflow wrote (JSON)
RESPONSES_PROPERTY = f"String {_GUID} Name crmflowResponses"
#: extended property holding the EXDATE lines crmflow wrote (JSON list)
EXDATES_PROPERTY = f"String {_GUID} Name crmflowExdates"
PROPERTIES = (UID_PROPERTY, KEY_PROPERTY, RESPONSES_PROPERTY, EXDATES_PROPERTY)

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
#: Windows time zone names (Outlook reports them in ``originalStartTimeZone``
#: for events made in Outlook) -> IANA: CLDR's ``windowsZones`` table, territory
#: 001, as tzlocal ships it. Names not listed read as UTC: the instants stay
#: right, only the zone is lost.
WINDOWS_ZONES: dict[str, str] = {**win_tz, "UTC": "UTC"}
_WINDOWS_FOLDED = {k.casefold(): v for k, v in WINDOWS_ZONES.items()}
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_OCCURRENCE_ID = re.compile(r"\.(\d{4}-\d{2}-\d{2})$")

#: an occurrence's original start: a date (all-day series) or a UTC instant
Original = dt.date | dt.datetime


@dataclass(frozen=True, slots=True)
class Window:
    """The stretch of time in which series are expanded: ``[start, end)``, UTC."""

    start: dt.datetime
    end: dt.datetime

    def holds(self, start: dt.datetime, length: dt.timedelta) -> bool:
        """Whether an occurrence at ``start`` lasting ``length`` overlaps the window
        (Graph's calendarView and ``/instances`` rule)."""
        return start < self.end and start + length > self.start


def _zone_or_utc(name: Any) -> str:
    if not isinstance(name, str) or not name:
        return "UTC"
    mapped = _WINDOWS_FOLDED.get(name.strip().casefold(), name)
    try:
        zone(mapped)
    except ValidationFailed:
        return "UTC"  # custom or unknown zone names: keep the instants, in UTC
    return mapped


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


# ------------------------------------------------------------------ recurrence lines


def _split_line(line: str) -> tuple[str, dict[str, str], str]:
    """``NAME;P=V:value`` as (NAME, {P: V}, value); names and keys upper-cased."""
    head, _, value = line.partition(":")
    name, *raw_params = head.split(";")
    params = {}
    for param in raw_params:
        key, _, val = param.partition("=")
        params[key.strip().upper()] = val.strip()
    return name.strip().upper(), params, value.strip()


def split_recurrence(event: CalendarEvent) -> tuple[str | None, tuple[str, ...]]:
    """The event's RRULE line (None: not recurring) and its EXDATE lines.

    Raises:
        UnsupportedOperation: an RDATE or EXRULE line, more than one RRULE, or
            EXDATE lines without an RRULE: Outlook series are one pattern minus
            cancelled occurrences.
    """
    rules: list[str] = []
    exdates: list[str] = []
    for line in event.recurrence:
        name = _split_line(line)[0]
        if name == "RRULE":
            rules.append(line)
        elif name == "EXDATE":
            exdates.append(line)
        elif name == "RDATE":
            raise UnsupportedOperation(
                "Outlook series cannot hold RDATE dates (extra occurrences outside "
                "the rule); Microsoft Graph has no counterpart, so crmflow does not "
                "write this event to Outlook."
            )
        else:
            raise UnsupportedOperation(
                f"Outlook calendars take no {name} lines from crmflow."
            )
    if len(rules) > 1 or (exdates and not rules):
        raise UnsupportedOperation(
            "An Outlook series is exactly one RRULE (plus EXDATE lines)."
        )
    return (rules[0] if rules else None), tuple(exdates)


def _rrule_parts(line: str) -> dict[str, str]:
    name, _, value = _split_line(line)
    parts: dict[str, str] = {}
    for part in value.split(";"):
        key, _, val = part.partition("=")
        parts[key.strip().upper()] = val.strip().upper()
    unknown = set(parts) - _KNOWN_PARTS
    if name != "RRULE" or unknown or parts.get("FREQ") not in _FREQ:
        raise UnsupportedOperation(
            f"The recurrence {line!r} has no Outlook pattern crmflow maps."
        )
    return parts


def recurrence_to_graph(event: CalendarEvent) -> dict[str, Any] | None:
    """``patternedRecurrence`` for the event's RRULE (None: not recurring).

    EXDATE lines and exceptions are written separately, on the instances.

    Raises:
        UnsupportedOperation: the recurrence has no mapped Outlook pattern, or
            holds RDATE/EXRULE lines (:func:`split_recurrence`).
    """
    rule, _ = split_recurrence(event)
    if rule is None:
        return None
    parts = _rrule_parts(rule)
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
            f"The recurrence {rule!r} has no Outlook pattern crmflow maps."
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


def timing_key(event: CalendarEvent) -> str:
    """A digest of what decides a series' occurrences: its span and its RRULE.

    Changing either makes Outlook rebuild the series, dropping its exceptions
    and cancellations; equal keys mean a PATCH may leave the timing alone.
    """
    rules = tuple(line for line in event.recurrence if _is_rrule(line))
    stripped = CalendarEvent(event.ical_uid, "", event.span, recurrence=rules)
    return stripped.content_hash()


def _is_rrule(line: str) -> bool:
    return _split_line(line)[0] == "RRULE"


# ------------------------------------------------------------------ occurrences


def occurrence_key(original: Original) -> str:
    """The text key of an original start, as ``RecurrenceException.key`` has it."""
    if isinstance(original, dt.datetime):
        return original.astimezone(dt.UTC).isoformat()
    return original.isoformat()


def _original(instant: dt.datetime, span: TimeSpan) -> Original:
    """An occurrence's original start: its date for all-day series."""
    if span.all_day:
        return instant.astimezone(zone(span.timezone)).date()
    return instant.astimezone(dt.UTC)


def original_instant(original: Original, span: TimeSpan) -> dt.datetime:
    """The UTC instant Graph's ``originalStart`` has for an original start."""
    if isinstance(original, dt.datetime):
        return original.astimezone(dt.UTC)
    return dt.datetime.combine(original, dt.time(), zone(span.timezone)).astimezone(
        dt.UTC
    )


def instance_original(raw: Mapping[str, Any], span: TimeSpan) -> Original | None:
    """The original start of an occurrence or exception (None: unreadable)."""
    try:
        return _original(_parse_utc(raw["originalStart"]), span)
    except (KeyError, TypeError, ValueError):
        return None


def _exdate_value(value: str, params: Mapping[str, str], span: TimeSpan) -> Original:
    """One EXDATE value as an original start of the series ``span`` starts.

    Raises:
        ValueError: the value is unreadable.
    """
    text = value.strip().upper()
    tz = zone(span.timezone)
    if len(text) == 8:  # a DATE: the series' occurrence on that day
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        if span.all_day:
            return day
        clock = span.start_at.astimezone(tz).timetz().replace(tzinfo=None)
        return dt.datetime.combine(day, clock, tz).astimezone(dt.UTC)
    # a UTC value ends in Z; a local one is in its TZID, else in the series' zone
    where = dt.UTC if text.endswith("Z") else zone(params.get("TZID") or span.timezone)
    aware = dt.datetime.strptime(text.rstrip("Z"), "%Y%m%dT%H%M%S").replace(
        tzinfo=where
    )
    return _original(aware, span)


def exdate_originals(line: str, span: TimeSpan) -> list[tuple[str, Original]]:
    """The values of an EXDATE line with their original starts.

    Raises:
        UnsupportedOperation: a value is unreadable.
    """
    _, params, values = _split_line(line)
    out = []
    for value in values.split(","):
        try:
            out.append((value, _exdate_value(value, params, span)))
        except (ValueError, ValidationFailed):
            raise UnsupportedOperation(
                f"Unreadable EXDATE value in {line!r}."
            ) from None
    return out


def cancelled_originals(event: CalendarEvent) -> dict[str, Original]:
    """The occurrences ``event`` cancels (EXDATE values and cancelled exceptions),
    by :func:`occurrence_key`.

    Raises:
        UnsupportedOperation: see :func:`split_recurrence` and
            :func:`exdate_originals`.
    """
    _, exdates = split_recurrence(event)
    out: dict[str, Original] = {}
    for line in exdates:
        for _, original in exdate_originals(line, event.span):
            out[occurrence_key(original)] = original
    for exception in event.exceptions:
        if exception.status is EventStatus.CANCELLED:
            out[exception.key] = exception.original_start
    return out


def rule_starts(rule: str, span: TimeSpan, window: Window) -> list[dt.datetime]:
    """UTC starts of the occurrences ``rule`` (an ``RRULE`` line) gives a series
    starting at ``span`` that overlap ``window`` (empty for a rule that cannot
    be expanded); an all-day occurrence starts at midnight in the series' zone.

    Expanded on the wall clock of the series' zone (recurring-ical-events), as
    Outlook does: a 09:00 meeting stays at 09:00 across daylight-saving changes.
    """
    tz = zone(span.timezone)
    length = span.end_at - span.start_at
    # a day of slack each side: an all-day search is bounded by dates
    starts = occurrence_starts(
        span,
        [rule],
        window.start - dt.timedelta(days=1),
        window.end + dt.timedelta(days=1),
    )
    out = []
    for start in starts or ():
        instant = (
            start
            if isinstance(start, dt.datetime)
            else dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
        )
        if window.holds(instant, length):
            out.append(instant)
    return out


# ------------------------------------------------------------------ events


def _extended(raw: Mapping[str, Any], prop: str) -> str | None:
    for item in raw.get("singleValueExtendedProperties") or ():
        if isinstance(item, Mapping) and " ".join(
            str(item.get("id")).split()
        ).lower() == (prop.lower()):
            value = item.get("value")
            return None if value is None else str(value)
    return None


def _response_property(attendees: Iterable[Attendee]) -> str:
    return json.dumps(
        {a.email.strip().lower(): str(a.response_status) for a in attendees}
    )


def _attendees_to_graph(attendees: Iterable[Attendee]) -> list[dict[str, Any]]:
    return [
        {
            "type": "required",
            "status": {"response": _TO_GRAPH_RESPONSE[a.response_status]},
            "emailAddress": {"address": a.email} | ({"name": a.name} if a.name else {}),
        }
        for a in attendees
    ]


def _show_as(status: EventStatus) -> str:
    return "tentative" if status is EventStatus.TENTATIVE else "busy"


def event_to_graph(event: CalendarEvent) -> dict[str, Any]:
    """The master's body for POST/PATCH (without ``transactionId`` and the key).

    Exceptions and EXDATEs are not in it: they are written on the instances
    after the master. The EXDATE lines go into an extended property, so that
    they read back as EXDATEs.

    Raises:
        UnsupportedOperation: the recurrence has no mapped Outlook pattern.
    """
    _, exdates = split_recurrence(event)
    return {
        "subject": event.title,
        "body": {"contentType": "text", "content": event.description or ""},
        "location": {"displayName": event.location or ""},
        **span_to_graph(event.span),
        "showAs": _show_as(event.status),
        "attendees": _attendees_to_graph(event.attendees),
        "recurrence": recurrence_to_graph(event),
        "singleValueExtendedProperties": [
            {"id": UID_PROPERTY, "value": event.ical_uid},
            {"id": RESPONSES_PROPERTY, "value": _response_property(event.attendees)},
            {"id": EXDATES_PROPERTY, "value": json.dumps(list(exdates))},
        ],
    }


#: the master's fields that decide its occurrences; a PATCH without them
#: keeps the series' exceptions
TIMING_FIELDS = ("start", "end", "isAllDay", "recurrence")


def exception_to_graph(
    exception: RecurrenceException, series: CalendarEvent
) -> dict[str, Any]:
    """The PATCH body that makes an instance hold ``exception`` exactly.

    Fields the exception leaves ``None`` are written with the series' values, and
    a missing span puts the occurrence back at its rule time, so the same body
    also reverts an earlier override. A cancelled exception has no body: the
    instance is deleted instead.
    """
    span = exception.span or rule_span(exception.original_start, series.span)
    times = span_to_graph(span)
    attendees = (
        exception.attendees if exception.attendees is not None else series.attendees
    )
    description = (
        exception.description
        if exception.description is not None
        else series.description
    )
    location = exception.location if exception.location is not None else series.location
    return {
        "subject": exception.title if exception.title is not None else series.title,
        "body": {"contentType": "text", "content": description or ""},
        "location": {"displayName": location or ""},
        "start": times["start"],
        "end": times["end"],
        "showAs": _show_as(exception.status),
        "attendees": _attendees_to_graph(attendees),
    }


def rule_span(original: Original, series: TimeSpan) -> TimeSpan:
    """The span the rule gives the occurrence starting at ``original``."""
    length = series.end_at - series.start_at
    if series.all_day and not isinstance(original, dt.datetime):
        days = (series.end_date - series.start_date).days
        return all_day_span(
            original, original + dt.timedelta(days=days), series.timezone
        )
    start = original_instant(original, series)
    return timed_span(start, start + length, series.timezone)


def _attendees(
    raw: Mapping[str, Any], stored_in: Mapping[str, Any] | None = None
) -> tuple[Attendee, ...]:
    """Attendees of ``raw``; responses crmflow wrote come from ``stored_in``
    (the series master for an instance, whose extended properties are not read)."""
    try:
        stored = json.loads(_extended(stored_in or raw, RESPONSES_PROPERTY) or "{}")
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


def _status(raw: Mapping[str, Any]) -> EventStatus:
    if raw.get("isCancelled"):
        return EventStatus.CANCELLED
    if raw.get("showAs") == "tentative":
        return EventStatus.TENTATIVE
    return EventStatus.CONFIRMED


def _location(raw: Mapping[str, Any]) -> str | None:
    location = raw.get("location") or {}
    if not isinstance(location, Mapping):
        return None
    return location.get("displayName") or None


def _master_event(raw: Mapping[str, Any]) -> CalendarEvent:
    span = span_from_graph(raw)
    uid = _extended(raw, UID_PROPERTY) or raw.get("iCalUId") or f"{raw['id']}@graph"
    return CalendarEvent(
        ical_uid=str(uid),
        title=str(raw.get("subject") or ""),
        span=span,
        description=body_text(raw.get("body")),
        location=_location(raw),
        attendees=_attendees(raw),
        status=_status(raw),
        recurrence=recurrence_from_graph(raw.get("recurrence"), span),
    )


def event_from_graph(
    raw: Mapping[str, Any],
    instances: Sequence[Mapping[str, Any]] | None = None,
    window: Window | None = None,
) -> CalendarEvent:
    """A ``CalendarEvent`` from a Graph event (extended properties expanded).

    For a series master, ``instances`` are its ``/instances`` inside ``window``
    and ``raw`` carries ``cancelledOccurrences``: the exceptions and
    cancellations inside the window are read from them (those outside are not;
    EXDATE values crmflow wrote outside the window are kept as written).

    Raises:
        ValidationFailed: the event cannot be represented (no times).
    """
    master = _master_event(raw)
    if not master.recurrence or instances is None or window is None:
        return master
    overrides = _overrides(raw, master, instances)
    cancelled = _cancelled(raw, master, instances, window)
    exdates, cancelled = _exdate_lines(raw, master.span, cancelled, window)
    exceptions = overrides | {
        key: RecurrenceException(original, EventStatus.CANCELLED)
        for key, original in cancelled.items()
        if key not in overrides
    }
    return CalendarEvent(
        ical_uid=master.ical_uid,
        title=master.title,
        span=master.span,
        description=master.description,
        location=master.location,
        attendees=master.attendees,
        status=master.status,
        recurrence=master.recurrence + exdates,
        exceptions=tuple(exceptions[k] for k in sorted(exceptions)),
    )


def _overrides(
    raw: Mapping[str, Any],
    master: CalendarEvent,
    instances: Sequence[Mapping[str, Any]],
) -> dict[str, RecurrenceException]:
    out: dict[str, RecurrenceException] = {}
    for item in instances:
        if item.get("type") != "exception":
            continue
        exception = _exception_from_graph(item, raw, master)
        if exception is not None:
            out[exception.key] = exception
    return out


def _attendee_set(attendees: Iterable[Attendee]) -> list[tuple[str, str, str]]:
    return sorted(
        (a.email.strip().lower(), (a.name or "").strip(), str(a.response_status))
        for a in attendees
    )


def _exception_from_graph(
    item: Mapping[str, Any], raw_master: Mapping[str, Any], master: CalendarEvent
) -> RecurrenceException | None:
    """An ``exception`` instance as the fields it overrides (None: it overrides
    nothing, e.g. an override crmflow reverted)."""
    original = instance_original(item, master.span)
    if original is None:
        return None
    try:
        span: TimeSpan | None = span_from_graph(item)
    except ValidationFailed:
        span = None
    if span == rule_span(original, master.span):
        span = None
    title = str(item.get("subject") or "")
    description = body_text(item.get("body"))
    location = _location(item)
    attendees = _attendees(item, raw_master)
    status = _status(item)
    exception = RecurrenceException(
        original,
        status,
        title=None if title == master.title else title,
        span=span,
        description=None if description == master.description else description,
        location=None if location == master.location else location,
        attendees=None
        if _attendee_set(attendees) == _attendee_set(master.attendees)
        else attendees,
    )
    unchanged = RecurrenceException(original, master.status)
    return None if exception == unchanged else exception


def _cancelled_dates(raw: Mapping[str, Any]) -> set[str] | None:
    """The dates of ``cancelledOccurrences`` (None: Graph did not send the field)."""
    values = raw.get("cancelledOccurrences")
    if not isinstance(values, list):
        return None
    dates = set()
    for value in values:
        match = _OCCURRENCE_ID.search(str(value))
        if match:
            dates.add(match.group(1))
    return dates


def _cancelled(
    raw: Mapping[str, Any],
    master: CalendarEvent,
    instances: Sequence[Mapping[str, Any]],
    window: Window,
) -> dict[str, Original]:
    """Cancelled occurrences inside ``window``, by :func:`occurrence_key`.

    A rule occurrence is cancelled when ``/instances`` no longer lists it and
    ``cancelledOccurrences`` names its date. The date is matched both as the
    occurrence's local date and as its UTC date, since Graph does not document
    which one the occurrence id carries; the gap in ``/instances`` settles which
    occurrence is meant. Without ``cancelledOccurrences`` nothing is read as
    cancelled (a gap alone may be an exception moved out of the window).
    """
    dates = _cancelled_dates(raw)
    if not dates:
        return {}
    listed = set()
    for item in instances:
        try:
            listed.add(_parse_utc(item["originalStart"]))
        except (KeyError, TypeError, ValueError):
            continue
    tz = zone(master.span.timezone)
    out: dict[str, Original] = {}
    for start in rule_starts(master.recurrence[0], master.span, window):
        named = {start.date().isoformat(), start.astimezone(tz).date().isoformat()}
        if start not in listed and named & dates:
            original = _original(start, master.span)
            out[occurrence_key(original)] = original
    return out


def _exdate_lines(
    raw: Mapping[str, Any],
    span: TimeSpan,
    cancelled: Mapping[str, Original],
    window: Window,
) -> tuple[tuple[str, ...], dict[str, Original]]:
    """The EXDATE lines crmflow wrote that still hold, and the cancellations
    left over (cancelled exceptions).

    A value inside the window stays when its occurrence is cancelled; one
    outside cannot be checked and stays as written. A line keeps its exact
    text (parameters, value format) so that the content hash survives.
    """
    try:
        stored = json.loads(_extended(raw, EXDATES_PROPERTY) or "[]")
    except ValueError:
        stored = []
    left = dict(cancelled)
    length = span.end_at - span.start_at
    lines: list[str] = []
    for line in stored if isinstance(stored, list) else ():
        try:
            values = exdate_originals(str(line), span)
        except UnsupportedOperation:
            continue
        kept = []
        for value, original in values:
            key = occurrence_key(original)
            if key in cancelled:
                left.pop(key, None)
                kept.append(value)
            elif not window.holds(original_instant(original, span), length):
                kept.append(value)
        if len(kept) == len(values):
            lines.append(str(line))
        elif kept:
            lines.append(str(line).rpartition(":")[0] + ":" + ",".join(kept))
    return tuple(lines), left


def exceptions_digest(items: Iterable[Mapping[str, Any]]) -> str:
    """A digest of a series' ``exception`` instances and their etags.

    Part of a series' version (next to the master's etag): an exception edited
    in Outlook changes it even where the master's change key stays.
    """
    lines = sorted(
        f"{item.get('id')} {item.get('@odata.etag')}"
        for item in items
        if item.get("type") == "exception"
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def parse_modified(value: Any) -> dt.datetime | None:
    """Graph ``lastModifiedDateTime`` as an aware instant, None if absent."""
    if not isinstance(value, str):
        return None
    try:
        return _parse_utc(value)
    except ValueError:
        return None
