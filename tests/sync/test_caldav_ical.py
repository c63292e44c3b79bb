"""The CalDAV adapter's iCalendar mapping: the ``VTIMEZONE``\\s it writes and the
ones it skips when reading (no server)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import CalendarEvent, RecurrenceException
from crmflow.providers.caldav._ical import from_ical, to_ical

from .contract import ROUND_TRIP, sample

MOVED = dt.datetime(2027, 1, 11, 15, tzinfo=dt.UTC)

EVENTS = {
    "across DST": replace(
        sample("dst"),
        span=timed_span(
            dt.datetime(2026, 3, 29, 1, 30),
            dt.datetime(2026, 3, 29, 4),
            "Europe/Berlin",
        ),
    ),
    "new year": replace(
        sample("new-year"),
        span=timed_span(
            dt.datetime(2031, 12, 31, 23, 30),
            dt.datetime(2032, 1, 1, 0, 30),
            "America/New_York",
        ),
    ),
    "open series": replace(
        sample("open"), recurrence=("RRULE:FREQ=MONTHLY;BYMONTHDAY=7",)
    ),
    "series until": replace(
        sample("until"), recurrence=("RRULE:FREQ=YEARLY;UNTIL=20400101T000000Z",)
    ),
    "two zones": replace(
        sample("two-zones"),
        span=timed_span(
            dt.datetime(2026, 12, 28, 9), dt.datetime(2026, 12, 28, 10), "Europe/Berlin"
        ),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=3",),
        exceptions=(
            RecurrenceException(
                MOVED - dt.timedelta(hours=7),
                title="In New York",
                span=timed_span(
                    dt.datetime(2027, 1, 11, 10),
                    dt.datetime(2027, 1, 11, 11),
                    "America/New_York",
                ),
            ),
        ),
    ),
    **ROUND_TRIP,
}


def moments(event: CalendarEvent) -> list[dt.datetime]:
    """Instants a reader must place correctly: the event's times, and for a
    series the middle of every month to the end of 2037."""
    spans = [event.span, *(e.span for e in event.exceptions if e.span)]
    found = [t for s in spans if not s.all_day for t in (s.start_at, s.end_at)]
    if event.recurrence and not event.span.all_day:
        for year in range(event.span.start_at.year, 2038):
            found += [dt.datetime(year, m, 15, 12, tzinfo=dt.UTC) for m in range(1, 13)]
    return found


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_written_vtimezones_place_every_time_of_the_event(name):
    event = EVENTS[name]
    calendar = Calendar.from_ical(to_ical(event))
    zones = {str(c["TZID"]): c for c in calendar.timezones}
    used = {
        s.timezone
        for s in (event.span, *(e.span for e in event.exceptions if e.span))
        if not s.all_day and s.timezone != "UTC"
    }
    assert set(zones) == used
    for tzid, component in zones.items():
        # a reader that knows no zone names builds the zone from the component
        strict = component.to_tz(lookup_tzid=False)
        iana = ZoneInfo(tzid)
        for moment in moments(event):
            local = moment.astimezone(iana).replace(tzinfo=None)
            assert local.replace(tzinfo=strict).utcoffset() == (
                local.replace(tzinfo=iana).utcoffset()
            ), (tzid, moment)
    assert from_ical(to_ical(event)).event.content_hash() == event.content_hash()


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_each_vtimezone_rdate_value_has_a_line_of_its_own(name):
    text = to_ical(EVENTS[name]).decode()
    zone_part = text[: text.index("BEGIN:VEVENT")]
    unfolded = zone_part.replace("\r\n ", "")
    rdates = [line for line in unfolded.split("\r\n") if line.startswith("RDATE")]
    assert all("," not in line for line in rdates)
    if EVENTS[name].recurrence and "VTIMEZONE" in text:
        assert rdates  # a series spans years of transitions


ZONE_NAMED = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VTIMEZONE\r
TZID:{tzid}\r
BEGIN:STANDARD\r
DTSTART:19700101T000000\r
TZOFFSETFROM:+0500\r
TZOFFSETTO:+0500\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:zone-named\r
DTSTAMP:20260101T000000Z\r
DTSTART;TZID={tzid}:20260710T120000\r
DTEND;TZID={tzid}:20260710T130000\r
SUMMARY:Zone named\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_a_vtimezone_of_an_iana_zone_leaves_the_zone_to_its_name():
    event = from_ical(ZONE_NAMED.format(tzid="Europe/Berlin")).event
    assert event.span.timezone == "Europe/Berlin"
    assert event.span.start_at == dt.datetime(2026, 7, 10, 10, tzinfo=dt.UTC)


def test_a_custom_vtimezone_gives_the_instant():
    event = from_ical(ZONE_NAMED.format(tzid="Head Office (custom)")).event
    assert event.span.timezone == "UTC"
    assert event.span.start_at == dt.datetime(2026, 7, 10, 7, tzinfo=dt.UTC)


def test_events_without_a_zone_get_no_vtimezone():
    utc = replace(
        sample("utc"),
        span=timed_span(
            dt.datetime(2026, 4, 7, 10, tzinfo=dt.UTC),
            dt.datetime(2026, 4, 7, 11, tzinfo=dt.UTC),
            "UTC",
        ),
    )
    assert b"VTIMEZONE" not in to_ical(utc)
    assert b"VTIMEZONE" not in to_ical(ROUND_TRIP["all-day"])


# ------------------------------------------------------------------ rewrites

PLACED = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VEVENT\r
UID:placed-1\r
DTSTAMP:20260101T000000Z\r
DTSTART;TZID=Europe/Berlin:20260407T100000\r
DTEND;TZID=Europe/Berlin:20260407T110000\r
SUMMARY:Site visit\r
LOCATION:Main Street 1\r
GEO:52.52;13.40\r
X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-TITLE=Main Street 1:geo:52.52,13.40\r
X-MICROSOFT-CDO-ALLDAYEVENT:FALSE\r
X-OTHER:kept\r
END:VEVENT\r
END:VCALENDAR\r
"""


