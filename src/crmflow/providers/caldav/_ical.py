"""``CalendarEvent`` <-> iCalendar (RFC 5545) ``VCALENDAR`` with ``VEVENT``\\s.

All parsing and serialization is the ``icalendar`` library's; this module only
maps fields:

* ``DTSTART``/``DTEND``: a timed event is written with ``TZID`` (its IANA zone)
  and a ``VTIMEZONE`` for it; an all-day event as ``VALUE=DATE`` with the
  exclusive end date. Read back, a Windows zone name (Outlook's exports) is
  mapped to its IANA zone, an unknown or custom ``TZID`` falls back to
  UTC (the instant is kept), floating times are taken as UTC, and all-day
  events get the zone ``UTC`` (all-day content hashes ignore the zone).
* ``SUMMARY``, ``DESCRIPTION``, ``LOCATION``, ``STATUS``, ``ATTENDEE``
  (``mailto:``, ``CN``, ``PARTSTAT``), ``RRULE``/``EXRULE``/``RDATE``/``EXDATE``.
* recurrence exceptions are further ``VEVENT``\\s with the same ``UID`` and a
  ``RECURRENCE-ID``; a cancelled occurrence is one with ``STATUS:CANCELLED``.

Everything else a server or another client adds (``DTSTAMP``, ``SEQUENCE``,
``VALARM``, ``X-`` properties) is ignored when reading, so it never reaches the
content hash. It is not lost on a rewrite either: :func:`to_ical` given the
server's current copy (``keep``) carries over every property crmflow does not
write, every sub-component (alarms; one set for a fixed instant moves with the
event's start), the other parameters of an attendee it still lists (``ROLE``,
``RSVP``, ..., and its ``CN`` where crmflow knows no name) and the calendar's
own extra properties,
and counts ``SEQUENCE`` up where the copy had one. A kept ``ORGANIZER`` makes it
a scheduling object (RFC 6638), so the organizer and every attendee then get
``SCHEDULE-AGENT=CLIENT``: the server sends no mail for a sync write. crmflow's fields replace the
copy's; an override the event no longer has is dropped with its extras.

Time zones, written: the ``VTIMEZONE`` covers the years the event's times fall
in (up to 2038 for a series with an open or counted rule, icalendar's own
limit), is built by icalendar once per zone and window (cached), and gives each
``RDATE`` value a line of its own: Radicale (vobject) keeps only the first value
of a multi-value ``RDATE`` in a stored ``VTIMEZONE``, which would leave strict
readers with the wrong offsets. Read: a ``VTIMEZONE`` whose ``TZID`` is an IANA
name is cut from the text before parsing, because icalendar resolves such a
``TZID`` by name and never uses the component; custom ones are kept, and each
calendar's own definition places its times (:func:`_forget_zones`). ``RDATE``
and ``EXDATE`` values in a custom zone are read in UTC, like the start of an
event in such a zone, so the lines need no zone definition later. A rewrite
writes the copy's own ``VTIMEZONE`` for a kept property's zone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress, vDDDLists
from icalendar.parser_tools import to_unicode
from icalendar.timezone import tzp
from tzlocal.windows_tz import win_tz

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    EventStatus,
    RecurrenceException,
    ResponseStatus,
)
from crmflow.domain.recurrence import add_span, recurrence_properties
from crmflow.errors import ValidationFailed

PRODID = "-//crmflow//calendar sync//EN"

_RECURRENCE = ("RRULE", "EXRULE", "RDATE", "EXDATE")
#: properties whose times a written VTIMEZONE must cover
_ZONED = ("DTSTART", "DTEND", "RECURRENCE-ID", "RDATE", "EXDATE")
#: a series with an open or counted rule is covered up to here (icalendar's
#: default, zoneinfo knows no transitions after 2037)
_SERIES_LAST_YEAR = Timezone.DEFAULT_LAST_DATE.year - 1

# a VTIMEZONE block as a whole (content lines start at the beginning of a line;
# folded continuations start with a blank, so they never match ^BEGIN/^END)
_VTIMEZONE_BLOCK = re.compile(
    r"^BEGIN:VTIMEZONE[ \t]*\r?\n.*?^END:VTIMEZONE[ \t]*(?:\r?\n|\Z)",
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
_FOLD = re.compile(r"\r?\n[ \t]")
#: a TZID parameter's value (quoted or not)
_TZID_PARAM = re.compile(r';TZID=("[^"]*"|[^;:\r\n]*)', re.IGNORECASE)
_TZID_LINE = re.compile(
    r"^TZID(?:;[^:\r\n]*)?:(.*?)[ \t]*\r?$", re.MULTILINE | re.IGNORECASE
)

_PARTSTAT_OUT = {
    ResponseStatus.NEEDS_ACTION: "NEEDS-ACTION",
    ResponseStatus.ACCEPTED: "ACCEPTED",
    ResponseStatus.DECLINED: "DECLINED",
    ResponseStatus.TENTATIVE: "TENTATIVE",
}
_PARTSTAT_IN = {value: key for key, value in _PARTSTAT_OUT.items()}
#: Windows zone names -> IANA (CLDR's ``windowsZones``, as tzlocal ships it)
_WINDOWS_ZONES = {name.casefold(): iana for name, iana in win_tz.items()}
_STATUS_IN = {
    "CONFIRMED": EventStatus.CONFIRMED,
    "TENTATIVE": EventStatus.TENTATIVE,
    "CANCELLED": EventStatus.CANCELLED,
}


class ICalendarError(ValueError):
    """The data is not an iCalendar object holding a usable ``VEVENT``."""


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A ``VEVENT`` series read from calendar data."""

    event: CalendarEvent
    #: ``LAST-MODIFIED`` of the master, when present
    last_modified: dt.datetime | None


