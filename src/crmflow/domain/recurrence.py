"""The occurrences of a recurring series, expanded by recurring-ical-events.

A series is given as its first occurrence's :class:`TimeSpan` and its
recurrence lines (``RRULE``, ``EXRULE``, ``RDATE``, ``EXDATE``, as
``CalendarEvent.recurrence`` and appointments hold them). The lines are read by
icalendar into one ``VEVENT`` and expanded by recurring-ical-events, so what
RFC 5545 says holds without code of ours: occurrences keep the wall clock of
the series' zone across daylight-saving changes (section 3.3.10), a date-only
or floating ``UNTIL`` works for all-day and timed series alike, ``EXDATE`` and
``RDATE`` values with or without ``TZID`` apply. (An ``EXRULE``, deprecated
since RFC 5545, is kept but not applied: recurring-ical-events ignores it.)

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
    """One ``VEVENT`` holding the series; None if a line cannot be read. A
    rule that can never match (:func:`never_matches`) is left out: the
    series' first start is then its only occurrence besides its RDATEs."""
    vevent = Event()
    vevent.add("UID", "series")
    add_span(vevent, span)
    try:
        for name, value in recurrence_properties(lines):
            # icalendar defers some errors to the first read of a value
            if name in ("RRULE", "EXRULE") and not _expandable(value):
                return None
            if name == "RRULE" and never_matches(value):
                continue
            vevent.add(name, value, encode=False)
    except (ValueError, KeyError, TypeError):
        return None
    calendar = Calendar()
    calendar.add_component(vevent)
    return calendar


#: the most days each month has (February in a leap year)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def never_matches(rule: Any) -> bool:
    """Whether an RRULE (as icalendar parses it) can have no occurrence: its
    ``BYMONTHDAY`` values fall in none of its ``BYMONTH`` months (30
    February, 31 April) or in no month at all (32). dateutil looks for an
    occurrence of such a rule until the year 9999: seconds of CPU for a
    daily rule, more for a shorter period."""
    try:
        days = [int(d) for d in rule.get("BYMONTHDAY") or ()]
        months = [int(m) for m in rule.get("BYMONTH") or ()] or list(range(1, 13))
    except (TypeError, ValueError):
        return False
    if not days:
        return False
    return not any(
        1 <= month <= 12
        and any(
            1 <= day <= _MONTH_DAYS[month - 1] or -_MONTH_DAYS[month - 1] <= day <= -1
            for day in days
        )
        for month in months
    )


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