def _master(data: bytes) -> object:
    return Calendar.from_ical(data).walk("VEVENT")[0]


def test_a_rewrite_drops_what_restates_a_changed_field_only():
    event = from_ical(PLACED).event
    same = _master(to_ical(replace(event, title="Site visit (moved)"), keep=PLACED))
    assert "GEO" in same
    assert "X-APPLE-STRUCTURED-LOCATION" in same
    assert same["X-MICROSOFT-CDO-ALLDAYEVENT"] == "FALSE"

    moved = _master(to_ical(replace(event, location="Harbour 9"), keep=PLACED))
    # a map pin of the old place would mislead: gone with the old location
    assert "GEO" not in moved
    assert "X-APPLE-STRUCTURED-LOCATION" not in moved
    assert moved["X-OTHER"] == "kept"

    day = replace(event, span=all_day_span(dt.date(2026, 4, 7), None, "UTC"))
    all_day = _master(to_ical(day, keep=PLACED))
    # it says FALSE: it restated the timed start, which is gone
    assert "X-MICROSOFT-CDO-ALLDAYEVENT" not in all_day
    assert "GEO" in all_day


ALARMED = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VEVENT\r
UID:alarmed-1\r
DTSTAMP:20260101T000000Z\r
DTSTART:20260407T100000Z\r
DTEND:20260407T110000Z\r
SUMMARY:Call\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:At a fixed time\r
TRIGGER;VALUE=DATE-TIME:20260407T094500Z\r
END:VALARM\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
DESCRIPTION:Before the start\r
TRIGGER:-PT30M\r
END:VALARM\r
END:VEVENT\r
END:VCALENDAR\r
"""


def _triggers(data: bytes) -> dict[str, tuple[object, dict[str, str]]]:
    return {
        str(alarm["DESCRIPTION"]): (alarm["TRIGGER"].dt, dict(alarm["TRIGGER"].params))
        for alarm in Calendar.from_ical(data).walk("VALARM")
    }


def test_an_alarm_at_a_fixed_time_moves_with_the_event():
    event = from_ical(ALARMED).event
    later = replace(
        event,
        span=timed_span(
            dt.datetime(2026, 4, 8, 14, tzinfo=dt.UTC),
            dt.datetime(2026, 4, 8, 15, tzinfo=dt.UTC),
            "UTC",
        ),
    )
    triggers = _triggers(to_ical(later, keep=ALARMED))
    # still 15 minutes before the start, and still a UTC date-time
    assert triggers["At a fixed time"] == (
        dt.datetime(2026, 4, 8, 13, 45, tzinfo=dt.UTC),
        {"VALUE": "DATE-TIME"},
    )
    assert triggers["Before the start"] == (-dt.timedelta(minutes=30), {})

    # made all-day: there is no instant to keep the alarm at, it stays
    day = replace(event, span=all_day_span(dt.date(2026, 4, 9), None, "UTC"))
    assert _triggers(to_ical(day, keep=ALARMED))["At a fixed time"][0] == dt.datetime(
        2026, 4, 7, 9, 45, tzinfo=dt.UTC
    )

    retitled = _triggers(to_ical(replace(event, title="Call (agenda)"), keep=ALARMED))
    assert retitled["At a fixed time"][0] == dt.datetime(
        2026, 4, 7, 9, 45, tzinfo=dt.UTC
    )


def test_a_rewrite_keeps_an_attendee_name_the_crm_does_not_know():
    event = from_ical(DECORATED_ATTENDEES).event
    (ann, bob) = event.attendees
    unnamed = replace(
        event, attendees=(replace(ann, name=None), replace(bob, name="Robert"))
    )
    master = _master(to_ical(unnamed, keep=DECORATED_ATTENDEES))
    names = {
        str(a).lower().removeprefix("mailto:"): a.params.get("CN")
        for a in master["ATTENDEE"]
    }
    # the calendar's name stays where the CRM has none; the CRM's own wins
    assert names == {"ann@example.com": "Ann", "bob@example.com": "Robert"}


DECORATED_ATTENDEES = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VEVENT\r
UID:named-1\r
DTSTAMP:20260101T000000Z\r
DTSTART:20260407T100000Z\r
DTEND:20260407T110000Z\r
SUMMARY:Review\r
ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED:mailto:ann@example.com\r
ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com\r
END:VEVENT\r
END:VCALENDAR\r
"""