# ------------------------------------------------------------------ writing


def _attendee_props(vevent: Event, attendees: tuple[Attendee, ...]) -> None:
    for attendee in attendees:
        address = vCalAddress(f"mailto:{attendee.email}")
        if attendee.name:
            address.params["CN"] = attendee.name
        address.params["PARTSTAT"] = _PARTSTAT_OUT[attendee.response_status]
        vevent.add("ATTENDEE", address, encode=False)


def _recurrence_props(vevent: Event, lines: tuple[str, ...]) -> None:
    # icalendar reads each line (with its parameters, e.g. TZID); the parsed
    # property is copied over
    for name, value in recurrence_properties(lines):
        vevent.add(name, value, encode=False)


def _exception_start(start: dt.date | dt.datetime, timezone: str) -> dt.date:
    if isinstance(start, dt.datetime):
        return start.astimezone(ZoneInfo(timezone))
    return start


@functools.lru_cache(maxsize=256)
def _vtimezone(tzid: str, first_year: int, last_year: int) -> bytes:
    """The ``VTIMEZONE`` of ``tzid`` for the years ``first_year`` to
    ``last_year`` (inclusive), one ``RDATE`` value per line; empty for a zone
    icalendar does not know (``add_missing_timezones`` skips those too)."""
    try:
        component = Timezone.from_tzid(
            tzid,
            first_date=dt.date(first_year, 1, 1),
            last_date=dt.date(last_year + 1, 1, 1),
        )
    except ValueError:
        return b""
    for observance in component.subcomponents:
        rdates = observance.pop("RDATE", None)
        if rdates is None:
            continue
        for group in rdates if isinstance(rdates, list) else [rdates]:
            for value in group.dts:
                observance.add("RDATE", value.dt)
    data: bytes = component.to_ical()
    return data


def _years(value: Any) -> list[int]:
    """The years of the moments in a property value (dates, date-times,
    periods, lists of them; a rule's ``UNTIL``)."""
    moments: list[Any] = []
    if hasattr(value, "dts"):
        moments.extend(item.dt for item in value.dts)
    elif hasattr(value, "dt"):
        moments.append(value.dt)
    years = []
    for moment in moments:
        first = moment[0] if isinstance(moment, tuple) else moment
        if isinstance(first, dt.date):
            years.append(first.year)
    return years


