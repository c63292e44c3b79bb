"""The occurrences of a recurring series, expanded by recurring-ical-events.

A series is given as its first occurrence's :class:`TimeSpan` and its
recurrence lines (``RRULE``, ``EXRULE``, ``RDATE``, ``EXDATE``, as
``CalendarEvent.recurrence`` and appointments hold them). The lines are read by
icalendar into one ``VEVENT`` and expanded by recurring-ical-events, so what
RFC 5545 says holds without code of ours: occurrences keep the wall clock of
the series' zone across daylight-saving changes (section 3.3.10), a date-only
or floating ``UNTIL`` works for all-day and timed series alike, ``EXDATE`` and
``RDATE`` values with or without ``TZID`` apply.

Public surface: :func:`occurrence_starts` (the starts in a window),
:func:`occurrences` (the occurrences overlapping a range, with cancelled and
moved ones applied) and :func:`series_end` (when the last occurrence ends, for
range queries).
They are forgiving: a line they cannot read gives no occurrences (``None``),
because callers list whatever a calendar sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import recurring_ical_events
from icalendar import Calendar, Event

from crmflow.domain.appointments import TimeSpan, zone
from crmflow.domain.crm import OccurrenceChange

#: the start of one occurrence: an aware UTC instant, or a date (all-day)
Start = dt.date | dt.datetime

_LINES = ("RRULE", "EXRULE", "RDATE", "EXDATE")


def recurrence_properties(lines: Iterable[str]) -> list[tuple[str, Any]]:
    """Recurrence lines (``RRULE``, ``EXRULE``, ``RDATE``, ``EXDATE``) as
    icalendar property values, ``(name, value)`` in order, each line read by
    icalendar with its parameters (e.g. ``TZID``); other lines give nothing.

    Raises:
        ValueError: a line icalendar cannot read.
    """
    found: list[tuple[str, Any]] = []
    for line in lines:
        parsed = Event.from_ical(f"BEGIN:VEVENT\r\n{line}\r\nEND:VEVENT\r\n")
        for name in _LINES:
            values = parsed.get(name)
            for value in values if isinstance(values, list) else [values]:
                if value is not None:
                    found.append((name, value))
    return found


def add_span(vevent: Event, span: TimeSpan) -> None:
    """``DTSTART``/``DTEND`` of ``span``: dates (exclusive end) for an all-day
    span, else times on the wall clock of its zone (icalendar adds the
    ``TZID``)."""
    if span.all_day:
        vevent.add("DTSTART", span.start_date)
        vevent.add("DTEND", span.end_date)
    else:
        tz = zone(span.timezone)
        vevent.add("DTSTART", span.start_at.astimezone(tz))
        vevent.add("DTEND", span.end_at.astimezone(tz))


def _series(span: TimeSpan, lines: Sequence[str]) -> Calendar | None:
    """One ``VEVENT`` holding the series; None if a line cannot be read."""
    vevent = Event()
    vevent.add("UID", "series")
    add_span(vevent, span)
    try:
        for name, value in recurrence_properties(lines):
            # icalendar defers some errors to the first read of a value
            if name in ("RRULE", "EXRULE") and not _expandable(value):
                return None
            vevent.add(name, value, encode=False)
    except (ValueError, KeyError, TypeError):
        return None
    calendar = Calendar()
    calendar.add_component(vevent)
    return calendar


def _expandable(rule: Any) -> bool:
    """Whether a parsed rule can be expanded: RFC 5545 wants a positive
    ``INTERVAL``, and an ``INTERVAL=0`` (which a calendar may still send)
    makes the expansion loop forever."""
    for interval in rule.get("INTERVAL") or ():
        if not isinstance(interval, int) or interval < 1:
            return False
    return True


def _start_of(occurrence: Any, span: TimeSpan) -> Start:
    value = occurrence["DTSTART"].dt
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # the floating expansion of a floating rule
            value = value.replace(tzinfo=zone(span.timezone))
        return value.astimezone(dt.UTC)
    return value  # type: ignore[no-any-return]


def _expanded(
    span: TimeSpan, lines: Sequence[str], occurrences: Any
) -> Iterator[Start]:
    try:
        for occurrence in occurrences:
            yield _start_of(occurrence, span)
    except (ValueError, TypeError, recurring_ical_events.InvalidCalendar):
        return


def occurrence_starts(
    span: TimeSpan, lines: Sequence[str], start: dt.datetime, end: dt.datetime
) -> list[Start] | None:
    """The starts of the series' occurrences that overlap ``[start, end]``,
    earliest first; None when the lines cannot be read.

    ``start``/``end`` are aware instants; for an all-day series the dates they
    fall on in the series' zone bound the search.
    """
    calendar = _series(span, lines)
    if calendar is None:
        return None
    low: Any = start
    high: Any = end
    if span.all_day:
        tz = zone(span.timezone)
        low, high = start.astimezone(tz).date(), end.astimezone(tz).date()
    try:
        found = recurring_ical_events.of(calendar).between(low, high)
    except (ValueError, TypeError, recurring_ical_events.InvalidCalendar):
        return None
    return sorted(_expanded(span, lines, found), key=_sort_key)


def _span_of(start: Start, end: Start, span: TimeSpan) -> TimeSpan:
    """One occurrence as a :class:`TimeSpan` in the series' zone."""
    tz = zone(span.timezone)

    def instant(value: Start) -> dt.datetime:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:  # floating: the series' wall clock
                value = value.replace(tzinfo=tz)
            return value.astimezone(dt.UTC)
        return dt.datetime.combine(value, dt.time(), tz).astimezone(dt.UTC)

    return TimeSpan(instant(start), instant(end), span.timezone, span.all_day)