OUTLOOKISH = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VTIMEZONE\r
TZID:My Office Time\r
BEGIN:STANDARD\r
DTSTART:19700101T000000\r
TZOFFSETFROM:+0300\r
TZOFFSETTO:+0300\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:zoned-1\r
DTSTAMP:20260101T000000Z\r
DTSTART;TZID=My Office Time:20260410T120000\r
DTEND;TZID=My Office Time:20260410T130000\r
X-MS-OLK-ORIGINALSTART;TZID=My Office Time:20260410T120000\r
SUMMARY:Board\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_a_kept_property_keeps_the_custom_zone_it_names():
    # another calendar's zone of the same name, read first, must not be used
    elsewhere = OUTLOOKISH.replace(b"+0300", b"+0500").replace(b"zoned-1", b"zoned-2")
    to_ical(from_ical(elsewhere).event, keep=elsewhere)
    event = from_ical(OUTLOOKISH).event
    data = to_ical(replace(event, title="Board (moved room)"), keep=OUTLOOKISH)
    assert b"X-MS-OLK-ORIGINALSTART;TZID=My Office Time:20260410T120000" in data
    # the zone it names is this copy's, defined once, before the event
    assert data.count(b"TZID:My Office Time") == 1
    assert data.index(b"BEGIN:VTIMEZONE") < data.index(b"BEGIN:VEVENT")
    [zone] = Calendar.from_ical(data).walk("VTIMEZONE")
    assert zone.walk("STANDARD")[0]["TZOFFSETTO"].td == dt.timedelta(hours=3)