def _timezones(calendar: Calendar, kept: dict[str, bytes] | None = None) -> bytes:
    """The ``VTIMEZONE``\\s for every ``TZID`` the calendar uses (UTC needs none),
    each covering the years of the calendar's times. A custom zone that a kept
    property names is the server's copy's own ``VTIMEZONE`` (``kept``, by
    ``TZID``): icalendar remembers custom zones by name across everything it
    has parsed, so another copy's zone of the same name may differ."""
    tzids: set[str] = set()
    years: list[int] = []
    series = False
    # one (name, value) per content line, subcomponents included
    for name, value in calendar.property_items(sorted=False):
        prop: Any = value
        params = getattr(prop, "params", None)
        tzid = params.get("TZID") if params is not None else None
        if tzid:
            tzids.add(str(tzid))
        if name in _ZONED:
            years.extend(_years(prop))
        elif name in ("RRULE", "EXRULE"):
            until = prop.get("UNTIL")
            if until:
                years.extend(u.year for u in until if isinstance(u, dt.date))
            else:
                series = True
    tzids.discard("UTC")
    if not tzids or not years:
        return b""
    first, last = min(years), max(years)
    if series:
        last = max(last, _SERIES_LAST_YEAR)
    kept = kept or {}
    return b"".join(
        kept.get(tzid) or _vtimezone(tzid, first, last) for tzid in sorted(tzids)
    )


#: properties :func:`to_ical` writes (or must not copy from an older version);
#: a rewrite keeps every other property of the server's copy
_WRITTEN = frozenset(
    {
        "UID",
        "DTSTAMP",
        "SUMMARY",
        "DTSTART",
        "DTEND",
        "DURATION",
        "DESCRIPTION",
        "LOCATION",
        "STATUS",
        "ATTENDEE",
        "RECURRENCE-ID",
        "SEQUENCE",
        "LAST-MODIFIED",
        *_RECURRENCE,
    }
)
#: attendee parameters crmflow writes; the others of a kept attendee stay
_ATTENDEE_WRITTEN = frozenset({"CN", "PARTSTAT", "SCHEDULE-STATUS"})


def _occurrence(vevent: Any) -> dt.date | dt.datetime | None:
    """The original start a ``VEVENT`` overrides (None: the master), as an
    instant or a date, so that the two copies of one override compare equal."""
    prop = vevent.get("RECURRENCE-ID")
    if prop is None:
        return None
    value = prop.dt
    return _instant(value) if isinstance(value, dt.datetime) else value


def _address(attendee: Any) -> str:
    return str(attendee).casefold().removeprefix("mailto:")


#: other clients' properties that restate a field crmflow writes: kept only
#: while that field is unchanged (a map pin of the old place would mislead)
_DESCRIBING = {
    "LOCATION": ("GEO", "X-APPLE-STRUCTURED-LOCATION"),
    "DTSTART": ("X-MICROSOFT-CDO-ALLDAYEVENT",),
}


def _field_text(vevent: Event, name: str) -> str:
    value = vevent.get(name)
    if value is None:
        return ""
    if name == "DTSTART":
        # all-day or timed is what the describing property states
        return type(value.dt).__name__
    return str(value).strip()


def _keep_extras(old: Event, new: Event, stamp: dt.datetime) -> None:
    """Copy into ``new`` what ``old`` holds that crmflow does not write,
    except what describes a field crmflow changed (:data:`_DESCRIBING`)."""
    stale = {
        extra
        for field, extras in _DESCRIBING.items()
        if _field_text(old, field) != _field_text(new, field)
        for extra in extras
    }
    for name, value in old.items():
        if name.upper() not in _WRITTEN | stale and name not in new:
            new[name] = value
    moved = _moved_by(old, new)
    for component in old.subcomponents:
        if moved and component.name == "VALARM":
            _move_alarm(component, moved)
        new.add_component(component)
    sequence = old.get("SEQUENCE")
    if sequence is not None:
        # a SEQUENCE that is not a number is dropped rather than carried over
        with contextlib.suppress(TypeError, ValueError):
            new.add("SEQUENCE", int(sequence) + 1)
    if old.get("LAST-MODIFIED") is not None:
        new.add("LAST-MODIFIED", stamp)
    if new.get("ORGANIZER") is not None:
        # a scheduling server (RFC 6638) mails the attendees when the
        # organizer's copy changes: a sync write never asks for that (case 26)
        _client_schedules(new)
    attendees = old.get("ATTENDEE")
    known = {
        _address(a): a
        for a in (attendees if isinstance(attendees, list) else [attendees])
        if a is not None
    }
    written = new.get("ATTENDEE")
    for address in written if isinstance(written, list) else [written]:
        if address is None:
            continue
        before = known.get(_address(address))
        if before is None:
            continue
        for param, value in before.params.items():
            # a name crmflow does not know (an attendee added by address in
            # the CRM) is not taken away from the calendar's copy
            kept = param.upper() not in _ATTENDEE_WRITTEN or param.upper() == "CN"
            if kept and param not in address.params:
                address.params[param] = value