#: how far ahead a range without end looks for occurrences
HORIZON = dt.timedelta(days=4 * 366)
#: the windows a range is expanded in, one after the other, the last one
#: reaching the range's end: a range stops being expanded once a window
#: brought ``limit`` (at most four walks of the rule per range)
_WINDOWS = (dt.timedelta(days=7), dt.timedelta(days=31), dt.timedelta(days=366))
_DAY = dt.timedelta(days=1)
#: what may go wrong in an expansion of lines a calendar sent
_UNEXPANDABLE = (
    ValueError,
    TypeError,
    KeyError,
    OverflowError,
    recurring_ical_events.InvalidCalendar,
)


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
    the :data:`HORIZON` after ``start``), earliest first, at most ``limit``;
    None when the lines cannot be read or the series is too dense to walk
    (:data:`WALK_LIMIT`).

    ``start``/``end`` are aware instants. An occurrence under way at
    ``start`` counts. ``changes``: cancelled occurrences are left out, moved
    ones are where they were moved to (one moved into the range from outside
    it counts, one moved out of it does not; a change of an occurrence the
    rule does not have, left from an earlier start of the series, is
    ignored).

    Cost: recurring-ical-events (through dateutil) walks the rule from the
    series' first start for each window, up to four; :data:`WALK_LIMIT`
    bounds each walk.
    """
    try:
        stop = start + HORIZON if end is None else end
        ends_by = series_end(span, lines, changes)
        if ends_by is not None:  # no need to walk past the series' end
            stop = min(stop, ends_by)
        calendar = _series(span, lines)
        if calendar is None or _walk(calendar, span, stop) > WALK_LIMIT:
            return None
    except OverflowError:
        return None
    changed = {_key(c.original_start): c for c in changes}
    found: list[TimeSpan] = []
    try:
        expanded = recurring_ical_events.of(calendar)
        for change in changes:
            moved = _moved(change, span)
            if (
                moved is not None
                and _overlaps(moved, start, stop)
                and _has(expanded, calendar, change.original_start, span)
            ):
                found.append(moved)
        seen: set[str] = set()
        kept = 0
        low, widths = start, iter(_WINDOWS)
        while low < stop and kept < limit:
            width = next(widths, None)
            high = stop if width is None else min(low + width, stop)
            for occurrence in expanded.between(*_bounds(low, high, span)):
                key = _key(_start_of(occurrence, span))
                if key in seen or key in changed:
                    continue
                seen.add(key)
                one = _span_of(occurrence["DTSTART"].dt, occurrence["DTEND"].dt, span)
                if _overlaps(one, start, stop):
                    found.append(one)
                    kept += 1
            low = high
    except _UNEXPANDABLE:
        return None
    found.sort(key=lambda one: (one.start_at, one.end_at))
    return found[:limit]


#: rule periods (times the values of its BY parts, which each multiply the
#: candidates dateutil looks at) between a series' first start and the end
#: of a range, at most, that one walk of :func:`occurrences` may take (each
#: costs a few microseconds): past it the series counts as one nobody can
#: expand. A plain hourly series reaches it after about 11 years, a minutely
#: one after about 10 weeks, a daily one never in practice.
WALK_LIMIT = 100_000

_PERIOD_S = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3600,
    "DAILY": 86400,
    "WEEKLY": 7 * 86400,
    "MONTHLY": 28 * 86400,
    "YEARLY": 365 * 86400,
}
_BY_PARTS = (
    "BYSECOND",
    "BYMINUTE",
    "BYHOUR",
    "BYDAY",
    "BYMONTHDAY",
    "BYYEARDAY",
    "BYWEEKNO",
    "BYMONTH",
)


def _walk(calendar: Calendar, span: TimeSpan, stop: dt.datetime) -> float:
    """How much the expansion walks from the series' first start to
    ``stop``: periods of its rules times the values of their BY parts (the
    most of its RRULEs)."""
    rules = calendar.walk("VEVENT")[0].get("RRULE")
    seconds = max((stop - span.start_at).total_seconds(), 0.0)
    walked = 0.0
    for rule in rules if isinstance(rules, list) else [rules]:
        if rule is None:
            continue
        try:
            period = _PERIOD_S[str(rule["FREQ"][0]).upper()]
            interval = int((rule.get("INTERVAL") or [1])[0])
            factor = 1
            for part in _BY_PARTS:
                factor *= max(len(rule.get(part) or ()), 1)
        except (KeyError, IndexError, TypeError, ValueError):
            return float("inf")
        walked = max(walked, seconds / (period * interval) * factor)
    return walked


def _bounds(low: dt.datetime, high: dt.datetime, span: TimeSpan) -> tuple[Any, Any]:
    """What to ask recurring-ical-events for ``[low, high)``: the instants,
    or for an all-day series the days they touch in its zone (the overlap
    is checked exactly afterwards)."""
    if not span.all_day:
        return low, high
    tz = zone(span.timezone)
    return low.astimezone(tz).date(), high.astimezone(tz).date() + _DAY


def _has(expanded: Any, calendar: Calendar, original: Start, span: TimeSpan) -> bool:
    """Whether the rule has an occurrence starting at ``original`` (False
    when finding out would walk too far)."""
    if isinstance(original, dt.datetime):
        at = original.astimezone(dt.UTC)
        window: tuple[Any, Any] = (at, at + dt.timedelta(seconds=1))
        reach = at
    else:
        window = (original, original + _DAY)
        reach = dt.datetime.combine(original, dt.time(), dt.UTC) + _DAY
    if _walk(calendar, span, reach) > WALK_LIMIT:
        return False
    wanted = _key(original)
    return any(
        _key(_start_of(occurrence, span)) == wanted
        for occurrence in expanded.between(*window)
    )


def _overlaps(one: TimeSpan, start: dt.datetime, end: dt.datetime | None) -> bool:
    return one.end_at > start and (end is None or one.start_at < end)


def series_end(
    span: TimeSpan, lines: Sequence[str], changes: Sequence[OccurrenceChange] = ()
) -> dt.datetime | None:
    """When the series' last occurrence ends, or later (an aware UTC
    instant; ``span.end_at`` for an appointment that does not repeat); None
    for a series that repeats without end, has a rule with ``COUNT``, or has
    lines that cannot be read.

    Nothing is expanded (every write of an appointment calls this): a rule
    with ``UNTIL`` ends by ``UNTIL`` (plus a day for zones, plus the length of
    one occurrence), an ``RDATE`` by its value the same way. A range query
    passes over an appointment whose end is before the range, so the answer
    may be late but never early; None is the safe answer ("maybe still
    going"), which is also what a ``COUNT`` gets: where its last occurrence
    falls is only known by expanding it, and dateutil may walk to the year
    9999 to find out.
    """
    ends = [span.end_at]
    length = span.end_at - span.start_at + _DAY
    try:
        for change in changes:
            moved = _moved(change, span)
            if moved is not None:
                ends.append(moved.end_at)
        for name, value in recurrence_properties(lines):
            if name == "RRULE":
                if never_matches(value):
                    continue  # no occurrence of its own
                until = value.get("UNTIL")
                if value.get("COUNT") or not until or not _expandable(value):
                    return None
                ends.append(_instant(until[0], span) + length)
            elif name == "RDATE":
                for each in getattr(value, "dts", ()):
                    when = each.dt[-1] if isinstance(each.dt, tuple) else each.dt
                    if isinstance(when, dt.timedelta):  # a period by its length
                        when = each.dt[0] + when
                    ends.append(_instant(when, span) + length)
    except (ValueError, KeyError, TypeError, OverflowError):
        # icalendar defers some errors to the first read of a value
        return None
    return max(ends)


def _instant(value: Start, span: TimeSpan) -> dt.datetime:
    """A recurrence value as an instant: a floating time or a date (its
    end) on the series' wall clock."""
    tz = zone(span.timezone)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.astimezone(dt.UTC)
    return dt.datetime.combine(value + _DAY, dt.time(), tz).astimezone(dt.UTC)


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
    "HORIZON",
    "WALK_LIMIT",
    "Start",
    "add_span",
    "never_matches",
    "occurrence_starts",
    "occurrences",
    "recurrence_properties",
    "series_end",
]