CUSTOM_SERIES = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Other//Client//EN\r
BEGIN:VTIMEZONE\r
TZID:Customized Time Zone\r
BEGIN:STANDARD\r
DTSTART:16010101T000000\r
TZOFFSETFROM:{offset}\r
TZOFFSETTO:{offset}\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:custom-{offset}\r
DTSTAMP:20260101T000000Z\r
DTSTART;TZID=Customized Time Zone:20260710T120000\r
DTEND;TZID=Customized Time Zone:20260710T130000\r
RRULE:FREQ=DAILY;COUNT=3\r
EXDATE;TZID=Customized Time Zone:20260711T120000\r
SUMMARY:Custom zone\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_one_custom_zone_name_defined_differently_is_read_per_calendar():
    # Outlook calls every zone it makes up "Customized Time Zone": each
    # calendar's own definition places its times, whichever was read first
    for offset, hour in (("+0500", 7), ("+0300", 9), ("+0500", 7)):
        event = from_ical(CUSTOM_SERIES.format(offset=offset)).event
        assert event.span.start_at == dt.datetime(2026, 7, 10, hour, tzinfo=dt.UTC)
        # the excluded occurrence, placed by the same definition, in UTC: the
        # line no longer needs the zone (the series' start reads as UTC too)
        assert event.recurrence == (
            "RRULE:FREQ=DAILY;COUNT=3",
            "EXDATE:20260711T" + f"{hour:02d}" + "0000Z",
        )


def test_recurrence_dates_in_a_custom_zone_are_read_in_utc():
    text = CUSTOM_SERIES.format(offset="+0500").replace(
        "EXDATE;TZID=Customized Time Zone:20260711T120000\r\n",
        "EXDATE;TZID=Customized Time Zone:20260711T120000,20260712T120000\r\n"
        "RDATE;VALUE=PERIOD;TZID=Customized Time Zone:"
        "20260720T120000/20260720T130000,20260721T120000/PT1H\r\n"
        "RDATE;TZID=Nowhere Time:20260722T120000\r\n"
        "RDATE;TZID=Europe/Berlin:20260723T120000\r\n"
        "RDATE;TZID=W. Europe Standard Time:20260724T120000\r\n",
    )
    event = from_ical(text).event
    assert event.recurrence == (
        "RRULE:FREQ=DAILY;COUNT=3",
        "RDATE;VALUE=PERIOD:20260720T070000Z/20260720T080000Z,20260721T070000Z/PT1H",
        # a zone nothing defines reads as UTC, as such a start does
        "RDATE:20260722T120000Z",
        # zone names that mean the same everywhere are kept
        "RDATE;TZID=Europe/Berlin:20260723T120000",
        "RDATE;TZID=W. Europe Standard Time:20260724T120000",
        "EXDATE:20260711T070000Z,20260712T070000Z",
    )
    # written out and read back, the series is the same
    assert from_ical(to_ical(event)).event == event


def test_a_custom_zone_named_but_not_defined_reads_as_utc_whatever_was_read_before():
    # another calendar defined the name; this one uses it without a VTIMEZONE
    from_ical(CUSTOM_SERIES.format(offset="+0500"))
    undefined = "\r\n".join(
        line
        for line in CUSTOM_SERIES.format(offset="+0300").split("\r\n")
        if not line.startswith(("BEGIN:VTIMEZONE", "TZID:", "BEGIN:STANDARD"))
        and not line.startswith(("DTSTART:1601", "TZOFFSET", "END:STANDARD"))
        and not line.startswith("END:VTIMEZONE")
    )
    assert "BEGIN:VTIMEZONE" not in undefined
    event = from_ical(undefined).event
    assert event.span.start_at == dt.datetime(2026, 7, 10, 12, tzinfo=dt.UTC)
    assert "EXDATE:20260711T120000Z" in event.recurrence


def test_floating_exdates_of_a_custom_zone_series_are_in_its_zone():
    # some clients write EXDATE without the TZID their DTSTART has
    text = CUSTOM_SERIES.format(offset="+0500").replace(
        "EXDATE;TZID=Customized Time Zone:", "EXDATE:"
    )
    event = from_ical(text).event
    assert event.span.start_at == dt.datetime(2026, 7, 10, 7, tzinfo=dt.UTC)
    assert "EXDATE:20260711T070000Z" in event.recurrence