def _moved_by(old: Event, new: Event) -> dt.timedelta:
    """How far the event's start moved; zero when either copy has none or
    it changed between all-day and timed (no instant to keep an alarm at)."""
    before, after = old.get("DTSTART"), new.get("DTSTART")
    if before is None or after is None:
        return dt.timedelta(0)
    was, now = before.dt, after.dt
    if isinstance(was, dt.datetime) and isinstance(now, dt.datetime):
        return _instant(now) - _instant(was)
    if isinstance(was, dt.datetime) or isinstance(now, dt.datetime):
        return dt.timedelta(0)
    return dt.timedelta(days=(now - was).days)


def _move_alarm(alarm: Any, moved: dt.timedelta) -> None:
    """An alarm set for a fixed instant (``TRIGGER;VALUE=DATE-TIME``) moves
    with its event; one relative to the start or end moves by itself."""
    trigger = alarm.get("TRIGGER")
    if trigger is None or not isinstance(getattr(trigger, "dt", None), dt.datetime):
        return
    params = dict(trigger.params)
    alarm.pop("TRIGGER")
    # RFC 5545 3.8.6.3: an absolute trigger is a UTC time
    alarm.add("TRIGGER", _instant(trigger.dt) + moved, parameters=params)


def _client_schedules(vevent: Event) -> None:
    """``SCHEDULE-AGENT=CLIENT`` on the organizer and every attendee: the
    server sends no invitations or updates for this write (RFC 6638 7.1)."""
    for name in ("ORGANIZER", "ATTENDEE"):
        values = vevent.get(name)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and hasattr(value, "params"):
                value.params["SCHEDULE-AGENT"] = "CLIENT"


def _keep_from(
    calendar: Calendar, keep: bytes | str, stamp: dt.datetime
) -> dict[str, bytes]:
    """Carry the extras of the server's copy ``keep`` over into ``calendar``;
    the copy's own ``VTIMEZONE``\\s by ``TZID`` (custom ones: those of IANA
    zones are cut before parsing), for the zones kept properties name.

    A copy that cannot be read keeps nothing: the rewrite is then what it would
    have been without one (the event itself is never lost).
    """
    try:
        old = _parse(keep)
        old_events = {
            _occurrence(v): v for v in old.walk("VEVENT") if isinstance(v, Event)
        }
    except (ValueError, KeyError, TypeError):
        return {}
    for name, value in old.items():
        if name.upper() not in ("PRODID", "VERSION") and name not in calendar:
            calendar[name] = value
    for component in old.subcomponents:
        if component.name not in ("VEVENT", "VTIMEZONE"):
            calendar.add_component(component)
    for new in calendar.walk("VEVENT"):
        if isinstance(new, Event):
            before = old_events.get(_occurrence(new))
            if before is not None:
                _keep_extras(before, new, stamp)
    return {
        str(zone["TZID"]): zone.to_ical()
        for zone in old.walk("VTIMEZONE")
        if zone.get("TZID") is not None
    }