def _moved(change: OccurrenceChange, span: TimeSpan) -> TimeSpan | None:
    """Where a changed occurrence is now; None when it is cancelled."""
    start = change.start
    if start is None:
        return None
    end = change.end
    if end is None:
        # as long as the series' occurrences: whole days for an all-day
        # series, the same stretch of time otherwise
        if isinstance(start, dt.datetime):
            end = start + (span.end_at - span.start_at)
        else:
            end = start + (span.end_date - span.start_date)
    return _span_of(start, end, span)


def occurrences(
    span: TimeSpan,
    lines: Sequence[str],
    start: dt.datetime,
    end: dt.datetime | None,
    changes: Sequence[OccurrenceChange] = (),
    *,
    limit: int,
) -> list[TimeSpan] | None:
    """The series' occurrences that overlap ``[start, end)`` (``end`` None:
    no end), earliest first, at most ``limit``; None when the lines cannot
    be read.

    ``start``/``end`` are aware instants. An occurrence under way at
    ``start`` counts. ``changes``: cancelled occurrences are left out, moved
    ones are where they were moved to (one moved into the range from outside
    it counts, one moved out of it does not).
    """
    calendar = _series(span, lines)
    if calendar is None:
        return None
    changed = {_key(c.original_start): c for c in changes}
    found: list[TimeSpan] = []
    for change in changes:
        moved = _moved(change, span)
        if moved is not None and _overlaps(moved, start, end):
            found.append(moved)
    # "after" yields in order, the occurrences under way at ``low`` too;
    # for an all-day series it takes the day ``start`` falls on in its zone
    low: Any = start.astimezone(zone(span.timezone)).date() if span.all_day else start
    kept = 0
    try:
        for occurrence in recurring_ical_events.of(calendar).after(low):
            one = _span_of(occurrence["DTSTART"].dt, occurrence["DTEND"].dt, span)
            if kept >= limit or (end is not None and one.start_at >= end):
                break
            if _key(_start_of(occurrence, span)) in changed:
                continue
            if _overlaps(one, start, end):
                found.append(one)
                kept += 1
    except (ValueError, TypeError, KeyError, recurring_ical_events.InvalidCalendar):
        return None
    found.sort(key=lambda one: (one.start_at, one.end_at))
    return found[:limit]


def _overlaps(one: TimeSpan, start: dt.datetime, end: dt.datetime | None) -> bool:
    return one.end_at > start and (end is None or one.start_at < end)


#: a series with more occurrences than this is treated as endless by
#: :func:`series_end` (range queries then always look at it)
SERIES_END_OCCURRENCES = 5000


def series_end(
    span: TimeSpan, lines: Sequence[str], changes: Sequence[OccurrenceChange] = ()
) -> dt.datetime | None:
    """When the series' last occurrence ends (an aware UTC instant), or
    ``span.end_at`` for an appointment that does not repeat; None for a
    series that repeats without end, has more than
    :data:`SERIES_END_OCCURRENCES` occurrences, or has lines that cannot be
    read. A range query may skip an appointment whose end is before the
    range: None is the safe answer ("maybe still going")."""
    ends = [span.end_at]
    for change in changes:
        moved = _moved(change, span)
        if moved is not None:
            ends.append(moved.end_at)
    if not any(
        line.split(":", 1)[0].split(";", 1)[0].strip().upper() in ("RRULE", "RDATE")
        for line in lines
    ):
        return max(ends)
    calendar = _series(span, lines)
    if calendar is None:
        return None
    rules = calendar.walk("VEVENT")[0].get("RRULE")
    for rule in rules if isinstance(rules, list) else [rules]:
        if rule is not None and not (rule.get("COUNT") or rule.get("UNTIL")):
            return None
    last: TimeSpan | None = None
    try:
        every = recurring_ical_events.of(calendar).all()
        for count, occurrence in enumerate(every):
            if count >= SERIES_END_OCCURRENCES:
                return None
            last = _span_of(occurrence["DTSTART"].dt, occurrence["DTEND"].dt, span)
            ends.append(last.end_at)
    except (ValueError, TypeError, KeyError, recurring_ical_events.InvalidCalendar):
        return None
    return max(ends)


def _key(start: Start) -> str:
    """One occurrence's identity: its date, or its UTC instant."""
    if isinstance(start, dt.datetime):
        return start.astimezone(dt.UTC).isoformat()
    return start.isoformat()


def _sort_key(start: Start) -> dt.datetime:
    if isinstance(start, dt.datetime):
        return start
    return dt.datetime.combine(start, dt.time(), dt.UTC)


__all__ = [
    "SERIES_END_OCCURRENCES",
    "Start",
    "add_span",
    "occurrence_starts",
    "occurrences",
    "recurrence_properties",
    "series_end",
]