def to_ical(
    event: CalendarEvent,
    *,
    now: dt.datetime | None = None,
    keep: bytes | str | None = None,
) -> bytes:
    """``event`` as an iCalendar object (UTF-8), with ``VTIMEZONE``\\s as needed.

    Args:
        keep: the server's current copy, when this rewrites one: what crmflow
            does not write is carried over from it (the module's docstring).
    """
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    calendar = Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    master = Event()
    master.add("UID", event.ical_uid)
    master.add("DTSTAMP", stamp)
    master.add("SUMMARY", event.title)
    add_span(master, event.span)
    if event.description:
        master.add("DESCRIPTION", event.description)
    if event.location:
        master.add("LOCATION", event.location)
    master.add("STATUS", str(event.status).upper())
    _attendee_props(master, event.attendees)
    _recurrence_props(master, event.recurrence)
    calendar.add_component(master)
    duration = event.span.end_at - event.span.start_at
    for exception in event.exceptions:
        override = Event()
        override.add("UID", event.ical_uid)
        override.add("DTSTAMP", stamp)
        original = _exception_start(exception.original_start, event.span.timezone)
        override.add("RECURRENCE-ID", original)
        override.add("SUMMARY", exception.title or event.title)
        if exception.span is not None:
            add_span(override, exception.span)
        elif isinstance(original, dt.datetime):
            override.add("DTSTART", original)
            override.add("DTEND", original + duration)
        else:
            override.add("DTSTART", original)
            override.add("DTEND", original + dt.timedelta(days=duration.days or 1))
        if exception.description is not None:
            override.add("DESCRIPTION", exception.description)
        if exception.location is not None:
            override.add("LOCATION", exception.location)
        override.add("STATUS", str(exception.status).upper())
        if exception.attendees is not None:
            _attendee_props(override, exception.attendees)
        calendar.add_component(override)
    kept_zones = _keep_from(calendar, keep, stamp) if keep is not None else {}
    data: bytes = calendar.to_ical()
    zones = _timezones(calendar, kept_zones)
    if zones:
        # the VTIMEZONEs go before the events that refer to them
        head, begin, rest = data.partition(b"BEGIN:VEVENT\r\n")
        data = head + zones + begin + rest
    return data


# ------------------------------------------------------------------ reading


def _iana_name(tzid: str) -> str | None:
    """The IANA zone ``tzid`` names, a Windows name mapped (Outlook and
    Exchange export those: case 25); None for a custom or unknown zone."""
    name = _WINDOWS_ZONES.get(tzid.strip().casefold(), tzid)
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None
    return name


def _zone_name(prop: Any) -> str:
    tzid = prop.params.get("TZID")
    if tzid:
        # a custom zone: keep the instant, in UTC
        return _iana_name(str(tzid)) or "UTC"
    value = prop.dt
    if isinstance(value, dt.datetime) and isinstance(value.tzinfo, ZoneInfo):
        return value.tzinfo.key
    return "UTC"


def _instant(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:  # floating time: taken as UTC
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _read_span(vevent: Event) -> Any:
    start_prop = vevent.get("DTSTART")
    if start_prop is None:
        raise ICalendarError("A VEVENT without DTSTART.")
    start = start_prop.dt
    end_prop = vevent.get("DTEND")
    duration = vevent.get("DURATION")
    if isinstance(start, dt.datetime):
        if end_prop is not None:
            end = end_prop.dt
        elif duration is not None:
            end = start + duration.dt
        else:
            end = start + dt.timedelta(hours=1)
        if not isinstance(end, dt.datetime):
            end = dt.datetime.combine(end, dt.time(), start.tzinfo)
        return timed_span(_instant(start), _instant(end), _zone_name(start_prop))
    if end_prop is not None:
        end_date = end_prop.dt
    elif duration is not None:
        end_date = start + duration.dt
    else:
        end_date = start + dt.timedelta(days=1)
    if isinstance(end_date, dt.datetime):
        end_date = end_date.date()
    return all_day_span(start, end_date, "UTC")


def _read_attendees(vevent: Event) -> tuple[Attendee, ...]:
    values = vevent.get("ATTENDEE")
    if values is None:
        return ()
    result = []
    for value in values if isinstance(values, list) else [values]:
        address = str(value)
        if address.lower().startswith("mailto:"):
            address = address[len("mailto:") :]
        name = value.params.get("CN")
        partstat = str(value.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
        result.append(
            Attendee(
                address,
                str(name) if name else None,
                _PARTSTAT_IN.get(partstat, ResponseStatus.NEEDS_ACTION),
            )
        )
    return tuple(result)


def _read_status(vevent: Event) -> EventStatus:
    value = vevent.get("STATUS")
    return _STATUS_IN.get(str(value).upper(), EventStatus.CONFIRMED)


def _read_recurrence(vevent: Event) -> tuple[str, ...]:
    """The recurrence properties as content lines, in icalendar's sorted order
    (the lines ``content_lines()`` would give for them)."""
    if not any(name in vevent for name in _RECURRENCE):
        return ()
    lines = []
    start_zone = _custom_start_zone(vevent)
    for name in vevent.sorted_keys():
        if name.upper() not in _RECURRENCE:
            continue
        values = vevent[name]
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, vDDDLists):  # RDATE, EXDATE
                value = _in_utc_if_custom(value, start_zone)
            lines.append(str(vevent.content_line(name, value)))
    return tuple(lines)


def _custom_start_zone(vevent: Event) -> dt.tzinfo | None:
    """The zone of the event's start when a ``VTIMEZONE`` of the calendar's
    own defines it (a custom ``TZID``); None otherwise."""
    start = vevent.get("DTSTART")
    if start is None:
        return None
    tzid = start.params.get("TZID")
    value = start.dt
    if (
        not tzid
        or _iana_name(str(tzid)) is not None
        or not isinstance(value, dt.datetime)
    ):
        return None
    return value.tzinfo


def _utc(value: Any) -> Any:
    """A date-time in UTC (a floating one taken as UTC, as :func:`_instant`
    does); a date, a duration or a period's parts likewise, unchanged."""
    if isinstance(value, tuple):  # a period: (start, end or duration)
        return tuple(_utc(part) for part in value)
    if isinstance(value, dt.datetime):
        return _instant(value)
    return value


def _in_utc_if_custom(
    value: vDDDLists, start_zone: dt.tzinfo | None = None
) -> vDDDLists:
    """An ``RDATE``/``EXDATE`` value whose ``TZID`` names a custom zone (or
    one nothing defines), with its times converted to UTC; likewise floating
    times (no ``TZID``) of a series whose start is in a custom zone
    (``start_zone``), which some clients write meaning the start's zone.

    Its times were placed by this calendar's own ``VTIMEZONE`` (see
    :func:`_forget_zones`); kept as text with the zone's name, they would be
    placed again later by whichever definition of that name was read last.
    In UTC the line holds its instants by itself, as the event's start does
    (a custom ``DTSTART`` zone reads as UTC: :func:`_zone_name`). An IANA or
    Windows zone name is kept: it means the same everywhere.
    """
    tzid = value.params.get("TZID")
    if tzid:
        if _iana_name(str(tzid)) is not None:
            return value
        items = [item.dt for item in value.dts]
    elif start_zone is not None:
        items = [_floating_in(item.dt, start_zone) for item in value.dts]
    else:
        return value
    params = {k: v for k, v in value.params.items() if k.upper() != "TZID"}
    return vDDDLists([_utc(item) for item in items], params)


def _floating_in(value: Any, zone: dt.tzinfo) -> Any:
    """A floating date-time (or a period's parts) placed in ``zone``."""
    if isinstance(value, tuple):
        return tuple(_floating_in(part, zone) for part in value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value


def _optional_text(vevent: Event, name: str) -> str | None:
    value = vevent.get(name)
    return None if value is None else str(value)


def _read_exception(vevent: Event, master: CalendarEvent) -> RecurrenceException:
    recurrence_prop: Any = vevent["RECURRENCE-ID"]
    recurrence_id: dt.date = recurrence_prop.dt
    original: dt.date | dt.datetime = (
        _instant(recurrence_id)
        if isinstance(recurrence_id, dt.datetime)
        else recurrence_id
    )
    span = _read_span(vevent)
    master_duration = master.span.end_at - master.span.start_at
    same_time = span.all_day == master.span.all_day and (
        (span.all_day and span.start_date == original)
        or (not span.all_day and span.start_at == original)
    )
    if same_time and span.end_at - span.start_at == master_duration:
        span = None  # the occurrence keeps the series' time
    attendees = _read_attendees(vevent) if vevent.get("ATTENDEE") else None
    return RecurrenceException(
        original_start=original,
        status=_read_status(vevent),
        title=_optional_text(vevent, "SUMMARY"),
        span=span,
        description=_optional_text(vevent, "DESCRIPTION"),
        location=_optional_text(vevent, "LOCATION"),
        attendees=attendees,
    )


@functools.cache
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _known_zone(tzid: str) -> bool:
    """Whether icalendar resolves ``tzid`` by name (it then ignores a
    ``VTIMEZONE`` of that ``TZID``: ``TZP.cache_timezone_component``)."""
    zones = _iana_zones()
    return tzid in zones or tzid.strip("/") in zones


def _without_known_timezones(text: str) -> str:
    """``text`` without the ``VTIMEZONE`` blocks of IANA zones."""

    def cut(block: re.Match[str]) -> str:
        tzid = _TZID_LINE.search(_FOLD.sub("", block.group(0)))
        if tzid is not None and _known_zone(tzid.group(1)):
            return ""
        return block.group(0)

    return _VTIMEZONE_BLOCK.sub(cut, text)


def _forget_zones(text: str) -> None:
    """Drop from icalendar's zone cache the custom zones ``text`` defines or
    names.

    icalendar keeps the first custom zone it reads under its ``TZID`` for the
    life of the process and resolves every later ``TZID`` of that name with
    it, so two calendars that define one name differently (Outlook calls any
    zone it makes up "Customized Time Zone") would read each other's offsets.
    With the names ``text`` defines forgotten, the zones cached while it is
    parsed are its own; other names stay cached. icalendar has no public way
    to forget one zone: this reaches into its cache, and
    ``test_one_custom_zone_name_defined_differently_is_read_per_calendar``
    fails if a new icalendar moves it.
    """
    cache = getattr(tzp, "_TZP__tz_cache", None)
    if not isinstance(cache, dict):
        return
    for block in _VTIMEZONE_BLOCK.finditer(text):
        tzid = _TZID_LINE.search(_FOLD.sub("", block.group(0)))
        if tzid is None:
            continue
        raw = tzid.group(1)
        # the cache holds the decoded name (a TEXT value: "\," is ",")
        decoded = re.sub(r"\\([\\;,])", r"\1", raw)
        for name in {raw, decoded}:
            cache.pop(tzp.clean_timezone_id(name), None)
    # a custom name used here but defined nowhere in it reads as UTC (as
    # :func:`_zone_name` has it), not as another calendar's definition
    for match in _TZID_PARAM.finditer(_FOLD.sub("", text)):
        name = match.group(1).strip('"')
        if _iana_name(name) is None:
            cache.pop(tzp.clean_timezone_id(name), None)


def _parse(data: bytes | str) -> Calendar:
    """``data`` parsed, each custom ``VTIMEZONE`` in it placing its own times
    (:func:`_forget_zones`). Parsing does not await, so no other parse runs
    in between."""
    # decoded as icalendar decodes (UTF-8, a BOM dropped, bad bytes replaced)
    text = _without_known_timezones(to_unicode(data))
    _forget_zones(text)
    return Calendar.from_ical(text)


def from_ical(data: bytes | str) -> ParsedEvent:
    """The event series in ``data`` (one UID: the master plus its exceptions).

    Raises:
        ICalendarError: not iCalendar, no ``VEVENT``, or fields that do not make
            a valid event (e.g. the end before the start).
    """
    try:
        calendar = _parse(data)
        vevents = [c for c in calendar.walk("VEVENT") if isinstance(c, Event)]
        masters = [v for v in vevents if v.get("RECURRENCE-ID") is None]
        if not vevents:
            raise ICalendarError("The calendar data holds no VEVENT.")
        main = masters[0] if masters else vevents[0]
        base = CalendarEvent(
            ical_uid=str(main.get("UID", "")),
            title=str(main.get("SUMMARY", "")),
            span=_read_span(main),
            description=_optional_text(main, "DESCRIPTION"),
            location=_optional_text(main, "LOCATION"),
            attendees=_read_attendees(main),
            status=_read_status(main),
            recurrence=_read_recurrence(main),
        )
        exceptions = tuple(
            _read_exception(v, base)
            for v in vevents
            if v is not main and v.get("RECURRENCE-ID") is not None
        )
        event = CalendarEvent(
            ical_uid=base.ical_uid,
            title=base.title,
            span=base.span,
            description=base.description,
            location=base.location,
            attendees=base.attendees,
            status=base.status,
            recurrence=base.recurrence,
            exceptions=exceptions if base.recurrence else (),
        )
        modified = main.get("LAST-MODIFIED")
        last_modified = (
            _instant(modified.dt)
            if modified is not None and isinstance(modified.dt, dt.datetime)
            else None
        )
    except ICalendarError:
        raise
    except (ValueError, KeyError, TypeError, ValidationFailed) as exc:
        raise ICalendarError(
            f"Unusable calendar data ({type(exc).__name__}: {exc})."
        ) from None
    return ParsedEvent(event, last_modified)


__all__ = ["PRODID", "ICalendarError", "ParsedEvent", "from_ical", "to_ical"]
